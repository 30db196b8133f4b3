"""The two search modes and rank normalisation, on trees worked out by hand."""

import pytest

from csr.config import RewardConfig, SearchConfig, SelectionConfig
from csr.search import SearchRequest, run_search
from csr.selection import select_pair
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

REQUEST = SearchRequest("p1", "Describe.", "img-1")

# Root: X. R_T -0.1 R_I 5 | Y. R_T -0.5 R_I 20 | Z. R_T -0.9 R_I 10.
# X.: Xa. ends, R_T -0.2 R_I 30 | Xb. ends, R_T -0.3 R_I 1.   Z.: Za. ends, R_T -0.1 R_I 2.
# Y.: Ya. ends, R_T -0.1 R_I 40.
TREE = {
    "": [cand(" X.", -0.1), cand(" Y.", -0.5), cand(" Z.", -0.9)],
    "X.": [cand(" Xa.", -0.2, ends=True), cand(" Xb.", -0.3, ends=True)],
    "Y.": [cand(" Ya.", -0.1, ends=True)],
    "Z.": [cand(" Za.", -0.1, ends=True)],
}
TABLE = {"X.": 5, "Y.": 20, "Z.": 10, "Xa.": 30, "Xb.": 1, "Za.": 2, "Ya.": 40}
KEEP_1_1 = {"keep_top": 1, "keep_bottom": 1}


def run(mode, normalization, aggregation="mean"):
    model, relevance = ScriptedModel(TREE), ScriptedRelevance(TABLE)
    [result] = run_search(
        [REQUEST],
        model,
        relevance,
        SearchConfig(mode=mode, **KEEP_1_1),
        RewardConfig(lam=0.9, self_score="mean-logprob", normalization=normalization),
        SelectionConfig(aggregation),
    )
    return result, relevance


def test_authors_code_keeps_prefixes_by_self_score_and_ranks_afterwards():
    result, relevance = run("authors-code", "rank")
    # Guidance = summed R_T: X. -0.1 (best), Y. -0.5, Z. -0.9 (worst): Y. is pruned although
    # its R_I is the highest, because the search does not look at R_I in this mode.
    assert result.kept_per_step[0] == ("X.", "Z.")
    # One relevance call at the end, for every sibling group on a finished path (Y. included:
    # ranks among the root's children need it).
    assert relevance.calls == [("img-1", ["X.", "Y.", "Z.", "Xa.", "Xb.", "Za."])]
    # Root group ranks: R_T -> X 1/3, Y 2/3, Z 1; R_I -> X 1, Y 1/3, Z 2/3.
    #   merit X = -(0.9 * 1 + 0.1 * 1/3) = -0.93333; merit Z = -(0.9 * 2/3 + 0.1 * 1) = -0.7
    # X's children: Xa ranks (0.5, 0.5) -> -0.5; Xb ranks (1, 1) -> -1. Z's only child: -1.
    merits = {p.text: [s.merit for s in p.sentences] for p in result.finished}
    assert merits["X. Xa."] == pytest.approx([-0.9333333, -0.5])
    assert merits["X. Xb."] == pytest.approx([-0.9333333, -1.0])
    assert merits["Z. Za."] == pytest.approx([-0.7, -1.0])
    pair = select_pair(result.finished, "mean")
    assert (pair.chosen.text, pair.rejected.text) == ("X. Xa.", "X. Xb.")
    assert pair.chosen_reward == pytest.approx(-0.7166667)
    assert pair.rejected_reward == pytest.approx(-0.9666667)


def test_authors_code_fills_in_raw_rewards_after_the_search():
    result, _ = run("authors-code", "raw")
    xa = result.finished[0].sentences[1]
    assert xa.sentence == "Xa."
    assert (xa.r_i, xa.r) == pytest.approx((30.0, 0.9 * 30 + 0.1 * -0.2))
    assert xa.merit == pytest.approx(xa.r)


def test_paper_mode_lets_relevance_choose_the_prefixes():
    result, relevance = run("paper", "raw")
    # R: X. 0.9*5 - 0.01 = 4.49, Y. 18 - 0.05 = 17.95, Z. 9 - 0.09 = 8.91 -> keep Y. and X.
    assert result.kept_per_step[0] == ("Y.", "X.")
    assert relevance.calls[0] == ("img-1", ["X.", "Y.", "Z."])
    pair = select_pair(result.finished, "mean")
    # Y. Ya.: (17.95 + 35.99) / 2 = 26.97; X. Xb.: (4.49 + 0.87) / 2 = 2.68
    assert (pair.chosen.text, pair.rejected.text) == ("Y. Ya.", "X. Xb.")
    assert pair.chosen_reward == pytest.approx(26.97)
    assert pair.rejected_reward == pytest.approx(2.68)


def test_paper_mode_with_rank_normalisation():
    result, _ = run("paper", "rank")
    # Root ranks as above: merits X -0.93333, Y -(0.9/3 + 0.1*2/3) = -0.36667, Z -0.7.
    # Best Y., worst X.
    assert result.kept_per_step[0] == ("Y.", "X.")
    merits = {p.text: [s.merit for s in p.sentences] for p in result.finished}
    assert merits["Y. Ya."] == pytest.approx([-0.3666667, -1.0])
