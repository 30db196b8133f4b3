"""How every `csr <service>` command starts a service: settings from the environment, then run.

A bad setting is a usage error naming it, and so is a variable with the service's prefix that
is none of its settings (a typo, or an algorithm setting that belongs in the algorithm file).
A start-up failure of `fatal` kinds (a model that cannot be loaded, say) prints its message
and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.runtime.docs import algorithm_fields


def unknown_settings(settings_class: type[BaseSettings], names: Iterable[str]) -> str:
    """A message naming the variables with the class's prefix that are none of its fields
    (empty when there are none); an algorithm setting given as a variable is pointed to its
    key in the algorithm file."""
    prefix = settings_class.model_config.get("env_prefix", "")
    known = {prefix + name.upper() for name in settings_class.model_fields}
    strange = sorted(n for n in names if n.startswith(prefix) and n not in known)
    if not strange:
        return ""
    keys: dict[str, list[str]] = {}
    for name, _, _ in algorithm_fields():
        keys.setdefault(name.rpartition(".")[2], []).append(name)
    hints = [
        f"{n} is the algorithm setting {' or '.join(keys[n[len(prefix) :].lower()])}: set it "
        f"in the algorithm file ({prefix}ALGORITHM)"
        for n in strange
        if n[len(prefix) :].lower() in keys
    ]
    return "; ".join(
        [f"unknown settings {strange} (see the README's configuration reference)", *hints]
    )


def run_service(
    settings_class: type[BaseSettings],
    run: Callable[[BaseSettings], object],
    fatal: tuple[type[Exception], ...],
) -> None:
    prefix = settings_class.model_config.get("env_prefix", "")
    strange = unknown_settings(settings_class, os.environ)
    if strange:
        raise typer.BadParameter(strange)
    try:
        settings = settings_class()
    except ValidationError as e:
        raise typer.BadParameter(f"bad {prefix}* setting: {e}") from e
    try:
        run(settings)
    except fatal as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
