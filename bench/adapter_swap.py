"""Hot-reload latency of a LoRA adapter on a running generator loop (tiny LLaVA, CPU).

Measures, side by side in one run: (a) validating and activating an adapter alone
(AdapterSlot.load: manifest sha256s, PEFT load, swap), and (b) the admin API's LoadAdapter
round trip against a loop idling on an empty prompt queue (so it includes waiting for the
gap between prompts). Last line: the median admin round trip in milliseconds.

    .venv/bin/python bench/adapter_swap.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny models

import grpc

from csr.config import CSRConfig
from csr_api.v1 import generator_pb2, generator_pb2_grpc
from services.generator.adapter_slot import AdapterSlot
from services.generator.admin import create_server
from services.generator.engine import VLMEngine
from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
from services.runtime import embedded_redis
from services.runtime.prompts import PromptStreams
from tests.models.llava import build_tiny_llava, make_random_adapter


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters = [
            make_random_adapter(root / f"v{i}", str(i), seed=i)
            for i in range(1, 2 * args.repeats + 1)
        ]
        model, processor = build_tiny_llava(seed=2)
        slot = AdapterSlot(model, "tiny-llava")
        alone = []
        for directory in adapters[: args.repeats]:
            started = time.perf_counter()
            slot.load(directory)
            alone.append(time.perf_counter() - started)
        redis = embedded_redis.start(root / "redis.db", append_only=False)
        config = CSRConfig()
        loop = GeneratorLoop(
            GeneratorParts(
                PromptStreams(redis),
                VLMEngine(slot.model, processor, config.search),
                lambda image, sentences: [0.0] * len(sentences),
                slot=slot,
            ),
            config,
            GeneratorOptions(Path(tmp), "bench"),
        )
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                loop.run_once(block_ms=20)

        runner = threading.Thread(target=serve)
        runner.start()
        server, port = create_server(loop, "127.0.0.1", 0)
        server.start()
        admin = generator_pb2_grpc.GeneratorAdminStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        round_trips = []
        for directory in adapters[args.repeats :]:
            started = time.perf_counter()
            admin.LoadAdapter(generator_pb2.LoadAdapterRequest(path=str(directory)))
            round_trips.append(time.perf_counter() - started)
        stop.set()
        runner.join()
        server.stop(0)
        embedded_redis.stop(redis)
    print(
        f"validate + activate alone: median {statistics.median(alone) * 1e3:.1f} ms "
        f"(min {min(alone) * 1e3:.1f}, max {max(alone) * 1e3:.1f})"
    )
    print(
        f"admin LoadAdapter round trip on an idle loop: median "
        f"{statistics.median(round_trips) * 1e3:.1f} ms (max {max(round_trips) * 1e3:.1f})"
    )
    print(f"adapter_swap_ms: {statistics.median(round_trips) * 1e3:.1f}")


if __name__ == "__main__":
    main()
