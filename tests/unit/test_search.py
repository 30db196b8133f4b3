"""The sentence-level search on a scripted tree whose every number is worked out by hand.

Settings in the main tree: lam = 0.5, R_T = mean token log-prob, raw merits, keep 1 + 1.
R = 0.5 * R_I + 0.5 * R_T for every candidate:
  step 1 (root):  A1. R_I 10, R_T -1.0 -> 4.5 | B1. R_I 2, R_T -0.5 -> 0.75 | C1. R_I 6,
                  R_T -2.0 -> 2.0.  Kept: best A1. and worst B1.; C1. pruned.
  step 2 (A1.):   A2. R_I 4, R_T -1.0 -> 1.5 | end-of-response (A1. finishes) |
                  ' A3' (no '.', hit the token cap) R_I 8, R_T -0.2 -> 3.9, finishes.
         (B1.):   B2. R_I 1, R_T -0.4 -> 0.3 | duplicate B2. dropped | ' .' empty, dropped |
                  B3. R_I 3, R_T -0.1 -> 1.45.
                  Live children: A1.A2. (sum 6.0, mean 3.0), B1.B2. (1.05, 0.525),
                  B1.B3. (2.2, 1.1). Kept: A1.A2. and B1.B2. under both aggregations.
  step 3 (A1.A2.): A4. ends the response, R_I 0, R_T -0.5 -> -0.25.
         (B1.B2.): nothing to say: finishes as it stands.
Finished, in order: A1. (4.5) | A1. A3 (sum 8.4, mean 4.2) | B1. B2. (1.05, 0.525) |
  A1. A2. A4. (sum 5.75, mean 1.9167).
"""

import pytest

from csr.config import RewardConfig, SearchConfig, SelectionConfig
from csr.errors import ExpansionError, RelevanceError
from csr.search import Candidate, SearchRequest, run_search
from csr.selection import select_pair
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

REQUEST = SearchRequest("p1", "Describe.", "img-1")
SEARCH = SearchConfig(keep_top=1, keep_bottom=1)
REWARD = RewardConfig(lam=0.5, self_score="mean-logprob", normalization="raw")

TREE = {
    "": [cand(" A1.", -1.0), cand(" B1.", -0.5), cand(" C1.", -2.0)],
    "A1.": [cand(" A2.", -1.0), cand("", -0.3, ends=True), cand(" A3", -0.2, -0.2)],
    "B1.": [cand(" B2.", -0.4), cand(" B2.", -0.9), cand(" .", -0.1), cand(" B3.", -0.1)],
    "A1. A2.": [cand(" A4.", -0.5, ends=True)],
}
RELEVANCE = {"A1.": 10, "B1.": 2, "C1.": 6, "A2.": 4, "A3": 8, "B2.": 1, "B3.": 3, "A4.": 0}


def search(
    aggregation="mean",
    search_config=SEARCH,
    tree=TREE,
    table=RELEVANCE,
    requests=(REQUEST,),
    reward=REWARD,
):
    model, relevance = ScriptedModel(tree), ScriptedRelevance(table)
    results = run_search(
        list(requests), model, relevance, search_config, reward, SelectionConfig(aggregation)
    )
    return results, model, relevance


def test_kept_prefixes_at_each_step():
    [result], model, _ = search()
    assert result.kept_per_step == (("A1.", "B1."), ("A1. A2.", "B1. B2."), ())
    assert model.calls == [[""], ["A1.", "B1."], ["A1. A2.", "B1. B2."]]
    assert result.expansions == 5


def test_finished_paths_their_reasons_and_rewards():
    [result], _, _ = search()
    got = [(p.text, p.finish_reason) for p in result.finished]
    assert got == [
        ("A1.", "end_of_response"),
        ("A1. A3", "unterminated"),
        ("B1. B2.", "no_continuation"),
        ("A1. A2. A4.", "end_of_response"),
    ]
    assert [p.reward("sum") for p in result.finished] == pytest.approx([4.5, 8.4, 1.05, 5.75])
    assert [p.reward("mean") for p in result.finished] == pytest.approx([4.5, 4.2, 0.525, 5.75 / 3])


def test_per_sentence_rewards_are_kept():
    [result], _, _ = search()
    a3 = result.finished[1].sentences[1]
    assert (a3.sentence, a3.r_t, a3.r_i, a3.r, a3.num_tokens) == ("A3", -0.2, 8.0, 3.9, 2)


