"""A reward-service client: round-robin over workers, retries, and the image-hash protocol.

Owns the client side of the contract in proto/csr_api/v1/reward.proto: an image's bytes are sent
to a worker once, then named by SHA-256; a worker that does not hold it (another replica, or
one restarted) answers `csr-error: unknown-image` and gets the bytes. UNAVAILABLE (a worker
down or restarting) and a full queue are retried with exponential backoff, so a restart of
one worker behind a round-robin target loses no call.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from csr_api.v1 import reward_pb2, reward_pb2_grpc

logger = logging.getLogger(__name__)

# Score is idempotent, so a call a worker dropped is safe to repeat: UNAVAILABLE (a worker down,
# restarting or stopping) and CANCELLED (this client never cancels its own calls, so that one
# comes from a worker that cut in-flight calls at the end of its shutdown grace).
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class RewardServiceError(RuntimeError):
    """The reward service refused a call or stayed unreachable; the message says which."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


def _error_kind(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "csr-error":
            return value
    return ""


class RewardClient:
    """Thread-safe. `target` is any gRPC target: 'host:port', 'dns:///reward:50051' (all the
    addresses a name resolves to), or 'ipv4:127.0.0.1:5001,127.0.0.1:5002'."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 8,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        max_sentences_per_call: int = 256,
    ):
        options = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.enable_retries", 0),
        ]  # retries are ours, visible and bounded
        self._channel = grpc.insecure_channel(target, options=options)
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout, self.retries, self.backoff, self.max_backoff = (
            timeout,
            retries,
            backoff,
            max_backoff,
        )
        self.max_sentences_per_call = max_sentences_per_call  # the workers' per-request limit
        self._sent: set[str] = set()
        self._files: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        self.target = target
        self.relevance = _Relevance(self)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request):
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata)
            except grpc.RpcError as e:
                overloaded = _error_kind(e) == "overloaded"
                if (e.code() not in _RETRYABLE and not overloaded) or attempt == self.retries:
                    raise
                logger.warning(
                    "reward call failed (%s: %s); retry %d in %.2fs",
                    e.code().name,
                    e.details(),
                    attempt + 1,
                    delay,
                )
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    def score(self, image: bytes, sentences: Sequence[str]) -> list[reward_pb2.SentenceScore]:
        """Scores in request order, split into calls the workers accept. Sends the image
        bytes only when a worker needs them."""
        step = self.max_sentences_per_call
        sentences = list(sentences)
        if len(sentences) <= step:
            return self._score_once(image, sentences)
        return [
            score
            for start in range(0, len(sentences), step)
            for score in self._score_once(image, sentences[start : start + step])
        ]

    def _score_once(self, image: bytes, sentences: list[str]) -> list[reward_pb2.SentenceScore]:
        sha = hashlib.sha256(image).hexdigest()
        with self._lock:
            known = sha in self._sent
        try:
            if known:
                try:
                    return list(
                        self._call(
                            self._stub.Score,
                            reward_pb2.ScoreRequest(image_sha256=sha, sentences=list(sentences)),
                        ).scores
                    )
                except grpc.RpcError as e:
                    if _error_kind(e) != "unknown-image":
                        raise
            response = self._call(
                self._stub.Score,
                reward_pb2.ScoreRequest(image_bytes=image, sentences=list(sentences)),
            )
        except grpc.RpcError as e:
            raise RewardServiceError(
                f"reward service at {self.target}: {e.code().name}: {e.details()}", e.code()
            ) from e
        with self._lock:
            self._sent.add(sha)
        return list(response.scores)

    def score_batch(
        self, items: Sequence[tuple[bytes, Sequence[str]]]
    ) -> list[list[reward_pb2.SentenceScore]]:
        """Scores of several (image bytes, sentences) items, in order, in as few ScoreBatch
        calls as the per-call sentence limit allows (the worker batches each call's sentences
        into one forward). Images a worker has seen go by hash; on unknown-image the call is
        repeated with bytes."""
        items = [(image, list(sentences)) for image, sentences in items]
        out: list[list[reward_pb2.SentenceScore]] = [[] for _ in items]
        chunk: list[int] = []
        for index, (_, sentences) in enumerate(items):
            if len(sentences) > self.max_sentences_per_call:
                out[index] = self.score(*items[index])  # split across calls by score()
                continue
            if (
                chunk
                and sum(len(items[i][1]) for i in chunk) + len(sentences)
                > self.max_sentences_per_call
            ):
                self._batch_once(items, chunk, out)
                chunk = []
            chunk.append(index)
        if chunk:
            self._batch_once(items, chunk, out)
        return out

    def _batch_once(self, items, chunk: list[int], out) -> None:
        hashes = [hashlib.sha256(items[i][0]).hexdigest() for i in chunk]
        with self._lock:
            known = [sha in self._sent for sha in hashes]

        def request(by_hash: list[bool]):
            return reward_pb2.ScoreBatchRequest(
                requests=[
                    reward_pb2.ScoreRequest(image_sha256=sha, sentences=items[i][1])
                    if use_hash
                    else reward_pb2.ScoreRequest(image_bytes=items[i][0], sentences=items[i][1])
                    for i, sha, use_hash in zip(chunk, hashes, by_hash)
                ]
            )

        try:
            try:
                response = self._call(self._stub.ScoreBatch, request(known))
            except grpc.RpcError as e:
                if not any(known) or _error_kind(e) != "unknown-image":
                    raise
                response = self._call(self._stub.ScoreBatch, request([False] * len(chunk)))
        except grpc.RpcError as e:
            raise RewardServiceError(
                f"reward service at {self.target}: {e.code().name}: {e.details()}", e.code()
            ) from e
        with self._lock:
            self._sent.update(hashes)
        for i, answer in zip(chunk, response.responses):
            out[i] = list(answer.scores)

    def _read(self, path: str) -> bytes:
        file = Path(path)
        try:
            mtime = file.stat().st_mtime
        except OSError as e:
            raise RewardServiceError(f"cannot read image {path!r}: {e}") from e
        with self._lock:
            cached = self._files.get(path)
        if cached is None or cached[0] != mtime:
            cached = (mtime, file.read_bytes())
            with self._lock:
                if len(self._files) >= 16:
                    self._files.clear()
                self._files[path] = cached
        return cached[1]

    def info(self) -> reward_pb2.InfoResponse:
        try:
            return self._call(self._stub.Info, reward_pb2.InfoRequest())
        except grpc.RpcError as e:
            raise RewardServiceError(
                f"reward service at {self.target}: {e.code().name}: {e.details()}", e.code()
            ) from e


class _Relevance:
    """The core's `relevance` callable for image files, with `many` for a whole search step:
    every prompt's sentences go in one ScoreBatch call, encoded by a worker in one forward."""

    def __init__(self, client: RewardClient):
        self._client = client

    def __call__(self, image_ref: str, sentences: Sequence[str]) -> list[float]:
        """R_I for sentences about the image file image_ref."""
        client = self._client
        return [s.relevance for s in client.score(client._read(image_ref), sentences)]

    def many(self, queries: Sequence[tuple[str, Sequence[str]]]) -> list[list[float]]:
        """R_I for several (image file, sentences) queries, in order, in one ScoreBatch call
        (more only past the per-call sentence limit)."""
        client = self._client
        scores = client.score_batch([(client._read(ref), s) for ref, s in queries])
        return [[s.relevance for s in own] for own in scores]
