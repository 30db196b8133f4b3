"""The trainer's pure decisions: version numbers, staleness, DPO examples, schedules."""

from dataclasses import replace

import pytest

from csr.config import CSRConfig, ScheduleConfig
from csr.pairs import generate_pairs
from csr.search import SearchRequest
from csr.training import (
    VersionError,
    dpo_example,
    is_stale,
    iteration_complete,
    online_batches,
    version_number,
)
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand


def record(adapter_version: str):
    tree = {"": [cand(" A cat.", -0.1, ends=True), cand(" A dog.", -0.3, ends=True)]}
    [outcome] = generate_pairs(
        [SearchRequest("p", "Describe.", "a.png")],
        ScriptedModel(tree),
        ScriptedRelevance({"A cat.": 3.0, "A dog.": 1.0}),
        CSRConfig(),
        1,
        adapter_version,
    )
    return outcome.record


def test_versions_are_base_or_whole_numbers():
    assert version_number("base") == 0 and version_number("12") == 12
    for bad in ("v7", "0", "-1", "01", ""):
        with pytest.raises(VersionError, match=repr(bad)):
            version_number(bad)


def test_staleness_bound():
    schedule = ScheduleConfig(max_staleness=1)
    assert not is_stale(record("base"), 1, schedule)  # made by 0, current 1: one behind
    assert is_stale(record("base"), 2, schedule)  # two behind
    assert not is_stale(record("2"), 3, schedule)
    assert is_stale(record("2"), 3, replace(schedule, max_staleness=0))


def test_dpo_example_leads_and_ends_each_response_as_told():
    example = dpo_example(record("base"), "</s>", " ")
    assert (example.chosen, example.rejected) == (" A cat.</s>", " A dog.</s>")
    assert (example.prompt, example.image) == ("Describe.", "a.png")
    example = dpo_example(record("base"), "<|im_end|>", "")
    assert (example.chosen, example.rejected) == ("A cat.<|im_end|>", "A dog.<|im_end|>")


def test_schedules_decide_when_to_train():
    assert online_batches(130, ScheduleConfig("online", online_every=64)) == 2
    assert online_batches(130, ScheduleConfig("iteration")) == 0
    assert iteration_complete(5, 5) and not iteration_complete(4, 5)
    assert not iteration_complete(0, 0)  # nothing queued is not a finished iteration
