"""Adapter announcements: how a published adapter reaches every generator.

Owns both ends of the protocol. The trainer publishes {"path", "version"} on ADAPTER_CHANNEL
(every generator listening gets it) and, for the generators it was given addresses of, calls
their admin API's LoadAdapter, which answers once the adapter serves or says why it was
refused. A generator's AdapterSubscriber turns each message into a swap request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future

import grpc
import redis
from redis.client import PubSubWorkerThread

from services.runtime.bounded import loads_json
from services.runtime.keys import ADAPTER_CHANNEL

logger = logging.getLogger(__name__)

RequestAdapter = Callable[[str, "str | None"], Future]  # (path, version) -> future version


def announce_adapter(client: redis.Redis, path: str, version: str) -> int:
    """What the trainer calls after publishing; returns how many generators listened."""
    return int(client.publish(ADAPTER_CHANNEL, json.dumps({"path": path, "version": version})))


def make_announcer(
    client: redis.Redis,
    admin_targets: list[str],
    timeout: float = 120.0,
    token: str | None = None,
):
    """announce(path, version): pub/sub to every generator, then the admin API of those
    listed (with the admin token as bearer metadata when given), which answers once the
    adapter serves (or why it was refused)."""
    from csr_api.v1 import generator_pb2, generator_pb2_grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else None

    def announce(path: str, version: str) -> None:
        listeners = announce_adapter(client, path, version)
        logger.info("announced adapter %s to %d subscribers", version, listeners)
        for target in admin_targets:
            with grpc.insecure_channel(target) as channel:
                stub = generator_pb2_grpc.GeneratorAdminStub(channel)
                try:
                    answer = stub.LoadAdapter(
                        generator_pb2.LoadAdapterRequest(path=path, version=version),
                        timeout=timeout,
                        metadata=metadata,
                    )
                    logger.info(
                        "generator %s serves adapter %s (swap %.3fs)",
                        target,
                        answer.version,
                        answer.swap_seconds,
                    )
                except grpc.RpcError as e:  # the item-level adapter still gets it there
                    logger.warning(
                        "generator %s did not load adapter %s: %s %s",
                        target,
                        version,
                        e.code().name,
                        e.details(),
                    )

    return announce


class AdapterSubscriber:
    """Listens on ADAPTER_CHANNEL and asks for each announced adapter (a generator's side)."""

    def __init__(self, client: redis.Redis, request: RequestAdapter):
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(**{ADAPTER_CHANNEL: self._on_message})
        self.request = request
        self._thread: PubSubWorkerThread | None = None

    def _on_message(self, message) -> None:
        try:
            data = loads_json(message["data"])
            if not isinstance(data, dict) or not isinstance(data.get("path"), str):
                raise ValueError('expected {"path": "<adapter directory>", "version": "..."}')
            version = data.get("version")
            pending = self.request(data["path"], None if version is None else str(version))
        except (ValueError, KeyError, TypeError) as e:  # decode errors and deep nesting too
            logger.error(
                "ignored a malformed adapter announcement %r: %s", message["data"][:200], e
            )
            return
        pending.add_done_callback(
            lambda done: logger.info(
                "announced adapter %s: %s",
                data["path"],
                done.exception() or f"serving {done.result()}",
            )
        )

    def start(self) -> AdapterSubscriber:
        self._thread = self._pubsub.run_in_thread(sleep_time=0.05, daemon=True)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()
            self._thread.join(5)
        self._pubsub.close()
