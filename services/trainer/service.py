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

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from csr.config import CSRConfig
from csr.training import dpo_example, is_stale, iteration_complete, online_batches
from services.runtime.adapter_store import AdapterStore
from services.runtime.pairs import Delivered, PairConsumer
from services.runtime.prompts import PromptStreams
from services.runtime.vlm import load_rgb
from services.trainer.dpo import UpdateResult, save_adapter, train_update
from services.trainer.observe import PrometheusCallback, TrainerMetrics, plot_update, service_board

logger = logging.getLogger(__name__)


class NoPairsError(RuntimeError):
    """An iteration finished without a single preference pair: there is nothing to train."""


class TrainerLoop:
    def __init__(self, prompts: PromptStreams, pairs: PairConsumer, store: AdapterStore,
                 load_base: Callable[[], object], processor, config: CSRConfig,
                 image_root: str, base_name: str, work_dir: str | Path,
                 announce: Callable[[str, str], None] = lambda path, version: None,
                 seed: int = 0, checkpoint_steps: int = 0, tensorboard: bool = False,
                 keep_last_model: bool = False, stop=None):
        self.prompts, self.pairs, self.store = prompts, pairs, store
        self.load_base, self.processor, self.config = load_base, processor, config
        self.image_root, self.base_name = Path(image_root), base_name
        self.work_dir, self.announce, self.seed = Path(work_dir), announce, seed
        self.checkpoint_steps, self.tensorboard = checkpoint_steps, tensorboard
        # Tests look at the last trained model; a service must not hold a second model in
        # memory while the next update loads a fresh base.
        self.keep_last_model = keep_last_model
        self.stop = stop  # a threading.Event: an update in progress checkpoints and ends
        self.metrics = TrainerMetrics()
        self.waiting: dict[str, Delivered] = {}  # entry id -> record, in delivery order
        self.updates = 0  # updates trained by this process
        self.last_result: UpdateResult | None = None
        self.healthy = True
        self.metrics.version.set(store.latest())
        self.board = service_board(self.work_dir / "tensorboard") if tensorboard else None
        self.pairs_trained = 0  # by this process, for TensorBoard's running count

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

    def _steps_published(self) -> int:
        """DPO steps of every kept version: where TensorBoard's service step axis goes on."""
        return sum(self.store.manifest(v).get("steps", 0) for v in self.store.versions())

    def _trained_pair_ids(self) -> set[str]:
        return {pair for v in self.store.versions()
                for pair in self.store.manifest(v).get("pair_ids", [])}

    # -- one round ------------------------------------------------------------------------------
    def run_once(self, block_ms: int = 1000) -> str:
        """Take records, train what is due; returns 'done', 'published' or 'waiting'."""
        iteration = self.iteration
        if iteration > self.config.iterations:
            return "done"
        self.metrics.iteration.set(iteration)
        self.queue_iteration(iteration)
        self._take(self.pairs.read(block_ms=block_ms), iteration)
        published = False
        every = self.config.schedule.online_every
        for _ in range(online_batches(len(self.waiting), self.config.schedule)):
            self._update(list(self.waiting.values())[:every], iteration, closes=False)
            published = True
        finished, queued = self.prompts.iteration_progress(iteration)
        if iteration_complete(finished, queued) and self.prompts.sealed(iteration):
            while True:  # every pair of it is in the stream: read to the end
                self._take(self.pairs.read(block_ms=0), iteration)
                if not self.pairs.last_read:
                    break
            own = [d for d in self.waiting.values() if d.record.iteration <= iteration]
            if not own and (self.config.schedule.schedule == "iteration"
                            or self.store.latest() == 0):
                raise NoPairsError(f"iteration {iteration} finished its {queued} prompts "
                                   "without a preference pair; nothing to train")
            self._update(own, iteration, closes=True)
            published = True
        return "published" if published else "waiting"

    def _take(self, delivered: list[Delivered], iteration: int) -> None:
        trained, current = self._trained_pair_ids(), self.store.latest()
        stale, already = [], []
        for d in delivered:
            if d.record.pair_id in trained:
                already.append(d.entry_id)
            elif is_stale(d.record, current, self.config.schedule) or (
                    self.config.schedule.schedule == "iteration" and d.record.iteration < iteration):
                stale.append(d)
            elif not (self.image_root / d.record.image).is_file():
                self.pairs.dead_letter(d.entry_id, {"record": d.record.to_json()},
                                       f"image {d.record.image} is not under {self.image_root}")
                self.metrics.dead.inc()
            else:
                self.waiting[d.entry_id] = d
        if already:
            logger.info("acknowledging %d pairs trained before a restart", len(already))
            self.pairs.ack(already)
        if stale:
            logger.warning("dropping %d stale pairs (adapter older than version %d - %d)",
                           len(stale), current, self.config.schedule.max_staleness)
            self.pairs.drop_stale(stale)
            self.metrics.stale.inc(len(stale))

    # -- an update ------------------------------------------------------------------------------
    def _update(self, batch: list[Delivered], iteration: int, closes: bool) -> None:
        previous = self.store.latest()
        version = previous + 1
        if batch:
            self._train_and_publish(batch, iteration, version, previous, closes)
        else:  # online: the last update already took every pair; close the iteration on it
            self._republish_closing(previous, iteration)
            version = previous
        self.announce(str(self.store.path(version)), str(version))
        if closes and iteration < self.config.iterations:
            self.queue_iteration(iteration + 1)

    def _train_and_publish(self, batch, iteration, version, previous, closes) -> None:
        ids = [d.entry_id for d in batch]
        out = self.work_dir / f"update-{version}"
        resume = (out / "pairs.json").is_file() and json.loads(
            (out / "pairs.json").read_text()) == ids and any(out.glob("checkpoint-*"))
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            (out / "pairs.json").write_text(json.dumps(ids))
        records = [d.record for d in batch]
        eos = self.processor.tokenizer.eos_token or ""
        logger.info("update %d: %d pairs of iteration %d%s", version, len(batch), iteration,
                    " (resuming from a checkpoint)" if resume else "")
        result = train_update(
            self.load_base(), self.processor, self.store.path(previous) if previous else None,
            [dpo_example(r, eos) for r in records], lambda p: load_rgb(str(self.image_root / p)),
            self.config.dpo, out, seed=self.seed + version, resume=resume,
            logging_dir=self.work_dir / "tensorboard" if self.tensorboard else None,
            checkpoint_steps=self.checkpoint_steps, stop=self.stop,
            callbacks=[PrometheusCallback(self.metrics, self.board, self._steps_published())])
        plot = plot_update(records, result.log, self.work_dir / "plots" / f"update-{version}.png",
                           f"update {version} (iteration {iteration}, {len(records)} pairs)")
        self.store.publish(lambda d: save_adapter(result.model, d), version, self.base_name,
                           iteration=iteration, closes_iteration=closes, pairs=len(records),
                           pair_ids=[r.pair_id for r in records], steps=result.steps,
                           metrics=result.metrics, plot=str(plot))
        if closes:
            self.store.close_iteration(iteration, version)
        self.pairs.ack(ids)  # only now: the adapter trained on them is durable
        for entry_id in ids:
            self.waiting.pop(entry_id, None)
        shutil.rmtree(out, ignore_errors=True)
        self.updates += 1
        if not self.keep_last_model:
            result.model = None
        self.last_result = result
        self.metrics.pairs.inc(len(records))
        self.metrics.updates.inc()
        self.metrics.version.set(version)
        self.pairs_trained += len(records)
        if self.board is not None:
            self.board.add_scalar("service/pairs_consumed", self.pairs_trained, version)
            self.board.add_scalar("service/pairs_stale", self.pairs.stale_count(), version)
            self.board.flush()

    def _republish_closing(self, version: int, iteration: int) -> None:
        """Online schedule, nothing left to train: the latest version closes the iteration."""
        self.store.close_iteration(iteration, version)

    def queue_iteration(self, iteration: int) -> int:
        """Queue iteration t on iteration t-1's prompts with the adapter that closed t-1
        (idempotent; iteration 1 is queued from the prompt set by whoever loads it)."""
        if iteration == 1 or self.prompts.sealed(iteration):
            return 0
        version = self.store.version_of_iteration(iteration - 1)
        if version is None:
            return 0
        # The paper's schedule names the adapter every item must be searched with; online
        # updates replace it during the iteration, so items there take whatever serves.
        pinned = self.config.schedule.schedule == "iteration"
        items = [replace(item, iteration=iteration, entry_id="",
                         adapter=str(self.store.path(version)) if pinned else "",
                         adapter_version=str(version) if pinned else "")
                 for item in self.prompts.items_of_iteration(iteration - 1)]
        added = self.prompts.enqueue(items)
        logger.info("queued iteration %d: %d prompts, adapter version %d", iteration, added,
                    version)
        return added
