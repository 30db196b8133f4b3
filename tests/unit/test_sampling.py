"""Sampled expansion: the drawn tokens follow softmax(log-probs / T), the recorded log-probs
are the model's own, rows are routed to the right parents, and draws do not depend on batching."""

from collections import Counter

import pytest

from services.generator.sampling import prefix_generator, sample_sentences
from tests.unit.test_beam import HistoryLM

# Token 0, 1 and 2 stop; a one-token sentence is drawn from [0.5, 0.3, 0.2].
ONE_STEP = [0.5, 0.3, 0.2]


def draw_one_token(temperature: float, draws: int = 4000) -> Counter:
    lm = HistoryLM(3, table=lambda history: ONE_STEP)
    hyps = sample_sentences(
        lm.start(1), lm.step, {0, 1, 2}, draws, 5, temperature, [prefix_generator(7, "p")]
    )[0]
    return Counter(h.tokens[0] for h in hyps)


def test_frequencies_follow_the_distribution_at_temperature_one():
    counts = draw_one_token(1.0)
    for token, p in enumerate(ONE_STEP):  # 4,000 draws: 4 standard errors is < 0.032
        assert counts[token] / 4000 == pytest.approx(p, abs=0.032)


def test_temperature_sharpens_the_distribution():
    # At T = 0.5 the weights are p^2: 0.25, 0.09, 0.04, normalised by 0.38.
    counts = draw_one_token(0.5)
    for token, p in enumerate([0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38]):
        assert counts[token] / 4000 == pytest.approx(p, abs=0.032)


def test_logprobs_are_the_models_own_and_rows_follow_their_parents():
    # The distribution depends on the whole history: a sample whose rows were mixed up
    # would record log-probs of another history.
    lm = HistoryLM(4, seed=3)
    hyps = sample_sentences(
        lm.start(2), lm.step, {3}, 6, 5, 0.7, [prefix_generator(0, "a"), prefix_generator(0, "b")]
    )
    assert [len(h) for h in hyps] == [6, 6]
    for own in hyps:
        for h in own:
            expected = [float(lm.logprobs(h.tokens[:i])[t]) for i, t in enumerate(h.tokens)]
            assert list(h.logprobs) == pytest.approx(expected, abs=1e-6)
            assert h.stopped == (h.tokens[-1] == 3)
            assert h.stopped or len(h.tokens) == 5  # stopped, or cut by the token cap
            assert h.score == pytest.approx(sum(expected) / len(expected))
        assert [h.score for h in own] == sorted((h.score for h in own), reverse=True)


def test_a_prefix_draws_the_same_samples_alone_or_batched():
    lm = HistoryLM(5, seed=1)
    alone = sample_sentences(lm.start(1), lm.step, {4}, 5, 6, 1.0, [prefix_generator(2, "x")])
    lm2 = HistoryLM(5, seed=1)
    batched = sample_sentences(
        lm2.start(3), lm2.step, {4}, 5, 6, 1.0, [prefix_generator(2, k) for k in ("w", "x", "y")]
    )
    assert batched[1] == alone[0]
    lm3 = HistoryLM(5, seed=1)
    other_seed = sample_sentences(
        lm3.start(1), lm3.step, {4}, 5, 6, 1.0, [prefix_generator(3, "x")]
    )
    assert [h.tokens for h in other_seed[0]] != [h.tokens for h in alone[0]]


def test_banned_tokens_are_never_drawn():
    lm = HistoryLM(3, table=lambda history: [0.0, 0.5, 0.5])  # log(0) = -inf: banned
    hyps = sample_sentences(lm.start(1), lm.step, {2}, 200, 3, 5.0, [prefix_generator(0, "p")])
    assert all(0 not in h.tokens for h in hyps[0])


def test_a_sampled_stop_token_that_ends_nothing_keeps_sampling():
    """Token 1 is always drawn (all mass on it) but ends a sample only at its third draw."""
    import torch

    from services.generator.sampling import prefix_generator, sample_sentences

    certain = torch.log(torch.tensor([[1e-9, 1.0 - 2e-9, 1e-9]]))

    def step(parents, tokens):
        return certain.repeat(len(parents), 1)

    [hyps] = sample_sentences(
        certain, step, {1}, 2, 8, 1.0, [prefix_generator(0, "p")], ends=lambda t: len(t) >= 3
    )
    assert [h.tokens for h in hyps] == [(1, 1, 1), (1, 1, 1)]
    assert all(h.stopped for h in hyps)
