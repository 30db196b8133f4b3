"""`csr up` and `csr status`: convert options, call the stack, render what comes back."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The csr up YAML file.")]


def _config(path: Path):
    from services.stack.config import StackConfigError, load_stack_config

    try:
        return load_stack_config(path)
    except StackConfigError as e:
        raise typer.BadParameter(str(e), param_hint="--config") from e


def up_command(config: ConfigOption = Path("csr.yaml")) -> None:
    """Start the whole system locally (embedded Redis, reward workers, generators, trainer)
    and run it until the trainer has published its last iteration; Ctrl-C stops it gently."""
    from services.stack.config import StackConfigError
    from services.stack.up import Stack

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stack_config = _config(config)
    try:
        code = Stack(stack_config, dict(os.environ), Console(highlight=False)).run()
    except StackConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    raise typer.Exit(code)


def status_command(config: ConfigOption = Path("csr.yaml")) -> None:
    """Show the services of a running `csr up`: health, adapter, queues, throughput."""
    import redis

    from services.stack.status import health, status_line
    from services.stack.up import load_state

    state = load_state(_config(config))
    console = Console()
    if state is None:
        console.print("csr up is not running (no state file in the run directory)")
        raise typer.Exit(1)
    table = Table("service", "pid", "health", "details")
    for service in state["services"]:
        condition, facts = health(service["http_port"])
        colour = {"ok": "green", "unhealthy": "yellow"}.get(condition, "red")
        details = ", ".join(f"{k} {v}" for k, v in facts.items() if k != "status")
        table.add_row(service["name"], str(service["pid"]), f"[{colour}]{condition}[/]", details)
    console.print(table)
    try:
        console.print(status_line(redis.Redis.from_url(state["redis_url"]), state))
    except redis.RedisError as e:
        console.print(f"[red]Redis at {state['redis_url']} is unreachable: {e}[/]")
        raise typer.Exit(1) from e
