"""Shared fixtures: tiny CLIPs of both backends (built from config, no download), workers, and
an embedded Redis of the test's own."""

from __future__ import annotations

import contextlib
import io

import pytest
from PIL import Image

from services.reward.models import load_backend
from services.reward.settings import RewardSettings
from services.reward.worker import BackgroundWorker
from services.runtime import embedded_redis
from tests.models.clip import build_tiny_hf_clip, build_tiny_open_clip


@pytest.fixture
def redis(tmp_path):
    server = embedded_redis.start(tmp_path / "redis.db", append_only=False)
    yield server
    embedded_redis.stop(server)


@pytest.fixture(scope="session")
def clip_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return {
        "open_clip": str(build_tiny_open_clip(root / "open_clip")),
        "hf": str(build_tiny_hf_clip(root / "hf")),
    }


@pytest.fixture(scope="session")
def backends(clip_dirs):
    return {name: load_backend(name, path) for name, path in clip_dirs.items()}


def png(color=(200, 30, 30), size=(40, 36)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, (90, 90, 90))
    image.paste(Image.new("RGB", (size[0] // 2, size[1] // 2), color), (4, 4))
    image.save(buffer, "PNG")
    return buffer.getvalue()


def settings(backend: str, model: str, **overrides) -> RewardSettings:
    base = {
        "backend": backend,
        "model": model,
        "host": "127.0.0.1",
        "grpc_port": 0,
        "http_port": 0,
        "max_wait_ms": 2.0,
    }
    return RewardSettings(**(base | overrides))


@pytest.fixture
def start_worker(clip_dirs, backends):
    """start_worker(backend, **settings) -> a started BackgroundWorker, stopped at teardown."""
    started = []

    def start(backend="open_clip", share_model=True, **overrides):
        worker = BackgroundWorker(
            settings(backend, clip_dirs[backend], **overrides),
            backends[backend] if share_model else None,
        ).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        with contextlib.suppress(Exception):  # already stopped by the test
            worker.stop()
