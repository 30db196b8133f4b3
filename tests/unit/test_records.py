"""The preference record: round trip, provenance, and refusal of bad or unknown records."""

import json

import pytest

from csr.config import CSRConfig
from csr.errors import RecordError, UnsupportedSchemaError
from csr.pairs import generate_pairs
from csr.records import SCHEMA_VERSION, PreferenceRecord, pair_id_for
from csr.search import SearchRequest
from tests.unit.fakes import ScriptedModel, ScriptedRelevance, cand

REQUEST = SearchRequest("coco-42", "Describe the image.", "images/42.jpg")
TREE = {"": [cand(" A cat.", -0.1, -0.2, ends=True), cand(" A dog.", -0.3, ends=True)]}
TABLE = {"A cat.": 30.0, "A dog.": 5.0}


@pytest.fixture
def record():
    [outcome] = generate_pairs(
        [REQUEST],
        ScriptedModel(TREE),
        ScriptedRelevance(TABLE),
        CSRConfig(),
        iteration=2,
        adapter_version="v7",
    )
    return outcome.record


def test_record_carries_trl_columns_and_provenance(record):
    assert (record.prompt, record.chosen, record.rejected, record.image) == (
        "Describe the image.",
        "A cat.",
        "A dog.",
        "images/42.jpg",
    )
    assert (record.prompt_id, record.iteration, record.adapter_version) == ("coco-42", 2, "v7")
    assert (record.lam, record.mode, record.aggregation) == (0.9, "paper", "mean")
    assert record.schema_version == SCHEMA_VERSION == 1
    # R_T = exp(-0.3) = 0.7408; R = 0.9 * 30 + 0.1 * 0.7408 = 27.0741
    [sentence] = record.chosen_sentences
    assert (sentence.text, sentence.r_i) == ("A cat.", 30.0)
    assert sentence.r_t == pytest.approx(0.7408182)
    assert sentence.r == pytest.approx(27.0740818)
    assert record.chosen_reward == pytest.approx(27.0740818)


def test_pair_id_is_stable_across_regeneration(record):
    assert record.pair_id == pair_id_for("coco-42", 2, "v7")
    assert pair_id_for("coco-42", 2, "v7") != pair_id_for("coco-42", 3, "v7")
    assert pair_id_for("coco-42", 2, "v7") != pair_id_for("coco-43", 2, "v7")


def test_json_round_trip(record):
    text = record.to_json()
    assert PreferenceRecord.from_json(text) == record
    assert PreferenceRecord.from_json(text.encode()) == record


def test_unknown_schema_version_is_refused_with_the_fix(record):
    data = record.to_dict() | {"schema_version": 2}
    with pytest.raises(UnsupportedSchemaError, match="schema_version 2 is not supported.*upgrade"):
        PreferenceRecord.from_dict(data)


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.pop("schema_version"), "no schema_version"),
        (lambda d: d.update(schema_version=True), "schema_version True"),
        (lambda d: d.pop("chosen"), "lacks field\\(s\\) chosen"),
        (lambda d: d.update(extra=1), "unknown field\\(s\\) extra"),
        (lambda d: d.update(iteration="2"), "field iteration must be int"),
        (lambda d: d.update(iteration=True), "field iteration must be int"),
        (lambda d: d.update(lam=float("nan")), "field lam must be finite"),
        (lambda d: d.update(lam=10**400), "field lam is too large for a float"),
        (lambda d: d.update(chosen_sentences=[]), "chosen_sentences must be a non-empty list"),
        (lambda d: d["rejected_sentences"][0].pop("r_i"), "rejected_sentences\\[0\\] lacks"),
        (lambda d: d["chosen_sentences"].append("x"), "chosen_sentences\\[1\\] must be an object"),
    ],
)
def test_malformed_records_are_refused_by_name(record, change, message):
    data = json.loads(record.to_json())
    change(data)
    with pytest.raises(RecordError, match=message):
        PreferenceRecord.from_dict(data)


def test_integers_are_accepted_where_floats_are_expected(record):
    data = json.loads(record.to_json()) | {"lam": 1}
    assert PreferenceRecord.from_dict(data).lam == 1.0


@pytest.mark.parametrize("text", ["{", "[]", b"\xff\xfe", "null", "[" * 100_000 + "]" * 100_000])
def test_non_records_are_refused(text):
    with pytest.raises(RecordError):
        PreferenceRecord.from_json(text)


def test_no_pair_means_no_record():
    tree = {"": [cand(" A cat.", -0.1, ends=True)]}
    [outcome] = generate_pairs(
        [REQUEST],
        ScriptedModel(tree),
        ScriptedRelevance(TABLE),
        CSRConfig(),
        iteration=1,
        adapter_version="base",
    )
    assert outcome.record is None
    assert outcome.pair.reason == "single_response"
