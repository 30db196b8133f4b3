"""Diverse group beam search, against exhaustive search and a hand-worked example."""

import itertools
import math
import random

import pytest
import torch

from services.generator.beam import diverse_beam_search


class HistoryLM:
    """A fake LM whose next-token distribution depends on the whole history of a row."""

    def __init__(self, vocab: int, table=None, seed: int = 0):
        self.vocab, self.table, self.seed = vocab, table, seed
        self.rows: list[tuple[int, ...]] = []

    def logprobs(self, history: tuple[int, ...]) -> torch.Tensor:
        if self.table is not None:
            return torch.log(torch.tensor(self.table(history)))
        rng = random.Random(hash((self.seed, history)))
        weights = torch.tensor([rng.random() + 0.05 for _ in range(self.vocab)])
        return torch.log(weights / weights.sum())

    def start(self, prefixes: int) -> torch.Tensor:
        self.rows = [() for _ in range(prefixes)]
        return torch.stack([self.logprobs(()) for _ in range(prefixes)])

    def step(self, parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        self.rows = [self.rows[p] + (t,) for p, t in zip(parents.tolist(), tokens.tolist())]
        return torch.stack([self.logprobs(row) for row in self.rows])


def exhaustive(lm: HistoryLM, stop: int, max_new: int):
    """Every complete sequence (ends on stop, or reaches max_new) with its summed log-prob."""
    out = {}
    for length in range(1, max_new + 1):
        for seq in itertools.product(range(lm.vocab), repeat=length):
            if stop in seq[:-1] or (length < max_new and seq[-1] != stop):
                continue
            out[seq] = sum(float(lm.logprobs(seq[:i])[seq[i]]) for i in range(length))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_wide_beam_without_length_penalty_equals_exhaustive_search(seed):
    lm = HistoryLM(vocab=3, seed=seed)
    truth = exhaustive(lm, stop=2, max_new=3)
    [hyps] = diverse_beam_search(
        lm.start(1),
        lm.step,
        {2},
        num_beams=6,
        num_groups=1,
        diversity_penalty=0.0,
        max_new_tokens=3,
        length_penalty=0.0,
    )
    best = sorted(truth.items(), key=lambda kv: -kv[1])[:6]
    assert [h.tokens for h in hyps] == [seq for seq, _ in best]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in best], abs=1e-5)
    for h in hyps:  # the model's own log-probs are kept per token
        assert sum(h.logprobs) == pytest.approx(truth[h.tokens], abs=1e-5)
        assert h.stopped == (h.tokens[-1] == 2)


def test_prefixes_are_searched_independently_in_one_batch():
    lm = HistoryLM(vocab=3, seed=7)
    alone = diverse_beam_search(lm.start(1), lm.step, {2}, 4, 2, 1.5, 4)
    batched = diverse_beam_search(lm.start(3), lm.step, {2}, 4, 2, 1.5, 4)
    assert batched == alone * 3


def after_any_token(history):
    if not history:
        return [0.5, 0.3, 0.15, 0.05]
    return [0.2, 0.12, 0.08, 0.6]


def test_hamming_diversity_by_hand():
    """3 groups of 1 beam, penalty 1, token 3 stops.

    Step 1: group 0 takes token 0 (log .5). Group 1 sees token 0 penalised by 1:
    log .5 - 1 = -1.69 < log .3 = -1.20, so it takes token 1. Group 2 sees 0 and 1 penalised:
    -1.69, -2.20, and log .15 = -1.90 for token 2, so it takes token 0 at a penalty of -1.
    Step 2: every group's best is the stop token (log .6), finishing [t, 3].
    Scores (length 2): g0 (log .5 + log .6)/2 = -0.602; g1 (log .3 + log .6)/2 = -0.857;
    g2 (log .5 - 1 + log .6)/2 = -1.102.
    """
    lm = HistoryLM(vocab=4, table=after_any_token)
    [hyps] = diverse_beam_search(
        lm.start(1),
        lm.step,
        {3},
        num_beams=3,
        num_groups=3,
        diversity_penalty=1.0,
        max_new_tokens=2,
    )
    assert [h.tokens for h in hyps] == [(0, 3), (1, 3), (0, 3)]
    assert [h.score for h in hyps] == pytest.approx([-0.6020, -0.8573, -1.1020], abs=1e-4)
    assert hyps[2].penalties == (-1.0, 0.0)
    assert hyps[2].logprobs == pytest.approx((math.log(0.5), math.log(0.6)))
    assert all(h.stopped for h in hyps)


