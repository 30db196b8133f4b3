"""`csr pairs export`: a run's preference pairs as a Hugging Face `datasets` dataset that TRL's
DPOTrainer trains on as it is.

Owns the dataset's layout. The output directory is the dataset itself (`save_to_disk`, so
`datasets.load_from_disk(out)` opens it), with beside it:
- `pairs.parquet`, the same rows (`load_dataset("parquet", data_files=...)`);
- `no_pairs.json`, the prompts that gave no pair, by iteration and reason, and the failed ones;
- `export.json`, what was exported from where (and the marker that lets a later export
  replace this one).

Columns: TRL's vision preference columns `images` (a list of one image, its bytes embedded),
`prompt`, `chosen` and `rejected`, then the provenance of csr.pairs_view.provenance. The text
columns are TRL's conversational format by default (a user turn and an assistant turn; TRL
applies the model's chat template). With a model, they are the standard format instead,
rendered exactly as `csr train` renders them: the prompt in that model's chat template, and
each response ending with its tokenizer's end-of-sequence token.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csr.pairs_view import (
    NoPairCounts,
    PairFilter,
    conversational_columns,
    no_pair_counts,
    provenance,
    select_pairs,
)
from csr.records import SCHEMA_VERSION, PreferenceRecord
from reports.atomic import staged_directory
from reports.source import RunData

logger = logging.getLogger(__name__)

MARKER = "export.json"
NO_PAIRS = "no_pairs.json"
PARQUET = "pairs.parquet"
_CHUNK = 256  # rows per Parquet row group: images are read a chunk at a time


class ExportError(ValueError):
    """The export cannot be made; the message names what is wrong and the fix."""


@dataclass(frozen=True)
class ExportResult:
    out: Path
    pairs: int
    no_pairs: NoPairCounts
    format: str  # conversational or standard


# Arrow types of csr.pairs_view.provenance's columns, in its order
_SCALARS = {
    "pair_id": "string",
    "prompt_id": "string",
    "image_path": "string",
    "iteration": "int64",
    "adapter_version": "string",
    "schema_version": "int64",
    "lam": "float64",
    "mode": "string",
    "normalization": "string",
    "aggregation": "string",
    "self_score": "string",
    "chosen_text": "string",
    "rejected_text": "string",
    "chosen_reward": "float64",
    "rejected_reward": "float64",
    "margin": "float64",
}
_PER_SENTENCE = {
    "sentences": "string",
    "r_t": "float64",
    "r_i": "float64",
    "r": "float64",
    "merit": "float64",
}


def features(standard: bool):
    """The dataset's column types: TRL's four columns, then the provenance."""
    from datasets import Features, Image, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    text = Value("string") if standard else List(message)
    columns: dict[str, Any] = {"images": List(Image()), "prompt": text}
    columns.update(chosen=text, rejected=text)
    columns.update({name: Value(kind) for name, kind in _SCALARS.items()})
    for side in ("chosen", "rejected"):
        columns.update({f"{side}_{n}": List(Value(kind)) for n, kind in _PER_SENTENCE.items()})
    return Features(columns)


class _Texts:
    """The prompt, chosen and rejected columns of a record in the export's format."""

    def __init__(self, model: Path | None):
        self.processor, self.lead = None, ""
        if model is not None:
            from services.runtime.settings import VLMSettings
            from services.runtime.vlm import load_processor, response_lead

            try:  # the trainer's defaults: the same image bounds, the same completion lead
                self.processor = load_processor(VLMSettings(model=str(model)))
            except RuntimeError as e:
                raise ExportError(f"--model {model}: {e}") from e
            self.lead = response_lead(self.processor)

    @property
    def format(self) -> str:
        return "conversational" if self.processor is None else "standard"

    def __call__(self, record: PreferenceRecord) -> dict[str, Any]:
        if self.processor is None:
            return conversational_columns(record)
        from csr.training import dpo_example
        from services.runtime.vlm import chat_prompt

        example = dpo_example(record, self.processor.tokenizer.eos_token or "", self.lead)
        return {
            "prompt": chat_prompt(self.processor, record.prompt),
            "chosen": example.chosen,
            "rejected": example.rejected,
        }


