"""The trainer loop: pairs in, DPO updates, adapters out, CSR iterations advanced.

Owns the order of operations that makes training crash safe:
1. take records from the pair stream (PairConsumer); drop stale ones, dead-letter unusable
   ones; a record whose pair id is in a published manifest was trained on before a crash
   and is only acknowledged;
2. when an update is due (the iteration's prompts are all finished, or `online_every` pairs
   wait), train it (dpo.train_update), with resumable checkpoints if configured;
3. publish the adapter atomically with its manifest (AdapterStore.publish), listing the pair
   ids used; only then acknowledge those records;
4. tell the generators (pub/sub and admin API) and, when an iteration closes, queue the next
   one on the same prompts, each item naming the adapter it must be searched with.
A crash at any point repeats at most the unfinished update and never trains a pair twice.
The in-progress iteration is read from the store (the last manifest that closed one), so a
restarted trainer goes on where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csr.config import CSRConfig
from csr.training import dpo_example, iteration_complete, online_batches
from services.runtime.adapter_store import AdapterStore
from services.runtime.pairs import Delivered, PairConsumer
from services.runtime.prompts import PromptStreams
from services.runtime.vlm import load_rgb, response_lead
from services.trainer.dpo import BaseModel, UpdateResult, save_adapter, train_update
from services.trainer.observe import PrometheusCallback, TrainerMetrics
from services.trainer.parts import IterationQueue, PairIntake, UpdateRecorder, UpdateWorkspace

logger = logging.getLogger(__name__)

Announce = Callable[[str, str], None]  # (adapter directory, version)


class NoPairsError(RuntimeError):
    """An iteration finished without a single preference pair: there is nothing to train."""


def _nobody(path: str, version: str) -> None:
    """The announcer of a trainer that tells no generator (tests, offline training)."""


@dataclass
class TrainerParts:
    """What the loop works with: the two streams, the adapter store, the base model (a loader,
    called once, at the first update, and its processor) and how a published adapter is
    announced."""

    prompts: PromptStreams
    pairs: PairConsumer
    store: AdapterStore
    load_base: Callable[[], Any]
    processor: Any
    announce: Announce = _nobody


@dataclass(frozen=True)
class TrainerOptions:
    """Where the trainer works and what it keeps.

    keep_last_model: keep the last trained model (the PeftModel on the shared base) in
    `last_result` until the next update (tests look at it); otherwise its LoRA layers come
    off the base as soon as its adapter is published.
    """

    image_root: Path
    work_dir: Path
    base_name: str
    checkpoint_steps: int = 0
    tensorboard: bool = False
    keep_last_model: bool = False


class TrainerLoop:
    def __init__(self, parts: TrainerParts, config: CSRConfig, options: TrainerOptions, stop=None):
        self.prompts, self.pairs, self.store = parts.prompts, parts.pairs, parts.store
        self.base, self.processor = BaseModel(parts.load_base), parts.processor
        self.lead = response_lead(self.processor)  # before each DPO completion
        self.announce, self.config, self.options = parts.announce, config, options
        self.stop = stop  # a threading.Event: an update in progress checkpoints and ends
        self.metrics = TrainerMetrics()
        self.metrics.version.set(self.store.latest())
        self.intake = PairIntake(self.pairs, self.store, config, options.image_root, self.metrics)
        self.workspace = UpdateWorkspace(options.work_dir)
        self.recorder = UpdateRecorder(self.metrics, options.work_dir, options.tensorboard)
        self.next_iteration = IterationQueue(self.prompts, self.store, config)
        self.updates = 0  # updates trained by this process
        self.last_result: UpdateResult | None = None
        self.healthy = True

    # -- where we are, read from the store ---------------------------------------------------
    @property
    def iteration(self) -> int:
        """The iteration being built: one after the last one a published version closed."""
        return max(self.store.closed_iterations(), default=0) + 1

    @property
    def adapter_version(self) -> str:
        return str(self.store.latest())

    def done(self) -> bool:
        return self.iteration > self.config.iterations

    def queue_iteration(self, iteration: int) -> int:
        return self.next_iteration.queue(iteration)

    # -- one round ------------------------------------------------------------------------------
    def run_once(self, block_ms: int = 1000) -> str:
        """Take records, train what is due; returns 'done', 'published' or 'waiting'."""
        iteration = self.iteration
        if iteration > self.config.iterations:
            return "done"
        self.metrics.iteration.set(iteration)
        self.queue_iteration(iteration)
        self.intake.read(iteration, block_ms)
        published = False
        every = self.config.schedule.online_every
        for _ in range(online_batches(len(self.intake.waiting), self.config.schedule)):
            self._update(list(self.intake.waiting.values())[:every], iteration, closes=False)
            published = True
        finished, queued = self.prompts.iteration_progress(iteration)
        if iteration_complete(finished, queued) and self.prompts.sealed(iteration):
            self.intake.drain(iteration)
            own = self.intake.of_iteration(iteration)
            if not own and (
                self.config.schedule.schedule == "iteration" or self.store.latest() == 0
            ):
                raise NoPairsError(
                    f"iteration {iteration} finished its {queued} prompts "
                    "without a preference pair; nothing to train"
                )
            self._update(own, iteration, closes=True)
            published = True
        return "published" if published else "waiting"

    # -- an update ------------------------------------------------------------------------------
    def _update(self, batch: list[Delivered], iteration: int, closes: bool) -> None:
        version = self.store.latest()
        if batch:
            version += 1
            self._publish(self._train(batch, iteration, version), batch, iteration, version, closes)
        else:  # online: the last update already took every pair; it closes the iteration
            self.store.close_iteration(iteration, version)
        self.announce(str(self.store.path(version)), str(version))
        if closes and iteration < self.config.iterations:
            self.queue_iteration(iteration + 1)

    def _train(self, batch: list[Delivered], iteration: int, version: int) -> UpdateResult:
        out, resume = self.workspace.prepare(version, [d.entry_id for d in batch])
        logger.info(
            "update %d: %d pairs of iteration %d%s",
            version,
            len(batch),
            iteration,
            " (resuming from a checkpoint)" if resume else "",
        )
        try:
            result = self._train_on(self.base.get(), batch, version, out, resume)
        except BaseException:
            self.base.drop()  # the failed update may have left it wrapped
            raise
        self.base.hold(result.model)  # the next update takes its LoRA layers off the base
        return result

    def _train_on(self, base, batch, version: int, out: Path, resume: bool) -> UpdateResult:
        previous = version - 1
        eos = self.processor.tokenizer.eos_token or ""
        options = self.options
        return train_update(
            base,
            self.processor,
            self.store.path(previous) if previous else None,
            [dpo_example(d.record, eos, self.lead) for d in batch],
            lambda p: load_rgb(str(options.image_root / p)),
            self.config.dpo,
            out,
            seed=self.config.dpo.seed + version,
            resume=resume,
            logging_dir=options.work_dir / "tensorboard" if options.tensorboard else None,
            checkpoint_steps=options.checkpoint_steps,
            stop=self.stop,
            callbacks=[
                PrometheusCallback(self.metrics, self.recorder.board, self._steps_published())
            ],
        )

    def _publish(
        self,
        result: UpdateResult,
        batch: list[Delivered],
        iteration: int,
        version: int,
        closes: bool,
    ) -> None:
        """Publish the adapter, then (only then: it is durable) acknowledge its pairs."""
        records = [d.record for d in batch]
        plot = self.recorder.plot(records, result.log, version, iteration)
        self.store.publish(
            lambda d: save_adapter(result.model, d),
            version,
            self.options.base_name,
            iteration=iteration,
            closes_iteration=closes,
            pairs=len(records),
            pair_ids=[r.pair_id for r in records],
            steps=result.steps,
            metrics=result.metrics,
            plot=str(plot),
        )
        if closes:
            self.store.close_iteration(iteration, version)
        ids = [d.entry_id for d in batch]
        self.pairs.ack(ids)
        self.intake.trained(ids)
        self.workspace.clear(version)
        self.updates += 1
        if not self.options.keep_last_model:
            self.base.release()
            result.model = None
        self.last_result = result
        self.recorder.published(version, len(records), self.pairs.stale_count())

    def _steps_published(self) -> int:
        """DPO steps of every kept version: where TensorBoard's service step axis goes on."""
        return sum(self.store.manifest(v).get("steps", 0) for v in self.store.versions())
