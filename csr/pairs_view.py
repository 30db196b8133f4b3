"""A run's preference pairs as people and other trainers see them: which pairs a filter keeps,
their margins, a response's mean relevance (the paper's Figure 5), the flat columns of an
export, and the prompts that gave no pair, per iteration and reason.

Pure: it gets records and counts and returns rows and summaries. Reading Redis, writing
datasets and HTML is the reports package's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from csr.errors import CSRError
from csr.records import PreferenceRecord, SentenceRecord


class PairFilterError(CSRError, ValueError):
    """A filter names an iteration or adapter version the run does not have."""


def response_relevance(sentences: Sequence[SentenceRecord]) -> float:
    """The mean R_I of a response's sentences (one value of the paper's Figure 5).

    The scored end of a response (text "", RewardConfig.end_relevance) is no sentence of the
    response: its R_I is a setting, not CLIP's view of the image, so it is left out."""
    values = [s.r_i for s in sentences if s.text.strip()]
    return sum(values) / len(values) if values else 0.0


def margin(record: PreferenceRecord) -> float:
    """The calibrated reward margin of a pair: chosen's path reward minus rejected's."""
    return record.chosen_reward - record.rejected_reward


@dataclass(frozen=True)
class PairFilter:
    """Keep the pairs of these iterations and adapter versions (empty: all of them)."""

    iterations: tuple[int, ...] = ()
    adapter_versions: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"--iteration {i}" for i in self.iterations]
        parts += [f"--adapter-version {v}" for v in self.adapter_versions]
        return " ".join(parts) or "no filter"


def select_pairs(
    records: Sequence[PreferenceRecord],
    pair_filter: PairFilter,
    known_iterations: Iterable[int] = (),
) -> list[PreferenceRecord]:
    """The records the filter keeps, in their order. An iteration neither in the records nor
    in `known_iterations` (iterations queued, or with no-pairs only), or an adapter version no
    record carries, is refused by name with what the run has."""
    iterations = sorted({r.iteration for r in records} | set(known_iterations))
    unknown = [i for i in pair_filter.iterations if i not in iterations]
    if unknown:
        raise PairFilterError(
            f"iteration {', '.join(map(str, unknown))} is not in this run; it has "
            f"{_listing(map(str, iterations))}"
        )
    versions = sorted({r.adapter_version for r in records})
    strange = [v for v in pair_filter.adapter_versions if v not in versions]
    if strange:
        raise PairFilterError(
            f"adapter version {', '.join(strange)} made no pair in this run; its pairs come "
            f"from {_listing(versions)}"
        )
    return [
        r
        for r in records
        if (not pair_filter.iterations or r.iteration in pair_filter.iterations)
        and (not pair_filter.adapter_versions or r.adapter_version in pair_filter.adapter_versions)
    ]


def _listing(values: Iterable[str]) -> str:
    values = list(values)
    return ", ".join(values) if values else "none"


def _sentence_columns(side: str, sentences: Sequence[SentenceRecord]) -> dict[str, list[Any]]:
    return {
        f"{side}_sentences": [s.text for s in sentences],
        f"{side}_r_t": [s.r_t for s in sentences],
        f"{side}_r_i": [s.r_i for s in sentences],
        f"{side}_r": [s.r for s in sentences],
        f"{side}_merit": [s.merit for s in sentences],
    }


def provenance(record: PreferenceRecord) -> dict[str, Any]:
    """Where a pair came from and why it was chosen, as flat columns: ids, iteration, adapter
    version, the algorithm settings that made it, both path rewards and their margin, and every
    sentence with its R_T, R_I, R and merit (lists in sentence order)."""
    return {
        "pair_id": record.pair_id,
        "prompt_id": record.prompt_id,
        "image_path": record.image,
        "iteration": record.iteration,
        "adapter_version": record.adapter_version,
        "schema_version": record.schema_version,
        "lam": record.lam,
        "mode": record.mode,
        "normalization": record.normalization,
        "aggregation": record.aggregation,
        "self_score": record.self_score,
        "chosen_text": record.chosen,
        "rejected_text": record.rejected,
        "chosen_reward": record.chosen_reward,
        "rejected_reward": record.rejected_reward,
        "margin": margin(record),
        **_sentence_columns("chosen", record.chosen_sentences),
        **_sentence_columns("rejected", record.rejected_sentences),
    }


def conversational_columns(record: PreferenceRecord) -> dict[str, list[dict[str, str]]]:
    """TRL's conversational preference columns: one user turn, one assistant turn each. TRL
    puts the image placeholder into the user turn and applies the model's own chat template
    when it trains."""
    return {
        "prompt": [{"role": "user", "content": record.prompt}],
        "chosen": [{"role": "assistant", "content": record.chosen}],
        "rejected": [{"role": "assistant", "content": record.rejected}],
    }


@dataclass(frozen=True)
class NoPairCounts:
    """Prompts that gave no pair: by iteration and reason, and, for data written before the
    counts were kept per iteration, the rest by reason alone."""

    by_iteration: dict[int, dict[str, int]] = field(default_factory=dict)
    unattributed: dict[str, int] = field(default_factory=dict)

    def total(self, iteration: int | None = None) -> int:
        if iteration is None:
            return sum(sum(c.values()) for c in self.by_iteration.values()) + sum(
                self.unattributed.values()
            )
        return sum(self.by_iteration.get(iteration, {}).values())

    def by_reason(self) -> dict[str, int]:
        """Every prompt without a pair counted by reason alone, iterations summed."""
        totals = dict(self.unattributed)
        for counts in self.by_iteration.values():
            for reason, count in counts.items():
                totals[reason] = totals.get(reason, 0) + count
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_iteration": {
                str(i): dict(sorted(c.items())) for i, c in sorted(self.by_iteration.items())
            },
            "unattributed": dict(sorted(self.unattributed.items())),
        }


def no_pair_counts(
    totals: Mapping[str, int],
    by_iteration: Mapping[int, Mapping[str, int]],
    iterations: Iterable[int] | None = None,
) -> NoPairCounts:
    """The counts of the run (or of some iterations): the per-iteration ones, and whatever the
    reason totals hold beyond them (a run recorded before per-iteration counts existed)."""
    wanted = None if iterations is None else set(iterations)
    kept = {
        int(i): {r: int(n) for r, n in c.items() if n}
        for i, c in by_iteration.items()
        if wanted is None or i in wanted
    }
    if wanted is not None:
        return NoPairCounts({i: c for i, c in kept.items() if c})
    attributed: dict[str, int] = {}
    for counts in by_iteration.values():
        for reason, n in counts.items():
            attributed[reason] = attributed.get(reason, 0) + int(n)
    rest = {r: int(n) - attributed.get(r, 0) for r, n in totals.items()}
    return NoPairCounts({i: c for i, c in kept.items() if c}, {r: n for r, n in rest.items() if n})


def page_bounds(count: int, page_size: int) -> list[tuple[int, int]]:
    """[start, end) of each page of `count` items, `page_size` a page (the last one shorter)."""
    if page_size < 1:
        raise ValueError(f"page_size must be >= 1, got {page_size}")
    return [(start, min(start + page_size, count)) for start in range(0, count, page_size)]
