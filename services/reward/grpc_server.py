"""The gRPC edge of a reward worker: converts messages, calls the scorer, maps errors.

Also serves gRPC health checking and server reflection (so grpcurl works), and checks the
bearer token when one is configured (health and reflection stay open for probes).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from csr_api.v1 import reward_pb2
from services.reward.batcher import Overloaded, WorkerStopping
from services.reward.scorer import BadRequest, Scorer, TooLarge
from services.reward.settings import RewardSettings

logger = logging.getLogger(__name__)

SERVICE = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name
ERROR_KEY = "csr-error"
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


MAX_BATCH_REQUESTS = 1024


def _response(result) -> reward_pb2.ScoreResponse:
    return reward_pb2.ScoreResponse(
        image_sha256=result.image_sha256,
        scores=[
            reward_pb2.SentenceScore(relevance=s.relevance, cosine=s.cosine, truncated=s.truncated)
            for s in result.scores
        ],
    )


class _Malformed:
    """A request that failed to parse (e.g. invalid UTF-8 in a string field)."""

    def __init__(self, error: Exception):
        self.error = error


def _safe_parser(message_type):
    def parse(data: bytes):
        try:
            return message_type.FromString(data)
        except DecodeError as e:
            return _Malformed(e)

    return parse


class RewardServicer:
    def __init__(self, scorer: Scorer):
        self.scorer = scorer

    async def Score(self, request, context: grpc.aio.ServicerContext):
        async def work():
            return _response(await self._score_one(request))

        return await self._guarded(context, work)

    async def ScoreBatch(self, request, context: grpc.aio.ServicerContext):
        async def work():
            if isinstance(request, _Malformed):
                raise BadRequest(
                    f"the request is not a valid ScoreBatchRequest "
                    f"({request.error}); strings must be valid UTF-8"
                )
            items = list(request.requests)
            if not items:
                raise BadRequest(f"a batch holds 1 to {MAX_BATCH_REQUESTS} requests, not 0")
            if len(items) > MAX_BATCH_REQUESTS:
                raise TooLarge(
                    f"a batch holds 1 to {MAX_BATCH_REQUESTS} requests, not {len(items)}; split it"
                )
            results = await asyncio.gather(
                *(self._score_one(item, f"request {i}: ") for i, item in enumerate(items))
            )
            return reward_pb2.ScoreBatchResponse(responses=[_response(r) for r in results])

        return await self._guarded(context, work)

    async def _score_one(self, request, where: str = ""):
        if isinstance(request, _Malformed):
            raise BadRequest(
                f"the request is not a valid ScoreRequest ({request.error}); "
                "strings must be valid UTF-8"
            )
        which = request.WhichOneof("image")
        try:
            return await self.scorer.score(
                request.image_bytes if which == "image_bytes" else None,
                request.image_sha256 if which == "image_sha256" else None,
                list(request.sentences),
            )
        except BadRequest as e:
            if not where:
                raise
            raise type(e)(f"{where}{e}") from e

    async def _guarded(self, context: grpc.aio.ServicerContext, work):
        """Run work(), mapping the scorer's errors to status codes and counting outcomes."""
        metrics, started = self.scorer.metrics, time.perf_counter()
        outcome = "ok"
        try:
            return await work()
        except BadRequest as e:
            outcome = e.kind
            context.set_trailing_metadata(((ERROR_KEY, e.kind),))
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except Overloaded as e:
            outcome = "overloaded"
            context.set_trailing_metadata(((ERROR_KEY, "overloaded"),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e))
        except WorkerStopping as e:
            outcome = "stopping"
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(e))  # clients retry elsewhere
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as e:  # a model or server fault: logged here, named to the client
            outcome = "internal"
            logger.exception("Score failed")
            context.set_trailing_metadata(((ERROR_KEY, "internal"),))
            await context.abort(grpc.StatusCode.INTERNAL, f"the reward worker failed: {e!r}")
        finally:
            metrics.requests.labels("grpc", outcome).inc()
            metrics.latency.labels("grpc").observe(time.perf_counter() - started)

    async def Info(self, request, context):
        info = self.scorer.backend.info
        return reward_pb2.InfoResponse(
            backend=info.backend,
            model=info.model,
            embedding_dim=info.embedding_dim,
            context_length=info.context_length,
            image_size=info.image_size,
            device=info.device,
        )


def _handler(servicer: RewardServicer) -> grpc.GenericRpcHandler:
    def unary(method, request_type, response_type):
        return grpc.unary_unary_rpc_method_handler(
            method,
            request_deserializer=_safe_parser(request_type),
            response_serializer=response_type.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Score": unary(servicer.Score, reward_pb2.ScoreRequest, reward_pb2.ScoreResponse),
            "ScoreBatch": unary(
                servicer.ScoreBatch, reward_pb2.ScoreBatchRequest, reward_pb2.ScoreBatchResponse
            ),
            "Info": unary(servicer.Info, reward_pb2.InfoRequest, reward_pb2.InfoResponse),
        },
    )


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Requires 'authorization: Bearer <token>' on every rpc but health and reflection."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        async def deny(request, context):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong token: send metadata 'authorization: Bearer <CSR_REWARD_TOKEN>'",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    async def intercept_service(self, continuation, details):
        if details.method.startswith(_OPEN_PREFIXES):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return await continuation(details)
        return self._deny


def create_server(settings: RewardSettings, scorer: Scorer) -> tuple[grpc.aio.Server, int]:
    """Build (not start) the gRPC server on settings.host:grpc_port; port 0 picks a free one."""
    interceptors = [TokenInterceptor(settings.token.get_secret_value())] if settings.token else []
    transport_limit = settings.max_image_bytes + 8 * 1024 * 1024  # image + sentences
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", transport_limit),
            ("grpc.so_reuseport", 0),
        ],
    )
    server.add_generic_rpc_handlers((_handler(RewardServicer(scorer)),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (
            SERVICE,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
    server.health_servicer = health_servicer  # set SERVING once the worker is ready
    return server, port


async def mark_serving(server: grpc.aio.Server, serving: bool) -> None:
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in ("", SERVICE):
        await server.health_servicer.set(name, status)
