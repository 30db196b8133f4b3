"""The one reading of "a JSON list, or JSONL" that the prompt sets and evaluation files share."""

from __future__ import annotations

import json

from services.runtime.bounded import loads_json


def parse_json_rows(text: str) -> list:
    """A JSON list if the text starts with '[', else one JSON value per non-blank line;
    raises json.JSONDecodeError (for nesting past services.runtime.bounded's bound too), which
    each caller names its file in."""
    if text.lstrip().startswith("["):
        return loads_json(text)
    rows, offset = [], 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            try:
                rows.append(loads_json(line))
            except json.JSONDecodeError as e:  # where in the whole text, not in the line
                raise json.JSONDecodeError(e.msg, text, offset + e.pos) from e
        offset += len(line)
    return rows
