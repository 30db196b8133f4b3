"""`csr pairs export` and `csr pairs report`: options in, the output's path out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

pairs_app = typer.Typer(
    help="A run's preference pairs: export them as a dataset, or report them as HTML.",
    no_args_is_help=True,
)

SourceArgument = Annotated[
    str,
    typer.Argument(
        help="A Redis URL (redis://host:6379/0, unix:///path/redis.socket) or a finished csr up "
        "run folder (its run_dir, which holds redis.db), e.g. runs/toyworld/csr/seed-0/run.",
        show_default=False,
    ),
]
ImageRootOption = Annotated[
    Path | None,
    typer.Option(
        help="Folder the records' image paths are under (the generators' IMAGE_ROOT); found in "
        "the csr up file beside a run folder when not given."
    ),
]
IterationOption = Annotated[
    list[int], typer.Option("--iteration", help="Keep this CSR iteration; repeat for several.")
]


def _load(source: str, image_root: Path | None, iterations: list[int], versions: list[str]):
    from csr.pairs_view import PairFilter, PairFilterError
    from reports.source import RunDataError, load_run

    try:
        data = load_run(source, image_root)
        pair_filter = PairFilter(tuple(iterations), tuple(versions))
        return data.only(pair_filter), pair_filter
    except (RunDataError, PairFilterError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e


@pairs_app.command("export")
def export_command(
    source: SourceArgument,
    out: Annotated[
        Path,
        typer.Option(
            help="Output folder: the dataset (datasets.load_from_disk), pairs.parquet, "
            "no_pairs.json, export.json. An earlier export there is replaced."
        ),
    ],
    iteration: IterationOption = [],  # noqa: B006
    adapter_version: Annotated[
        list[str],
        typer.Option(
            "--adapter-version", help="Keep pairs made by this adapter version (base, 1, 2, ...)."
        ),
    ] = [],  # noqa: B006
    image_root: ImageRootOption = None,
    model: Annotated[
        Path | None,
        typer.Option(
            help="Write TRL's standard format for this model (its chat template and "
            "end-of-sequence token, as csr train does) instead of the conversational one."
        ),
    ] = None,
) -> None:
    """Export the pairs as a Hugging Face dataset in TRL's preference columns (prompt, chosen,
    rejected, images) with their provenance; prompts with no pair go to no_pairs.json."""
    from csr.pairs_view import PairFilterError
    from reports.atomic import OutputError
    from reports.export import ExportError, export_pairs

    data, pair_filter = _load(source, image_root, iteration, adapter_version)
    try:
        result = export_pairs(data, out, pair_filter, model)
    except (ExportError, OutputError, PairFilterError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(
        f"{result.pairs} pairs ({result.format} format), "
        f"{result.no_pairs.total()} prompts without a pair: {result.out}"
    )


@pairs_app.command("report")
def report_command(
    source: SourceArgument,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Report folder (index.html and its files); default: `report` beside a run "
            "folder. An earlier report there is replaced."
        ),
    ] = None,
    iteration: IterationOption = [],  # noqa: B006
    image_root: ImageRootOption = None,
    evaluation: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            help="Evaluation file (the toy world's eval.json, or `csr eval --json`'s); default: "
            "eval.json beside a run folder, if there is one.",
        ),
    ] = None,
) -> None:
    """Write a static HTML report of a run (no network needed): every pair with its image and
    per-sentence rewards, Figure 5 per iteration, no-pair reasons, and the evaluation."""
    from reports.atomic import OutputError
    from reports.evaluation import EvaluationFileError, find_evaluations, read_evaluations
    from reports.html import build_report

    data, _ = _load(source, image_root, iteration, [])
    if out is None:
        if data.run_dir is None:
            raise typer.BadParameter("a Redis URL source needs --out", param_hint="--out")
        out = data.run_dir.parent / "report"
    try:
        found = read_evaluations(evaluation) if evaluation else find_evaluations(data.run_dir)
        result = build_report(data, out, found)
    except (EvaluationFileError, OutputError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    typer.echo(f"report: {result.index}")
