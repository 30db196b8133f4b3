"""Results across seeds: the mean and spread of each metric, per variant and iteration.

Owns the arithmetic of a results table. An evaluation is the dict `csr eval` writes (CHAIR
under "chair", POPE per negative kind under "pope"); a run is the list of its iterations'
evaluations (0 = the base model). Does not know how runs are made, nor how tables are drawn.
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


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f}" if self.n == 1 else f"{self.mean:.3f} ± {self.std:.3f}"


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


def summarise(runs: Sequence[Sequence[Mapping[str, Any]]], iteration: int) -> dict[str, Spread]:
    """Each metric's spread over the runs (one per seed) at `iteration`."""
    for run in runs:
        if iteration >= len(run):
            raise ValueError(
                f"a run has {len(run) - 1} iterations; iteration {iteration} is not there"
            )
    return {name: spread([metric(run[iteration], path) for run in runs]) for name, path in METRICS}
