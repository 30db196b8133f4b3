"""Invariants of the search and selection over random trees (hypothesis)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from csr.config import RewardConfig, SearchConfig, SelectionConfig
from csr.rewards import sibling_ranks
from csr.search import Candidate, SearchRequest, run_search
from csr.selection import PreferencePair, distinct_responses, select_pair

values = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@given(st.lists(values, min_size=1, max_size=30))
def test_ranks_lie_in_0_1_and_keep_their_total(xs):
    ranks = sibling_ranks(xs)
    n = len(xs)
    assert all(0 < r <= 1 for r in ranks)
    assert math.isclose(sum(ranks), (n + 1) / 2, rel_tol=1e-9)
    best = max(range(n), key=lambda i: xs[i])
    assert ranks[best] == min(ranks)


def random_expander(data):
    words = st.sampled_from(["cat", "dog", "sun", "car", "sky", "red"])

    def expand(prefixes):
        out = []
        for _ in prefixes:
            n = data.draw(st.integers(0, 4))
            out.append(
                [
                    Candidate(
                        f" A {data.draw(words)}" + data.draw(st.sampled_from([".", ""])),
                        tuple(data.draw(st.lists(st.floats(-5, 0), min_size=1, max_size=3))),
                        ends_response=data.draw(st.booleans()),
                    )
                    for _ in range(n)
                ]
            )
        return out

    return expand


@settings(max_examples=150, deadline=None)
@given(
    st.data(),
    st.sampled_from(["paper", "authors-code"]),
    st.sampled_from(["raw", "rank"]),
    st.sampled_from(["sum", "mean"]),
    st.integers(0, 2),
    st.integers(0, 2),
)
def test_search_and_selection_invariants(data, mode, normalization, aggregation, top, bottom):
    if top + bottom == 0:
        top = 1
    search = SearchConfig(mode=mode, keep_top=top, keep_bottom=bottom, max_sentences=4)
    relevance_table = {}

    def relevance(image, sentences):
        return [relevance_table.setdefault(s, data.draw(st.floats(0, 100))) for s in sentences]

    [result] = run_search(
        [SearchRequest("p", "q", "i")],
        random_expander(data),
        relevance,
        search,
        RewardConfig(normalization=normalization),
        SelectionConfig(aggregation),
    )
    assert all(len(kept) <= top + bottom for kept in result.kept_per_step)
    assert all(1 <= len(p.sentences) <= 4 for p in result.finished)
    assert all(s.merit is not None for p in result.finished for s in p.sentences)
    if normalization == "rank":
        assert all(-1 <= s.merit < 0 for p in result.finished for s in p.sentences)
    pair = select_pair(result.finished, aggregation)
    if isinstance(pair, PreferencePair):
        rewards = [p.reward(aggregation) for p in distinct_responses(result.finished)]
        assert pair.chosen_reward == max(rewards) > min(rewards) == pair.rejected_reward
        assert pair.chosen.text != pair.rejected.text
