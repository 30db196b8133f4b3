"""The generator loop's collaborators, each with one job.

- AdapterSwaps: adapter swaps asked for (admin API, pub/sub, a work item's adapter), done
  between batches so that no prompt sees two adapters.
- BatchIntake: reads a batch's images and fails, alone, each prompt that cannot be searched
  (its image outside the root or unreadable, the prompt empty or too long: PromptLength).
- RecordPublisher: publishes each prompt's outcome (pair or no-pair) and counts it.
- KeepAlive: while a batch runs, keeps its items' claims fresh.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

from PIL import Image

from csr.pairs import PromptOutcome
from csr.selection import NoPair
from services.generator.adapter_slot import AdapterSlot
from services.generator.observe import GeneratorMetrics
from services.runtime.adapters import AdapterError
from services.runtime.prompt_sets import ImagePathError, image_under_root
from services.runtime.prompts import PromptStreams, WorkItem
from services.runtime.vlm import chat_prompt, load_rgb

logger = logging.getLogger(__name__)


class AdapterSwaps:
    """The serving adapter's version, and the swaps waiting for the next gap."""

    def __init__(self, slot: AdapterSlot | None, on_swap: Callable[[object], None]):
        self.slot, self.on_swap = slot, on_swap
        self.version = slot.version if slot is not None else "base"
        self._queued: list[tuple[str, str | None, Future]] = []
        self._lock = threading.Lock()

    def request(self, directory: str, version: str | None = None) -> Future:
        """Ask for a swap; the future tells how it went (the version now serving, or the
        AdapterError that kept the old adapter serving)."""
        done: Future = Future()
        if self.slot is None:
            done.set_exception(AdapterError("this generator was started without an adapter slot"))
            return done
        with self._lock:
            self._queued.append((directory, version, done))
        return done

    def apply(self) -> None:
        """Make the queued swaps, in order; a refused one leaves the old adapter serving."""
        with self._lock:
            queued, self._queued = self._queued, []
        for directory, version, done in queued:
            try:
                self.version = self.slot.load(directory, version)
                self.on_swap(self.slot.model)
                done.set_result(self.version)
            except AdapterError as e:
                logger.error("adapter refused, still serving %s: %s", self.version, e)
                done.set_exception(e)
            except Exception as e:
                logger.exception(
                    "adapter %s failed to load, still serving %s", directory, self.version
                )
                done.set_exception(AdapterError(f"adapter {directory} failed to load: {e!r}"))

    def serve(self, adapter: str, version: str) -> None:
        """Items may name the adapter they must be searched with (the trainer queues each
        iteration with the adapter it just published): load it first if another is serving,
        so no pair of the iteration comes from the wrong model, whatever the order in which
        this replica heard the announcement and took the items. Raises the AdapterError."""
        if not adapter or version == self.version:
            return
        done = self.request(adapter, version or None)
        self.apply()
        done.result(timeout=0)

    def close(self) -> None:
        """Refuse the swaps still queued (their callers, e.g. an admin RPC, stop waiting): the
        loop takes no more batches, so they would never happen."""
        with self._lock:
            queued, self._queued = self._queued, []
        for directory, _, done in queued:
            done.set_exception(
                AdapterError(f"generator stopping; adapter {directory} was not loaded")
            )


class PromptLength:
    """Counts a prompt's tokens the way the engine encodes it (the chat template of
    services.runtime.vlm.chat_prompt, the image's tokens expanded by the processor), against
    a limit: the model's context (max_position_embeddings of its text config) or a smaller
    configured cap. A prompt past it would make one batch's encoding as long as the prompt,
    so it is refused before it reaches the model."""

    def __init__(self, processor, limit: int | None, source: str):
        self.processor, self.limit, self.source = processor, limit, source

    @classmethod
    def of(cls, model, processor, cap: int = 0) -> PromptLength:
        config = getattr(model, "config", None)
        text = getattr(config, "text_config", None) or config
        context = getattr(text, "max_position_embeddings", None)
        if cap and (not context or cap < context):
            return cls(processor, cap, "CSR_GENERATOR_MAX_PROMPT_TOKENS")
        return cls(processor, context, "the model's context")

    def problem(self, prompt: str, image: Image.Image) -> str | None:
        """Why the prompt cannot be encoded (too long, or the processor refuses it), or None."""
        if self.limit is None or self.processor is None:
            return None
        text = chat_prompt(self.processor, prompt)
        try:  # the text alone is a lower bound: a very long prompt never meets the image
            count = len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
            if count <= self.limit:
                encoded = self.processor(images=[image], text=[text], add_special_tokens=False)
                count = len(encoded["input_ids"][0])
        except (ValueError, TypeError, IndexError) as e:  # e.g. image markers in the text
            return f"the processor cannot encode the prompt: {e}"
        if count > self.limit:
            return (
                f"the prompt is {count} tokens (image tokens included), past the limit of "
                f"{self.limit} ({self.source}): shorten it"
            )
        return None


class BatchIntake:
    """A batch's images, read once; a prompt that cannot be searched is failed on its own
    (PromptStreams.fail) so that it does not hold back its batch: an image name that leaves
    the image root, an image that cannot be read, an empty prompt, or a prompt too long for
    the model (PromptLength)."""

    def __init__(
        self,
        streams: PromptStreams,
        image_root: Path,
        publisher: RecordPublisher,
        length: PromptLength | None = None,
    ):
        self.streams, self.image_root, self.publisher = streams, image_root, publisher
        self.length = length

    def read(self, items: list[WorkItem]) -> tuple[list[WorkItem], dict[str, Image.Image]]:
        """The items that can be searched, and their images by path."""
        images: dict[str, Image.Image] = {}
        ready = []
        for item in items:
            reason = self._problem(item, images)
            if reason is None:
                ready.append(item)
            else:
                self.publisher.failed(item, reason)
        return ready, images

    def _problem(self, item: WorkItem, images: dict[str, Image.Image]) -> str | None:
        try:
            path = str(image_under_root(self.image_root, item.image))
        except ImagePathError as e:
            return str(e)
        if not item.prompt.strip():
            return "the prompt is empty: give the instruction to answer about the image"
        try:
            image = images[path] if path in images else load_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:  # missing,
            # unreadable, not an image, or too many pixels
            return f"cannot read image {path}: {e}"
        reason = self.length.problem(item.prompt, image) if self.length is not None else None
        if reason is None:
            images[path] = image
        return reason


class RecordPublisher:
    """Each prompt's outcome into the streams, and the counts of what happened."""

    def __init__(self, streams: PromptStreams, metrics: GeneratorMetrics):
        self.streams, self.metrics = streams, metrics
        self.published = self.repeats = self.no_pairs = 0

    def publish(self, item: WorkItem, outcome: PromptOutcome) -> None:
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
                item.iteration,
            )

    def failed(self, item: WorkItem, reason: str) -> None:
        """A prompt that cannot be searched: failed with its reason, counted as a no-pair."""
        logger.error("prompt %s failed: %s", item.prompt_id, reason)
        self.streams.fail(item, reason)
        self.no_pairs += 1
        self.metrics.no_pair.labels("failed").inc()


class KeepAlive:
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
            except Exception:
                logger.warning("could not refresh the claims of the running batch", exc_info=True)

    def __enter__(self) -> KeepAlive:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
