"""The generator's admin edge: the GeneratorAdmin gRPC API and the Redis pub/sub trigger.

Both only convert and call `GeneratorLoop.request_adapter`; the loop swaps between prompts.
A reload that times out on the caller's side stays queued and still happens.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc

from csr_api.v1 import generator_pb2, generator_pb2_grpc
from services.generator.service import GeneratorLoop
from services.runtime.adapters import AdapterError

logger = logging.getLogger(__name__)


class AdminServicer(generator_pb2_grpc.GeneratorAdminServicer):
    def __init__(self, loop: GeneratorLoop, swap_timeout: float):
        self.loop, self.swap_timeout = loop, swap_timeout

    def LoadAdapter(self, request, context):
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


def create_server(
    loop: GeneratorLoop, host: str = "0.0.0.0", port: int = 0, swap_timeout: float = 300.0
) -> tuple[grpc.Server, int]:
    """Build (not start) the admin server; port 0 picks a free one."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    generator_pb2_grpc.add_GeneratorAdminServicer_to_server(
        AdminServicer(loop, swap_timeout), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound
