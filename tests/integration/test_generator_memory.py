"""The generator loop's memory bound on a real (embedded) Redis and a real reward worker: the
claimed prompts are searched in batches that fit the KV budget, a prompt that alone does not
fit fails alone with the reason, and an out-of-memory error halves the batch, losing no prompt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from services.generator.engine import VLMEngine
from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
from services.reward.client import RewardClient
from services.runtime import embedded_redis
from services.runtime.prompts import PromptStreams, WorkItem
from services.runtime.vlm import chat_prompt
from tests.models.llava import build_tiny_llava

SEARCH = SearchConfig(
    num_beams=2, num_beam_groups=1, max_new_tokens=4, max_sentences=2, max_response_tokens=8
)
CONFIG = replace(CSRConfig(), search=SEARCH)
PROMPT = "describe the image ."
LONG = "describe " + "the red circle and " * 30 + "the image ."


class RecordingEngine(VLMEngine):
    """The engine, noting the prompts of every batch it encodes; with `fail_above`, a fake
    out-of-memory error from any expansion of more prompts than that."""

    def __init__(self, *args, fail_above: int | None = None):
        super().__init__(*args)
        self.batches: list[list[str]] = []
        self.fail_above = fail_above

    def encode_prompts(self, items) -> None:
        items = list(items)
        self.batches.append([prompt_id for prompt_id, _, _ in items])
        super().encode_prompts(items)

    def expand(self, prefixes):
        prompts = {p.request.prompt_id for p in prefixes}
        if self.fail_above is not None and len(prompts) > self.fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
        return super().expand(prefixes)


@pytest.fixture(scope="module")
def tiny_llava():
    return build_tiny_llava(seed=2)


@pytest.fixture
def world(tmp_path, start_worker):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        Image.new("RGB", (40, 40), (40 * i, 200 - 30 * i, 90)).save(images / f"{i}.png")
    redis = embedded_redis.start(tmp_path / "redis.db", append_only=False)
    client = RewardClient(start_worker("open_clip").grpc_address)
    yield redis, images, client
    client.close()
    embedded_redis.stop(redis)


def run(world, engine, budget, prompts):
    redis, images, client = world
    streams = PromptStreams(redis)
    streams.enqueue([WorkItem(f"p{i}", text, f"{i}.png", 1) for i, text in enumerate(prompts)])
    loop = GeneratorLoop(
        GeneratorParts(streams, engine, client.relevance),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g", batch_size=8, kv_budget_bytes=budget),
    )
    while loop.run_once(block_ms=10):
        pass
    return streams


def search_bytes(lengths: list[int]) -> int:
    """By hand, the tiny LLaVA in fp32: 1,024 bytes a token (2 x 2 layers x 4 KV heads x 16 x
    4 bytes). A search holds the prompts' block (padded to the longest), 3 prefixes a prompt
    of up to 8 tokens, 3 x 2 beam rows of 4 new tokens, and one layer's keys of the rows."""
    rows = len(lengths) * 3 * 2 * 4
    return 1024 * (len(lengths) * max(lengths) + len(lengths) * 3 * 8 + rows) + 1024 * rows // 4


def test_batches_fill_up_to_the_budget_and_a_prompt_too_big_fails_alone(world, tiny_llava):
    model, processor = tiny_llava
    image = Image.new("RGB", (40, 40))
    short, long = (
        len(processor(images=image, text=chat_prompt(processor, text))["input_ids"][0])
        for text in (PROMPT, LONG)
    )
    budget = search_bytes([short, short])  # two short prompts fit, three do not
    assert search_bytes([long]) > budget >= search_bytes([short, short])
    engine = RecordingEngine(model, processor, SEARCH)
    streams = run(world, engine, budget, [PROMPT, PROMPT, LONG, PROMPT, PROMPT])
    assert engine.batches == [["p0", "p1"], ["p3", "p4"]]
    [failed] = streams.failed()
    assert failed["prompt_id"] == "p2" and "CSR_GENERATOR_KV_BUDGET_GB" in failed["reason"]
    assert len(streams.pairs()) + sum(streams.no_pairs().values()) == 5  # failed is a no-pair
    assert streams.pending() == 0 and engine.held_kv_bytes() == 0


def test_out_of_memory_halves_the_batch_and_loses_no_prompt(world, tiny_llava):
    model, processor = tiny_llava
    engine = RecordingEngine(model, processor, SEARCH, fail_above=2)
    streams = run(world, engine, None, [PROMPT] * 4)
    assert engine.batches == [["p0", "p1", "p2", "p3"], ["p0", "p1"], ["p2", "p3"]]
    assert len(streams.pairs()) + sum(streams.no_pairs().values()) == 4
    assert streams.failed() == [] and streams.pending() == 0
    assert engine.held_kv_bytes() == 0  # nothing of the failed batch is kept
