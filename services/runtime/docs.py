"""Configuration reference, generated from the services' settings classes (for the README)."""

from __future__ import annotations

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
