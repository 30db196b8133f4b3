"""The one reading of "a JSON list, or JSONL" that the prompt sets and evaluation files share."""

from __future__ import annotations

import json


def parse_json_rows(text: str) -> list:
    """A JSON list if the text starts with '[', else one JSON value per non-blank line;
    raises json.JSONDecodeError, which each caller names its file in."""
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]
