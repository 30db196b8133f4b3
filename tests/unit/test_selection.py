"""Picking the pair: highest and lowest cumulative reward, and every no-pair reason."""

import pytest

from csr.search import FinishedPath, ScoredSentence
from csr.selection import (
    NO_FINISHED_RESPONSE,
    NO_WORSE_SENTENCE,
    SINGLE_RESPONSE,
    SMALL_MARGIN,
    TIED_REWARDS,
    NoPair,
    select_pair,
)


def path(*merits_and_texts):
    sentences = tuple(
        ScoredSentence(f" {text}", -0.1, 1.0, merit, merit, 1, 0, i)
        for i, (text, merit) in enumerate(merits_and_texts)
    )
    return FinishedPath(sentences, "end_of_response")


def test_chosen_is_the_highest_and_rejected_the_lowest():
    paths = [path(("A.", 2.0)), path(("B.", 5.0)), path(("C.", -1.0)), path(("D.", 0.0))]
    pair = select_pair(paths, "mean")
    assert (pair.chosen.text, pair.rejected.text) == ("B.", "C.")
    assert (pair.chosen_reward, pair.rejected_reward, pair.candidates) == (5.0, -1.0, 4)


def test_ties_pick_the_earliest_best_and_the_latest_worst():
    paths = [path(("A.", 1.0)), path(("B.", 5.0)), path(("C.", 5.0)), path(("D.", 1.0))]
    pair = select_pair(paths, "sum")
    assert (pair.chosen.text, pair.rejected.text) == ("B.", "D.")


def test_aggregation_decides_between_paths_of_different_length():
    long_path = path(("A.", 3.0), ("B.", 3.0), ("C.", 1.0))  # sum 7, mean 2.33
    short_path = path(("D.", 4.0))  # sum 4, mean 4
    low = path(("E.", 0.5))
    assert select_pair([long_path, short_path, low], "sum").chosen is long_path
    assert select_pair([long_path, short_path, low], "mean").chosen is short_path


def test_no_finished_response():
    result = select_pair([], "mean")
    assert isinstance(result, NoPair) and result.reason == NO_FINISHED_RESPONSE


def test_one_distinct_response_gives_no_pair():
    result = select_pair([path(("A.", 1.0)), path(("A.", 3.0))], "mean")
    assert isinstance(result, NoPair) and result.reason == SINGLE_RESPONSE
    assert "'A.'" in result.detail


def test_equal_rewards_give_no_pair():
    result = select_pair([path(("A.", 2.0)), path(("B.", 2.0))], "mean")
    assert isinstance(result, NoPair) and result.reason == TIED_REWARDS


def test_a_path_without_merits_cannot_be_ranked():
    unscored = FinishedPath((ScoredSentence(" A.", -0.1, None, None, None, 1, 0, 0),), "end")
    with pytest.raises(ValueError, match="no merit yet"):
        select_pair([unscored, path(("B.", 1.0))], "mean")


def test_a_pair_needs_the_minimum_margin():
    paths = [path(("A.", 2.0)), path(("B.", 5.0)), path(("C.", 1.5))]  # 5.0 - 1.5 = 3.5
    assert select_pair(paths, "mean", min_margin=3.5).rejected.text == "C."
    result = select_pair(paths, "mean", min_margin=3.6)
    assert isinstance(result, NoPair) and result.reason == SMALL_MARGIN
    assert "by 3.5, less than min_margin 3.6" in result.detail
    assert select_pair(paths, "mean").chosen.text == "B."  # 0: any difference


def test_a_pair_needs_a_worse_sentence_in_the_rejected_response():
    # the path helper sets R = merit. Chosen: mean 4.0, worst 3.0; rejected: mean 3.5, worst 3.0
    # (a true response that stops earlier): no worse sentence, so no pair at any gap > 0
    chosen, earlier = path(("A.", 5.0), ("B.", 3.0)), path(("A.", 4.0), ("C.", 3.0))
    assert select_pair([chosen, earlier], "mean").rejected is earlier
    result = select_pair([chosen, earlier], "mean", min_sentence_gap=2.0)
    assert isinstance(result, NoPair) and result.reason == NO_WORSE_SENTENCE
    assert "scores only 0 below the chosen one's, less than min_sentence_gap 2" in result.detail
    # a hallucination scored 0.5: worst 3.0 - 0.5 = 2.5 >= 2
    hallucinated = path(("A.", 5.0), ("D.", 0.5))
    pair = select_pair([chosen, hallucinated], "mean", min_sentence_gap=2.0)
    assert (pair.chosen, pair.rejected) == (chosen, hallucinated)
    assert isinstance(select_pair([chosen, hallucinated], "mean", min_sentence_gap=2.6), NoPair)


def test_with_unshared_the_gap_covers_every_rejected_sentence_the_chosen_lacks():
    # chosen: mean 4.0, worst 3.0. The rejected names a sentence the chosen left out, scored
    # 2.5 (only 0.5 below the chosen's worst), and a hallucination scored 0.5 (2.5 below).
    chosen = path(("A.", 5.0), ("B.", 3.0))
    omits = path(("A.", 5.0), ("E.", 2.5), ("D.", 0.5))  # mean 2.67
    assert select_pair([chosen, omits], "mean", min_sentence_gap=2.0).rejected is omits
    result = select_pair([chosen, omits], "mean", min_sentence_gap=2.0, gap_sentences="unshared")
    assert isinstance(result, NoPair) and result.reason == NO_WORSE_SENTENCE
    assert "sentence 'E.', which the chosen one lacks, scores only 0.5 below" in result.detail
    # what it shares with the chosen is not held against it: A. (5.0) and B. (3.0)
    shares = path(("A.", 5.0), ("B.", 3.0), ("D.", 0.5))  # mean 2.83
    pair = select_pair([chosen, shares], "mean", min_sentence_gap=2.0, gap_sentences="unshared")
    assert pair.rejected is shares


def test_unshared_without_a_gap_is_refused():
    from csr.config import ConfigError, SelectionConfig

    with pytest.raises(ConfigError, match="set min_sentence_gap too"):
        SelectionConfig(gap_sentences="unshared")
    with pytest.raises(ConfigError, match="gap_sentences='all' is not one of worst, unshared"):
        SelectionConfig(gap_sentences="all", min_sentence_gap=2.0)
    assert SelectionConfig(gap_sentences="unshared", min_sentence_gap=2.0).gap_sentences
