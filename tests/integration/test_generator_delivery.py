"""Delivery edge cases of the prompt streams on a real (embedded) Redis: poison prompts,
claims kept alive, one pair per (iteration, prompt), deleted entries, datasets folders."""

from __future__ import annotations

import json
import time

import pytest

from csr.records import PreferenceRecord
from services.runtime.prompt_sets import load_prompt_set
from services.runtime.prompts import PromptStreams, WorkItem


def test_a_prompt_that_never_finishes_is_failed_after_max_deliveries(redis):
    streams = PromptStreams(redis, reclaim_after_ms=1, max_deliveries=2)
    streams.enqueue([WorkItem("poison", "describe .", "x.png", 1)])
    assert len(streams.claim("a", 1, block_ms=1)) == 1  # delivery 1, then "a" dies
    time.sleep(0.01)
    assert len(streams.claim("b", 1, block_ms=1)) == 1  # delivery 2, then "b" dies
    time.sleep(0.01)
    assert streams.claim("c", 1, block_ms=1) == []  # delivery 3 > 2: given up
    [failed] = streams.failed()
    assert failed["prompt_id"] == "poison" and "delivered 3 times" in failed["reason"]
    assert streams.pending() == 0 and streams.no_pairs() == {"failed": 1}
    assert streams.progress() == (1, 1)


def test_keep_alive_stops_another_replica_from_reclaiming(redis):
    streams = PromptStreams(redis, reclaim_after_ms=200)
    streams.enqueue([WorkItem("p", "describe .", "x.png", 1)])
    items = streams.claim("a", 1, block_ms=1)
    time.sleep(0.15)
    streams.keep_alive("a", items)
    time.sleep(0.1)  # 250 ms since the claim, 100 ms since the keep-alive
    assert streams.claim("b", 1, block_ms=1) == []
    time.sleep(0.25)  # "a" went silent
    assert [i.prompt_id for i in streams.claim("b", 1, block_ms=1)] == ["p"]
    streams.keep_alive("a", items)  # "a" comes back: it no longer owns it, takes nothing
    [info] = redis.xpending_range("csr:prompts", "generators", "-", "+", 1)
    assert info["consumer"] == b"b"


def record(prompt_id: str, adapter_version: str) -> PreferenceRecord:
    from csr.config import CSRConfig
    from csr.pairs import generate_pairs
    from csr.search import SearchRequest
    from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

    tree = {"": [cand(" A cat.", -0.1, ends=True), cand(" A dog.", -0.3, ends=True)]}
    [outcome] = generate_pairs(
        [SearchRequest(prompt_id, "describe .", "x.png")],
        ScriptedModel(tree),
        ScriptedRelevance({"A cat.": 3.0, "A dog.": 1.0}),
        CSRConfig(),
        iteration=1,
        adapter_version=adapter_version,
    )
    return outcome.record


def test_one_pair_per_iteration_and_prompt_whatever_the_adapter(redis):
    streams = PromptStreams(redis, reclaim_after_ms=1)
    streams.enqueue([WorkItem("p", "describe .", "x.png", 1)])
    [first] = streams.claim("a", 1, block_ms=1)
    time.sleep(0.01)
    [again] = streams.claim("b", 1, block_ms=1)  # reclaimed by a replica on a newer adapter
    assert streams.publish(again, record("p", "2")) is True
    assert streams.publish(first, record("p", "1")) is False
    assert [r.adapter_version for r in streams.pairs()] == ["2"] and streams.pending() == 0


def test_entries_deleted_from_the_stream_do_not_stay_pending(redis):
    streams = PromptStreams(redis, reclaim_after_ms=1)
    streams.enqueue([WorkItem("p", "describe .", "x.png", 1)])
    [item] = streams.claim("a", 1, block_ms=1)
    redis.xdel("csr:prompts", item.entry_id)  # trimmed by an operator
    time.sleep(0.01)
    assert streams.claim("b", 1, block_ms=1) == []
    assert streams.pending() == 0


def test_a_datasets_folder_loads_like_the_json_prompt_set(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [
        {"id": "1", "image": "a.jpg", "input": "<image>\nDescribe this image."},
        {"id": "2", "image": "b.jpg", "input": "What is there?"},
    ]
    (tmp_path / "set.json").write_text(json.dumps(rows))
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "folder"))
    expected = load_prompt_set(str(tmp_path / "set.json"), 2)
    assert load_prompt_set(str(tmp_path / "folder"), 2) == expected
    assert expected[0] == WorkItem("1", "Describe this image.", "a.jpg", 2)
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "one-split"))
    assert load_prompt_set(str(tmp_path / "one-split"), 2) == expected
    DatasetDict({"a": Dataset.from_list(rows), "b": Dataset.from_list(rows)}).save_to_disk(
        str(tmp_path / "two")
    )
    with pytest.raises(ValueError, match="has splits"):
        load_prompt_set(str(tmp_path / "two"), 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a saved Hugging Face dataset"):
        load_prompt_set(str(tmp_path / "empty"), 2)


def test_a_replica_restarted_under_its_name_takes_its_own_prompts_back_at_once(redis):
    before = PromptStreams(redis, reclaim_after_ms=60_000)
    before.enqueue([WorkItem(f"p{i}", "describe .", "x.png", 1) for i in range(3)])
    assert len(before.claim("generator-1", 2, block_ms=1)) == 2  # then it was killed
    after = PromptStreams(redis, reclaim_after_ms=60_000)  # the restart, long before 60 s
    assert [i.prompt_id for i in after.claim("generator-1", 5, block_ms=1)] == ["p0", "p1"]
    assert [i.prompt_id for i in after.claim("generator-1", 5, block_ms=1)] == ["p2"]
    assert PromptStreams(redis).claim("generator-2", 5, block_ms=1) == []  # not someone else's


def test_a_prompt_finished_elsewhere_gets_no_late_pair(redis):
    streams = PromptStreams(redis, reclaim_after_ms=1, max_deliveries=1)
    streams.enqueue([WorkItem("p", "describe .", "x.png", 1)])
    [slow] = streams.claim("a", 1, block_ms=1)
    time.sleep(0.01)
    assert streams.claim("b", 1, block_ms=1) == []  # delivered twice: failed
    assert streams.publish(slow, record("p", "base")) is False  # "a" finishes late
    assert streams.pairs() == [] and streams.iteration_progress(1) == (1, 1)


def test_an_iteration_counts_as_queued_only_once_sealed(redis):
    streams = PromptStreams(redis)
    items = [WorkItem(f"p{i}", "describe .", "x.png", 3) for i in range(3)]
    streams.enqueue(items[:2], seal=False)  # a crash in the middle of queuing
    assert not streams.sealed(3) and streams.iteration_progress(3) == (0, 2)
    assert streams.enqueue(items) == 1  # queuing again adds the rest, then seals
    assert streams.sealed(3) and streams.iteration_progress(3) == (0, 3)
