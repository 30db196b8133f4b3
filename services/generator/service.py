"""The generator's work loop: claim prompts from Redis, search them, publish their pairs.

Owns the order of operations that makes a crash safe: an item is acknowledged only together
with its published record (PromptStreams.publish), after the search finished. If the search
fails (the reward service is down, say), nothing is acknowledged: the items stay pending and
are claimed again later, by this replica or another. A prompt that cannot be searched is
failed on its own (BatchIntake) so it does not hold back its batch, and while a batch runs
its items' claims are kept alive (KeepAlive) so no other replica takes them over.

Also owns the memory a batch may take: the claimed prompts are searched in batches filled up
to the KV budget (the engine's accounting from the model config and the prompt lengths); a
prompt that alone needs more is failed with that reason. If the device still runs out of
memory, the batch is halved and each half searched again, so no prompt is lost; the cached
device memory is handed back after every batch.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from csr.config import CSRConfig
from csr.search import Relevance, SearchRequest
from services.generator.adapter_slot import AdapterSlot
from services.generator.engine import VLMEngine
from services.generator.observe import GeneratorMetrics
from services.generator.parts import (
    AdapterSwaps,
    BatchIntake,
    KeepAlive,
    PromptLength,
    RecordPublisher,
)
from services.generator.pipeline import search_prompts
from services.reward.client import RewardServiceError
from services.runtime.prompts import PromptStreams, WorkItem

logger = logging.getLogger(__name__)


@dataclass
class GeneratorParts:
    """What the loop works with: the prompt streams, the engine, R_I, and optionally the
    adapter slot (hot-reload) and a probe that tells whether the reward service is back."""

    streams: PromptStreams
    engine: VLMEngine
    relevance: Relevance
    slot: AdapterSlot | None = None
    reward_probe: Callable[[], Any] | None = None


@dataclass(frozen=True)
class GeneratorOptions:
    """This replica: where images are, its consumer name, and its batch."""

    image_root: Path
    consumer: str
    batch_size: int = 8  # prompts claimed and searched together, at most
    retry_after_s: float = 2.0  # wait between probes while the reward service is down
    kv_budget_bytes: int | None = None  # KV bytes a batch may hold (None: batch_size alone)
    max_prompt_tokens: int = 0  # a prompt past it fails alone; 0: the model's context


class GeneratorLoop:
    def __init__(self, parts: GeneratorParts, config: CSRConfig, options: GeneratorOptions):
        self.streams, self.engine, self.relevance = parts.streams, parts.engine, parts.relevance
        self.slot, self.reward_probe = parts.slot, parts.reward_probe
        self.config, self.options = config, options
        self.healthy = True
        self.metrics = GeneratorMetrics()
        self.swaps = AdapterSwaps(parts.slot, self._swap_model)
        self.publisher = RecordPublisher(self.streams, self.metrics)
        length = PromptLength.of(
            getattr(parts.engine, "model", None),
            getattr(parts.engine, "processor", None),
            options.max_prompt_tokens,
        )
        self.intake = BatchIntake(self.streams, Path(options.image_root), self.publisher, length)

    # -- what it has done, and what serves ----------------------------------------------------
    @property
    def adapter_version(self) -> str:
        return self.swaps.version

    @property
    def published(self) -> int:
        return self.publisher.published

    @property
    def repeats(self) -> int:
        return self.publisher.repeats

    @property
    def no_pairs(self) -> int:
        return self.publisher.no_pairs

    def request_adapter(self, directory: str, version: str | None = None) -> Future:
        """Ask for an adapter swap; it happens between batches (AdapterSwaps.request)."""
        return self.swaps.request(directory, version)

    def close(self) -> None:
        self.swaps.close()

    def _swap_model(self, model: object) -> None:
        self.engine.model = model

    # -- one round ------------------------------------------------------------------------------
    def run_once(self, block_ms: int = 1000) -> int:
        """Claim up to batch_size prompts, search them together, publish; returns how many.
        A requested adapter swap happens first, so no prompt sees two adapters."""
        self.swaps.apply()
        if not self.healthy and not self._reward_is_back():
            time.sleep(self.options.retry_after_s)
            return 0
        items = self.streams.claim(self.options.consumer, self.options.batch_size, block_ms)
        groups: dict[tuple[int, str, str], list[WorkItem]] = defaultdict(list)
        for item in items:
            groups[(item.iteration, item.adapter, item.adapter_version)].append(item)
        left = 0
        with KeepAlive(self.streams, self.options.consumer, items):  # every group, while any runs
            try:
                for (iteration, adapter, version), group in sorted(groups.items()):
                    self.swaps.serve(adapter, version)
                    left += self._run_group(iteration, group)
            except RewardServiceError as e:
                # Nothing of this batch was acknowledged: it stays pending and is claimed again.
                self.healthy = False
                logger.error(
                    "reward service unavailable, taking no prompts until it is back: %s", e
                )
                return 0
            except Exception:
                logger.exception(
                    "batch of %d prompts failed; left pending for redelivery", len(items)
                )
                return 0
        return len(items) - left

    def _run_group(self, iteration: int, group: list[WorkItem]) -> int:
        """Search and publish a group; if it fails, each prompt alone, so that one bad prompt
        does not hold back (and use up the deliveries of) the others. Returns how many were
        left pending."""
        try:
            self._search_and_publish(iteration, group)
            return 0
        except RewardServiceError:
            raise
        except Exception:
            logger.exception("batch of %d prompts failed; searching them one by one", len(group))
        left = 0
        for item in group if len(group) > 1 else ():
            try:
                self._search_and_publish(iteration, [item])
            except RewardServiceError:
                raise
            except Exception:
                logger.exception("prompt %s failed; left pending for redelivery", item.prompt_id)
                left += 1
        return left if len(group) > 1 else 1

    def _reward_is_back(self) -> bool:
        try:
            if self.reward_probe is not None:
                self.reward_probe()
        except RewardServiceError:
            return False
        logger.info("reward service is back; taking prompts again")
        self.healthy = True
        return True

    def _search_and_publish(self, iteration: int, items: list[WorkItem]) -> None:
        ready, images = self.intake.read(items)
        for batch in self._within_budget(ready, images):
            self._search_batch(iteration, batch, images)

    def _path(self, item: WorkItem) -> str:
        return str(Path(self.options.image_root) / item.image)

    def _within_budget(
        self, items: list[WorkItem], images: dict[str, Image.Image]
    ) -> list[list[WorkItem]]:
        """The items in batches whose search fits the KV budget, in order; an item that alone
        does not fit is failed with the reason."""
        budget = self.options.kv_budget_bytes
        if budget is None or not items:
            return [items] if items else []
        batches: list[list[WorkItem]] = []
        batch: list[WorkItem] = []
        lengths: list[int] = []
        for item in items:
            length = self.engine.prompt_length(item.prompt, images[self._path(item)])
            alone = self.engine.search_kv_bytes([length])
            if alone > budget:
                self.publisher.failed(
                    item,
                    f"its search needs {alone / 2**30:.3f} GiB of KV cache ({length} prompt "
                    f"tokens), more than the budget CSR_GENERATOR_KV_BUDGET_GB="
                    f"{budget / 2**30:.3f}: raise it, or shorten the prompt or the image",
                )
                continue
            if batch and self.engine.search_kv_bytes([*lengths, length]) > budget:
                batches.append(batch)
                batch, lengths = [], []
            batch.append(item)
            lengths.append(length)
        return [*batches, batch] if batch else batches

    def _search_batch(
        self, iteration: int, items: list[WorkItem], images: dict[str, Image.Image]
    ) -> None:
        """Search and publish one batch; out of device memory, each half alone."""
        try:
            outcomes = self._search(iteration, items, images)
        except torch.OutOfMemoryError:
            if len(items) == 1:
                raise
            outcomes = None  # retried below, once the failed search's tensors are gone
        finally:
            self.engine.free_memory()
        if outcomes is None:
            half = len(items) // 2
            logger.warning(
                "out of device memory searching %d prompts together; searching %d and %d",
                len(items),
                half,
                len(items) - half,
            )
            self._search_batch(iteration, items[:half], images)
            self._search_batch(iteration, items[half:], images)
            return
        for item, outcome in zip(items, outcomes):
            self.publisher.publish(item, outcome)

    def _search(self, iteration: int, items: list[WorkItem], images: dict[str, Image.Image]):
        requests = [SearchRequest(item.prompt_id, item.prompt, self._path(item)) for item in items]
        rows_before = self.engine.step_rows
        with self.metrics.batch_seconds.time():
            outcomes = search_prompts(
                requests,
                self.engine,
                self.relevance,
                self.config,
                images.__getitem__,
                iteration,
                self.adapter_version,
            )
        self.metrics.tokens.inc(self.engine.step_rows - rows_before)
        self.metrics.prompts.inc(len(items))
        return outcomes
