"""The evaluation file a run report reads, and its captions marked by hand."""

import json

import pytest

from reports.evaluation import EvaluationFileError, _caption_cell, read_evaluations

VOCABULARY = {s: s for s in ("circle", "square", "ring")}


def test_a_sentence_naming_an_absent_object_is_marked():
    cell = _caption_cell("There is a circle. There are two squares.", {"circle"}, VOCABULARY)
    assert cell == (
        'There is a circle. <span class="absent" title="not in the image">'
        "There are two squares.</span>"
    )
    assert _caption_cell("A <b>ring</b>.", None, VOCABULARY) == "A &lt;b&gt;ring&lt;/b&gt;."


def test_both_evaluation_files_are_read_and_a_bad_one_is_named(tmp_path):
    run = {
        "chair": {"chair_s": 0.5, "chair_i": 0.2, "recall": 0.9, "mean_sentences": 2.0},
        "pope": {"adversarial": {"accuracy": 0.8, "f1": 0.7}},
    }
    toy, listed, bad, broken = (tmp_path / n for n in ("eval.json", "l.json", "b.json", "x.json"))
    toy.write_text(json.dumps({"evaluations": [run, run]}))
    listed.write_text(json.dumps([run]))
    bad.write_text(json.dumps([{"chair": {"chair_s": 0.5}}]))
    broken.write_text("{")
    assert len(read_evaluations(toy).runs) == 2 and len(read_evaluations(listed).runs) == 1
    with pytest.raises(EvaluationFileError, match=r"b.json: evaluation 0 lacks chair/chair_i"):
        read_evaluations(bad)
    with pytest.raises(EvaluationFileError, match=r"cannot read the evaluation file .*x.json"):
        read_evaluations(broken)
    broken.write_text("[" * 100_000 + "]" * 100_000)  # nested past the parser's recursion
    with pytest.raises(EvaluationFileError, match=r"x.json: arrays and objects nested deeper"):
        read_evaluations(broken)
