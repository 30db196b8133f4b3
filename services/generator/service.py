"""The generator's work loop: claim prompts from Redis, search them, publish their pairs.

Owns the order of operations that makes a crash safe: an item is acknowledged only together
with its published record (csr.streams.PromptStreams.publish), after the search finished. If
the search fails (the reward service is down, say), nothing is acknowledged: the items stay
pending and are claimed again later, by this replica or another. A prompt whose image cannot
be read is failed on its own (PromptStreams.fail) so it does not hold back its batch, and
while a batch runs its items' claims are kept alive so no other replica takes them over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from PIL import Image

from csr.config import CSRConfig
from csr.search import Relevance, SearchRequest
from csr.selection import NoPair
from services.generator.adapter_slot import AdapterSlot
from services.generator.engine import VLMEngine
from services.generator.observe import GeneratorMetrics
from services.generator.pipeline import search_prompts
from services.reward.client import RewardServiceError
from services.runtime.adapters import AdapterError
from services.runtime.prompts import PromptStreams, WorkItem
from services.runtime.vlm import load_rgb

logger = logging.getLogger(__name__)


class GeneratorLoop:
    def __init__(
        self,
        streams: PromptStreams,
        engine: VLMEngine,
        relevance: Relevance,
        config: CSRConfig,
        image_root: str,
        consumer: str,
        batch_size: int = 8,
        adapter_version: str = "base",
        slot: AdapterSlot | None = None,
        reward_probe=None,
        retry_after_s: float = 2.0,
    ):
        self.streams, self.engine, self.relevance, self.config = streams, engine, relevance, config
        self.image_root, self.consumer, self.batch_size = Path(image_root), consumer, batch_size
        self.adapter_version = adapter_version
        self.published = self.repeats = self.no_pairs = 0
        self.slot = slot
        self.reward_probe, self.retry_after_s = reward_probe, retry_after_s
        self.healthy = True
        self.metrics = GeneratorMetrics()
        self._swaps: list[tuple[str, str | None, Future]] = []
        self._swaps_lock = threading.Lock()

    def request_adapter(self, directory: str, version: str | None = None) -> Future:
        """Ask for an adapter swap; it happens between prompts, and the future tells how it
        went (its version, or the AdapterError that kept the old adapter serving)."""
        done: Future = Future()
        if self.slot is None:
            done.set_exception(AdapterError("this generator was started without an adapter slot"))
            return done
        with self._swaps_lock:
            self._swaps.append((directory, version, done))
        return done

    def close(self) -> None:
        """Refuse the swaps still queued (their callers, e.g. an admin RPC, stop waiting): the
        loop takes no more batches, so they would never happen."""
        with self._swaps_lock:
            swaps, self._swaps = self._swaps, []
        for directory, _, done in swaps:
            done.set_exception(
                AdapterError(f"generator stopping; adapter {directory} was not loaded")
            )

    def _apply_swaps(self) -> None:
        with self._swaps_lock:
            swaps, self._swaps = self._swaps, []
        for directory, version, done in swaps:
            try:
                self.adapter_version = self.slot.load(directory, version)
                self.engine.model = self.slot.model
                done.set_result(self.adapter_version)
            except AdapterError as e:
                logger.error("adapter refused, still serving %s: %s", self.adapter_version, e)
                done.set_exception(e)
            except Exception as e:  # I/O or PEFT faults: refused too, and the loop goes on
                logger.exception(
                    "adapter %s failed to load, still serving %s", directory, self.adapter_version
                )
                done.set_exception(AdapterError(f"adapter {directory} failed to load: {e!r}"))

    def run_once(self, block_ms: int = 1000) -> int:
        """Claim up to batch_size prompts, search them together, publish; returns how many.
        A requested adapter swap happens first, so no prompt sees two adapters."""
        self._apply_swaps()
        if not self.healthy and not self._reward_is_back():
            time.sleep(self.retry_after_s)
            return 0
        items = self.streams.claim(self.consumer, self.batch_size, block_ms)
        groups: dict[tuple[int, str, str], list[WorkItem]] = defaultdict(list)
        for item in items:
            groups[(item.iteration, item.adapter, item.adapter_version)].append(item)
        left = 0
        with _KeepAlive(self.streams, self.consumer, items):  # every group, while any runs
            try:
                for (iteration, adapter, version), group in sorted(groups.items()):
                    self._serve_adapter(adapter, version)
                    left += self._run_group(iteration, group)
            except RewardServiceError as e:
                # Nothing of this batch was acknowledged: it stays pending and is claimed again.
                self.healthy = False
                logger.error(
                    "reward service unavailable, taking no prompts until it is back: %s", e
                )
                return 0
            except Exception:  # e.g. an adapter that will not load: the batch stays pending
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

    def _serve_adapter(self, adapter: str, version: str) -> None:
        """Items may name the adapter they must be searched with (the trainer queues each
        iteration with the adapter it just published): load it first if another is serving,
        so no pair of the iteration comes from the wrong model, whatever the order in which
        this replica heard the announcement and took the items."""
        if not adapter or version == self.adapter_version:
            return
        done = self.request_adapter(adapter, version or None)
        self._apply_swaps()
        done.result(timeout=0)  # raises the AdapterError: the batch stays pending

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
        images = {}
        ready = []
        for item in items:
            path = str(self.image_root / item.image)
            try:
                images[path] = load_rgb(path)
                ready.append(item)
            except (OSError, ValueError, Image.DecompressionBombError) as e:  # missing,
                # unreadable, not an image, or too many pixels
                logger.error(
                    "prompt %s: cannot read image %s (%s); failed", item.prompt_id, path, e
                )
                self.streams.fail(item, f"cannot read image {path}: {e}")
                self.no_pairs += 1
                self.metrics.no_pair.labels("failed").inc()
        if not ready:
            return
        requests = [
            SearchRequest(item.prompt_id, item.prompt, str(self.image_root / item.image))
            for item in ready
        ]
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
        self.metrics.prompts.inc(len(ready))
        for item, outcome in zip(ready, outcomes):
            self._publish(item, outcome)

    def _publish(self, item: WorkItem, outcome) -> None:
        if outcome.record is not None:  # name the image as the prompt set does: under the root
            outcome = replace(outcome, record=replace(outcome.record, image=item.image))
        if isinstance(outcome.pair, NoPair):
            self.no_pairs += 1
            self.metrics.no_pair.labels(outcome.pair.reason).inc()
            self.streams.publish(item, None, outcome.pair.reason)
        elif self.streams.publish(item, outcome.record):
            self.published += 1
            self.metrics.pairs.inc()
        else:
            self.repeats += 1
            self.metrics.repeats.inc()
            logger.info(
                "prompt %s of iteration %d was published before (redelivered)",
                item.prompt_id,
                outcome.record.iteration,
            )


class _KeepAlive:
    """While a batch runs, reset its items' idle time every third of reclaim_after_ms."""

    def __init__(self, streams: PromptStreams, consumer: str, items: list[WorkItem]):
        self.streams, self.consumer, self.items = streams, consumer, items
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claim-keep-alive", daemon=True)

    def _run(self) -> None:
        interval = max(self.streams.reclaim_after_ms / 3000, 0.01)
        while not self._stop.wait(interval):
            try:
                self.streams.keep_alive(self.consumer, self.items)
            except Exception:  # Redis away for a moment: the next beat tries again
                logger.warning("could not refresh the claims of the running batch", exc_info=True)

    def __enter__(self) -> _KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
