"""Reward-service throughput against the model's raw batched encode_text, in one run.

Starts one reward worker as a separate process (`csr reward serve`, tiny open_clip built from
config), drives it with 1, 4 and 16 concurrent gRPC clients sending the image by hash and
--sentences sentences per call (16 by default), and measures the same model's raw
`encode_texts` at the worker's max batch size in this process, side by side. Prints
sentences/s, the ratio to raw, and p50/p99 request latency. Last line: the ratio at 16 clients.

With --compare-fixed-shapes it starts two workers instead, one with fixed shapes (every
encoder call max batch rows at the context length, the default) and one without (the
batch's rows at its longest text), and drives them in turn at each level. Last line: the
fixed worker's throughput over the other's at 1 client, where batches are smallest.
--backend hf --model DIR measures a Hugging Face CLIP directory instead (e.g. the toy
world's runs/toyworld/models/seed-0/clip), whose tokens are padded only with fixed shapes.

    .venv/bin/python bench/reward_throughput.py [--seconds 5] [--sentences 16]
        [--compare-fixed-shapes]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models

import grpc
import torch
from PIL import Image

from csr_api.v1 import reward_pb2, reward_pb2_grpc
from services.reward.models import load_backend
from services.runtime.lifeline import child_env
from tests.models.clip import build_tiny_hf_clip, build_tiny_open_clip

MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3},
}
SENTENCES_PER_REQUEST = 16  # the default: divides MAX_BATCH (--sentences 15 does not)
MAX_BATCH = 64
WORDS = [
    "there",
    "is",
    "a",
    "red",
    "green",
    "blue",
    "small",
    "large",
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "photo",
]


def sentences(n: int, seed: int) -> list[str]:
    return [
        " ".join(WORDS[(seed + i * 7 + k * 3) % len(WORDS)] for k in range(8)) + " ."
        for i in range(n)
    ]


def raw_throughput(model_dir: str, seconds: float, kind: str = "open_clip") -> float:
    backend = load_backend(kind, model_dir)
    batch = sentences(MAX_BATCH, 0)
    backend.encode_texts(batch)  # warm up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        backend.encode_texts(batch)
        done += len(batch)
    return done / (time.perf_counter() - started)


def start_worker(
    model_dir: str, port: int, backend: str = "open_clip", fixed_shapes: bool = True
) -> subprocess.Popen:
    env = dict(
        os.environ,
        CSR_REWARD_BACKEND=backend,
        CSR_REWARD_FIXED_SHAPES=str(fixed_shapes).lower(),
        CSR_REWARD_MODEL=model_dir,
        CSR_REWARD_GRPC_PORT=str(port),
        CSR_REWARD_HTTP_ENABLED="false",
        CSR_REWARD_HOST="127.0.0.1",
        CSR_REWARD_MAX_BATCH_SIZE=str(MAX_BATCH),
        CSR_REWARD_MAX_WAIT_MS="5",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "csr_cli.main", "reward", "serve"],
        env=child_env(env),  # ends with the benchmark
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drive(address: str, image_sha: str, clients: int, seconds: float, per_request: int):
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(seed: int):
        stub = reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(address))
        request = reward_pb2.ScoreRequest(
            image_sha256=image_sha, sentences=sentences(per_request, seed)
        )
        mine = []
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            stub.Score(request, timeout=30)
            mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    rate = len(latencies) * per_request / elapsed
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    return rate, statistics.median(latencies), p99


def ready_worker(model_dir: str, backend: str, fixed_shapes: bool):
    """(process, address, image sha) of a started worker that holds the bench image."""
    port = free_port()
    worker = start_worker(model_dir, port, backend, fixed_shapes)
    address = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=120)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 20, 20)).save(buffer, "PNG")
    stub = reward_pb2_grpc.RewardServiceStub(channel)
    sha = stub.Score(
        reward_pb2.ScoreRequest(image_bytes=buffer.getvalue(), sentences=["warm up ."])
    ).image_sha256
    drive(address, sha, 4, 1.0, SENTENCES_PER_REQUEST)  # warm up
    return worker, address, sha


def against_raw(model_dir: str, backend: str, seconds: float, per_request: int) -> None:
    worker, address, sha = ready_worker(model_dir, backend, True)
    try:
        rows = []
        for clients in (1, 4, 16):
            raw = raw_throughput(model_dir, seconds, backend)  # side by side with each level
            rate, p50, p99 = drive(address, sha, clients, seconds, per_request)
            rows.append((clients, rate, raw, p50, p99))
            print(
                f"clients {clients:2d}: server {rate:8.0f} sentences/s | raw encode_text "
                f"{raw:8.0f}/s | ratio {rate / raw:5.2f} | p50 {p50 * 1e3:6.1f} ms | "
                f"p99 {p99 * 1e3:6.1f} ms"
            )
    finally:
        worker.terminate()
        worker.wait(30)
    print(f"reward_throughput_ratio_16_clients: {rows[-1][1] / rows[-1][2]:.2f}")


def fixed_against_dynamic(model_dir: str, backend: str, seconds: float, per_request: int) -> None:
    workers = {fixed: ready_worker(model_dir, backend, fixed) for fixed in (True, False)}
    try:
        ratios = {}
        for clients in (1, 4, 16):
            rates = {}
            for fixed, (_, address, sha) in workers.items():  # in turn, at the same level
                rates[fixed], p50, p99 = drive(address, sha, clients, seconds, per_request)
                print(
                    f"clients {clients:2d}, fixed shapes {fixed!s:5s}: {rates[fixed]:8.0f} "
                    f"sentences/s | p50 {p50 * 1e3:6.1f} ms | p99 {p99 * 1e3:6.1f} ms"
                )
            ratios[clients] = rates[True] / rates[False]
            print(f"clients {clients:2d}: fixed over dynamic {ratios[clients]:5.2f}")
    finally:
        for worker, _, _ in workers.values():
            worker.terminate()
            worker.wait(30)
    print(f"reward_fixed_shapes_throughput_ratio_1_client: {ratios[1]:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds per measurement.")
    parser.add_argument(
        "--compare-fixed-shapes", action="store_true", help="Fixed shapes against dynamic ones."
    )
    parser.add_argument(
        "--sentences",
        type=int,
        default=SENTENCES_PER_REQUEST,
        help="Sentences per request (16 divides the batch of 64; 15 does not).",
    )
    parser.add_argument("--backend", choices=("open_clip", "hf"), default="open_clip")
    parser.add_argument("--model", default="", help="A CLIP directory (default: a tiny one).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            model_dir = args.model
        elif args.backend == "hf":
            model_dir = str(build_tiny_hf_clip(tmp, context_length=77))
        else:
            model_dir = str(build_tiny_open_clip(tmp, model_cfg=MODEL_CFG))
        print(
            f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
            f"{args.sentences} sentences/request, max batch {MAX_BATCH}, {args.backend}"
        )
        if args.compare_fixed_shapes:
            fixed_against_dynamic(model_dir, args.backend, args.seconds, args.sentences)
        else:
            against_raw(model_dir, args.backend, args.seconds, args.sentences)


if __name__ == "__main__":
    main()
