"""Bounds on user input before it is used: the nesting depth and size of JSON and YAML documents.

Python's parsers recurse once per nesting level, so a small body of nested brackets ends in a
RecursionError, and a YAML file can multiply its size with anchors and aliases (one alias of
an alias of ...). Every reader of user input (HTTP bodies, prompt sets, algorithm files,
`csr up` files, Redis records, manifests) goes through these functions, which turn both into
a ValueError that names the bound:
- `loads_json`: the depth is checked on the text before parsing (strings removed, then nested
  bracket pairs peeled one level at a time, each pass a C-speed regex), so a deep document is
  refused without being parsed;
- `load_yaml`: PyYAML's safe loader, then a walk of the result that counts every node as the
  document expands (an alias counts again each time it is used), refused past `max_nodes`.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

MAX_DEPTH = 64  # deeper than any document the system reads (a few levels each)
MAX_NODES = 1_000_000  # values in one YAML document, aliases expanded

_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_INNERMOST = re.compile(r"\[\]|\{\}")


class TooDeep(ValueError):
    """A document nested or expanded past the bounds; the message names the bound."""


def json_depth_exceeds(text: str, max_depth: int = MAX_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects deeper than max_depth (text in strings
    does not count). Malformed text is left for the parser to name."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(max_depth):
        if not brackets:
            return False
        peeled = _INNERMOST.sub("", brackets)
        if peeled == brackets:  # unbalanced: json.loads says where
            return False
        brackets = peeled
    return bool(brackets) and _INNERMOST.search(brackets) is not None


def loads_json(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads with the depth bounded first; a document past it raises
    json.JSONDecodeError (a ValueError), as malformed JSON does, so callers catch one kind."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if json_depth_exceeds(text, max_depth):
        raise json.JSONDecodeError(
            f"arrays and objects nested deeper than {max_depth} levels", text, 0
        )
    try:
        return json.loads(text)
    except RecursionError as e:  # a bound below max_depth (a small recursion limit)
        raise json.JSONDecodeError(f"nested too deeply to parse ({e})", text, 0) from e


def load_yaml(text: str, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> Any:
    """yaml.safe_load, refused (TooDeep) past max_depth levels or max_nodes values with its
    aliases expanded; yaml.YAMLError for text that is not YAML."""
    try:
        data = yaml.safe_load(text)
    except RecursionError as e:
        raise TooDeep(f"nested too deeply to parse (more than {max_depth} levels)") from e
    check_size(data, max_nodes, max_depth)
    return data


def check_size(data: Any, max_nodes: int = MAX_NODES, max_depth: int = MAX_DEPTH) -> None:
    """TooDeep if the value, walked as it would be printed (shared parts counted each time),
    holds more than max_nodes values or nests deeper than max_depth."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > max_nodes:
            raise TooDeep(
                f"more than {max_nodes} values once its aliases are expanded; write it out "
                "without aliases of aliases"
            )
        if depth > max_depth:
            raise TooDeep(f"nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, (list, tuple, set)):
            stack.extend((item, depth + 1) for item in value)
