"""The reward worker's logic: validate, decode and cache the image, batch the sentences, score.

Owns everything both APIs share, so the gRPC servicer and the HTTP routes only convert.
The formula R_I = max(100 cos, 0) is the core's (csr.rewards.relevance_score).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
from concurrent.futures import Executor
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from csr.rewards import relevance_score
from services.reward.batcher import TextBatcher
from services.reward.cache import EmbeddingCache
from services.reward.metrics import RewardMetrics
from services.reward.models import ClipBackend
from services.reward.settings import RewardSettings

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadRequest(ValueError):
    """Input the worker refuses; the message names the problem and the fix."""

    kind = "invalid-argument"


class UnknownImage(BadRequest):
    kind = "unknown-image"


class TooLarge(BadRequest):
    """Input past one of the worker's size limits (image bytes or pixels, sentences per
    request, characters per sentence): HTTP 413, gRPC INVALID_ARGUMENT."""

    kind = "too-large"


@dataclass(frozen=True)
class Score:
    relevance: float
    cosine: float
    truncated: bool


@dataclass(frozen=True)
class ScoreResult:
    image_sha256: str
    scores: list[Score]


def row_cosines(texts: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Each row of `texts` (n, d) dotted with `image` (d,), row by row: a matrix-vector
    product's float sums depend on n, this one's do not."""
    return (texts * image).sum(-1)


class Scorer:
    def __init__(
        self,
        backend: ClipBackend,
        settings: RewardSettings,
        executor: Executor,
        metrics: RewardMetrics,
    ):
        self.backend, self.settings, self.metrics = backend, settings, metrics
        self._executor = executor
        self.cache = EmbeddingCache(settings.cache_bytes)
        self._inflight: dict[str, asyncio.Future] = {}
        backend.pad_to_context = settings.fixed_shapes
        self.batcher = TextBatcher(
            self._encode_texts,
            executor,
            settings.max_batch_size,
            settings.max_wait_ms / 1000.0,
            settings.max_queue_sentences,
            metrics,
            fixed_shapes=settings.fixed_shapes,
        )

    def _encode_texts(self, texts: list[str]) -> list[tuple[torch.Tensor, bool]]:
        embeddings, truncated = self.backend.encode_texts_flagged(texts)
        return list(zip(embeddings, truncated))

    def check_sentences(self, sentences: list[str]) -> None:
        limit = self.settings.max_sentences_per_request
        if not sentences:
            raise BadRequest("no sentences: send 1 or more sentences to score")
        if len(sentences) > limit:
            raise TooLarge(
                f"{len(sentences)} sentences in one request; the limit is {limit}: "
                "split the request"
            )
        for i, sentence in enumerate(sentences):
            if not sentence.strip():
                raise BadRequest(f"sentence {i} is empty or blank: send text to score")
            if len(sentence) > self.settings.max_sentence_chars:
                raise TooLarge(
                    f"sentence {i} has {len(sentence)} characters; the limit is "
                    f"{self.settings.max_sentence_chars}"
                )

    async def score(
        self, image_bytes: bytes | None, image_sha256: str | None, sentences: list[str]
    ) -> ScoreResult:
        self.check_sentences(sentences)
        sha, image = await self._image_embedding(image_bytes, image_sha256)
        encoded = await self.batcher.submit(sentences)
        self.metrics.sentences.inc(len(sentences))
        cosines = row_cosines(torch.stack([emb for emb, _ in encoded]), image)
        scores = [
            Score(relevance_score(c), c, truncated)
            for c, (_, truncated) in zip(cosines.clamp(-1.0, 1.0).tolist(), encoded)
        ]
        return ScoreResult(sha, scores)

    async def _image_embedding(
        self, image_bytes: bytes | None, image_sha256: str | None
    ) -> tuple[str, torch.Tensor]:
        if image_bytes is None:
            return self._cached_image(image_sha256)
        if len(image_bytes) == 0:
            raise BadRequest("the image is empty (0 bytes): send an encoded image file")
        if len(image_bytes) > self.settings.max_image_bytes:
            raise TooLarge(
                f"the image has {len(image_bytes)} bytes; the limit is "
                f"{self.settings.max_image_bytes}: send a smaller image"
            )
        sha = hashlib.sha256(image_bytes).hexdigest()
        cached = self.cache.get(sha)
        if cached is not None:
            self.metrics.cache.labels("hit").inc()
            return sha, cached
        self.metrics.cache.labels("miss").inc()
        pending = self._inflight.get(sha)
        if pending is None:  # first request for this image: encode it once for everyone
            pending = asyncio.get_running_loop().run_in_executor(
                self._executor, self._encode_image, image_bytes
            )
            self._inflight[sha] = pending
            pending.add_done_callback(lambda done: self._image_done(sha, done))
        return sha, await asyncio.shield(pending)

    def _image_done(self, sha: str, done: asyncio.Future) -> None:
        # Cache before forgetting the in-flight encode: a request arriving in between finds
        # one or the other, so the image is never encoded twice.
        if not done.cancelled() and done.exception() is None:
            self.cache.put(sha, done.result())
        self._inflight.pop(sha, None)

    def _cached_image(self, image_sha256: str | None) -> tuple[str, torch.Tensor]:
        if not image_sha256:
            raise BadRequest(
                "no image: send image bytes, or the image_sha256 of an image sent before"
            )
        if not _SHA256.fullmatch(image_sha256):
            raise BadRequest(
                f"image_sha256 {image_sha256[:80]!r} is not 64 lower-case hex characters"
            )
        cached = self.cache.get(image_sha256)
        self.metrics.cache.labels("hit" if cached is not None else "miss").inc()
        if cached is None:
            raise UnknownImage(
                f"this worker does not hold image {image_sha256}: send the image bytes"
            )
        return image_sha256, cached

    def _encode_image(self, image_bytes: bytes) -> torch.Tensor:
        return self.backend.encode_images([self._decode(image_bytes)])[0]

    def _decode(self, image_bytes: bytes) -> Image.Image:
        try:
            with Image.open(io.BytesIO(image_bytes)) as image:
                width, height = image.size
                if width * height > self.settings.max_image_pixels:
                    raise TooLarge(
                        f"the image is {width}x{height} pixels; the limit is "
                        f"{self.settings.max_image_pixels} pixels"
                    )
                if width == 0 or height == 0:
                    raise BadRequest("the image has no pixels")
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            if isinstance(e, BadRequest):
                raise
            if isinstance(e, Image.DecompressionBombError):  # past Pillow's own pixel limit
                raise TooLarge(
                    f"the image has too many pixels ({e}); the limit is "
                    f"{self.settings.max_image_pixels} pixels"
                ) from e
            raise BadRequest(
                f"the image bytes are not a decodable image ({e}): send a PNG, JPEG "
                "or other image file"
            ) from e
