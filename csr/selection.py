"""Preference selection: from a search's finished responses to one (chosen, rejected) pair.

Owns the rule (chosen = highest cumulative reward, rejected = lowest) and every reason a
prompt yields no pair. A missing pair is a value with a reason, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csr.search import FinishedPath

NO_FINISHED_RESPONSE = "no_finished_response"
SINGLE_RESPONSE = "single_response"
TIED_REWARDS = "tied_rewards"
SMALL_MARGIN = "small_margin"
NO_WORSE_SENTENCE = "no_worse_sentence"
NO_PAIR_REASONS: tuple[str, ...] = (
    NO_FINISHED_RESPONSE,
    SINGLE_RESPONSE,
    TIED_REWARDS,
    SMALL_MARGIN,
    NO_WORSE_SENTENCE,
)


@dataclass(frozen=True)
class PreferencePair:
    chosen: FinishedPath
    rejected: FinishedPath
    chosen_reward: float
    rejected_reward: float
    candidates: int  # distinct finished responses the pair was picked from


@dataclass(frozen=True)
class NoPair:
    reason: str  # one of NO_PAIR_REASONS
    detail: str


def distinct_responses(paths: Sequence[FinishedPath]) -> list[FinishedPath]:
    """Finished paths with distinct response text, the first of each text kept."""
    seen: dict[str, FinishedPath] = {}
    for path in paths:
        seen.setdefault(path.text, path)
    return list(seen.values())


def select_pair(
    paths: Sequence[FinishedPath],
    aggregation: str,
    min_margin: float = 0.0,
    min_sentence_gap: float | None = None,
    gap_sentences: str = "worst",
) -> PreferencePair | NoPair:
    """Chosen = highest cumulative reward, rejected = lowest.

    Ties: the chosen is the earliest of the best, the rejected the latest of the worst
    (the released code's stable ascending sort of ranks, read from both ends). When every
    distinct response has the same reward there is no preference to learn: no pair; nor
    when the best exceeds the worst by less than `min_margin` (SelectionConfig.min_margin),
    nor, with `min_sentence_gap` set, when the rejected response's worst sentence (with
    `gap_sentences="unshared"`: any of its sentences the chosen response lacks) is not that
    much below the chosen one's worst (SelectionConfig.min_sentence_gap, .gap_sentences).
    """
    distinct = distinct_responses(paths)
    if not distinct:
        return NoPair(NO_FINISHED_RESPONSE, "the search finished no non-empty response")
    if len(distinct) == 1:
        return NoPair(SINGLE_RESPONSE, f"every finished path reads {distinct[0].text!r}")
    rewards = [path.reward(aggregation) for path in distinct]
    best, worst = max(rewards), min(rewards)
    if best == worst:
        return NoPair(TIED_REWARDS, f"all {len(distinct)} distinct responses have reward {best!r}")
    if best - worst < min_margin:
        return NoPair(
            SMALL_MARGIN,
            f"the best of {len(distinct)} responses beats the worst by {best - worst:.4g}, "
            f"less than min_margin {min_margin:g}",
        )
    chosen = rewards.index(best)
    rejected = len(rewards) - 1 - rewards[::-1].index(worst)
    if min_sentence_gap is not None:
        refused = _gap_refusal(
            distinct[chosen], distinct[rejected], min_sentence_gap, gap_sentences
        )
        if refused is not None:
            return refused
    return PreferencePair(distinct[chosen], distinct[rejected], best, worst, len(distinct))


def _gap_refusal(
    chosen: FinishedPath, rejected: FinishedPath, gap: float, gap_sentences: str
) -> NoPair | None:
    """Why the pair falls under the sentence gap, or None when it clears it."""
    floor = _worst_sentence(chosen)
    below = floor - _worst_sentence(rejected)
    if below < gap:
        return NoPair(
            NO_WORSE_SENTENCE,
            f"the rejected response's worst sentence scores only {below:.4g} below the "
            f"chosen one's, less than min_sentence_gap {gap:g}",
        )
    if gap_sentences == "unshared":
        own = {s.sentence for s in chosen.sentences}
        for s in rejected.sentences:
            if s.r is not None and s.sentence not in own and floor - s.r < gap:
                return NoPair(
                    NO_WORSE_SENTENCE,
                    f"the rejected response's sentence {s.sentence!r}, which the chosen one "
                    f"lacks, scores only {floor - s.r:.4g} below the chosen one's worst, less "
                    f"than min_sentence_gap {gap:g}",
                )
    return None


def _worst_sentence(path: FinishedPath) -> float:
    """The lowest sentence reward R of a path (a scored end included)."""
    scores = [s.r for s in path.sentences if s.r is not None]
    return min(scores) if scores else 0.0
