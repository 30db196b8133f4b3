"""The plots of preference pairs that the trainer and the run reports share: the paper's
Figure 5, chosen against rejected responses by their mean relevance R_I.

Drawing only (matplotlib, Agg); the statistic itself is csr.pairs_view.response_relevance.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from csr.pairs_view import response_relevance
from csr.records import PreferenceRecord


def pyplot():
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_relevance(axis, records: Sequence[PreferenceRecord], bins: int = 20) -> None:
    """Figure 5 on one axis: histograms of the chosen and the rejected responses' mean R_I."""
    chosen = [response_relevance(r.chosen_sentences) for r in records]
    rejected = [response_relevance(r.rejected_sentences) for r in records]
    axis.hist([chosen, rejected], bins=bins, label=["chosen", "rejected"], alpha=0.8)
    axis.set(title="mean R_I per response", xlabel="R_I", ylabel="responses")
    axis.legend()


def plot_relevance(
    records: Sequence[PreferenceRecord], path: str | Path, title: str, dpi: int = 80
) -> Path:
    """Figure 5 alone as a PNG."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    draw_relevance(axis, records)
    axis.set_title(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path
