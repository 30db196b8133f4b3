"""`csr toyworld build`: options in, the model directory out."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from toyworld.experiment import RunPlan

PLAN = RunPlan()  # the options' defaults are the plan's, declared there once

toyworld_app = typer.Typer(
    help="The toy world: synthetic scenes and the models CSR improves.", no_args_is_help=True
)


@toyworld_app.command("build")
def build_command(
    out: Annotated[Path, typer.Option(help="Model directory (clip/, vlm/, toyworld.json).")] = Path(
        "models/toyworld"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the scenes and both trainings.")] = 0,
    force: Annotated[
        bool, typer.Option(help="Train again even if a current build is there.")
    ] = False,
) -> None:
    """Train the toy CLIP and VLM (2 to 3 minutes on 2 CPU cores), or reuse a current build."""
    from toyworld.build import build_toyworld

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models = build_toyworld(out, seed=seed, force=force)
    typer.echo(f"CLIP: {models.clip}\nVLM:  {models.vlm}")


def eval_command(
    model: Annotated[Path, typer.Option(help="VLM directory (e.g. models/toyworld/vlm).")],
    adapter: Annotated[
        list[Path], typer.Option(help="Adapter version directory; repeat to compare several.")
    ] = [],  # noqa: B006
    count: Annotated[int, typer.Option(help="Held-out scenes.")] = 1000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write a PNG of the metrics from the base model through each adapter, in order."
        ),
    ] = None,
) -> None:
    """Evaluate the base model and each adapter on held-out toy-world scenes: CHAIR of greedy
    descriptions and POPE (random, popular, adversarial)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from toyworld.evaluate import evaluate

    results = [evaluate(model, None, count)] + [evaluate(model, a, count) for a in adapter]
    table = Table(
        "model",
        "CHAIR_s",
        "CHAIR_i",
        "recall",
        "sentences",
        "POPE acc (r/p/a)",
        "POPE F1 (adv)",
        "yes-ratio (adv)",
    )
    for r in results:
        c, pope = r["chair"], r["pope"]
        table.add_row(
            r["adapter"] or "base",
            f"{c['chair_s']:.3f}",
            f"{c['chair_i']:.3f}",
            f"{c['recall']:.3f}",
            f"{c['mean_sentences']:.2f}",
            "/".join(f"{pope[k]['accuracy']:.3f}" for k in pope),
            f"{pope['adversarial']['f1']:.3f}",
            f"{pope['adversarial']['yes_ratio']:.3f}",
        )
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2))
    if plot is not None:
        from toyworld.report import plot as draw

        typer.echo(f"plot: {draw({model.name: [results]}, plot)}")


@toyworld_app.command("run")
def run_command(
    out: Annotated[
        Path, typer.Option(help="Experiment directory (models, prompts, runs, results).")
    ] = Path("runs/toyworld"),
    seed: Annotated[
        list[int], typer.Option(help="Seed of the models and of CSR; repeat for several.")
    ] = [0],  # noqa: B006
    variant: Annotated[
        list[str],
        typer.Option(
            help="csr (the toy world's defaults), "
            "lambda-0, lambda-1, sample, mean-logprob, "
            "free-end, sum, sum-baseline, authors-code, "
            "rank, rank-lambda-1, no-gap, relevant, unshared, and the "
            "settings studies (margin-*, e20-e30, sum-b35, sum-b45); "
            "repeat for several."
        ),
    ] = ["csr"],  # noqa: B006
    iterations: Annotated[int, typer.Option(help="CSR iterations T.")] = PLAN.iterations,
    prompts: Annotated[int, typer.Option(help="Training prompts per iteration.")] = PLAN.prompts,
    eval_scenes: Annotated[int, typer.Option(help="Held-out scenes evaluated.")] = PLAN.eval_scenes,
    logs: Annotated[
        str,
        typer.Option(
            help="terminal: show csr up's combined log; file: write it to each run's up.log."
        ),
    ] = "terminal",
) -> None:
    """Run CSR on the toy world through `csr up` for each variant and seed, evaluate the base
    model and every iteration, and print the results table and the plot's path."""
    from toyworld.experiment import ExperimentError, run_experiments

    if logs not in ("terminal", "file"):
        raise typer.BadParameter(f"{logs!r} is not terminal or file", param_hint="--logs")
    plan = _checked_plan(variant, prompts=prompts, iterations=iterations, eval_scenes=eval_scenes)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run_experiments(out.resolve(), seed, variant, plan, logs == "file")
    except ExperimentError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e


