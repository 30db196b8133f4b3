"""`csr generate` as a user runs it: a saved tiny LLaVA, an embedded Redis, a reward worker."""

from __future__ import annotations

import os
import subprocess
import sys

from services.reward.settings import RewardSettings
from services.reward.worker import BackgroundWorker
from services.runtime import embedded_redis
from services.runtime.lifeline import child_env
from services.runtime.prompts import PromptStreams
from tests.e2e.world import save_world


def test_csr_generate_turns_a_prompt_set_into_pairs_in_redis(tmp_path):
    world = save_world(tmp_path)
    redis = embedded_redis.start(tmp_path / "redis.db")
    with BackgroundWorker(
        RewardSettings(model=str(world.clip), host="127.0.0.1", grpc_port=0, http_enabled=False)
    ) as worker:
        env = dict(
            os.environ,
            CSR_GENERATOR_MODEL=str(world.vlm),
            CSR_GENERATOR_BASE_NAME="tiny-llava",
            CSR_GENERATOR_REDIS_URL=f"unix://{redis.socket_file}",
            CSR_GENERATOR_REWARD_TARGET=worker.grpc_address,
            CSR_GENERATOR_IMAGE_ROOT=str(world.images),
            CSR_GENERATOR_PROMPT_SET=str(world.prompt_set),
            CSR_GENERATOR_ADMIN_PORT="0",
            CSR_GENERATOR_HTTP_PORT="0",
            CSR_GENERATOR_EXIT_WHEN_IDLE="true",
        )
        out = subprocess.run(
            [sys.executable, "-m", "csr_cli.main", "generate"],
            env=child_env(env),  # ends with this test process
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert out.returncode == 0, out.stderr[-3000:]
    streams = PromptStreams(redis)
    records = streams.pairs()
    assert len(records) + sum(streams.no_pairs().values()) == 4
    assert records and all(r.adapter_version == "base" and r.iteration == 1 for r in records)
    assert streams.pending() == 0
    embedded_redis.stop(redis)
