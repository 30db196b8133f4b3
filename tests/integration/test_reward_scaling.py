"""Two workers behind one client: both get work, and one going down mid-run fails no call."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from services.reward.client import RewardClient
from tests.integration.conftest import png


def _served(worker) -> float:
    return worker.worker.scorer.metrics.requests.labels("grpc", "ok")._value.get()


def test_round_robin_spreads_calls_over_both_workers(start_worker):
    first, second = start_worker(), start_worker()
    target = f"ipv4:{first.grpc_address},{second.grpc_address}"
    with RewardClient(target) as client:
        for i in range(20):
            client.score(png((i, 0, 0)), ["a cat ."])
    assert _served(first) >= 5 and _served(second) >= 5
    assert _served(first) + _served(second) >= 20


def test_a_worker_going_down_mid_run_fails_no_call(start_worker):
    first, second = start_worker(), start_worker()
    target = f"ipv4:{first.grpc_address},{second.grpc_address}"
    results, errors = [], []
    stop_at = time.monotonic() + 30

    def caller(seed: int):
        with RewardClient(target, timeout=5, retries=10, backoff=0.02) as client:
            for i in range(40):
                if time.monotonic() > stop_at:
                    return
                try:
                    results.append(len(client.score(png((seed, i, 0)), ["a cat .", "a dog ."])))
                except Exception as e:  # collected: the assertion below names them
                    errors.append(repr(e))

    threads = [threading.Thread(target=caller, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    while len(results) < 20:
        time.sleep(0.01)
    served_before = _served(second)
    first.stop(grace=1.0)
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 160 and set(results) == {2}
    assert _served(second) > served_before  # the survivor took the rest


def test_csr_score_cli_prints_scores_from_a_running_worker(start_worker, tmp_path):
    worker = start_worker()
    image = tmp_path / "scene.png"
    image.write_bytes(png())
    with RewardClient(worker.grpc_address) as client:
        expected = client.score(png(), ["a red square ."])[0].relevance
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "csr_cli.main",
            "score",
            str(image),
            "a red square .",
            "--target",
            worker.grpc_address,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f'"relevance": {expected}' in out.stdout


def test_csr_reward_serve_names_a_missing_model(tmp_path):
    env = dict(
        os.environ,
        CSR_REWARD_MODEL=str(tmp_path / "nowhere"),
        CSR_REWARD_GRPC_PORT="0",
        CSR_REWARD_HTTP_PORT="0",
    )
    out = subprocess.run(
        [sys.executable, "-m", "csr_cli.main", "reward", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "nowhere" in out.stderr and "cannot load open_clip model" in out.stderr
