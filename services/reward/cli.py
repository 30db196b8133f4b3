"""`csr reward serve` and `csr score`: the reward service from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

reward_app = typer.Typer(help="The CLIP reward service.", no_args_is_help=True)


@reward_app.command("serve")
def serve_command() -> None:
    """Start one reward worker (gRPC + HTTP). Settings come from CSR_REWARD_* variables."""
    from services.reward.models import ModelLoadError
    from services.reward.settings import RewardSettings
    from services.reward.worker import serve
    from services.runtime.entry import run_service

    run_service(RewardSettings, serve, fatal=(ModelLoadError,))


@reward_app.command("config")
def config_command() -> None:
    """Print the worker's settings as a Markdown table (the README's reference)."""
    from services.reward.settings import RewardSettings
    from services.runtime.docs import settings_markdown

    typer.echo(settings_markdown(RewardSettings))


def score_command(
    image: Annotated[Path, typer.Argument(help="Image file.", exists=True, dir_okay=False)],
    sentences: Annotated[list[str], typer.Argument(help="Sentences to score.")],
    target: Annotated[
        str, typer.Option(envvar="CSR_SCORE_TARGET", help="gRPC target of the reward service.")
    ] = "localhost:50051",
    token: Annotated[
        str | None,
        typer.Option(envvar="CSR_REWARD_TOKEN", help="Bearer token, if the service needs one."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print R_I (and the cosine) of each sentence for IMAGE, from a running reward service."""
    from rich.console import Console
    from rich.table import Table

    from services.reward.client import RewardClient, RewardServiceError

    with RewardClient(target, token=token, timeout=30.0, retries=3) as client:
        try:
            scores = client.score(image.read_bytes(), sentences)
        except RewardServiceError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from e
    rows = [
        {"sentence": s, "relevance": x.relevance, "cosine": x.cosine, "truncated": x.truncated}
        for s, x in zip(sentences, scores)
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table("sentence", "R_I", "cosine", "truncated")
    for row in rows:
        table.add_row(
            row["sentence"],
            f"{row['relevance']:.3f}",
            f"{row['cosine']:.4f}",
            "yes" if row["truncated"] else "",
        )
    Console().print(table)
