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
