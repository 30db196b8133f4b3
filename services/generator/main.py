"""`csr generate`: one generator replica, from its settings to a running loop.

Builds the model, engine, reward client, Redis streams, admin API and pub/sub subscriber,
then runs the loop until SIGINT/SIGTERM (finishing the batch in hand) or, with
exit_when_idle, until nothing is queued or pending.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path

import redis
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from csr.config import CSRConfig
from services.generator.adapter_slot import AdapterSlot
from services.generator.admin import create_server
from services.generator.engine import VLMEngine
from services.generator.memory import kv_budget_bytes
from services.generator.observe import serve_health
from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
from services.generator.settings import GeneratorSettings
from services.reward.client import RewardClient
from services.runtime.algorithm import load_algorithm
from services.runtime.announce import AdapterSubscriber
from services.runtime.prompt_sets import load_prompt_set
from services.runtime.prompts import PromptStreams
from services.runtime.vlm import load_vlm

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _progress_bar(enabled: bool, streams: PromptStreams):
    """A rich progress bar of prompts finished (by every replica) over prompts queued; yields
    the function that refreshes it. Drawn only on a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda: None
        return
    columns = (
        TextColumn("prompts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("prompts", total=None)

        def update() -> None:
            finished, queued = streams.progress()
            progress.update(task, completed=finished, total=queued)

        update()
        yield update


def run(settings: GeneratorSettings, config: CSRConfig | None = None) -> GeneratorLoop:
    config = config or load_algorithm(settings.algorithm)
    model, processor = load_vlm(settings)
    slot = AdapterSlot(model, settings.base_name or settings.model)
    if settings.adapter:
        slot.load(settings.adapter)
    client = redis.Redis.from_url(settings.redis_url)
    streams = PromptStreams(client, settings.reclaim_after_ms, settings.max_deliveries)
    if settings.prompt_set:
        added = streams.enqueue(load_prompt_set(settings.prompt_set, settings.iteration))
        logger.info("queued %d new prompts of iteration %d", added, settings.iteration)
    token = settings.reward_token.get_secret_value() if settings.reward_token else None
    reward = RewardClient(settings.reward_target, token=token)
    engine = VLMEngine(slot.model, processor, config.search)
    budget = kv_budget_bytes(settings.kv_budget_gb, engine.device)  # with the model loaded
    logger.info("KV budget per batch: %.2f GiB", budget / 2**30)
    parts = GeneratorParts(streams, engine, reward.relevance, slot=slot, reward_probe=reward.info)
    options = GeneratorOptions(
        Path(settings.image_root),
        settings.consumer,
        batch_size=settings.batch_size,
        kv_budget_bytes=budget,
        max_prompt_tokens=settings.max_prompt_tokens,
    )
    loop = GeneratorLoop(parts, config, options)
    try:
        _serve(settings, loop, client, streams)
    finally:
        reward.close()
    logger.info(
        "generator stopped: %d pairs published, %d prompts without a pair",
        loop.published,
        loop.no_pairs,
    )
    return loop


def _serve(settings: GeneratorSettings, loop: GeneratorLoop, client, streams) -> None:
    """The admin server, the health endpoint and the adapter subscriber around the loop, until
    a signal (or, with exit_when_idle, an empty queue) stops it."""
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    server, port = create_server(loop, settings.admin_host, settings.admin_port, token=admin_token)
    server.start()
    http, http_port = serve_health(loop, loop.metrics, settings.admin_host, settings.http_port)
    subscriber = AdapterSubscriber(client, loop.request_adapter).start()
    logger.info("generator %s serving (admin :%d, http :%d)", settings.consumer, port, http_port)
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
    try:
        with _progress_bar(settings.progress, streams) as update:
            while not stopping.is_set():
                done = loop.run_once(block_ms=500)
                update()
                if settings.exit_when_idle and not done and not streams.pending() and loop.healthy:
                    break
    finally:
        loop.close()  # an admin call waiting for a swap gets its answer now
        subscriber.stop()
        server.stop(1)
        http.shutdown()
