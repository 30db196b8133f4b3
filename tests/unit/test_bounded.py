"""The bounds on user documents: depth counted by hand, aliases expanded, errors by kind."""

from __future__ import annotations

import json

import pytest
import yaml

from services.runtime.bounded import TooDeep, check_size, json_depth_exceeds, load_yaml, loads_json


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_depth_is_counted_on_the_text_as_written():
    assert not json_depth_exceeds(nested(64), 64)
    assert json_depth_exceeds(nested(65), 64)
    assert not json_depth_exceeds('{"a": [1, {"b": []}], "c": {}}', 4)  # { [ { [ : 4 deep
    assert json_depth_exceeds('{"a": [1, {"b": []}], "c": {}}', 3)
    # brackets inside strings, escaped quotes included, are text
    assert not json_depth_exceeds(json.dumps(["[[[[" * 100, 'say \\"[[[[[" ok']), 1)
    assert not json_depth_exceeds("[[[", 1)  # unbalanced: left for the parser to name


def test_loads_json_refuses_deep_documents_as_decode_errors():
    assert loads_json(b'{"sentences": ["a ."]}') == {"sentences": ["a ."]}
    assert loads_json(nested(64)) == json.loads(nested(64))
    for deep in (nested(100_000), "[" * 100_000, '{"a":' * 70 + "1" + "}" * 70):
        with pytest.raises(json.JSONDecodeError, match="nested"):
            loads_json(deep)


def test_yaml_alias_bombs_and_deep_nesting_are_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
    )  # 10**9 values once expanded, 90 as written
    with pytest.raises(TooDeep, match="aliases"):
        load_yaml(bomb)
    with pytest.raises(TooDeep, match="levels"):
        load_yaml(nested(100_000))
    with pytest.raises(TooDeep, match="deeper than 3"):
        check_size({"a": {"b": {"c": {"d": 1}}}}, max_depth=3)
    assert load_yaml("common: &c {MODEL: m}\nreward: {settings: *c}") == {
        "common": {"MODEL": "m"},
        "reward": {"settings": {"MODEL": "m"}},
    }
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1")
