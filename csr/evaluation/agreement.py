"""How often two reward settings make the same preference pairs from the same prompts.

Owns the arithmetic of an agreement: given each setting's pair per prompt (chosen text,
rejected text, or None where the prompt gave no pair), the share of prompts where the two
chose the same response, rejected the same response, and made the same pair. An ablation
whose pairs agree with the default's on nearly every prompt trains nearly the same model, so
its results can only differ by the run's noise. Does not know how pairs are searched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Pair = tuple[str, str]  # (chosen text, rejected text)


class NothingToCompare(ValueError):
    """No prompt gave a pair under both settings."""


@dataclass(frozen=True)
class PairAgreement:
    prompts: int  # prompts where both settings made a pair
    chosen: float  # share of those with the same chosen response, in [0, 1]
    rejected: float  # ... with the same rejected response
    pair: float  # ... with both the same
    only_one: int  # prompts where exactly one of the two made a pair


def pair_agreement(
    first: Mapping[str, Pair | None], second: Mapping[str, Pair | None]
) -> PairAgreement:
    """Agreement over the prompts both settings saw; they must have seen the same prompts."""
    if set(first) != set(second):
        missing = sorted(set(first) ^ set(second))[:3]
        raise ValueError(
            f"the two settings saw different prompts (e.g. {missing}); compare "
            "pairs made from the same prompt set"
        )
    both = [
        (a, b) for key in first if (a := first[key]) is not None and (b := second[key]) is not None
    ]
    if not both:
        raise NothingToCompare("no prompt gave a pair under both settings; nothing to compare")
    only_one = sum((first[key] is None) != (second[key] is None) for key in first)
    n = len(both)
    same_chosen = sum(a[0] == b[0] for a, b in both)
    same_rejected = sum(a[1] == b[1] for a, b in both)
    same_pair = sum(a == b for a, b in both)
    return PairAgreement(n, same_chosen / n, same_rejected / n, same_pair / n, only_one)
