"""A run's evaluations in its report: the metrics across iterations (the toy world's plot and a
table) and the held-out scenes' captions from the base model and from each iteration, side by
side.

Owns reading the evaluation file and its section of the report. The file is what the toy world
writes for a run (`eval.json` beside the run folder: {"evaluations": [base, iteration 1, ...]})
or what `csr eval --json` writes (the list itself). Evaluations that carry every held-out
caption (`captions`, with `truth` and `held_out_seed`) get the side-by-side table, with the
scenes drawn again from their seed; older ones show their five `examples`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from csr.evaluation.metrics import mentioned
from csr.evaluation.summary import METRICS, metric
from services.runtime.bounded import loads_json

EVAL_FILE = "eval.json"
MAX_SCENES = 200  # rows of the captions table


class EvaluationFileError(ValueError):
    """The evaluation file cannot be read; the message names it and the fix."""


@dataclass(frozen=True)
class Evaluations:
    source: Path
    runs: list[dict[str, Any]]  # iteration 0 (the base model), 1, ..., in order


def read_evaluations(path: Path) -> Evaluations:
    try:
        data = loads_json(path.read_text())
    except (OSError, ValueError) as e:
        raise EvaluationFileError(f"cannot read the evaluation file {path}: {e}") from e
    runs = data.get("evaluations") if isinstance(data, dict) else data
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise EvaluationFileError(
            f"{path} is not an evaluation file: expected the toy world's eval.json "
            '({"evaluations": [...]}) or the list `csr eval --json` writes'
        )
    for i, run in enumerate(runs):
        try:
            for _, where in METRICS:
                metric(run, where)
        except (KeyError, TypeError, ValueError) as e:
            raise EvaluationFileError(
                f"{path}: evaluation {i} lacks {'/'.join(where)} ({e}); write it with "
                "`csr eval --json` or `csr toyworld run`"
            ) from e
    return Evaluations(path, runs)


def find_evaluations(run_dir: Path | None) -> Evaluations | None:
    """The toy world's eval.json beside the run folder, if there is one."""
    if run_dir is None:
        return None
    for candidate in (run_dir.parent / EVAL_FILE, run_dir / EVAL_FILE):
        if candidate.is_file():
            return read_evaluations(candidate)
    return None


def _label(index: int, run: dict[str, Any]) -> str:
    iteration = run.get("iteration", index)
    if not run.get("adapter"):
        return "base model"
    return f"iteration {iteration}"


def metrics_table(evaluations: Evaluations) -> str:
    header = "".join(f"<th class=num>{html.escape(name)}</th>" for name, _ in METRICS)
    rows = "".join(
        f"<tr><td>{html.escape(_label(i, run))}</td>"
        + "".join(f"<td class=num>{metric(run, where):.3f}</td>" for _, where in METRICS)
        + "</tr>"
        for i, run in enumerate(evaluations.runs)
    )
    return f'<table class="grid"><tr><th>model</th>{header}</tr>{rows}</table>'


def _caption_cell(caption: str, truth: set[str] | None, vocabulary: dict[str, str]) -> str:
    """A caption, each sentence that names an absent object marked."""
    if truth is None:
        return html.escape(caption)
    parts = []
    for sentence in (s.strip() for s in caption.split(".")):
        if not sentence:
            continue
        text = html.escape(sentence + ".")
        absent = mentioned(sentence, vocabulary) - truth
        parts.append(
            f'<span class="absent" title="not in the image">{text}</span>' if absent else text
        )
    return " ".join(parts)


def _scene_images(runs: list[dict[str, Any]], directory: Path, count: int) -> list[str] | None:
    """The held-out scenes drawn again from their seed (the toy world's), as files."""
    seed = runs[0].get("held_out_seed")
    if seed is None:
        return None
    from toyworld.world import render, scenes

    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i, scene in enumerate(scenes(int(seed), count)):
        name = f"scene-{i:04d}.png"
        render(scene).save(directory / name)
        names.append(f"{directory.name}/{name}")
    return names


def captions_table(evaluations: Evaluations, out: Path) -> str:
    from toyworld.world import SHAPES

    runs = evaluations.runs
    full = all(isinstance(r.get("captions"), list) for r in runs)
    key = "captions" if full else "examples"
    columns = [r.get(key) or [] for r in runs]
    count = min(MAX_SCENES, *(len(c) for c in columns))
    if count == 0:
        return '<p class="muted">The evaluations hold no captions.</p>'
    truths = runs[0].get("truth") if full else None
    images = _scene_images(runs, out / "eval-scenes", count) if full and truths else None
    vocabulary = {shape: shape for shape in SHAPES}
    head = "".join(f"<th>{html.escape(_label(i, r))}</th>" for i, r in enumerate(runs))
    lead = "<th>scene</th><th>in the image</th>" if truths else "<th>#</th>"
    rows = []
    for i in range(count):
        truth = set(truths[i]) if truths else None
        cells = "".join(f"<td>{_caption_cell(c[i], truth, vocabulary)}</td>" for c in columns)
        if truths:
            picture = f'<img src="{images[i]}" alt="held-out scene {i}">' if images else str(i)
            first = f"<td>{picture}</td><td>{html.escape(', '.join(truths[i]))}</td>"
        else:
            first = f"<td>{i}</td>"
        rows.append(f"<tr>{first}{cells}</tr>")
    note = (
        f"{count} held-out scenes; a sentence naming an object that is not in the image is marked."
        if full
        else f"The first {count} held-out captions of each model (the evaluation kept no more)."
    )
    return (
        f'<p class="muted">{html.escape(note)}</p>'
        f'<table class="grid captions"><tr>{lead}{head}</tr>{"".join(rows)}</table>'
    )


def evaluation_section(evaluations: Evaluations, out: Path) -> str:
    """The section's HTML; its figure and scene images are written under `out`."""
    from toyworld.report import plot

    plot({"run": [evaluations.runs]}, out / "figures" / "metrics-by-iteration.png")
    return (
        '<section id="evaluation"><h2>Evaluation on held-out scenes</h2>'
        f'<p class="muted">from {html.escape(str(evaluations.source))}</p>'
        f"{metrics_table(evaluations)}"
        '<div class="figures"><figure><img src="figures/metrics-by-iteration.png" '
        'alt="metrics across iterations"><figcaption>metrics across iterations'
        "</figcaption></figure></div>"
        f"<h2>Captions, base model and each iteration</h2>{captions_table(evaluations, out)}"
        "</section>"
    )
