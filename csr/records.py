"""The preference record: what the generator emits and the trainer consumes.

Owns the versioned schema (SCHEMA_VERSION), its JSON round-trip, and the checks that refuse
a malformed record or an unknown version with a message that names the problem. The
columns `prompt`, `chosen`, `rejected` and `image` are what TRL's DPO trainer reads (the
trainer loads the image from the reference); the rest is provenance.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from csr.config import CSRConfig
from csr.errors import RecordError, UnsupportedSchemaError
from csr.search import ScoredSentence, SearchRequest
from csr.selection import PreferencePair

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1,)


@dataclass(frozen=True)
class SentenceRecord:
    """One sentence of a response with its rewards (R_T, R_I, R as in Eqs. 2-4)."""

    text: str
    r_t: float
    r_i: float
    r: float
    merit: float


@dataclass(frozen=True)
class PreferenceRecord:
    """A (chosen, rejected) pair for one prompt, with where it came from.

    pair_id is a hash of (prompt_id, iteration, adapter_version): producing the same pair
    again after a crash yields the same id, so consumers can drop the repeat.
    """

    pair_id: str
    prompt_id: str
    prompt: str
    image: str
    chosen: str
    rejected: str
    iteration: int
    adapter_version: str
    lam: float
    mode: str
    normalization: str
    aggregation: str
    self_score: str
    chosen_reward: float
    rejected_reward: float
    chosen_sentences: tuple[SentenceRecord, ...]
    rejected_sentences: tuple[SentenceRecord, ...]
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Any) -> PreferenceRecord:
        if not isinstance(data, dict):
            raise RecordError(
                f"a preference record must be a JSON object, got {type(data).__name__}"
            )
        _check_version(data.get("schema_version", None))
        _check_keys(data, {f.name for f in fields(cls)}, "preference record")
        values = {name: _typed(data, name, kind) for name, kind in _RECORD_TYPES.items()}
        for side in ("chosen_sentences", "rejected_sentences"):
            values[side] = _sentences(data[side], side)
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> PreferenceRecord:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RecordError(f"a preference record is not valid JSON: {e}") from e
        except RecursionError as e:  # a record is flat: deep nesting is never one
            raise RecordError(
                "a preference record nests deeper than any record does: not a record"
            ) from e
        return cls.from_dict(data)


_RECORD_TYPES: dict[str, type] = {
    "schema_version": int,
    "pair_id": str,
    "prompt_id": str,
    "prompt": str,
    "image": str,
    "chosen": str,
    "rejected": str,
    "iteration": int,
    "adapter_version": str,
    "lam": float,
    "mode": str,
    "normalization": str,
    "aggregation": str,
    "self_score": str,
    "chosen_reward": float,
    "rejected_reward": float,
}
_SENTENCE_TYPES: dict[str, type] = {
    "text": str,
    "r_t": float,
    "r_i": float,
    "r": float,
    "merit": float,
}


def _check_version(version: Any) -> None:
    if version is None:
        raise RecordError("the preference record has no schema_version field")
    if version not in SUPPORTED_SCHEMA_VERSIONS or isinstance(version, bool):
        raise UnsupportedSchemaError(
            f"preference record schema_version {version!r} is not supported; this csr reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}: upgrade csr, or re-generate the "
            "pairs with this version"
        )


def _check_keys(data: dict[str, Any], expected: set[str], what: str) -> None:
    missing, unknown = expected - data.keys(), data.keys() - expected
    if missing:
        raise RecordError(f"{what} lacks field(s) {', '.join(sorted(missing))}")
    if unknown:
        raise RecordError(f"{what} has unknown field(s) {', '.join(sorted(unknown))}")


def _typed(data: dict[str, Any], name: str, kind: type) -> Any:
    value = data[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError as e:
            raise RecordError(f"field {name} is too large for a float: {value}") from e
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RecordError(f"field {name} must be {kind.__name__}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(f"field {name} must be finite, got {value!r}")
    return value


def _sentences(items: Any, side: str) -> tuple[SentenceRecord, ...]:
    if not isinstance(items, list) or not items:
        raise RecordError(f"field {side} must be a non-empty list of sentences, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RecordError(f"{side}[{i}] must be an object, got {item!r}")
        _check_keys(item, set(_SENTENCE_TYPES), f"{side}[{i}]")
        out.append(SentenceRecord(**{k: _typed(item, k, t) for k, t in _SENTENCE_TYPES.items()}))
    return tuple(out)


def pair_id_for(prompt_id: str, iteration: int, adapter_version: str) -> str:
    key = json.dumps([prompt_id, iteration, adapter_version])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def _sentence_records(sentences: tuple[ScoredSentence, ...]) -> tuple[SentenceRecord, ...]:
    out = []
    for s in sentences:
        if s.r_i is None or s.r is None or s.merit is None:
            raise RecordError(
                f"sentence {s.sentence!r} was never given R_I; finish the search first"
            )
        out.append(SentenceRecord(s.sentence, s.r_t, s.r_i, s.r, s.merit))
    return tuple(out)


def build_record(
    request: SearchRequest,
    pair: PreferencePair,
    config: CSRConfig,
    iteration: int,
    adapter_version: str,
) -> PreferenceRecord:
    """The record of one pair, stamped with the iteration and adapter that produced it."""
    return PreferenceRecord(
        pair_id=pair_id_for(request.prompt_id, iteration, adapter_version),
        prompt_id=request.prompt_id,
        prompt=request.prompt,
        image=request.image_ref,
        chosen=pair.chosen.text,
        rejected=pair.rejected.text,
        iteration=iteration,
        adapter_version=adapter_version,
        lam=config.reward.lam,
        mode=config.search.mode,
        normalization=config.reward.normalization,
        aggregation=config.selection.aggregation,
        self_score=config.reward.self_score,
        chosen_reward=pair.chosen_reward,
        rejected_reward=pair.rejected_reward,
        chosen_sentences=_sentence_records(pair.chosen.sentences),
        rejected_sentences=_sentence_records(pair.rejected.sentences),
    )
