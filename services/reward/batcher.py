"""Dynamic batching of text encodes across concurrent requests.

Owns the queue: sentences from concurrent requests are gathered into one encoder batch of at
most max_batch_size sentences, waiting at most max_wait for it to fill. Past max_queue
queued sentences, new work is refused at once (Overloaded) instead of piling up. A request
whose caller gave up (its future was cancelled, e.g. a passed deadline) is skipped.

With fixed shapes, every encoder call has exactly max_batch_size rows (the last chunk filled
up with copies of its first text, whose results are dropped). Matrix kernels pick their
blocking, and so the order of their float sums, from the shapes they are given; with one
shape a sentence's embedding is the same bits whatever it was batched with, so a search
that sends the same sentences gets the same scores however the requests interleave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from services.reward.metrics import RewardMetrics


class Overloaded(RuntimeError):
    """The queue is full: retry later or add workers."""


class WorkerStopping(RuntimeError):
    """The worker is shutting down: retry on another worker."""


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class TextBatcher:
    """`encode(texts) -> list of per-text results` runs in `executor`, one batch at a time."""

    def __init__(
        self,
        encode: Callable[[list[str]], list[Any]],
        executor: Executor,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        metrics: RewardMetrics,
        fixed_shapes: bool = False,
    ):
        self._encode, self._executor = encode, executor
        self.fixed_shapes = fixed_shapes
        self.max_batch_size, self.max_wait_s, self.max_queue = max_batch_size, max_wait_s, max_queue
        self._metrics = metrics
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._queued = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop batching; every request still waiting is failed with WorkerStopping."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while not self._queue.empty():
            self._fail([self._queue.get_nowait()], WorkerStopping("the reward worker is stopping"))

    @staticmethod
    def _fail(items: list[_Item], error: Exception) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_exception(error)

    async def submit(self, texts: list[str]) -> list[Any]:
        if self._task is None or self._task.done():
            raise WorkerStopping("the reward worker is not accepting work (stopping or stopped)")
        if self._queued + len(texts) > self.max_queue:
            raise Overloaded(
                f"{self._queued} sentences are queued (limit {self.max_queue}); "
                "retry later or add reward workers"
            )
        item = _Item(texts, asyncio.get_running_loop().create_future())
        self._queued += len(texts)
        self._queue.put_nowait(item)
        return await item.future

    async def _gather(self) -> list[_Item]:
        batch = [await self._queue.get()]
        size = len(batch[0].texts)
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
            size += len(batch[-1].texts)
        return batch

    async def _run(self) -> None:
        batch: list[_Item] = []
        try:
            while True:
                batch = await self._gather()
                self._queued -= sum(len(item.texts) for item in batch)
                await self._encode_batch(batch)
                batch = []
        except asyncio.CancelledError:
            self._fail(batch, WorkerStopping("the reward worker is stopping"))
            raise

    async def _encode_batch(self, batch: list[_Item]) -> None:
        loop = asyncio.get_running_loop()
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        texts = [text for item in live for text in item.texts]
        now = time.perf_counter()
        for item in live:
            self._metrics.queue_wait.observe(now - item.enqueued)
        try:
            results = await loop.run_in_executor(self._executor, self._encode_chunks, texts)
        except Exception as e:  # noqa: BLE001 (the model failed: every waiting request learns why)
            self._fail(live, e)
            return
        start = 0
        for item in live:
            if not item.future.done():
                item.future.set_result(results[start : start + len(item.texts)])
            start += len(item.texts)

    def _encode_chunks(self, texts: list[str]) -> list[Any]:
        for start in range(0, len(texts), self.max_batch_size):
            self._metrics.batch_size.observe(len(texts[start : start + self.max_batch_size]))
        return encode_in_chunks(self._encode, texts, self.max_batch_size, self.fixed_shapes)


def encode_in_chunks(
    encode: Callable[[list[str]], list[Any]], texts: list[str], size: int, fixed: bool
) -> list[Any]:
    """`encode` over chunks of at most `size` texts, results in order. With `fixed`, every
    call gets exactly `size` texts: a short chunk is filled up with copies of its first text,
    whose results are dropped (fixed shapes, see the module docstring)."""
    out: list[Any] = []
    for start in range(0, len(texts), size):
        chunk = texts[start : start + size]
        filler = [chunk[0]] * (size - len(chunk)) if fixed else []
        out.extend(list(encode(chunk + filler))[: len(chunk)])
    return out
