"""Configuration references, generated: the services' environment settings (from their
settings classes) and the algorithm settings (from csr.config's fields and help texts), as the
README's tables and examples/algorithm-reference.yaml."""

from __future__ import annotations

import dataclasses
import json
import textwrap

from pydantic_settings import BaseSettings


def settings_markdown(settings_class: type[BaseSettings]) -> str:
    """A Markdown table: environment variable, default, meaning."""
    prefix = settings_class.model_config.get("env_prefix", "")
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in settings_class.model_fields.items():
        default = field.default
        if field.default_factory is not None:
            shown = "(computed)"
        else:
            shown = "(unset)" if default is None else f"`{default}`"
        rows.append(f"| `{prefix}{name.upper()}` | {shown} | {field.description or ''} |")
    return "\n".join(rows)


def replace_table(readme: str, settings_class: type[BaseSettings]) -> str:
    """The README with the settings table of settings_class regenerated in place: the table
    whose rows name its environment prefix, or appended at the end if there is none yet."""
    prefix = settings_class.model_config.get("env_prefix", "")
    lines = readme.split("\n")
    rows = [i for i, line in enumerate(lines) if line.startswith(f"| `{prefix}")]
    fresh = settings_markdown(settings_class)
    if not rows:
        return readme.rstrip("\n") + "\n\n" + fresh + "\n"
    start, end = rows[0] - 2, rows[-1] + 1  # the header and separator rows come first
    return "\n".join(lines[:start] + [fresh] + lines[end:])


def algorithm_fields(kind: type | None = None, prefix: str = ""):
    """(dotted name, default, help) of every algorithm setting, sections expanded in place."""
    from csr.config import CSRConfig

    kind = kind or CSRConfig
    for item in dataclasses.fields(kind):
        if item.default_factory is not dataclasses.MISSING:  # a section
            section: type = item.default_factory  # type: ignore[assignment]
            yield from algorithm_fields(section, f"{prefix}{item.name}.")
        else:
            yield f"{prefix}{item.name}", item.default, item.metadata["help"]


def _yaml_value(value) -> str:
    """A default as YAML reads it back: floats keep a dot before their exponent (YAML 1.1,
    PyYAML's, reads 1e-07 as text)."""
    if value is None:
        return "null"
    if isinstance(value, float) and "e" in repr(value) and "." not in repr(value).split("e")[0]:
        mantissa, exponent = repr(value).split("e")
        return f"{mantissa}.0e{exponent}"
    return json.dumps(value)


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|")


def algorithm_markdown() -> str:
    """A Markdown table of every algorithm setting: key, default, meaning."""
    rows = [ALGORITHM_HEADER, "|---|---|---|"]
    rows += [
        f"| `{name}` | `{_cell(_yaml_value(default))}` | {_cell(help_text)} |"
        for name, default, help_text in algorithm_fields()
    ]
    return "\n".join(rows)


def algorithm_yaml() -> str:
    """Every algorithm setting at its default, each with its help as a comment: a file that
    CSRConfig.from_dict reads back to the defaults."""
    lines = [
        "# Every algorithm setting at its default (generated from csr/config.py by",
        "# `python -m csr_cli.docs README.md`; do not edit). Copy the keys you change",
        "# into your own file: omitted keys keep their defaults. preset: authors-code",
        "# starts from the released code's settings instead.",
        "preset: paper",
    ]
    section = ""
    for name, default, help_text in algorithm_fields():
        head, _, key = name.rpartition(".")
        if head != section:
            lines += ["", f"{head}:"]
            section = head
        indent = "  " if head else ""
        lines += [f"{indent}# {line}" for line in textwrap.wrap(help_text, 92 - len(indent))]
        lines.append(f"{indent}{key}: {_yaml_value(default)}")
    return "\n".join(lines) + "\n"


ALGORITHM_HEADER = "| key | default | meaning |"


def replace_algorithm_table(readme: str) -> str:
    """The README with its algorithm settings table (the one under ALGORITHM_HEADER)
    regenerated, or appended at the end if there is none yet."""
    lines = readme.split("\n")
    if ALGORITHM_HEADER not in lines:
        return readme.rstrip("\n") + "\n\n" + algorithm_markdown() + "\n"
    start = lines.index(ALGORITHM_HEADER)
    end = start + 2  # past the header and separator rows
    while end < len(lines) and lines[end].startswith("| `"):
        end += 1
    return "\n".join(lines[:start] + [algorithm_markdown()] + lines[end:])
