"""Pair agreement between two reward settings, and the arithmetic behind the lambda = 1
finding: at lambda = 0.9, R_T cannot reorder sibling sentences that R_I tells apart."""

import itertools

import pytest

from csr.config import RewardConfig
from csr.evaluation.agreement import pair_agreement
from csr.rewards import sentence_merits


def test_agreement_counts_the_prompts_both_settings_made_a_pair_for():
    first = {"a": ("A.", "X."), "b": ("B.", "Y."), "c": ("C.", "Z."), "d": ("D.", "W."), "e": None}
    second = {"a": ("A.", "X."), "b": ("B.", "Q."), "c": ("K.", "Q."), "d": None, "e": None}
    agreement = pair_agreement(first, second)
    assert agreement.prompts == 3  # a, b, c
    assert agreement.chosen == pytest.approx(2 / 3)  # a, b
    assert agreement.rejected == pytest.approx(1 / 3)  # a
    assert agreement.pair == pytest.approx(1 / 3)
    assert agreement.only_one == 1  # d


def test_agreement_refuses_different_prompt_sets_and_nothing_to_compare():
    with pytest.raises(ValueError, match=r"different prompts \(e.g. \['b'\]\)"):
        pair_agreement({"a": ("A.", "X.")}, {"a": ("A.", "X."), "b": None})
    with pytest.raises(ValueError, match="no prompt gave a pair under both"):
        pair_agreement({"a": None, "b": ("B.", "Y.")}, {"a": ("A.", "X."), "b": None})


def _order(merits):
    return sorted(range(len(merits)), key=lambda i: -merits[i])


def test_with_five_siblings_and_ranks_lambda_09_orders_them_exactly_as_r_i_does():
    # lam * (one rank step, 1/5) = 0.18 outweighs (1 - lam) * (the widest R_T gap, 4/5) = 0.08,
    # so whatever R_T says, the siblings keep R_I's order: lambda = 1's order.
    rank = RewardConfig(lam=0.9, normalization="rank")
    r_i = [50.0, 40.0, 30.0, 20.0, 10.0]
    for r_t in itertools.permutations([0.1, 0.2, 0.3, 0.4, 0.5]):
        assert _order(sentence_merits(list(r_t), r_i, rank)) == [0, 1, 2, 3, 4]


def test_with_eleven_siblings_r_t_can_reorder_two_neighbours():
    # R_I ranks 1/11 and 2/11, R_T ranks 11/11 and 1/11: merits -(0.9/11 + 0.1) = -0.1818
    # and -(1.8/11 + 0.1/11) = -0.1727, so the second sentence now comes first.
    rank = RewardConfig(lam=0.9, normalization="rank")
    r_i = [100.0 - i for i in range(11)]
    r_t = [0.0, 1.0] + [0.5 - 0.01 * i for i in range(9)]
    merits = sentence_merits(r_t, r_i, rank)
    assert merits[0] == pytest.approx(-(0.9 / 11 + 0.1))
    assert merits[1] == pytest.approx(-(1.8 / 11 + 0.1 / 11))
    assert _order(merits)[:2] == [1, 0]


def test_raw_scores_let_r_t_move_a_merit_by_at_most_a_tenth_of_a_point():
    # R_T = a product of probabilities lies in [0, 1]; (1 - 0.9) * 1 = 0.1 against R_I's 0-100:
    # only siblings whose R_I are within 0.11 of each other can swap.
    raw = RewardConfig(lam=0.9)
    near = sentence_merits([0.0, 1.0], [50.0, 49.95], raw)  # 45.0 against 44.955 + 0.1
    assert near == pytest.approx([45.0, 45.055]) and _order(near) == [1, 0]
    far = sentence_merits([0.0, 1.0], [50.0, 49.85], raw)  # 45.0 against 44.865 + 0.1
    assert far == pytest.approx([45.0, 44.965]) and _order(far) == [0, 1]
