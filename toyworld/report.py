"""The toy world's results: a table (console and Markdown) and plots across iterations.

Owns presentation. The numbers come from csr.evaluation.summary over the runs'
evaluations: the base model, the default variant at every iteration, and each other variant
at its last iteration (the layout of the paper's Tables 2 and 7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from csr.evaluation.summary import METRICS, Spread, change, metric, ratio, summarise

Runs = Mapping[str, Sequence[Sequence[Mapping]]]  # variant -> one run (evaluations) per seed


def table_rows(runs: Runs, main: str = "csr") -> list[tuple[str, dict[str, Spread]]]:
    """(label, metrics) rows: base, `main` at each iteration, the others at their last."""
    first = runs[main] if main in runs else next(iter(runs.values()))
    rows = [("base model", summarise(first, 0))]
    for variant, seeds in runs.items():
        last = len(seeds[0]) - 1
        iterations = range(1, last + 1) if variant == main else [last]
        rows += [(f"{variant}, iteration {t}", summarise(seeds, t)) for t in iterations]
    return rows


PROGRESS = (
    "CHAIR_s / base",
    "worst seed",
    "CHAIR_s change",
    "recall − base",
    "POPE acc − base",
)


def progress_rows(seeds: Sequence[Sequence[Mapping]]) -> list[tuple[str, dict[str, Spread]]]:
    """One row per iteration of a variant, seed by seed: CHAIR_s as a fraction of the base
    model's (the mean, and the highest of any seed), its change from the iteration before,
    and recall and POPE accuracy against the base model's."""
    rows = []
    for t in range(1, len(seeds[0])):
        step, whole = change(seeds, t - 1, t), change(seeds, 0, t)
        path = dict(METRICS)["CHAIR_s"]
        worst = max(metric(run[t], path) / metric(run[0], path) for run in seeds)
        figures = {
            "CHAIR_s / base": ratio(seeds, t, "CHAIR_s"),
            "worst seed": Spread(worst, 0.0, 1),
            "CHAIR_s change": step["CHAIR_s"],
            "recall − base": whole["recall"],
            "POPE acc − base": whole["POPE acc"],
        }
        rows.append((f"iteration {t}", figures))
    return rows


def _signed(spread: Spread) -> str:
    text = str(spread)
    return text if text.startswith("-") else f"+{text}"


def progress_markdown(rows, variant: str = "csr") -> str:
    lines = [f"| {variant}, seed by seed | " + " | ".join(PROGRESS) + " |"]
    lines.append("|" + "---|" * (len(PROGRESS) + 1))
    for label, figures in rows:
        cells = [str(figures[name]) for name in PROGRESS[:2]]
        cells += [_signed(figures[name]) for name in PROGRESS[2:]]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seed_markdown(seeds: Sequence[int], runs: Sequence[Sequence[Mapping]]) -> str:
    """One line per seed of a variant's runs: CHAIR_s at every iteration, the last as a
    fraction of the base's, and recall and POPE accuracy of the base and the last."""
    path = dict(METRICS)
    last = len(runs[0]) - 1
    head = ["seed", "CHAIR_s base", *(f"iteration {t}" for t in range(1, last + 1))]
    head += [f"{last} / base", "recall base", f"recall {last}", "POPE acc base", f"POPE acc {last}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for seed, run in zip(seeds, runs):
        chair_s = [metric(e, path["CHAIR_s"]) for e in run]
        cells = [str(seed), *(f"{v:.3f}" for v in chair_s), f"{chair_s[-1] / chair_s[0]:.2f}"]
        for name in ("recall", "POPE acc"):
            cells += [f"{metric(run[0], path[name]):.3f}", f"{metric(run[-1], path[name]):.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(
    rows,
    seeds: int,
    failed: Mapping[str, Mapping[int, str]] | None = None,
    progress=None,
    scenes: int | None = None,
    by_seed: str = "",
) -> str:
    header = "| model | " + " | ".join(name for name, _ in METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 1)]
    for label, figures in rows:
        lines.append(f"| {label} | " + " | ".join(str(figures[name]) for name, _ in METRICS) + " |")
    spread = (
        f"mean ± half-width of its 95 % confidence interval over {seeds} seeds"
        if seeds > 1
        else "one seed"
    )
    held_out = f"{scenes} held-out scenes per seed; " if scenes else ""
    notes = "".join(
        f"\n- {variant} did not finish (seed {seed}): {why}\n"
        for variant, seeds_failed in (failed or {}).items()
        for seed, why in seeds_failed.items()
    )
    text = "\n".join(lines) + f"\n\n{held_out}{spread}; POPE on adversarial negatives.\n"
    if progress:
        text += "\n" + progress_markdown(progress) + "\n"
    if by_seed:
        text += "\n" + by_seed + "\n"
    return text + notes


def console_table(rows, title: str, columns: Sequence[str] = ()):
    from rich.table import Table

    columns = list(columns) or [name for name, _ in METRICS]
    table = Table(*["model", *columns], title=title)
    for label, figures in rows:
        table.add_row(label, *(str(figures[name]) for name in columns))
    return table


def plot(runs: Runs, path: Path) -> Path:
    """CHAIR_s, CHAIR_i, recall and POPE F1 against the iteration, one line per variant
    (mean over seeds, bars one standard deviation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in METRICS if m[0] in ("CHAIR_s", "CHAIR_i", "recall", "POPE F1")]
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4))
    for axis, (name, _) in zip(axes, shown):
        for variant, seeds in runs.items():
            points = [summarise(seeds, t)[name] for t in range(len(seeds[0]))]
            axis.errorbar(
                range(len(points)),
                [p.mean for p in points],
                yerr=[p.std for p in points],
                marker="o",
                capsize=3,
                label=variant,
            )
        axis.set_title(name)
        axis.set_xlabel("CSR iteration (0 = base)")
        axis.set_xticks(range(len(next(iter(runs.values()))[0])))
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8)
    figure.tight_layout(rect=(0, 0, 0.9, 1))  # the legend sits right of the panels
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
