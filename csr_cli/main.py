"""The `csr` command line: the user's entry point to every part of the system.

Owns argument parsing and console output only. Each command converts its options into
core settings, calls the core or a service, and renders what comes back. Service modules
are imported inside their commands, so `csr --help` stays fast and the core stays pure.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from csr import __version__
from csr.config import AGGREGATIONS, NORMALIZATIONS, SEARCH_MODES, SELF_SCORES, CSRConfig
from csr.errors import CSRError
from csr.pairs import PromptOutcome, generate_pairs
from csr.search import FinishedPath, SearchRequest
from csr.selection import NoPair

app = typer.Typer(
    help="Calibrated Self-Rewarding (CSR) for vision-language models.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _add_service_commands() -> None:
    # The service modules import their heavy dependencies inside each command.
    from services.reward.cli import reward_app, score_command

    app.add_typer(reward_app, name="reward")
    app.command("score")(score_command)
    app.command("generate")(generate_command)
    app.command("train")(train_command)
    from services.stack.cli import status_command, up_command

    app.command("up")(up_command)
    from toyworld.cli import eval_command, toyworld_app

    app.add_typer(toyworld_app, name="toyworld")
    app.command("eval")(eval_command)
    from evaluation.cli import chair_command, pope_command

    app.command("chair")(chair_command)
    app.command("pope")(pope_command)
    app.command("status")(status_command)
    from reports.cli import pairs_app

    app.add_typer(pairs_app, name="pairs")


def generate_command() -> None:
    """Run one generator replica (settings from CSR_GENERATOR_* variables)."""
    from services.generator.main import run
    from services.generator.settings import GeneratorSettings
    from services.runtime.entry import run_service
    from services.runtime.prompt_sets import PromptSetError

    run_service(GeneratorSettings, run, fatal=(RuntimeError, PromptSetError))


def train_command() -> None:
    """Run the trainer (settings from CSR_TRAINER_* variables): DPO updates from the pair
    stream, adapters published to the store, T iterations."""
    from services.runtime.adapter_store import StoreError
    from services.runtime.entry import run_service
    from services.runtime.prompt_sets import PromptSetError
    from services.trainer.main import run
    from services.trainer.service import NoPairsError
    from services.trainer.settings import TrainerSettings

    run_service(
        TrainerSettings, run, fatal=(RuntimeError, NoPairsError, StoreError, PromptSetError)
    )


_add_service_commands()


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise typer.BadParameter(
            f"{value!r} is not one of {', '.join(choices)}", param_hint=f"--{name}"
        )
    return value


@app.command()
def version() -> None:
    """Print the installed csr version."""
    console.print(__version__)


@app.command()
def demo(
    present: Annotated[
        str, typer.Option(help="Comma-separated objects in the fake scene.")
    ] = "circle,triangle",
    mode: Annotated[str, typer.Option(help=f"Search mode: {', '.join(SEARCH_MODES)}.")] = "paper",
    lam: Annotated[float, typer.Option(help="Weight of R_I in R (Eq. 4).")] = 0.9,
    aggregation: Annotated[str, typer.Option(help="Path reward: sum or mean.")] = "mean",
    normalization: Annotated[str, typer.Option(help="raw or rank.")] = "raw",
    self_score: Annotated[str, typer.Option(help="R_T: product or mean-logprob.")] = "product",
) -> None:
    """Run the CSR core on a fake captioner and a fake CLIP; show the pair it picks and why."""
    from csr.demo import SHAPES, FakeWorld

    objects = frozenset(o.strip() for o in present.split(",") if o.strip())
    unknown = sorted(objects - set(SHAPES))
    if unknown or not objects:
        raise typer.BadParameter(
            f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(SHAPES)}",
            param_hint="--present",
        )
    base = CSRConfig()
    try:
        config = replace(
            base,
            search=replace(base.search, mode=_check_choice("mode", mode, SEARCH_MODES)),
            reward=replace(
                base.reward,
                lam=lam,
                normalization=_check_choice("normalization", normalization, NORMALIZATIONS),
                self_score=_check_choice("self-score", self_score, SELF_SCORES),
            ),
            selection=replace(
                base.selection, aggregation=_check_choice("aggregation", aggregation, AGGREGATIONS)
            ),
        )
    except CSRError as e:
        raise typer.BadParameter(str(e)) from e
    world = FakeWorld(objects)
    request = SearchRequest("demo-0", "Describe the image.", "fake-scene")
    [outcome] = generate_pairs(
        [request], world.expand, world.relevance, config, iteration=1, adapter_version="base"
    )
    _render_demo(outcome, objects, config)


def _render_demo(outcome: PromptOutcome, objects: frozenset[str], config: CSRConfig) -> None:
    console.print(
        f"[bold]Scene[/bold]: {', '.join(sorted(objects))}  (the fake captioner's "
        "prior adds square after circle, cross after triangle)"
    )
    console.print(
        f"[bold]Settings[/bold]: mode={config.search.mode} lam={config.reward.lam} "
        f"R_T={config.reward.self_score} normalization={config.reward.normalization} "
        f"aggregation={config.selection.aggregation}"
    )
    for step, kept in enumerate(outcome.search.kept_per_step, start=1):
        console.print(
            f"step {step}: kept {len(kept)} prefixes: "
            + (" | ".join(repr(k) for k in kept) or "none")
        )
    table = Table(title="Finished responses")
    for column in ("response", "per-sentence R_T / R_I / R", "path reward", "role"):
        table.add_column(column)
    pair = outcome.pair
    for path in outcome.search.finished:
        role = ""
        if not isinstance(pair, NoPair):
            role = "chosen" if path is pair.chosen else "rejected" if path is pair.rejected else ""
        table.add_row(
            path.text,
            _sentence_scores(path),
            f"{path.reward(config.selection.aggregation):.3f}",
            role,
        )
    console.print(table)
    if isinstance(pair, NoPair):
        console.print(f"No pair: {pair.reason} ({pair.detail})")
        return
    console.print(
        f"[green]chosen[/green] ({config.selection.aggregation} reward "
        f"{pair.chosen_reward:.3f}, the highest): {pair.chosen.text}"
    )
    console.print(
        f"[red]rejected[/red] ({config.selection.aggregation} reward "
        f"{pair.rejected_reward:.3f}, the lowest): {pair.rejected.text}"
    )
    console.print(
        "Why: R_I (weight lam) scores each sentence against the image, so sentences "
        "about absent objects pull a path's reward down even when the captioner's "
        "own R_T likes them."
    )


def _sentence_scores(path: FinishedPath) -> str:
    return "; ".join(f"{s.r_t:.3f}/{s.r_i:.1f}/{s.r:.2f}" for s in path.sentences)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: set up logging once, then dispatch. A command started by
    a supervisor (csr up) that named itself in CSR_EXIT_WITH_PARENT ends when it ends."""
    from services.runtime.lifeline import exit_with_parent_from_env

    exit_with_parent_from_env()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app(args=argv, prog_name="csr")


if __name__ == "__main__":
    main()