def test_mean_and_sum_choose_different_pairs():
    [result], _, _ = search()
    mean_pair = select_pair(result.finished, "mean")
    assert (mean_pair.chosen.text, mean_pair.rejected.text) == ("A1.", "B1. B2.")
    sum_pair = select_pair(result.finished, "sum")
    assert (sum_pair.chosen.text, sum_pair.rejected.text) == ("A1. A3", "B1. B2.")
    assert (sum_pair.chosen_reward, sum_pair.rejected_reward) == pytest.approx((8.4, 1.05))


def test_relevance_is_asked_once_per_step_for_new_sentences_only():
    tree = dict(TREE, **{"B1.": [cand(" A1.", -0.4), cand(" B3.", -0.1)]})
    _, _, relevance = search(tree=tree)
    # A1. under B1. is already known from step 1: it is not sent again
    assert relevance.calls == [
        ("img-1", ["A1.", "B1.", "C1."]),
        ("img-1", ["A2.", "A3", "B3."]),
        ("img-1", ["A4."]),
    ]


def test_pruning_is_the_same_under_sum_and_mean():
    # Children of one step all have the same number of sentences, so sum and mean rank them
    # alike; the aggregations differ only when finished paths of different lengths compete.
    # lam = 1, so R = R_I. Step 1: X1. 1, Y1. 8, Z1. 0.5 -> keep Y1. (best) and Z1. (worst).
    # Step 2: Y1.Y2. (8 + 8), Z1.Z2. (0.5 + 0.5), Z1.W2. (0.5 + 30) -> keep Z1.W2. and Z1.Z2.
    tree = {
        "": [cand(" X1.", -1.0), cand(" Y1.", -1.0), cand(" Z1.", -1.0)],
        "Y1.": [cand(" Y2.", -1.0)],
        "Z1.": [cand(" Z2.", -1.0), cand(" W2.", -1.0)],
    }
    table = {"X1.": 1, "Y1.": 8, "Z1.": 0.5, "Y2.": 8, "Z2.": 0.5, "W2.": 30}
    reward = RewardConfig(lam=1.0, self_score="mean-logprob")
    kept = {}
    for aggregation in ("sum", "mean"):
        [result], _, _ = search(aggregation, tree=tree, table=table, reward=reward)
        kept[aggregation] = result.kept_per_step
    assert kept["sum"] == kept["mean"] == (("Y1.", "Z1."), ("Z1. W2.", "Z1. Z2."), ())


def test_ties_keep_the_earliest_as_best_and_the_latest_as_worst():
    tree = {"": [cand(" P.", -1.0), cand(" Q.", -1.0), cand(" R.", -1.0), cand(" S.", -1.0)]}
    table = {"P.": 5, "Q.": 5, "R.": 5, "S.": 5}
    [result], _, _ = search(tree=tree, table=table)
    assert result.kept_per_step[0] == ("P.", "S.")


def test_sentence_cap_finishes_paths():
    capped = SearchConfig(keep_top=1, keep_bottom=1, max_sentences=2)
    [result], _, _ = search(search_config=capped)
    reasons = {p.text: p.finish_reason for p in result.finished}
    assert reasons["A1. A2."] == "max_sentences"
    assert reasons["B1. B2."] == "max_sentences"
    assert result.kept_per_step[-1] == ()
    assert all(len(p.sentences) <= 2 for p in result.finished)


def test_token_cap_finishes_paths():
    tree = {
        "": [cand(" T1.", -0.1, -0.1, -0.1)],
        "T1.": [cand(" T2.", -0.1, -0.1)],
        "T1. T2.": [cand(" T3.", -0.1)],
    }
    capped = SearchConfig(keep_top=1, keep_bottom=1, max_response_tokens=5)
    [result], _, _ = search(search_config=capped, tree=tree, table={"T1.": 1, "T2.": 1, "T3.": 1})
    assert [(p.text, p.finish_reason) for p in result.finished] == [("T1. T2.", "max_tokens")]


