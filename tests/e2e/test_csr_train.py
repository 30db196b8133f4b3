"""`csr generate` and `csr train` as a user runs them, closing two CSR iterations: pairs of
iteration 1 from the base model, adapter 1, iteration 2 searched with adapter 1, adapter 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from services.reward.settings import RewardSettings
from services.reward.worker import BackgroundWorker
from services.runtime import embedded_redis
from services.runtime.lifeline import child_env
from services.runtime.prompts import PromptStreams
from tests.e2e.world import save_world


def csr(*args: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "csr_cli.main", *args],
        env=child_env(env),  # ends with this test process
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def test_generate_and_train_close_two_iterations(tmp_path):
    world = save_world(tmp_path)
    redis = embedded_redis.start(tmp_path / "redis.db")
    url = f"unix://{redis.socket_file}"
    common = dict(os.environ, PYTHONUNBUFFERED="1")
    store, work = tmp_path / "adapters", tmp_path / "work"
    algorithm = tmp_path / "algorithm.yaml"
    algorithm.write_text(
        "iterations: 2\ndpo: {learning_rate: 5.0e-4, lora_r: 4, lora_alpha: 8, batch_size: 2}\n"
    )
    train_env = dict(
        common,
        CSR_TRAINER_MODEL=str(world.vlm),
        CSR_TRAINER_BASE_NAME="tiny-llava",
        CSR_TRAINER_REDIS_URL=url,
        CSR_TRAINER_IMAGE_ROOT=str(world.images),
        CSR_TRAINER_ADAPTER_STORE=str(store),
        CSR_TRAINER_WORK_DIR=str(work),
        CSR_TRAINER_ALGORITHM=str(algorithm),
        CSR_TRAINER_HTTP_PORT="0",
    )
    with BackgroundWorker(
        RewardSettings(model=str(world.clip), host="127.0.0.1", grpc_port=0, http_enabled=False)
    ) as worker:
        generate_env = dict(
            common,
            CSR_GENERATOR_MODEL=str(world.vlm),
            CSR_GENERATOR_BASE_NAME="tiny-llava",
            CSR_GENERATOR_REDIS_URL=url,
            CSR_GENERATOR_REWARD_TARGET=worker.grpc_address,
            CSR_GENERATOR_IMAGE_ROOT=str(world.images),
            CSR_GENERATOR_PROMPT_SET=str(world.prompt_set),
            CSR_GENERATOR_ADMIN_PORT="0",
            CSR_GENERATOR_HTTP_PORT="0",
            CSR_GENERATOR_EXIT_WHEN_IDLE="true",
        )
        csr("generate", env=generate_env)  # iteration 1 with the base model
        trainer = subprocess.Popen(
            [sys.executable, "-m", "csr_cli.main", "train"],
            env=child_env(train_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            streams = PromptStreams(redis)
            deadline = time.monotonic() + 300
            while streams.iteration_progress(2)[1] < 4:  # the trainer queues iteration 2
                assert trainer.poll() is None, trainer.stdout.read()[-3000:]
                assert time.monotonic() < deadline, "iteration 2 was never queued"
                time.sleep(0.2)
            csr("generate", env=dict(generate_env, CSR_GENERATOR_PROMPT_SET=""))
            log = trainer.communicate(timeout=300)[0]
        finally:
            trainer.kill()
    assert trainer.returncode == 0, log[-3000:]
    records = streams.pairs()
    assert {r.adapter_version for r in records if r.iteration == 1} == {"base"}
    assert {r.adapter_version for r in records if r.iteration == 2} == {"1"}
    manifests = [json.loads((store / v / "manifest.json").read_text()) for v in ("1", "2")]
    assert [(m["iteration"], m["closes_iteration"]) for m in manifests] == [(1, True), (2, True)]
    assert [m["pairs"] for m in manifests] == [
        sum(r.iteration == t for r in records) for t in (1, 2)
    ]
    assert list((work / "tensorboard" / "update-1").rglob("events.out.tfevents.*"))  # TRL's
    assert list((work / "tensorboard" / "service").rglob("events.out.tfevents.*"))
    assert sorted(p.name for p in (work / "plots").iterdir()) == ["update-1.png", "update-2.png"]
    assert redis.xpending("csr:pairs", "trainers")["pending"] == 0
    embedded_redis.stop(redis)