def test_without_penalty_groups_repeat_each_other():
    lm = HistoryLM(vocab=4, table=after_any_token)
    [hyps] = diverse_beam_search(lm.start(1), lm.step, {3}, 3, 3, 0.0, 2)
    assert [h.tokens for h in hyps] == [(0, 3)] * 3


def test_the_token_cap_returns_unstopped_hypotheses():
    lm = HistoryLM(vocab=4, table=lambda h: [0.7, 0.2, 0.09, 0.01])
    [hyps] = diverse_beam_search(lm.start(1), lm.step, {3}, 2, 1, 0.0, 3)
    assert hyps[0].tokens == (0, 0, 0) and not hyps[0].stopped
    assert len(hyps) == 2


def test_groups_must_divide_beams():
    with pytest.raises(ValueError, match="num_beams=5 is not a multiple of num_groups=2"):
        diverse_beam_search(torch.zeros(1, 3), lambda p, t: None, {2}, 5, 2, 1.0, 3)


def test_a_stop_ranked_below_the_group_size_is_not_finished():
    """One group of 2 beams, token 2 stops, no length penalty.

    Step 1 keeps [0] (log .5) and [1] (log .4). Step 2 ranks: [0,2] -1.050 (stop, rank 0,
    finished), [1,0] -1.609 (running), [1,2] -1.715 (stop at rank 2 >= group size: dropped, as
    transformers did), [0,0] -2.303 (running). Step 3 is uniform (log 1/3 each): the best
    left is [1,0,x] at -1.609 - 1.099 = -2.708. Had [1,2] been kept it would rank second.
    """
    table = {(): [0.5, 0.4, 0.1], (0,): [0.2, 0.1, 0.7], (1,): [0.5, 0.05, 0.45]}
    lm = HistoryLM(vocab=3, table=lambda h: table.get(h, [1 / 3] * 3))
    [hyps] = diverse_beam_search(
        lm.start(1),
        lm.step,
        {2},
        num_beams=2,
        num_groups=1,
        diversity_penalty=0.0,
        max_new_tokens=3,
        length_penalty=0.0,
    )
    assert hyps[0].tokens == (0, 2)
    assert [h.score for h in hyps] == pytest.approx([-1.0498, -2.7081], abs=1e-4)
    assert hyps[1].tokens[:2] == (1, 0)


def test_a_stop_token_that_ends_nothing_keeps_the_beam_running():
    """Tokens: 0 "Mr", 1 ".", 2 "Smith". After "Mr" the period is the likeliest token, but
    `ends` says "Mr." ends no sentence, so the beam goes on to "Mr. Smith."; without `ends`
    it stops at "Mr."."""

    def table(history):
        if history == ():
            return [0.7, 0.1, 0.2]
        if history[-1] == 0:
            return [0.05, 0.9, 0.05]
        if history[-2:] == (0, 1):
            return [0.05, 0.05, 0.9]
        return [0.05, 0.9, 0.05]

    def ends(tokens):
        return tuple(tokens[-2:]) != (0, 1)

    lm = HistoryLM(vocab=3, table=table)
    [plain] = diverse_beam_search(lm.start(1), lm.step, {1}, 1, 1, 0.0, 6)
    assert plain[0].tokens == (0, 1) and plain[0].stopped
    lm = HistoryLM(vocab=3, table=table)
    [checked] = diverse_beam_search(lm.start(1), lm.step, {1}, 1, 1, 0.0, 6, ends=ends)
    assert checked[0].tokens == (0, 1, 2, 1) and checked[0].stopped
