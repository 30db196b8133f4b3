"""The trainer loop's collaborators, each with one job.

- PairIntake: sorts delivered records into waiting, already trained, stale and dead letters.
- UpdateWorkspace: an update's working directory, and whether it resumes from a checkpoint.
- UpdateRecorder: what an update shows (Prometheus, TensorBoard, the plot).
- IterationQueue: queues iteration t on iteration t-1's prompts with the adapter that closed it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from PIL import Image

from csr.config import CSRConfig
from csr.records import PreferenceRecord
from csr.training import is_stale
from services.runtime.adapter_store import AdapterStore
from services.runtime.pairs import Delivered, PairConsumer
from services.runtime.prompt_sets import ImagePathError, image_under_root
from services.runtime.prompts import PromptStreams
from services.trainer.observe import TrainerMetrics, plot_update, service_board

logger = logging.getLogger(__name__)


class PairIntake:
    """The records delivered and not yet trained on, in delivery order (`waiting`)."""

    def __init__(
        self,
        pairs: PairConsumer,
        store: AdapterStore,
        config: CSRConfig,
        image_root: Path,
        metrics: TrainerMetrics,
    ):
        self.pairs, self.store, self.config = pairs, store, config
        self.image_root, self.metrics = image_root, metrics
        self.waiting: dict[str, Delivered] = {}  # entry id -> record

    def read(self, iteration: int, block_ms: int) -> None:
        self.take(self.pairs.read(block_ms=block_ms), iteration)

    def drain(self, iteration: int) -> None:
        """Read to the end of the stream (an iteration's last pairs are all in it)."""
        while True:
            self.take(self.pairs.read(block_ms=0), iteration)
            if not self.pairs.last_read:
                return

    def of_iteration(self, iteration: int) -> list[Delivered]:
        return [d for d in self.waiting.values() if d.record.iteration <= iteration]

    def trained(self, entry_ids: list[str]) -> None:
        for entry_id in entry_ids:
            self.waiting.pop(entry_id, None)

    def take(self, delivered: list[Delivered], iteration: int) -> None:
        trained, current = self._trained_pair_ids(), self.store.latest()
        stale, already = [], []
        for d in delivered:
            if d.record.pair_id in trained:
                already.append(d.entry_id)
            elif self._stale(d.record, current, iteration):
                stale.append(d)
            elif (problem := self._image_problem(d.record.image)) is not None:
                self.pairs.dead_letter(d.entry_id, {"record": d.record.to_json()}, problem)
                self.metrics.dead.inc()
            else:
                self.waiting[d.entry_id] = d
        if already:
            logger.info("acknowledging %d pairs trained before a restart", len(already))
            self.pairs.ack(already)
        if stale:
            logger.warning(
                "dropping %d stale pairs (adapter older than version %d - %d)",
                len(stale),
                current,
                self.config.schedule.max_staleness,
            )
            self.pairs.drop_stale(stale)
            self.metrics.stale.inc(len(stale))

    def _image_problem(self, name: str) -> str | None:
        """Why the pair's image cannot be trained on (None when it can): a path that leaves
        the image root is refused unread, and a file that is not a readable image is found
        here, not halfway through an update (which would fail again at every restart)."""
        try:
            path = image_under_root(self.image_root, name)
        except ImagePathError as e:
            return str(e)
        if not path.is_file():
            return f"image {name} is not under {self.image_root}"
        try:
            with Image.open(path) as image:
                image.verify()
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            return f"cannot read image {path}: {e}"
        return None

    def _stale(self, record: PreferenceRecord, current: int, iteration: int) -> bool:
        schedule = self.config.schedule
        return is_stale(record, current, schedule) or (
            schedule.schedule == "iteration" and record.iteration < iteration
        )

    def _trained_pair_ids(self) -> set[str]:
        """Pairs some published version was trained on (after a crash between publishing
        and acknowledging, they come back and are only acknowledged)."""
        return {
            pair
            for v in self.store.versions()
            for pair in self.store.manifest(v).get("pair_ids", [])
        }


class UpdateWorkspace:
    """work_dir/update-V: the pair ids it trains on, and its checkpoints until published."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir

    def prepare(self, version: int, entry_ids: list[str]) -> tuple[Path, bool]:
        """The directory of update `version`, and whether it resumes: only if an interrupted
        run of the same update, on the same pairs, left a checkpoint there."""
        out = self.work_dir / f"update-{version}"
        listed = out / "pairs.json"
        resume = (
            listed.is_file()
            and json.loads(listed.read_text()) == entry_ids
            and any(out.glob("checkpoint-*"))
        )
        if not resume:
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            listed.write_text(json.dumps(entry_ids))
        return out, resume

    def clear(self, version: int) -> None:
        shutil.rmtree(self.work_dir / f"update-{version}", ignore_errors=True)


class UpdateRecorder:
    """Prometheus counters, TensorBoard service scalars and the per-update plot."""

    def __init__(self, metrics: TrainerMetrics, work_dir: Path, tensorboard: bool):
        self.metrics, self.work_dir = metrics, work_dir
        self.board = service_board(work_dir / "tensorboard") if tensorboard else None
        self.pairs_trained = 0  # by this process, for TensorBoard's running count

    def plot(
        self, records: list[PreferenceRecord], log: list[dict], version: int, iteration: int
    ) -> Path:
        return plot_update(
            records,
            log,
            self.work_dir / "plots" / f"update-{version}.png",
            f"update {version} (iteration {iteration}, {len(records)} pairs)",
        )

    def published(self, version: int, pairs: int, stale_total: int) -> None:
        self.metrics.pairs.inc(pairs)
        self.metrics.updates.inc()
        self.metrics.version.set(version)
        self.pairs_trained += pairs
        if self.board is not None:
            self.board.add_scalar("service/pairs_consumed", self.pairs_trained, version)
            self.board.add_scalar("service/pairs_stale", stale_total, version)
            self.board.flush()


class IterationQueue:
    """Queues iteration t on iteration t-1's prompts, idempotently."""

    def __init__(self, prompts: PromptStreams, store: AdapterStore, config: CSRConfig):
        self.prompts, self.store, self.config = prompts, store, config

    def queue(self, iteration: int) -> int:
        """Queue iteration t with the adapter that closed t-1 (iteration 1 is queued from
        the prompt set by whoever loads it); returns how many prompts were added."""
        if iteration == 1 or self.prompts.sealed(iteration):
            return 0
        version = self.store.version_of_iteration(iteration - 1)
        if version is None:
            return 0
        # The paper's schedule names the adapter every item must be searched with; online
        # updates replace it during the iteration, so items there take whatever serves.
        pinned = self.config.schedule.schedule == "iteration"
        items = [
            replace(
                item,
                iteration=iteration,
                entry_id="",
                adapter=str(self.store.path(version)) if pinned else "",
                adapter_version=str(version) if pinned else "",
            )
            for item in self.prompts.items_of_iteration(iteration - 1)
        ]
        added = self.prompts.enqueue(items)
        logger.info(
            "queued iteration %d: %d prompts, adapter version %d", iteration, added, version
        )
        return added
