"""Prompt sets as users give them: the authors' JSON list, JSONL, or a `datasets` folder.

Owns reading a prompt set into work items for the prompt stream (services.runtime.prompts),
and what an item's image name may be: a relative path under the image root that stays there
(`image_under_root`); a name that leaves it (absolute, or with `..`) is refused, never read.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from services.runtime.json_rows import parse_json_rows
from services.runtime.prompts import WorkItem


class PromptSetError(ValueError):
    """A prompt set that cannot be read; the message names the file, the entry and the fix."""


def load_prompt_set(path: str, iteration: int) -> list[WorkItem]:
    """The authors' format (a JSON list of {id, image, input}), JSONL of the same objects, or
    a Hugging Face `datasets` folder (`save_to_disk`) with those columns. PromptSetError for
    a file that is none of these or an entry of the wrong shape.

    `<image>` markers in `input` are removed: the chat template places the image."""
    rows = _read_rows(path)
    if not isinstance(rows, list):
        raise PromptSetError(f"prompt set {path} must be a JSON list of entries or JSONL")
    return [_item(path, n, row, iteration) for n, row in enumerate(rows)]


def _item(path: str, n: int, row, iteration: int) -> WorkItem:
    where = f"prompt set {path}, entry {n}"
    missing = {"id", "image", "input"} - set(row) if isinstance(row, dict) else {"object"}
    if missing:
        raise PromptSetError(f"{where}: missing {', '.join(sorted(missing))}")
    if not isinstance(row["image"], str):
        raise PromptSetError(
            f"{where}: image must be a path under the image root, not "
            f"{type(row['image']).__name__} (images are never copied into Redis)"
        )
    if not isinstance(row["id"], str | int) or isinstance(row["id"], bool):
        raise PromptSetError(
            f"{where}: id must be text or a number, not {type(row['id']).__name__}"
        )
    if not isinstance(row["input"], str):
        raise PromptSetError(
            f"{where}: input must be the prompt's text, not {type(row['input']).__name__}"
        )
    prompt = row["input"].replace("<image>", "").strip()
    return WorkItem(str(row["id"]), prompt, row["image"], iteration)


def _read_rows(path: str) -> list:
    if Path(path).is_dir():
        try:
            from datasets import load_from_disk

            dataset = load_from_disk(path)
        except (ImportError, FileNotFoundError, ValueError) as e:
            raise PromptSetError(
                f"prompt set {path} is a folder but not a saved Hugging Face "
                f"dataset (datasets.save_to_disk): {e}"
            ) from e
        if hasattr(dataset, "keys"):  # a DatasetDict: one split is a prompt set
            if len(dataset) != 1:
                raise PromptSetError(
                    f"prompt set {path} has splits {sorted(dataset)}; save the one split to use"
                )
            dataset = next(iter(dataset.values()))
        return list(dataset)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as e:
        raise PromptSetError(f"cannot read the prompt set {path}: {e}") from e
    try:
        return parse_json_rows(text)
    except json.JSONDecodeError as e:  # deep nesting included
        raise PromptSetError(f"prompt set {path} is neither a JSON list nor JSONL: {e}") from e


class ImagePathError(ValueError):
    """An image name that would leave the image root; the message names it and the fix."""


def image_under_root(root: str | Path, name: str) -> Path:
    """root / name for a relative name that stays under root as written (symbolic links the
    operator put under the root are followed as usual); ImagePathError otherwise."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name:
        raise ImagePathError(
            f"image path {name!r} leaves the image root {root}: name images by their path "
            "under the root (no leading '/', no '..')"
        )
    return Path(root) / name
