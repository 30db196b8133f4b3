"""`csr train`: the trainer, from its settings to a running loop.

Checks the device, builds the Redis streams, adapter store, base-model loader (the base
model is loaded at the first update and kept) and announcer, queues iteration 1 from a prompt
set if given, serves /healthz and /metrics, and runs the loop until T iterations are
published or SIGINT/SIGTERM (an update in progress finishes first; its pairs are acknowledged
only once its adapter is published).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import redis

from csr.config import CSRConfig
from services.runtime.adapter_store import AdapterStore
from services.runtime.algorithm import load_algorithm
from services.runtime.announce import make_announcer
from services.runtime.health import serve_http
from services.runtime.pairs import PairConsumer
from services.runtime.prompt_sets import load_prompt_set
from services.runtime.prompts import PromptStreams
from services.runtime.vlm import load_model, load_processor, vlm_device
from services.trainer.dpo import UpdateInterrupted
from services.trainer.service import TrainerLoop, TrainerOptions, TrainerParts
from services.trainer.settings import TrainerSettings

logger = logging.getLogger(__name__)


def _secret(value) -> str | None:
    return value.get_secret_value() if value else None


def build(
    settings: TrainerSettings, config: CSRConfig | None = None, stop: threading.Event | None = None
) -> TrainerLoop:
    config = config or load_algorithm(settings.algorithm)
    vlm_device(settings)  # a GPU that cannot run stops the trainer now, not at its first update
    client = redis.Redis.from_url(settings.redis_url)
    prompts = PromptStreams(client)
    if settings.prompt_set:
        added = prompts.enqueue(load_prompt_set(settings.prompt_set, 1))
        logger.info("queued %d new prompts of iteration 1", added)
    processor = load_processor(settings)
    targets = [t.strip() for t in settings.generator_admin.split(",") if t.strip()]
    parts = TrainerParts(
        prompts,
        PairConsumer(client, settings.consumer),
        AdapterStore(settings.adapter_store, settings.keep_versions),
        lambda: load_model(settings).train(),  # once, at the first update
        processor,
        make_announcer(client, targets, token=_secret(settings.generator_admin_token)),
    )
    options = TrainerOptions(
        Path(settings.image_root),
        Path(settings.work_dir),
        settings.base_name or settings.model,
        settings.checkpoint_steps,
        settings.tensorboard,
    )
    return TrainerLoop(parts, config, options, stop=stop)


def _health(loop: TrainerLoop) -> tuple[bool, dict]:
    try:
        facts = {"iteration": loop.iteration, "adapter_version": loop.adapter_version}
    except OSError:  # a version pruned while we read the store: ask again next time
        facts = {}
    return loop.healthy, {"status": "ok" if loop.healthy else "error", **facts}


def run(settings: TrainerSettings, config: CSRConfig | None = None) -> TrainerLoop:
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
    loop = build(settings, config, stopping)
    http, port = serve_http(
        lambda: _health(loop), loop.metrics.registry, settings.http_host, settings.http_port
    )
    logger.info("trainer serving /healthz and /metrics on :%d; iteration %d", port, loop.iteration)
    if loop.store.latest():  # generators that restarted catch up
        loop.announce(str(loop.store.path(loop.store.latest())), loop.adapter_version)
    try:
        while not stopping.is_set() and loop.run_once(block_ms=500) != "done":
            pass
    except UpdateInterrupted as e:  # its pairs stay unacknowledged; the next run resumes it
        logger.info("%s", e)
    finally:
        http.shutdown()
    logger.info(
        "trainer stopped at iteration %d, adapter version %s", loop.iteration, loop.adapter_version
    )
    return loop
