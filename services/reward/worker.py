"""One reward worker process: the model, the scorer, gRPC and HTTP on one event loop.

`RewardWorker` starts and stops both APIs (ports 0 allowed, so tests bind free ones);
`BackgroundWorker` runs one in a thread for tests and benchmarks; `serve` runs one until
SIGINT/SIGTERM, finishing in-flight requests within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Self

import uvicorn

from services.reward.grpc_server import create_server, mark_serving
from services.reward.http_api import create_http_app
from services.reward.metrics import RewardMetrics
from services.reward.models import ClipBackend, load_backend
from services.reward.scorer import Scorer
from services.reward.settings import RewardSettings

logger = logging.getLogger(__name__)


class RewardWorker:
    def __init__(self, settings: RewardSettings, backend: ClipBackend | None = None):
        self.settings = settings
        self._backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clip")
        self.grpc_port = self.http_port = 0
        self._ready = False
        self.scorer = self.grpc_server = self._http = self._http_task = None

    async def start(self) -> None:
        """Load the model, then serve; on any failure, tear down what was started and raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop(grace=0)
            raise

    async def _start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        if self._backend is None:
            self._backend = await loop.run_in_executor(
                self._executor,
                lambda: load_backend(
                    s.backend, s.model, s.pretrained, s.device, s.precision, s.quick_gelu
                ),
            )
        self.scorer = Scorer(self._backend, s, self._executor, RewardMetrics())
        self.scorer.batcher.start()
        self.grpc_server, self.grpc_port = create_server(s, self.scorer)
        await mark_serving(self.grpc_server, False)  # health says SERVING only once ready
        await self.grpc_server.start()
        if s.http_enabled:
            await self._start_http()
        self._ready = True
        await mark_serving(self.grpc_server, True)
        logger.info(
            "reward worker serving %s on grpc :%d http :%s",
            self._backend.info.model,
            self.grpc_port,
            self.http_port or "off",
        )

    async def _start_http(self) -> None:
        s = self.settings
        sock = socket.socket(socket.AF_INET6 if ":" in s.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((s.host, s.http_port))
        except OSError:
            sock.close()
            raise
        self.http_port = sock.getsockname()[1]
        token = s.token.get_secret_value() if s.token else None
        app = create_http_app(self.scorer, token, ready=lambda: self._ready)
        self._http = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        )
        self._http_task = asyncio.get_running_loop().create_task(self._http.serve(sockets=[sock]))
        while not self._http.started:
            if self._http_task.done():
                self._http_task.result()  # raises what stopped it
            await asyncio.sleep(0.01)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking requests, finish in-flight ones within `grace`, release everything.

        Safe after a partial start."""
        grace = self.settings.grace_seconds if grace is None else grace
        self._ready = False
        if self._http is not None:
            self._http.should_exit = True
        if self.grpc_server is not None:
            await mark_serving(self.grpc_server, False)
            await self.grpc_server.stop(grace)
        if self._http_task is not None:
            await asyncio.gather(self._http_task, return_exceptions=True)
        if self.scorer is not None:
            await self.scorer.batcher.stop()
        self._executor.shutdown(wait=False)


class BackgroundWorker:
    """A RewardWorker on its own event loop in a daemon thread (tests, benchmarks)."""

    def __init__(self, settings: RewardSettings, backend: ClipBackend | None = None):
        self.worker = RewardWorker(settings, backend)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self, timeout: float = 120.0) -> BackgroundWorker:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.worker.start(), self._loop).result(timeout)
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            raise
        return self

    def stop(self, grace: float = 0.5) -> None:
        if not self._loop.is_running():
            return  # never started, or stopped already
        asyncio.run_coroutine_threadsafe(self.worker.stop(grace), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.worker.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.worker.http_port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


async def _serve(settings: RewardSettings) -> None:
    worker = RewardWorker(settings)
    await worker.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    logger.info("shutting down: finishing in-flight requests (grace %.1fs)", settings.grace_seconds)
    await worker.stop()


def serve(settings: RewardSettings) -> None:
    """Run one worker until SIGINT or SIGTERM."""
    asyncio.run(_serve(settings))