def _image(data: RunData, record: PreferenceRecord) -> dict[str, Any]:
    path = data.image_path(record.image)
    if path is None or not path.is_file():
        where = f"under {data.image_root}" if data.image_root else "(no image root known)"
        raise ExportError(
            f"image {record.image!r} of pair {record.pair_id} (prompt {record.prompt_id}) is not "
            f"{where}: give --image-root, the generators' CSR_GENERATOR_IMAGE_ROOT"
        )
    return {"bytes": path.read_bytes(), "path": record.image}


def _chunks(records: Sequence[PreferenceRecord]) -> Iterator[Sequence[PreferenceRecord]]:
    for start in range(0, len(records), _CHUNK):
        yield records[start : start + _CHUNK]


def _write_parquet(path: Path, records, data: RunData, texts: _Texts, types) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = types.arrow_schema
    with pq.ParquetWriter(str(path), schema) as writer:
        for chunk in _chunks(records):
            rows = [{"images": [_image(data, r)], **texts(r), **provenance(r)} for r in chunk]
            batch = types.encode_batch({name: [row[name] for row in rows] for name in types})
            writer.write_table(pa.Table.from_pydict(batch, schema=schema))


def _no_pairs(data: RunData, pair_filter: PairFilter) -> tuple[NoPairCounts, dict[str, Any]]:
    iterations = pair_filter.iterations or None
    counts = (
        no_pair_counts({}, data.no_pairs.by_iteration, iterations) if iterations else data.no_pairs
    )
    failed = [
        f for f in data.failed if iterations is None or int(f.get("iteration", -1)) in iterations
    ]
    return counts, {
        "source": data.source,
        "filter": pair_filter.describe(),
        "note": "counts are per iteration and reason; adapter versions are not recorded for "
        "prompts that gave no pair",
        **counts.to_dict(),
        "failed": failed,
    }


def _why_none(counts: NoPairCounts) -> str:
    """What the prompts the filter kept gave instead of pairs, for the error message."""
    reasons = counts.by_reason()
    if not reasons:
        return ""
    listed = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
    return (
        f" ({counts.total()} prompts gave no pair: {listed}; `csr pairs report` shows them, "
        "and the run's log says why)"
    )


def export_pairs(
    data: RunData, out: Path, pair_filter: PairFilter | None = None, model: Path | None = None
) -> ExportResult:
    """Write the export of the pairs the filter keeps to `out`, whole or not at all."""
    import datasets

    pair_filter = pair_filter or PairFilter()
    records = select_pairs(data.records, pair_filter, data.iterations)
    counts, no_pairs = _no_pairs(data, pair_filter)
    if not records:
        raise ExportError(
            f"no pair of {data.source} matches {pair_filter.describe()}: nothing to export"
            + _why_none(counts)
        )
    texts = _Texts(model)
    types = features(standard=texts.format == "standard")
    datasets.disable_progress_bars()
    with staged_directory(out, MARKER, "csr pairs export") as staging:
        _write_parquet(staging / PARQUET, records, data, texts, types)
        cache, arrow = staging / ".cache", staging / ".arrow"
        dataset = datasets.Dataset.from_parquet(
            str(staging / PARQUET), features=types, cache_dir=str(cache)
        )
        dataset.save_to_disk(str(arrow))
        del dataset
        for path in arrow.iterdir():
            path.rename(staging / path.name)
        arrow.rmdir()
        shutil.rmtree(cache)
        (staging / NO_PAIRS).write_text(json.dumps(no_pairs, indent=2))
        summary = {
            "source": data.source,
            "filter": pair_filter.describe(),
            "pairs": len(records),
            "format": texts.format,
            "model": str(model) if model else None,
            "record_schema_version": SCHEMA_VERSION,
            "iterations": sorted({r.iteration for r in records}),
            "adapter_versions": sorted({r.adapter_version for r in records}),
            "columns": list(types),
        }
        (staging / MARKER).write_text(json.dumps(summary, indent=2))
    logger.info("exported %d pairs to %s", len(records), out)
    return ExportResult(out.resolve(), len(records), counts, texts.format)
