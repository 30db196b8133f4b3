"""The reward formulas of CSR, each in exactly one function.

Owns R_T (Eq. 2 and the length-normalised variant), R_I (Eq. 3), the calibrated R (Eq. 4),
sibling ranks (the released code's normalisation), the per-sentence merit that the search
aggregates, and path aggregation. Every service imports these; none re-implements them.

Sign convention: a *merit* is higher-is-better in every mode. In "raw" normalisation the merit
is R itself; in "rank" normalisation it is minus the released code's combined rank, so the
path with the highest mean merit is exactly the path with the lowest mean rank there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from csr.config import RewardConfig

# Eq. 3 scales the cosine by 100, the logit scale CLIP was trained to (exp(4.6052) = 100).
RELEVANCE_SCALE = 100.0
_COSINE_SLACK = 1e-4  # float error of a normalised dot product


def _check_logprobs(token_logprobs: Sequence[float]) -> None:
    if len(token_logprobs) == 0:
        raise ValueError("R_T needs at least one token log-prob; got none")
    for value in token_logprobs:
        if not math.isfinite(value) or value > 1e-6:
            raise ValueError(f"token log-prob {value!r} is not a finite number <= 0")


def self_score_product(token_logprobs: Sequence[float]) -> float:
    """R_T(s) = prod_o P(r_o | x, x_v, r_<o), the paper's Eq. 2, in [0, 1].

    Computed as exp(sum of log-probs) so that long sentences underflow to 0.0, not NaN.
    """
    _check_logprobs(token_logprobs)
    return math.exp(math.fsum(token_logprobs))


def self_score_mean_logprob(token_logprobs: Sequence[float]) -> float:
    """R_T(s) = (1/|s|) * sum_o log P(r_o | ...), in (-inf, 0].

    What the released code effectively uses: beam search's `sequences_scores` with the
    default length penalty 1.0 is the summed log-probability over the sentence length.
    """
    _check_logprobs(token_logprobs)
    return math.fsum(token_logprobs) / len(token_logprobs)


def self_score(token_logprobs: Sequence[float], kind: str) -> float:
    """R_T by name: "product" (Eq. 2) or "mean-logprob"."""
    if kind == "product":
        return self_score_product(token_logprobs)
    if kind == "mean-logprob":
        return self_score_mean_logprob(token_logprobs)
    raise ValueError(f"unknown self score {kind!r}; use 'product' or 'mean-logprob'")


def relevance_score(cosine: float) -> float:
    """R_I(s) = max(100 * cos(F_I(x_v), F_T(s)), 0), the paper's Eq. 3, in [0, 100]."""
    if not math.isfinite(cosine) or abs(cosine) > 1.0 + _COSINE_SLACK:
        raise ValueError(f"cosine similarity {cosine!r} is not a finite number in [-1, 1]")
    return max(RELEVANCE_SCALE * cosine, 0.0)


def calibrated_reward(r_i: float, r_t: float, lam: float) -> float:
    """R(s) = lam * R_I(s) + (1 - lam) * R_T(s), the paper's Eq. 4."""
    return lam * r_i + (1.0 - lam) * r_t


def sibling_ranks(values: Sequence[float]) -> list[float]:
    """Ranks among siblings as fractions: the highest value gets 1/n, the lowest 1.

    Lower is better, as in the released code (`(index + 1) / n` after a descending sort).
    Every rank lies in (0, 1]. Equal values share the mean of the ranks they span (so a
    rank never depends on the order siblings arrive in); the released code instead gives
    tied siblings consecutive ranks in arrival order.
    """
    n = len(values)
    order = sorted(range(n), key=lambda i: -values[i])
    ranks = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and values[order[end + 1]] == values[order[start]]:
            end += 1
        shared = (start + end + 2) / 2.0 / n  # mean of positions start+1 .. end+1, over n
        for position in range(start, end + 1):
            ranks[order[position]] = shared
        start = end + 1
    return ranks


def sentence_merits(
    r_t: Sequence[float], r_i: Sequence[float], config: RewardConfig
) -> list[float]:
    """The merit (higher is better) of each sibling candidate, from its R_T and R_I.

    raw:  merit = R - lam * b = lam * (R_I - b) + (1 - lam) * R_T, b being
          config.relevance_baseline (0: merit = R, the paper's).
    rank: merit = -(lam * rank(R_I) + (1 - lam) * rank(R_T)), ranks taken among the siblings
          by `sibling_ranks`; minus, because there a lower combined rank is better.
    """
    if len(r_t) != len(r_i):
        raise ValueError(f"{len(r_t)} self scores but {len(r_i)} relevance scores")
    if config.normalization == "raw":
        offset = config.lam * config.relevance_baseline
        return [calibrated_reward(ri, rt, config.lam) - offset for rt, ri in zip(r_t, r_i)]
    rank_t, rank_i = sibling_ranks(r_t), sibling_ranks(r_i)
    return [-calibrated_reward(ri, rt, config.lam) for rt, ri in zip(rank_t, rank_i)]


def aggregate(merits: Sequence[float], kind: str) -> float:
    """A path's cumulative reward: the sum of its sentence merits, or their mean."""
    if len(merits) == 0:
        raise ValueError("cannot aggregate an empty path")
    total = math.fsum(merits)
    if kind == "sum":
        return total
    if kind == "mean":
        return total / len(merits)
    raise ValueError(f"unknown aggregation {kind!r}; use 'sum' or 'mean'")
