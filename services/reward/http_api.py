"""The HTTP edge of a reward worker (FastAPI): direct queries, health, Prometheus metrics.

POST /v1/score takes JSON ({"image_base64" | "image_sha256", "sentences"}) or a multipart
upload (file field "image", repeated form field "sentences"). Errors are JSON
{"error": kind, "detail": message}:
- 400 bad input (malformed JSON or form, JSON nested deeper than the parser's bound, a
  corrupt image, blank sentences, ...);
- 401 a missing or wrong token;
- 413 too large: a body past the transport limit, or an image, a sentence or a count of
  sentences past the worker's limits (error "too-large");
- 429 overloaded; 503 stopping.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from services.reward.batcher import Overloaded, WorkerStopping
from services.reward.scorer import BadRequest, Scorer, TooLarge
from services.runtime.bounded import loads_json

logger = logging.getLogger(__name__)

_SCORE_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["sentences"],
                    "properties": {
                        "image_base64": {"type": "string"},
                        "image_sha256": {"type": "string"},
                        "sentences": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "sentences"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "sentences": {"type": "array", "items": {"type": "string"}},
                    },
                }
            },
        },
    },
}


class SentenceScoreOut(BaseModel):
    relevance: float = Field(description="R_I in [0, 100]: max(100 cos, 0) (Eq. 3).")
    cosine: float = Field(description="Cosine similarity in [-1, 1].")
    truncated: bool = Field(description="The sentence was cut to the model's context length.")


class ScoreOut(BaseModel):
    image_sha256: str = Field(description="Send this instead of the bytes next time.")
    scores: list[SentenceScoreOut]


def _error(status: int, kind: str, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


async def _parse_json(request: Request) -> tuple[bytes | None, str | None, list[str]]:
    try:
        data = loads_json(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # nesting past the bound included
        raise BadRequest(f"the body is not valid UTF-8 JSON ({e})") from e
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object with 'sentences' and an image")
    sentences = data.get("sentences")
    if not isinstance(sentences, list) or not all(isinstance(s, str) for s in sentences):
        raise BadRequest("'sentences' must be a list of strings")
    image_b64, sha = data.get("image_base64"), data.get("image_sha256")
    if image_b64 is not None:
        if not isinstance(image_b64, str):
            raise BadRequest("'image_base64' must be a base64 string")
        try:
            return base64.b64decode(image_b64, validate=True), None, sentences
        except (binascii.Error, ValueError) as e:
            raise BadRequest(f"'image_base64' is not valid base64 ({e})") from e
    if sha is not None and not isinstance(sha, str):
        raise BadRequest("'image_sha256' must be a string")
    return None, sha, sentences


async def _parse_multipart(request: Request) -> tuple[bytes | None, str | None, list[str]]:
    try:
        form = await request.form()
    except HTTPException as e:  # Starlette's refusal of a malformed or oversized form
        kind = TooLarge if "maximum" in str(e.detail).lower() else BadRequest
        raise kind(f"the multipart body cannot be read: {e.detail}") from e
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        raise BadRequest("the multipart body needs a file field 'image'")
    sentences = [s for s in form.getlist("sentences") if isinstance(s, str)]
    return await upload.read(), None, sentences


def create_http_app(scorer: Scorer, token: str | None, ready=lambda: True) -> BodyLimit:
    app = FastAPI(
        title="CSR reward service",
        version="1",
        description="CLIP image-relevance R_I = max(100 cos, 0) for CSR.",
    )
    metrics = scorer.metrics
    body_limit = scorer.settings.max_image_bytes * 4 // 3 + 8 * 1024 * 1024

    def authorised(request: Request) -> bool:
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @app.post(
        "/v1/score",
        response_model=ScoreOut,
        openapi_extra=_SCORE_DOC,
        summary="Score sentences against an image (R_I, cosine, truncation).",
    )
    async def score(request: Request) -> Any:
        started, outcome = time.perf_counter(), "ok"
        try:
            if not authorised(request):
                outcome = "unauthenticated"
                return _error(
                    401,
                    outcome,
                    "missing or wrong token: send 'Authorization: Bearer <CSR_REWARD_TOKEN>'",
                )
            kind = request.headers.get("content-type", "")
            parse = _parse_multipart if kind.startswith("multipart/") else _parse_json
            image, sha, sentences = await parse(request)
            result = await scorer.score(image, sha, sentences)
            return ScoreOut(
                image_sha256=result.image_sha256,
                scores=[
                    SentenceScoreOut(relevance=s.relevance, cosine=s.cosine, truncated=s.truncated)
                    for s in result.scores
                ],
            )
        except BadRequest as e:
            outcome = e.kind
            return _error(413 if isinstance(e, TooLarge) else 400, e.kind, str(e))
        except Overloaded as e:
            outcome = "overloaded"
            return _error(429, outcome, str(e), **{"Retry-After": "1"})
        except WorkerStopping as e:
            outcome = "stopping"
            return _error(503, outcome, str(e), **{"Retry-After": "1"})
        except Exception as e:  # a model or server fault: logged here, named to the client
            outcome = "internal"
            logger.exception("score failed")
            return _error(500, outcome, f"the reward worker failed: {e!r}")
        finally:
            metrics.requests.labels("http", outcome).inc()
            metrics.latency.labels("http").observe(time.perf_counter() - started)

    @app.get("/healthz", summary="200 when the model is loaded and the worker serves.")
    async def healthz() -> Any:
        info = scorer.backend.info
        body = {
            "status": "ok" if ready() else "starting",
            "backend": info.backend,
            "model": info.model,
            "device": info.device,
        }
        return JSONResponse(body, status_code=200 if ready() else 503)

    @app.get("/metrics", summary="Prometheus metrics.")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return BodyLimit(app, body_limit)


class BodyLimit:
    """ASGI wrapper: buffers a request body up to `limit` bytes and answers 413 past it,
    whether or not the client declared a length (chunked bodies included)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    def __getattr__(self, name):  # the wrapped FastAPI app's attributes (openapi, routes, ...)
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                response = _error(413, "too-large", f"the body exceeds {self.limit} bytes")
                return await response(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)