def test_a_step_where_every_candidate_ends():
    tree = {"": [cand(" E1.", -0.1, ends=True), cand(" E2.", -0.2, ends=True)]}
    [result], model, _ = search(tree=tree, table={"E1.": 3, "E2.": 1})
    assert [p.text for p in result.finished] == ["E1.", "E2."]
    assert result.kept_per_step == ((),)
    assert len(model.calls) == 1


def test_an_empty_response_is_never_a_finished_path():
    tree = {"": [cand("", -0.1, ends=True), cand("   ", -0.1)]}
    [result], _, relevance = search(tree=tree, table={})
    assert result.finished == ()
    assert relevance.calls == []


def test_requests_run_in_lockstep_with_one_expand_per_step():
    other = SearchRequest("p2", "Describe.", "img-2")
    tree = dict(TREE)
    [first, second], model, relevance = search(tree=tree, requests=(REQUEST, other))
    assert model.calls[0] == ["", ""]
    assert model.calls[1] == ["A1.", "B1.", "A1.", "B1."]
    assert [p.text for p in first.finished] == [p.text for p in second.finished]
    assert {image for image, _ in relevance.calls} == {"img-1", "img-2"}


def test_candidate_state_is_handed_back_on_the_prefix():
    seen = []

    def expand(prefixes):
        seen.extend(p.state for p in prefixes)
        return [
            [Candidate(" S1.", (-0.1,), state="cache-7")] if p.state is None else []
            for p in prefixes
        ]

    run_search(
        [REQUEST], expand, ScriptedRelevance({"S1.": 1.0}), SEARCH, REWARD, SelectionConfig()
    )
    assert seen == [None, "cache-7"]


@pytest.mark.parametrize(
    "bad,message",
    [
        (cand(" X.", 0.5), "log-prob 0.5"),
        (cand(" X.", float("nan")), "log-prob nan"),
        (Candidate(" X.", ()), "no token log-probs"),
        (" X.", "is a str, not a Candidate"),
    ],
)
def test_a_broken_expander_is_named(bad, message):
    with pytest.raises(ExpansionError, match=message):
        search(tree={"": [bad]}, table={"X.": 1})


def test_an_expander_returning_the_wrong_count_is_named():
    with pytest.raises(ExpansionError, match="2 candidate lists for 1 prefixes"):
        run_search(
            [REQUEST],
            lambda prefixes: [[], []],
            ScriptedRelevance({}),
            SEARCH,
            REWARD,
            SelectionConfig(),
        )


@pytest.mark.parametrize(
    "scores,message",
    [([1.0, 2.0], "2 scores for 1 sentences"), ([-3.0], "is -3.0"), ([float("inf")], "is inf")],
)
def test_a_broken_relevance_is_named(scores, message):
    with pytest.raises(RelevanceError, match=message):
        run_search(
            [REQUEST],
            ScriptedModel({"": [cand(" X.", -0.1)]}),
            lambda image, sentences: scores,
            SEARCH,
            REWARD,
            SelectionConfig(),
        )


def test_numpy_numbers_are_accepted():
    import numpy as np

    tree = {
        "": [
            Candidate(" N.", (np.float32(-0.5),), ends_response=True),
            Candidate(" M.", (np.float64(-0.25),), ends_response=True),
        ]
    }
    [result] = run_search(
        [REQUEST],
        ScriptedModel(tree),
        lambda image, sentences: [np.float32(3.0) for _ in sentences],
        SEARCH,
        REWARD,
        SelectionConfig(),
    )
    assert [p.reward("mean") for p in result.finished] == pytest.approx([1.25, 1.375])


def test_a_scored_end_competes_as_a_sentence_and_counts_in_the_path():
    """end_relevance 5: A1.'s end candidate (log-prob -0.3) is the sentence "" with
    R = 0.5 * 5 + 0.5 * -0.3 = 2.35. 'A1.' + end: sum 4.5 + 2.35 = 6.85, mean 3.425; under
    the mean, A1. A3 (4.2) now beats stopping after A1. (the free end's 4.5)."""
    reward = RewardConfig(lam=0.5, self_score="mean-logprob", end_relevance=5.0)
    [result], _, relevance = search(reward=reward)
    got = [(p.text, p.finish_reason) for p in result.finished]
    assert got == [
        ("A1. A3", "unterminated"),
        ("A1.", "end_of_response"),
        ("B1. B2.", "no_continuation"),
        ("A1. A2. A4.", "end_of_response"),
    ]
    ended = result.finished[1]
    assert [(s.sentence, s.r_t, s.r_i) for s in ended.sentences] == [
        ("A1.", -1.0, 10.0),
        ("", pytest.approx(-0.3), 5.0),
    ]
    assert ended.sentences[1].r == pytest.approx(2.35)
    assert (ended.reward("sum"), ended.reward("mean")) == pytest.approx((6.85, 3.425))
    assert all("" not in sentences for _, sentences in relevance.calls)  # R_I is given
    pair = select_pair(result.finished, "mean")
    assert (pair.chosen.text, pair.rejected.text) == ("A1. A3", "B1. B2.")


