"""Results across seeds: the mean and spread of each metric, per variant and iteration.

Owns the arithmetic of a results table. An evaluation is the dict `csr eval` writes (CHAIR
under "chair", POPE per negative kind under "pope"); a run is the list of its iterations'
evaluations (0 = the base model). Does not know how runs are made, nor how tables are drawn.

A figure over seeds is shown as its mean and the half-width of its 95 % confidence interval
(Student's t with n - 1 degrees of freedom): each seed's value already carries the noise of
its own evaluation (a finite set of held-out scenes) and of its training, so the interval
covers both. Two iterations are compared seed by seed (`change`), which cancels what a seed's
models share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# (column, path into an evaluation): the figures a results table shows
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("CHAIR_s", ("chair", "chair_s")),
    ("CHAIR_i", ("chair", "chair_i")),
    ("recall", ("chair", "recall")),
    ("sentences", ("chair", "mean_sentences")),
    ("POPE acc", ("pope", "adversarial", "accuracy")),
    ("POPE F1", ("pope", "adversarial", "f1")),
)


# Student's t, two-sided 95 % (the 0.975 quantile), for 1 to 30 degrees of freedom
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (a table to 30, then
    the Cornish-Fisher expansion around the normal's 1.960, within 0.001 of the exact)."""
    if df < 1:
        raise ValueError(f"df={df} must be >= 1: a confidence interval needs two seeds or more")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed
    n: int

    @property
    def ci95(self) -> float:
        """Half-width of the mean's 95 % confidence interval; 0 for a single seed."""
        return t975(self.n - 1) * self.std / math.sqrt(self.n) if self.n > 1 else 0.0

    @property
    def low(self) -> float:
        return self.mean - self.ci95

    @property
    def high(self) -> float:
        return self.mean + self.ci95

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.n == 1 else f"{self.mean:.3f} ± {self.ci95:.3f}"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        raise ValueError("no values to summarise: give at least one seed's result")
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return Spread(mean, math.sqrt(var), n)


def metric(evaluation: Mapping[str, Any], path: Sequence[str]) -> float:
    value: Any = evaluation
    for key in path:
        value = value[key]
    return float(value)


def _check(runs: Sequence[Sequence[Mapping[str, Any]]], iteration: int) -> None:
    if not runs:
        raise ValueError("no runs to summarise: give at least one seed's result")
    for run in runs:
        if iteration >= len(run):
            raise ValueError(
                f"a run has {len(run) - 1} iterations; iteration {iteration} is not there"
            )


def summarise(runs: Sequence[Sequence[Mapping[str, Any]]], iteration: int) -> dict[str, Spread]:
    """Each metric's spread over the runs (one per seed) at `iteration`."""
    _check(runs, iteration)
    return {name: spread([metric(run[iteration], path) for run in runs]) for name, path in METRICS}


def change(
    runs: Sequence[Sequence[Mapping[str, Any]]], before: int, after: int
) -> dict[str, Spread]:
    """Each metric's change from iteration `before` to `after`, seed by seed (after minus
    before): its mean, and a confidence interval that excludes 0 when the change is more
    than the noise."""
    _check(runs, max(before, after))
    return {
        name: spread([metric(run[after], path) - metric(run[before], path) for run in runs])
        for name, path in METRICS
    }


def ratio(runs: Sequence[Sequence[Mapping[str, Any]]], iteration: int, name: str) -> Spread:
    """A metric at `iteration` as a fraction of the base model's (iteration 0), per seed."""
    _check(runs, iteration)
    path = dict(METRICS)[name]
    return spread([metric(run[iteration], path) / metric(run[0], path) for run in runs])
