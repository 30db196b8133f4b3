"""The generator's admin edge: the GeneratorAdmin gRPC API (the Redis pub/sub trigger is
services.runtime.announce.AdapterSubscriber).

It only converts and calls `GeneratorLoop.request_adapter`; the loop swaps between prompts.
A reload that times out on the caller's side stays queued and still happens. `LoadAdapter`
decides which weights the replica serves, so with a token set every admin call needs the
metadata 'authorization: Bearer TOKEN' (UNAUTHENTICATED otherwise); the standard gRPC health
service on the same port stays open for probes.
"""

from __future__ import annotations

import hmac
import logging
import time
from concurrent import futures

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from csr_api.v1 import generator_pb2, generator_pb2_grpc
from services.generator.service import GeneratorLoop
from services.runtime.adapters import AdapterError

logger = logging.getLogger(__name__)


class AdminServicer(generator_pb2_grpc.GeneratorAdminServicer):
    def __init__(self, loop: GeneratorLoop, swap_timeout: float):
        self.loop, self.swap_timeout = loop, swap_timeout

    def LoadAdapter(self, request, context):
        if isinstance(request, DecodeError):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the request is not a valid LoadAdapterRequest ({request}); strings must be "
                "valid UTF-8",
            )
        if not request.path:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "path is empty: give the adapter directory in the shared adapter store",
            )
        started = time.perf_counter()
        pending = self.loop.request_adapter(request.path, request.version or None)
        try:
            version = pending.result(timeout=self.swap_timeout)
        except AdapterError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except futures.TimeoutError:
            context.abort(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"no gap between prompts within {self.swap_timeout}s; the reload stays "
                "queued and happens at the next gap",
            )
        return generator_pb2.LoadAdapterResponse(
            version=version, swap_seconds=time.perf_counter() - started
        )

    def Status(self, request, context):
        loop = self.loop
        return generator_pb2.StatusResponse(
            adapter_version=loop.adapter_version,
            pairs_published=loop.published,
            pairs_repeated=loop.repeats,
            prompts_without_pair=loop.no_pairs,
        )


_SERVICE = generator_pb2.DESCRIPTOR.services_by_name["GeneratorAdmin"].full_name


def _unary(method, request_type) -> grpc.RpcMethodHandler:
    """A handler whose request fails to parse as a DecodeError value, not an INTERNAL error
    (the servicer answers INVALID_ARGUMENT)."""

    def parse(data: bytes):
        try:
            return request_type.FromString(data)
        except DecodeError as e:
            return e

    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=parse, response_serializer=lambda m: m.SerializeToString()
    )


class TokenInterceptor(grpc.ServerInterceptor):
    """Requires 'authorization: Bearer <token>' on every rpc but the health checks."""

    def __init__(self, token: str):
        self._expected = f"Bearer {token}".encode()

        def deny(request, context):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong token: send metadata 'authorization: Bearer "
                "<CSR_GENERATOR_ADMIN_TOKEN>'",
            )

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        if details.method.startswith("/grpc.health.v1."):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self._expected):
            return continuation(details)
        return self._deny


def create_server(
    loop: GeneratorLoop,
    host: str = "0.0.0.0",
    port: int = 0,
    swap_timeout: float = 300.0,
    token: str | None = None,
) -> tuple[grpc.Server, int]:
    """Build (not start) the admin server; port 0 picks a free one. With a token, every admin
    rpc requires it (TokenInterceptor); gRPC health checking answers SERVING without one."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        interceptors=[TokenInterceptor(token)] if token else [],
    )
    servicer = AdminServicer(loop, swap_timeout)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                _SERVICE,
                {
                    "LoadAdapter": _unary(servicer.LoadAdapter, generator_pb2.LoadAdapterRequest),
                    "Status": _unary(servicer.Status, generator_pb2.StatusRequest),
                },
            ),
        )
    )
    checks = health.HealthServicer()
    for name in ("", _SERVICE):
        checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
