"""Dynamic batching of text encodes across concurrent requests.

Owns the queue: sentences from concurrent requests are gathered, in arrival order, into
encoder batches of at most max_batch_size sentences; a batch waits for more only while its
oldest sentence has waited less than max_wait. A request that does not fit in a batch's room
is split: its first sentences fill the batch, the rest open the next one, so a batch is only
ever short when nothing else is queued. Past max_queue queued sentences, new work is refused
at once (Overloaded) instead of piling up. A request whose caller gave up (its future was
cancelled, e.g. a passed deadline) is skipped.

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
    """One request: its texts, the future its caller awaits, and the results so far."""

    texts: list[str]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    results: list[Any] = field(init=False)
    pending: int = field(init=False)  # texts not encoded yet

    def __post_init__(self) -> None:
        self.results = [None] * len(self.texts)
        self.pending = len(self.texts)


@dataclass
class _Piece:
    """texts[start:stop] of one request: what a batch takes of it."""

    item: _Item
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def split(self, size: int) -> tuple[_Piece, _Piece]:
        return (
            _Piece(self.item, self.start, self.start + size),
            _Piece(self.item, self.start + size, self.stop),
        )

    def texts(self) -> list[str]:
        return self.item.texts[self.start : self.stop]

    def deliver(self, results: list[Any]) -> None:
        item = self.item
        item.results[self.start : self.stop] = results
        item.pending -= len(self)
        if item.pending == 0 and not item.future.done():
            item.future.set_result(item.results)


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
        self._queue: asyncio.Queue[_Piece] = asyncio.Queue()
        self._carry: _Piece | None = None  # the rest of a request split by the last batch
        self._batch: list[_Piece] = []  # the batch being gathered or encoded
        self._queued = 0
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop batching; every request still waiting is failed with WorkerStopping."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting = [self._carry] if self._carry else []
        self._carry = None
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._fail(waiting, WorkerStopping("the reward worker is stopping"))

    @staticmethod
    def _fail(pieces: list[_Piece], error: Exception) -> None:
        for piece in pieces:
            if not piece.item.future.done():
                piece.item.future.set_exception(error)

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
        self._queue.put_nowait(_Piece(item, 0, len(texts)))
        return await item.future

    async def _next_piece(self, deadline: float | None) -> _Piece | None:
        """The carried-over rest first, then the queue; None once `deadline` has passed."""
        if self._carry is not None:
            piece, self._carry = self._carry, None
            return piece
        if deadline is None:
            return await self._queue.get()
        if not self._queue.empty():
            return self._queue.get_nowait()
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    async def _gather(self) -> list[_Piece]:
        """The next batch: at most max_batch_size texts, in arrival order. It is built in
        self._batch, so that a stop while it waits to fill fails what it took."""
        batch = self._batch = []
        piece = await self._next_piece(None)
        # the oldest sentence's wait counts from its arrival, not from this batch's start
        deadline = piece.item.enqueued + self.max_wait_s
        size = 0
        while piece is not None:
            room = self.max_batch_size - size
            if len(piece) > room:
                piece, self._carry = piece.split(room)
            batch.append(piece)
            size += len(piece)
            if size >= self.max_batch_size:
                break
            piece = await self._next_piece(deadline)
        return batch

    async def _run(self) -> None:
        try:
            while True:
                batch = await self._gather()
                self._queued -= sum(len(piece) for piece in batch)
                await self._encode_batch(batch)
                self._batch = []
        except asyncio.CancelledError:
            self._fail(self._batch, WorkerStopping("the reward worker is stopping"))
            raise

    async def _encode_batch(self, batch: list[_Piece]) -> None:
        loop = asyncio.get_running_loop()
        live = [piece for piece in batch if not piece.item.future.done()]
        if not live:
            return
        texts = [text for piece in live for text in piece.texts()]
        now = time.perf_counter()
        for piece in live:
            self._metrics.queue_wait.observe(now - piece.item.enqueued)
        try:
            results = await loop.run_in_executor(self._executor, self._encode_chunks, texts)
        except Exception as e:  # noqa: BLE001 (the model failed: every waiting request learns why)
            self._fail(live, e)
            return
        start = 0
        for piece in live:
            piece.deliver(results[start : start + len(piece)])
            start += len(piece)

    def _encode_chunks(self, texts: list[str]) -> list[Any]:
        self._metrics.batch_size.observe(len(texts))
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
