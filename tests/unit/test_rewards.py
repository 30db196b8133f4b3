"""Reward formulas against values computed by hand."""

import math

import pytest

from csr.config import RewardConfig
from csr.rewards import (
    aggregate,
    calibrated_reward,
    relevance_score,
    self_score,
    self_score_mean_logprob,
    self_score_product,
    sentence_merits,
    sibling_ranks,
)


def test_product_self_score_is_the_product_of_token_probabilities():
    assert self_score_product([math.log(0.5), math.log(0.4)]) == pytest.approx(0.2)
    assert self_score([math.log(0.5), math.log(0.4)], "product") == pytest.approx(0.2)


def test_product_self_score_underflows_to_zero_not_nan():
    assert self_score_product([-500.0] * 10) == 0.0


def test_mean_logprob_self_score_is_the_mean_token_log_probability():
    assert self_score_mean_logprob([-1.0, -2.0, -3.0]) == pytest.approx(-2.0)
    assert self_score([-1.0, -2.0, -3.0], "mean-logprob") == pytest.approx(-2.0)


@pytest.mark.parametrize("bad", [[], [0.5], [float("nan")], [-1.0, float("-inf")]])
def test_self_score_refuses_bad_log_probs(bad):
    with pytest.raises(ValueError):
        self_score_product(bad)
    with pytest.raises(ValueError):
        self_score_mean_logprob(bad)


def test_unknown_self_score_is_named():
    with pytest.raises(ValueError, match="'geometric'"):
        self_score([-1.0], "geometric")


@pytest.mark.parametrize(
    "cosine,expected", [(0.31, 31.0), (1.0, 100.0), (0.0, 0.0), (-0.2, 0.0), (-1.0, 0.0)]
)
def test_relevance_is_100_cosine_clipped_at_zero(cosine, expected):
    assert relevance_score(cosine) == pytest.approx(expected)


@pytest.mark.parametrize("bad", [1.5, -1.01, float("nan"), float("inf")])
def test_relevance_refuses_impossible_cosines(bad):
    with pytest.raises(ValueError, match="cosine"):
        relevance_score(bad)


def test_calibrated_reward_weights_relevance_by_lambda():
    # 0.9 * 30 + 0.1 * 0.5 = 27.05
    assert calibrated_reward(r_i=30.0, r_t=0.5, lam=0.9) == pytest.approx(27.05)
    assert calibrated_reward(r_i=30.0, r_t=0.5, lam=0.0) == pytest.approx(0.5)
    assert calibrated_reward(r_i=30.0, r_t=0.5, lam=1.0) == pytest.approx(30.0)


def test_sibling_ranks_give_the_best_one_over_n_and_the_worst_one():
    assert sibling_ranks([3.0, 1.0, 2.0]) == pytest.approx([1 / 3, 1.0, 2 / 3])
    assert sibling_ranks([7.0]) == [1.0]
    assert sibling_ranks([]) == []


def test_tied_siblings_share_the_mean_of_their_ranks():
    assert sibling_ranks([5.0, 5.0, 1.0]) == pytest.approx([0.5, 0.5, 1.0])
    assert sibling_ranks([2.0, 2.0, 2.0, 2.0]) == pytest.approx([0.625] * 4)
    assert sibling_ranks([1.0, 9.0, 1.0]) == pytest.approx([5 / 6, 1 / 3, 5 / 6])


def test_raw_merit_is_the_calibrated_reward():
    config = RewardConfig(lam=0.9, normalization="raw")
    assert sentence_merits([0.5, 0.1], [30.0, 0.0], config) == pytest.approx([27.05, 0.01])


def test_a_relevance_baseline_is_taken_off_r_i():
    """b 40, lam 0.9: 0.9 * (30 - 40) + 0.1 * 0.5 = -8.95; 0.9 * (50 - 40) + 0.1 * 0.1 = 9.01."""
    config = RewardConfig(lam=0.9, relevance_baseline=40.0)
    assert sentence_merits([0.5, 0.1], [30.0, 50.0], config) == pytest.approx([-8.95, 9.01])


def test_rank_merit_is_minus_the_combined_rank():
    config = RewardConfig(lam=0.9, normalization="rank")
    # candidate 0: likelier (rank_t 0.5) but less relevant (rank_i 1): -(0.9*1 + 0.1*0.5) = -0.95
    # candidate 1: rank_t 1, rank_i 0.5: -(0.9*0.5 + 0.1*1) = -0.55, so it is the better one
    assert sentence_merits([0.3, 0.1], [10.0, 30.0], config) == pytest.approx([-0.95, -0.55])


def test_merits_refuse_mismatched_lengths():
    with pytest.raises(ValueError, match="2 self scores but 1"):
        sentence_merits([0.1, 0.2], [3.0], RewardConfig())


def test_aggregate_sum_and_mean():
    assert aggregate([4.5, 3.9], "sum") == pytest.approx(8.4)
    assert aggregate([4.5, 3.9], "mean") == pytest.approx(4.2)
    with pytest.raises(ValueError):
        aggregate([], "mean")
    with pytest.raises(ValueError, match="'max'"):
        aggregate([1.0], "max")
