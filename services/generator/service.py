"""The generator's work loop: claim prompts from Redis, search them, publish their pairs.

Owns the order of operations that makes a crash safe: an item is acknowledged only together
with its published record (csr.streams.PromptStreams.publish), after the search finished. If
the search fails (the reward service is down, say), nothing is acknowledged: the items stay
pending and are claimed again later, by this replica or another.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

from PIL import Image

from csr.config import CSRConfig
from csr.search import Relevance, SearchRequest
from csr.selection import NoPair
from services.generator.engine import VLMEngine
from services.generator.pipeline import search_prompts
from services.generator.streams import PromptStreams, WorkItem

logger = logging.getLogger(__name__)


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


class GeneratorLoop:
    def __init__(self, streams: PromptStreams, engine: VLMEngine, relevance: Relevance,
                 config: CSRConfig, image_root: str, consumer: str, batch_size: int = 8,
                 adapter_version: str = "base"):
        self.streams, self.engine, self.relevance, self.config = streams, engine, relevance, config
        self.image_root, self.consumer, self.batch_size = Path(image_root), consumer, batch_size
        self.adapter_version = adapter_version
        self.published = self.repeats = self.no_pairs = 0

    def run_once(self, block_ms: int = 1000) -> int:
        """Claim up to batch_size prompts, search them together, publish; returns how many."""
        items = self.streams.claim(self.consumer, self.batch_size, block_ms)
        by_iteration: dict[int, list[WorkItem]] = defaultdict(list)
        for item in items:
            by_iteration[item.iteration].append(item)
        for iteration, group in sorted(by_iteration.items()):
            self._search_and_publish(iteration, group)
        return len(items)

    def _search_and_publish(self, iteration: int, items: list[WorkItem]) -> None:
        requests = [SearchRequest(item.prompt_id, item.prompt, str(self.image_root / item.image))
                    for item in items]
        outcomes = search_prompts(requests, self.engine, self.relevance, self.config, load_rgb,
                                  iteration, self.adapter_version)
        for item, outcome in zip(items, outcomes):
            if isinstance(outcome.pair, NoPair):
                self.no_pairs += 1
                self.streams.publish(item, None, outcome.pair.reason)
            elif self.streams.publish(item, outcome.record):
                self.published += 1
            else:
                self.repeats += 1
                logger.info("pair %s was published before (a redelivered prompt)",
                            outcome.record.pair_id)
