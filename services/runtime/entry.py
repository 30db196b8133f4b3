"""How every `csr <service>` command starts a service: settings from the environment, then run.

A bad setting is a usage error naming it; a start-up failure of `fatal` kinds (a model that
cannot be loaded, say) prints its message and exits with status 2 instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Callable

import typer
from pydantic import ValidationError
from pydantic_settings import BaseSettings


def run_service(settings_class: type[BaseSettings], run: Callable[[BaseSettings], object],
                fatal: tuple[type[Exception], ...]) -> None:
    prefix = settings_class.model_config.get("env_prefix", "")
    try:
        settings = settings_class()
    except ValidationError as e:
        raise typer.BadParameter(f"bad {prefix}* setting: {e}") from e
    try:
        run(settings)
    except fatal as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
