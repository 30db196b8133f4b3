"""A run's pairs as the export and the report see them: filters, margins, columns, no-pair
counts and pages, with values worked out by hand."""

import pytest

from csr.pairs_view import (
    NoPairCounts,
    PairFilter,
    PairFilterError,
    conversational_columns,
    margin,
    no_pair_counts,
    page_bounds,
    provenance,
    select_pairs,
)
from csr.records import PreferenceRecord, SentenceRecord


def make(prompt_id: str, iteration: int, version: str) -> PreferenceRecord:
    chosen = (SentenceRecord("There is a ring.", 0.5, 50.0, 45.05, 45.05),)
    rejected = (
        SentenceRecord("There is a ring.", 0.4, 48.0, 43.24, 43.24),
        SentenceRecord("There is a cross.", 0.2, 10.0, 9.02, 9.02),
    )
    return PreferenceRecord(
        pair_id=f"id-{prompt_id}-{iteration}",
        prompt_id=prompt_id,
        prompt="Describe the image.",
        image=f"{prompt_id}.png",
        chosen="There is a ring.",
        rejected="There is a ring. There is a cross.",
        iteration=iteration,
        adapter_version=version,
        lam=0.9,
        mode="paper",
        normalization="raw",
        aggregation="mean",
        self_score="product",
        chosen_reward=45.05,
        rejected_reward=26.13,  # (43.24 + 9.02) / 2
        chosen_sentences=chosen,
        rejected_sentences=rejected,
    )


RECORDS = [make("a", 1, "base"), make("b", 1, "base"), make("a", 2, "1"), make("c", 3, "2")]


def test_a_filter_keeps_the_iterations_and_versions_it_names_in_stream_order():
    assert select_pairs(RECORDS, PairFilter()) == RECORDS
    assert select_pairs(RECORDS, PairFilter(iterations=(1, 3))) == [
        RECORDS[0],
        RECORDS[1],
        RECORDS[3],
    ]
    assert select_pairs(RECORDS, PairFilter(adapter_versions=("1", "2"))) == RECORDS[2:]
    both = PairFilter(iterations=(2, 3), adapter_versions=("2",))
    assert select_pairs(RECORDS, both) == [RECORDS[3]]


def test_an_unknown_iteration_is_refused_with_the_iterations_the_run_has():
    with pytest.raises(PairFilterError, match=r"iteration 7 is not in this run; it has 1, 2, 3"):
        select_pairs(RECORDS, PairFilter(iterations=(1, 7)))
    # an iteration known only from its no-pairs is in the run, with no pair to keep
    assert select_pairs(RECORDS, PairFilter(iterations=(4,)), known_iterations=[4]) == []


def test_an_adapter_version_that_made_no_pair_is_refused_by_name():
    with pytest.raises(PairFilterError, match=r"adapter version 9 .* from 1, 2, base"):
        select_pairs(RECORDS, PairFilter(adapter_versions=("9",)))


def test_the_margin_and_the_flat_provenance_columns():
    row = provenance(RECORDS[0])
    assert margin(RECORDS[0]) == pytest.approx(18.92)  # 45.05 - 26.13
    assert row["margin"] == pytest.approx(18.92)
    assert row["rejected_sentences"] == ["There is a ring.", "There is a cross."]
    assert row["rejected_r_t"] == [0.4, 0.2]
    assert row["rejected_r_i"] == [48.0, 10.0]
    assert row["rejected_r"] == [43.24, 9.02]
    assert row["chosen_r"] == [45.05]
    assert (row["iteration"], row["adapter_version"], row["image_path"]) == (1, "base", "a.png")


def test_trls_conversational_columns_are_one_user_and_one_assistant_turn():
    assert conversational_columns(RECORDS[0]) == {
        "prompt": [{"role": "user", "content": "Describe the image."}],
        "chosen": [{"role": "assistant", "content": "There is a ring."}],
        "rejected": [{"role": "assistant", "content": "There is a ring. There is a cross."}],
    }


def test_no_pairs_of_an_older_run_without_iterations_stay_apart():
    counts = no_pair_counts(
        {"tied_rewards": 5, "failed": 1, "single_response": 2},
        {1: {"tied_rewards": 3}, 2: {"tied_rewards": 1, "failed": 1}},
    )
    assert counts == NoPairCounts(
        {1: {"tied_rewards": 3}, 2: {"tied_rewards": 1, "failed": 1}},
        {"tied_rewards": 1, "single_response": 2},  # 5 - 3 - 1, and 2 never attributed
    )
    assert counts.total() == 8 and counts.total(2) == 2
    # by hand: tied 3 + 1 + 1 (unattributed), failed 1, single 2; sorted by reason
    assert counts.by_reason() == {"failed": 1, "single_response": 2, "tied_rewards": 5}
    only = no_pair_counts({}, {1: {"tied_rewards": 3}, 2: {"failed": 1}}, [2])
    assert only == NoPairCounts({2: {"failed": 1}})


def test_pages_cover_every_item_once():
    assert page_bounds(0, 25) == []
    assert page_bounds(50, 25) == [(0, 25), (25, 50)]
    assert page_bounds(51, 25) == [(0, 25), (25, 50), (50, 51)]
    with pytest.raises(ValueError, match="page_size"):
        page_bounds(3, 0)
