"""`csr toyworld build`: options in, the model directory out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

toyworld_app = typer.Typer(help="The toy world: synthetic scenes and the models CSR improves.",
                           no_args_is_help=True)


@toyworld_app.command("build")
def build_command(
    out: Annotated[Path, typer.Option(help="Model directory (clip/, vlm/, toyworld.json).")]
    = Path("models/toyworld"),
    seed: Annotated[int, typer.Option(help="Seed of the scenes and both trainings.")] = 0,
    force: Annotated[bool, typer.Option(help="Train again even if a current build is there.")]
    = False,
) -> None:
    """Train the toy CLIP and VLM (about a minute on 2 CPU cores), or reuse a current build."""
    from services.toyworld.build import build_toyworld

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = build_toyworld(out, seed=seed, force=force)
    typer.echo(f"CLIP: {models.clip}\nVLM:  {models.vlm}")