@toyworld_app.command("agreement")
def agreement_command(
    out: Annotated[
        Path,
        typer.Option(
            help="Experiment directory of `csr toyworld run` (its models and prompts are reused)."
        ),
    ] = Path("runs/toyworld"),
    seed: Annotated[int, typer.Option(help="Seed of the models and prompts.")] = 0,
    variant: Annotated[
        list[str], typer.Option(help="Variants to compare (at least two); repeat.")
    ] = ["csr", "lambda-1"],  # noqa: B006
    prompts: Annotated[int, typer.Option(help="Training prompts searched.")] = PLAN.prompts,
    adapter: Annotated[
        Path | None,
        typer.Option(
            help="Search from this adapter version (e.g. "
            "a run's run/adapters/2) instead of the base "
            "model."
        ),
    ] = None,
) -> None:
    """Search the training prompts under each variant, in process, from the base model or an
    adapter, and show how many preference pairs two variants have in common: an ablation
    with the default's pairs trains the default's model."""
    from rich.console import Console

    from toyworld.agreement import compare_variants
    from toyworld.experiment import ExperimentError

    plan = _checked_plan(variant, prompts=prompts)
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise typer.BadParameter(
            f"{adapter} holds no adapter_config.json; give an adapter "
            "version directory, such as a run's run/adapters/1",
            param_hint="--adapter",
        )
    if len(set(variant)) < 2:
        raise typer.BadParameter(
            f"got {sorted(set(variant))}; name two variants or more", param_hint="--variant"
        )
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        report = compare_variants(out.resolve(), seed, variant, plan, adapter=adapter)
    except (ExperimentError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    Console(highlight=False).print(*_agreement_tables(report, prompts))


def _agreement_tables(report, prompts: int):
    """Two rich tables: each variant's pairs, and the pairs two variants have in common."""
    from rich.table import Column, Table

    found = Table(
        Column("variant", no_wrap=True),
        "pairs",
        "chosen CHAIR_s",
        "chosen recall",
        "rejected CHAIR_s",
        title=f"Pairs from {report.adapter or 'the base model'}"
        f", seed {report.seed}, {prompts} prompts",
    )
    for v in report.variants:
        made = sum(p is not None for p in v.pairs.values())
        figures = (
            [f"{v.chosen.chair_s:.3f}", f"{v.chosen.recall:.3f}", f"{v.rejected.chair_s:.3f}"]
            if v.chosen and v.rejected
            else ["-"] * 3
        )
        found.add_row(v.variant, f"{made}/{len(v.pairs)}", *figures)
    same = Table(
        Column("variants", no_wrap=True),
        "prompts",
        "same chosen",
        "same rejected",
        "same pair",
        "pair in one only",
        title="Pairs in common",
    )
    for (a, b), agreement in report.agreements.items():
        if agreement is None:
            same.add_row(f"{a} / {b}", "0", "-", "-", "-", "-")
            continue
        same.add_row(
            f"{a} / {b}",
            str(agreement.prompts),
            f"{agreement.chosen:.3f}",
            f"{agreement.rejected:.3f}",
            f"{agreement.pair:.3f}",
            str(agreement.only_one),
        )
    return found, same


def _checked_plan(variants: list[str], **fields):
    """The RunPlan of these options, after every variant name is checked; a bad one is a
    usage error naming it."""
    from toyworld.experiment import ExperimentError, RunPlan, variant_overrides

    try:
        for name in variants:
            variant_overrides(name)
        return RunPlan(**fields)
    except ExperimentError as e:
        raise typer.BadParameter(str(e)) from e
