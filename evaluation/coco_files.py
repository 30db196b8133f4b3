"""Reading the user's COCO and POPE files, and scoring them with the pure metrics.

Owns the file formats:
- COCO `instances_*.json` and `captions_*.json` (read with pycocotools): an image's truth is
  its instance categories plus what its reference captions mention, read with the same text
  rules as the captions scored (csr.evaluation.coco).
- Generated captions: a JSON list or JSONL of objects with `image_id` and `caption` (the
  layout CHAIR scripts take; other key names can be given).
- POPE question files as released (JSONL of `question_id`, `image`, `text`, `label` yes/no)
  and answer files as LLaVA writes them (JSONL of `question_id`, `text`).
Every problem names the file, the line and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from csr.evaluation.chair_text import TextRules
from csr.evaluation.coco import ground_truth
from csr.evaluation.metrics import parse_yes_no, pope_metrics
from services.runtime.json_rows import parse_json_rows


class EvalFileError(ValueError):
    """An evaluation file is missing or malformed; the message names it and the fix."""


def _coco(path: Path):
    from pycocotools.coco import COCO

    if not path.is_file():
        raise EvalFileError(
            f"{path}: no such annotation file (COCO's annotations_trainval2014 "
            "has instances_val2014.json and captions_val2014.json)"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(path))
    except (ValueError, KeyError, TypeError) as e:
        raise EvalFileError(f"{path} is not a COCO annotation file: {e}") from e


def load_truth(
    instances: Path,
    captions: Path | None = None,
    image_ids: Iterable[int] | None = None,
    rules: TextRules = TextRules.ORIGINAL,
) -> dict[int, set[str]]:
    """image id -> true COCO categories, for `image_ids` (default: every image in instances);
    reference captions are read with `rules`."""
    coco = _coco(instances)
    wanted = sorted(coco.getImgIds() if image_ids is None else set(image_ids))
    unknown = [i for i in wanted if i not in coco.imgs]
    if unknown:
        raise EvalFileError(
            f"{len(unknown)} captioned images are not in {instances} (first "
            f"ids {unknown[:5]}); give the instances file of their split "
            "(COCO val2014 for the paper's CHAIR)"
        )
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    categories = {i: [names[a["category_id"]] for a in coco.imgToAnns.get(i, [])] for i in wanted}
    references: dict[int, list[str]] = {}
    if captions is not None:
        caps = _coco(captions)
        references = {i: [a["caption"] for a in caps.imgToAnns.get(i, [])] for i in wanted}
    return ground_truth(categories, references, rules)


def image_files(instances: Path) -> dict[int, str]:
    """image id -> file name, from the instances file."""
    coco = _coco(instances)
    return {i: coco.imgs[i]["file_name"] for i in coco.getImgIds()}


def _rows(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except OSError as e:
        raise EvalFileError(f"cannot read {path}: {e}") from e
    try:
        rows = parse_json_rows(text)
    except json.JSONDecodeError as e:
        raise EvalFileError(
            f"{path}: not JSON or JSONL ({e}); write one object per line, or a JSON list of objects"
        ) from e
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise EvalFileError(f"{path}: entry {n} is {type(row).__name__}, not an object")
    return rows


def _field(row: dict, key: str, path: Path, n: int, kind: type):
    if key not in row:
        raise EvalFileError(
            f"{path}: entry {n} has no {key!r} (its keys: {sorted(row)}); "
            "name the key with the matching option"
        )
    value = row[key]
    if kind is int and isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise EvalFileError(f"{path}: entry {n} has {key}={value!r}; expected {kind.__name__}")
    return value


def read_captions(
    path: Path, id_key: str = "image_id", caption_key: str = "caption"
) -> list[tuple[int, str]]:
    rows = _rows(path)
    if not rows:
        raise EvalFileError(f"{path} holds no captions")
    return [
        (_field(r, id_key, path, n, int), _field(r, caption_key, path, n, str))
        for n, r in enumerate(rows, start=1)
    ]


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int
    image: str
    text: str
    label: bool


def read_pope_questions(path: Path) -> list[PopeQuestion]:
    out = []
    for n, row in enumerate(_rows(path), start=1):
        label = _field(row, "label", path, n, str).strip().lower()
        if label not in ("yes", "no"):
            raise EvalFileError(
                f"{path}: entry {n} has label {label!r}; POPE labels are 'yes' or 'no'"
            )
        out.append(
            PopeQuestion(
                _field(row, "question_id", path, n, int),
                _field(row, "image", path, n, str),
                _field(row, "text", path, n, str),
                label == "yes",
            )
        )
    if not out:
        raise EvalFileError(f"{path} holds no questions")
    return out


def read_pope_answers(path: Path) -> dict[int, str]:
    answers: dict[int, str] = {}
    for n, row in enumerate(_rows(path), start=1):
        question_id = _field(row, "question_id", path, n, int)
        if question_id in answers:
            raise EvalFileError(
                f"{path}: entry {n} answers question {question_id} again; "
                "keep one answer per question"
            )
        answers[question_id] = _field(row, "text", path, n, str)
    return answers


def score_pope(questions: Sequence[PopeQuestion], answers: dict[int, str]) -> dict:
    """POPE metrics of answers (question id -> text) parsed as LLaVA's evaluation does."""
    missing = [q.question_id for q in questions if q.question_id not in answers]
    if missing:
        raise EvalFileError(
            f"{len(missing)} questions have no answer (first ids "
            f"{missing[:5]}); answer every question of the file"
        )
    from dataclasses import asdict

    result = pope_metrics(
        [q.label for q in questions], [parse_yes_no(answers[q.question_id]) for q in questions]
    )
    return asdict(result)
