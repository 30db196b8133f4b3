"""What the trainer shows: Prometheus metrics, a TrainerCallback feeding them, and the PNG
plots of each update (the paper's Figure 5: chosen vs rejected R_I; and the reward margins).

TensorBoard gets the same training scalars through TRL's own `report_to=["tensorboard"]`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from transformers import TrainerCallback

from csr.records import PreferenceRecord
from services.runtime.plots import draw_relevance, pyplot

# TRL's log keys -> gauge names
_LOGGED = {
    "loss": "dpo_loss",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
    "logps/chosen": "logps_chosen",
    "logps/rejected": "logps_rejected",
}


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.pairs = Counter("csr_trainer_pairs_consumed", "Pairs trained on.", registry=r)
        self.stale = Counter("csr_trainer_pairs_stale", "Pairs dropped as too stale.", registry=r)
        self.dead = Counter(
            "csr_trainer_pairs_dead_lettered", "Unusable records set aside.", registry=r
        )
        self.updates = Counter("csr_trainer_updates", "Adapters published.", registry=r)
        self.version = Gauge("csr_trainer_adapter_version", "Latest published version.", registry=r)
        self.iteration = Gauge("csr_trainer_iteration", "CSR iteration being built.", registry=r)
        self.step_seconds = Histogram(
            "csr_trainer_step_seconds",
            "Wall time of one DPO step.",
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.train = {
            key: Gauge(f"csr_trainer_{name}", f"Last logged {key}.", registry=r)
            for key, name in _LOGGED.items()
        }


class PrometheusCallback(TrainerCallback):
    """Step times and logged DPO metrics into TrainerMetrics; step times also to TensorBoard
    (service/step_seconds) when a writer is given."""

    def __init__(self, metrics: TrainerMetrics, board=None, first_step: int = 0):
        self.metrics, self.board, self.first_step = metrics, board, first_step
        self._started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        seconds = time.perf_counter() - self._started
        self.metrics.step_seconds.observe(seconds)
        if self.board is not None:
            self.board.add_scalar(
                "service/step_seconds", seconds, self.first_step + state.global_step
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, gauge in self.metrics.train.items():
            if logs and isinstance(logs.get(key), (int, float)):
                gauge.set(float(logs[key]))


def service_board(logging_dir: str | Path):
    """A TensorBoard writer for the trainer's own scalars across updates (pairs consumed,
    stale, step time), beside TRL's per-update runs."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(logging_dir) / "service"))


def plot_update(
    records: Sequence[PreferenceRecord], log: Sequence[dict], path: str | Path, title: str
) -> Path:
    """One PNG: the chosen and rejected responses' mean R_I (Figure 5), the calibrated
    reward margin of each pair, and DPO's reward margin over the update's steps."""
    plt = pyplot()
    margins = [r.chosen_reward - r.rejected_reward for r in records]
    steps = [(e["step"], e["rewards/margins"]) for e in log if "rewards/margins" in e]
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    draw_relevance(axes[0], records)
    axes[1].hist(margins, bins=20, color="tab:green")
    axes[1].set(title="calibrated reward margin (chosen - rejected)", xlabel="R", ylabel="pairs")
    if steps:
        axes[2].plot(*zip(*steps), marker=".")
    axes[2].set(title="DPO reward margin", xlabel="step", ylabel="margin")
    figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
