"""A prompt set with bad entries among good ones, through the generator loop on a real
(embedded) Redis, the tiny LLaVA and a real reward worker: each bad entry fails alone with its
reason, the good ones are searched in the same batch, and the loop keeps serving."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from services.generator.engine import VLMEngine
from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
from services.reward.client import RewardClient
from services.runtime import embedded_redis
from services.runtime.prompt_sets import load_prompt_set
from services.runtime.prompts import PromptStreams
from tests.models.llava import build_tiny_llava, teach_sentences

CONFIG = replace(
    CSRConfig(),
    search=SearchConfig(num_beams=4, num_beam_groups=2, max_new_tokens=10, max_sentences=3),
)
GOOD = [f"good-{i}" for i in range(6)]
# prompt id -> what its failure must say
BAD = {
    "missing-image": "cannot read image",
    "corrupt-image": "cannot read image",
    "empty-image": "cannot read image",
    "outside-root": "leaves the image root",
    "empty-prompt": "the prompt is empty",
    "5000-words": "past the limit of 512 (the model's context)",
}


def write_prompt_set(root: Path) -> Path:
    images = root / "images"
    images.mkdir()
    rows = []
    for i, prompt_id in enumerate(GOOD):
        Image.new("RGB", (40, 40), (40 * i, 200 - 30 * i, 90)).save(images / f"{i}.png")
        rows.append({"id": prompt_id, "image": f"{i}.png", "input": "<image>\ndescribe ."})
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not the rest of a PNG")
    (images / "empty.png").write_bytes(b"")
    Image.new("RGB", (40, 40), (9, 9, 9)).save(root / "outside.png")  # readable, but not ours
    rows += [
        {"id": "missing-image", "image": "no-such.png", "input": "describe ."},
        {"id": "corrupt-image", "image": "corrupt.png", "input": "describe ."},
        {"id": "empty-image", "image": "empty.png", "input": "describe ."},
        {"id": "outside-root", "image": "../outside.png", "input": "describe ."},
        {"id": "empty-prompt", "image": "0.png", "input": "<image>\n  "},
        {"id": "5000-words", "image": "1.png", "input": " ".join(["describe"] * 5000)},
    ]
    path = root / "prompts.json"
    path.write_text(json.dumps(rows))
    return path


@pytest.fixture(scope="module")
def taught():
    model, processor = build_tiny_llava(seed=2)  # context: 512 positions
    return teach_sentences(model, processor, steps=60), processor


@pytest.fixture
def generator(tmp_path, start_worker, taught):
    model, processor = taught
    redis = embedded_redis.start(tmp_path / "redis.db", append_only=False)
    client = RewardClient(start_worker("open_clip").grpc_address)
    loop = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis), VLMEngine(model, processor, CONFIG.search), client.relevance
        ),
        CONFIG,
        GeneratorOptions(tmp_path / "images", "g", batch_size=12),
    )
    yield loop
    client.close()
    embedded_redis.stop(redis)


def test_each_bad_prompt_fails_alone_with_its_reason_and_the_good_ones_get_pairs(
    generator, tmp_path
):
    streams = generator.streams
    streams.enqueue(load_prompt_set(str(write_prompt_set(tmp_path)), iteration=1))
    assert generator.run_once(block_ms=10) == 12  # one batch: all twelve ended in it
    failed = {f["prompt_id"]: f["reason"] for f in streams.failed()}
    assert set(failed) == set(BAD)
    for prompt_id, message in BAD.items():
        assert message in failed[prompt_id], (prompt_id, failed[prompt_id])
    paired = {r.prompt_id for r in streams.pairs()}
    assert paired == set(GOOD)
    assert streams.pending() == 0 and streams.no_pairs() == {"failed": 6}
    # The loop still serves: the next iteration's good prompts are searched as before.
    streams.enqueue(load_prompt_set(str(tmp_path / "prompts.json"), iteration=2)[:2])
    assert generator.run_once(block_ms=10) == 2
    assert {r.prompt_id for r in streams.pairs() if r.iteration == 2} == set(GOOD[:2])


def test_the_length_counts_image_tokens_and_a_configured_cap_wins_below_the_context(generator):
    from services.generator.parts import PromptLength

    engine = generator.engine
    image = Image.new("RGB", (40, 40))
    # "<s> USER : <image> describe . ASSISTANT :" is 8 tokens of the word tokenizer; the
    # processor expands <image> into the 32x32 image's 4x4 patches plus its class token: 17.
    assert (
        PromptLength.of(engine.model, engine.processor, cap=24).problem("describe .", image) is None
    )
    refused = PromptLength.of(engine.model, engine.processor, cap=23).problem("describe .", image)
    assert refused == (
        "the prompt is 24 tokens (image tokens included), past the limit of 23 "
        "(CSR_GENERATOR_MAX_PROMPT_TOKENS): shorten it"
    )
    context = PromptLength.of(engine.model, engine.processor)
    assert (context.limit, context.source) == (512, "the model's context")
    assert PromptLength.of(engine.model, engine.processor, cap=4096).limit == 512