def test_an_end_before_any_sentence_is_dropped_and_a_scored_end_needs_log_probs():
    tree = {"": [cand("", -0.1, ends=True), cand(" A1.", -1.0)], "A1.": [cand("", ends=True)]}
    reward = RewardConfig(lam=0.5, self_score="mean-logprob", end_relevance=5.0)
    with pytest.raises(ExpansionError, match="end-of-response candidate of 'A1.' has no token"):
        search(tree=tree, reward=reward)
    [result], _, _ = search(tree=tree)  # the free end needs none
    assert [(p.text, p.finish_reason) for p in result.finished] == [("A1.", "end_of_response")]


def test_a_candidate_that_repeats_its_own_prefix_is_dropped():
    """A1. -> ' A1.' again (dropped) and ' A2.'; the repeat would have R 4.5 and win."""
    tree = {
        "": [cand(" A1.", -1.0)],
        "A1.": [cand(" A1.", -1.0), cand(" A2.", -1.0)],
        "A1. A2.": [cand("", -0.1, ends=True)],
    }
    [result], _model, relevance = search(tree=tree)
    assert [p.text for p in result.finished] == ["A1. A2."]
    assert relevance.calls == [("img-1", ["A1."]), ("img-1", ["A2."])]


def test_fragments_below_min_words_are_dropped():
    """min_words 2: ' No.' and ' A1.' (one word each) are fragments; ' B two.' stays."""
    tree = {
        "": [cand(" No.", -0.1), cand(" B two.", -1.0, -1.0), cand(" A1.", -1.0)],
        "B two.": [cand("", -0.1, ends=True)],
    }
    [result], _, relevance = search(
        tree=tree,
        table={"B two.": 3},
        search_config=SearchConfig(keep_top=1, keep_bottom=1, min_words=2),
    )
    assert [p.text for p in result.finished] == ["B two."]
    assert relevance.calls == [("img-1", ["B two."])]


def test_candidates_below_min_relevance_are_dropped_once_scored():
    """min_relevance 1: B1. (R_I 0, R = -0.25, else the worst) is dropped, so C1. (R 2.0) takes
    the bottom place; C1.'s only candidate D1. has R_I 0, so C1. finishes as it stands."""
    tree = {
        "": [cand(" A1.", -1.0), cand(" B1.", -0.5), cand(" C1.", -2.0)],
        "A1.": [cand("", -0.3, ends=True)],
        "B1.": [cand("", -0.3, ends=True)],
        "C1.": [cand(" D1.", -0.2)],
    }
    table = {"A1.": 10, "B1.": 0, "C1.": 6, "D1.": 0}
    floor = SearchConfig(keep_top=1, keep_bottom=1, min_relevance=1.0)
    [result], _, relevance = search(tree=tree, table=table, search_config=floor)
    assert result.kept_per_step == (("A1.", "C1."), ())
    got = [(p.text, p.finish_reason) for p in result.finished]
    assert got == [("A1.", "end_of_response"), ("C1.", "no_continuation")]
    assert relevance.calls == [("img-1", ["A1.", "B1.", "C1."]), ("img-1", ["D1."])]
    [plain], _, _ = search(tree=tree, table=table)  # the paper's rule keeps B1. at the bottom
    assert plain.kept_per_step[0] == ("A1.", "B1.")


def test_min_relevance_needs_the_paper_mode():
    with pytest.raises(ValueError, match=r"min_relevance=1.0 needs mode 'paper'"):
        SearchConfig(mode="authors-code", min_relevance=1.0)
    with pytest.raises(ValueError, match=r"min_relevance=-1 must be a finite number in \[0.0"):
        SearchConfig(min_relevance=-1)
