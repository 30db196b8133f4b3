"""The generator's admin edge: the GeneratorAdmin gRPC API and the Redis pub/sub trigger.

Both only convert and call `GeneratorLoop.request_adapter`; the loop swaps between prompts.
A reload that times out on the caller's side stays queued and still happens.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent import futures

import grpc
import redis

from csr.v1 import generator_pb2, generator_pb2_grpc
from services.generator.adapters import AdapterError
from services.generator.service import GeneratorLoop

logger = logging.getLogger(__name__)

ADAPTER_CHANNEL = "csr:adapters"  # messages: {"path": ..., "version": ...}


class AdminServicer(generator_pb2_grpc.GeneratorAdminServicer):
    def __init__(self, loop: GeneratorLoop, swap_timeout: float):
        self.loop, self.swap_timeout = loop, swap_timeout

    def LoadAdapter(self, request, context):
        if not request.path:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "path is empty: give the adapter "
                          "directory in the shared adapter store")
        started = time.perf_counter()
        pending = self.loop.request_adapter(request.path, request.version or None)
        try:
            version = pending.result(timeout=self.swap_timeout)
        except AdapterError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except futures.TimeoutError:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"no gap between prompts within {self.swap_timeout}s; the reload stays "
                          "queued and happens at the next gap")
        return generator_pb2.LoadAdapterResponse(version=version,
                                                 swap_seconds=time.perf_counter() - started)

    def Status(self, request, context):
        loop = self.loop
        return generator_pb2.StatusResponse(
            adapter_version=loop.adapter_version, pairs_published=loop.published,
            pairs_repeated=loop.repeats, prompts_without_pair=loop.no_pairs)


def create_server(loop: GeneratorLoop, host: str = "0.0.0.0", port: int = 0,
                  swap_timeout: float = 300.0) -> tuple[grpc.Server, int]:
    """Build (not start) the admin server; port 0 picks a free one."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    generator_pb2_grpc.add_GeneratorAdminServicer_to_server(AdminServicer(loop, swap_timeout),
                                                            server)
    bound = server.add_insecure_port(f"{host}:{port}")
    return server, bound


class AdapterSubscriber:
    """Listens on ADAPTER_CHANNEL and asks the loop to load each announced adapter."""

    def __init__(self, client: redis.Redis, loop: GeneratorLoop):
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{ADAPTER_CHANNEL: self._on_message})
        self.loop = loop
        self._thread: threading.Thread | None = None

    def _on_message(self, message) -> None:
        try:
            data = json.loads(message["data"])
            version = data.get("version")
            pending = self.loop.request_adapter(str(data["path"]),
                                                None if version is None else str(version))
        except (ValueError, KeyError, TypeError) as e:
            logger.error("ignored a malformed adapter announcement %r: %s", message["data"], e)
            return
        pending.add_done_callback(lambda done: logger.info(
            "announced adapter %s: %s", data["path"],
            done.exception() or f"serving {done.result()}"))

    def start(self) -> AdapterSubscriber:
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(5)
        self._pubsub.close()


def announce_adapter(client: redis.Redis, path: str, version: str) -> int:
    """What the trainer calls after publishing; returns how many generators listened."""
    return int(client.publish(ADAPTER_CHANNEL, json.dumps({"path": path, "version": version})))
