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


def eval_command(
    model: Annotated[Path, typer.Option(help="VLM directory (e.g. models/toyworld/vlm).")],
    adapter: Annotated[list[Path], typer.Option(help="Adapter version directory; repeat to "
                                                      "compare several.")] = [],  # noqa: B006
    count: Annotated[int, typer.Option(help="Held-out scenes.")] = 200,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
) -> None:
    """Evaluate the base model and each adapter on held-out toy-world scenes: CHAIR of greedy
    descriptions and POPE (random, popular, adversarial)."""
    import json

    from rich.console import Console
    from rich.table import Table

    from services.toyworld.evaluate import evaluate

    results = [evaluate(model, None, count)] + [evaluate(model, a, count) for a in adapter]
    table = Table("model", "CHAIR_s", "CHAIR_i", "recall", "sentences", "POPE acc (r/p/a)",
                  "POPE F1 (adv)", "yes-ratio (adv)")
    for r in results:
        c, pope = r["chair"], r["pope"]
        table.add_row(r["adapter"] or "base", f"{c['chair_s']:.3f}", f"{c['chair_i']:.3f}",
                      f"{c['recall']:.3f}", f"{c['mean_sentences']:.2f}",
                      "/".join(f"{pope[k]['accuracy']:.3f}" for k in pope),
                      f"{pope['adversarial']['f1']:.3f}",
                      f"{pope['adversarial']['yes_ratio']:.3f}")
    Console().print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2))
