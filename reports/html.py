"""`csr pairs report`: a static HTML report of a run that needs no network.

Owns the report's files. `index.html` holds the summary (per iteration: pairs, no-pair
reasons, failed prompts, the paper's Figure 5), the pair browser and the evaluation
(reports.evaluation), with its CSS and JavaScript inline. The pairs themselves are data files
next to it, loaded a page at a time, so the page stays the same size however many pairs the run
has:

    index.html, report.json (what was reported; lets a later report replace this one)
    figures/      Figure 5 per iteration, the metrics across iterations (PNG)
    images/       each pair image once, named by its content's hash
    eval-scenes/  the held-out scenes of the evaluation, when it names their seed
    data/iteration-T/index.js        prompt id, margin and text of every pair (filter, sort)
    data/iteration-T/shard-NNNN.js   SHARD_SIZE pairs with their sentences and rewards
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from csr.pairs_view import margin, page_bounds, response_relevance
from csr.records import PreferenceRecord, SentenceRecord
from reports.atomic import staged_directory
from reports.source import RunData

logger = logging.getLogger(__name__)

MARKER = "report.json"
PAGE_SIZE = 25  # pairs shown per page
SHARD_SIZE = 50  # pairs per data file
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}


@dataclass(frozen=True)
class ReportResult:
    index: Path
    pairs: int
    missing_images: int


def _scores(sentences: tuple[SentenceRecord, ...]) -> list[list[str]]:
    return [[s.text, f"{s.r_t:.4f}", f"{s.r_i:.2f}", f"{s.r:.3f}"] for s in sentences]


class _Images:
    """Copies each distinct image into images/ once, named by the hash of its bytes."""

    def __init__(self, data: RunData, directory: Path):
        self.data, self.directory = data, directory
        self.copied: dict[str, str | None] = {}
        self.missing = 0

    def __call__(self, image: str) -> str | None:
        if image not in self.copied:
            self.copied[image] = self._copy(image)
        if self.copied[image] is None:
            self.missing += 1
        return self.copied[image]

    def _copy(self, image: str) -> str | None:
        path = self.data.image_path(image)
        if path is None or not path.is_file():
            return None
        content = path.read_bytes()
        suffix = path.suffix.lower() if path.suffix.lower() in _IMAGE_SUFFIXES else ".img"
        name = f"{hashlib.sha256(content).hexdigest()[:24]}{suffix}"
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / name
        if not target.exists():
            target.write_bytes(content)
        return f"images/{name}"


def pair_json(record: PreferenceRecord, image: str | None) -> dict[str, Any]:
    """One pair as the browser shows it, every number already formatted."""
    return {
        "id": record.pair_id,
        "prompt_id": record.prompt_id,
        "prompt": record.prompt,
        "image": image,
        "image_missing": None if image else record.image,
        "adapter": record.adapter_version,
        "aggregation": record.aggregation,
        "margin": f"{margin(record):.3f}",
        "chosen": {
            "reward": f"{record.chosen_reward:.3f}",
            "sentences": _scores(record.chosen_sentences),
        },
        "rejected": {
            "reward": f"{record.rejected_reward:.3f}",
            "sentences": _scores(record.rejected_sentences),
        },
    }


def _script(call: str, *arguments: Any) -> str:
    """A data file: one call of the page's loader (JSON is JavaScript; ASCII-only, so the
    browser's guess of a file's encoding cannot matter)."""
    return f"CSR.{call}({', '.join(json.dumps(a, ensure_ascii=True) for a in arguments)});\n"


def write_iteration_data(
    directory: Path,
    iteration: int,
    records: list[PreferenceRecord],
    images: _Images,
    shard_size: int = SHARD_SIZE,
) -> int:
    """The iteration's index and shards; the number of shards."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        [r.prompt_id, round(margin(r), 6), f"{r.prompt_id} {r.chosen} {r.rejected}".lower()]
        for r in records
    ]
    (directory / "index.js").write_text(_script("index", iteration, rows))
    bounds = page_bounds(len(records), shard_size)
    for number, (start, end) in enumerate(bounds):
        pairs = [pair_json(r, images(r.image)) for r in records[start:end]]
        (directory / f"shard-{number:04d}.js").write_text(
            _script("shard", iteration, number, pairs)
        )
    return len(bounds)


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(
        f"<th{' class=num' if i >= numeric_from else ''}>{html.escape(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{html.escape(str(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="grid"><tr>{head}</tr>{body}</table>'


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f}" if values else "-"


def summary_section(data: RunData, by_iteration: dict[int, list[PreferenceRecord]]) -> str:
    reasons = list(data.no_pairs.by_reason())
    rows = []
    for iteration in data.iterations:
        records = by_iteration.get(iteration, [])
        counts = data.no_pairs.by_iteration.get(iteration, {})
        rows.append(
            [
                str(iteration),
                str(data.queued.get(iteration, "-")),
                str(len(records)),
                *(str(counts.get(reason, 0)) for reason in reasons),
                ", ".join(sorted({r.adapter_version for r in records})) or "-",
                _mean([margin(r) for r in records]),
                _mean([response_relevance(r.chosen_sentences) for r in records]),
                _mean([response_relevance(r.rejected_sentences) for r in records]),
            ]
        )
    header = ["iteration", "prompts queued", "pairs", *(f"no pair: {r}" for r in reasons)]
    header += ["adapter", "mean margin", "mean R_I chosen", "mean R_I rejected"]
    text = _table(header, rows)
    if data.no_pairs.unattributed:
        text += (
            '<p class="muted">No pair, iteration not recorded (a run written before the counts '
            "were kept per iteration): "
            + html.escape(", ".join(f"{r} {n}" for r, n in data.no_pairs.unattributed.items()))
            + "</p>"
        )
    return f'<section id="summary"><h2>Iterations</h2>{text}{_failed(data)}</section>'


def _failed(data: RunData, shown: int = 100) -> str:
    if not data.failed:
        return ""
    rows = [
        [f.get("iteration", "?"), f.get("prompt_id", "?"), f.get("image", ""), f.get("reason", "")]
        for f in data.failed[:shown]
    ]
    more = len(data.failed) - shown
    tail = (
        f'<p class="muted">and {more} more (Redis stream csr:prompts:failed)</p>'
        if more > 0
        else ""
    )
    return (
        "<h2>Failed prompts</h2>"
        + _table(["iteration", "prompt", "image", "reason"], rows, 9)
        + tail
    )


def figure_section(figures: list[tuple[str, str]]) -> str:
    items = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for src, caption in figures
    )
    return (
        '<section id="figure-5"><h2>Chosen against rejected: mean R_I per response '
        "(the paper's Figure 5)</h2>"
        f'<div class="figures">{items}</div></section>'
    )


def browser_section(iterations: list[int]) -> str:
    options = "".join(f'<option value="{i}">iteration {i}</option>' for i in iterations)
    return f"""<section id="browser"><h2>Pairs</h2>
<div class="controls">
<label>iteration <select id="iteration">{options}</select></label>
<label>sort <select id="sort"><option value="stream">as produced</option>
<option value="margin-asc">margin, smallest first</option>
<option value="margin-desc">margin, largest first</option></select></label>
<label>filter <input id="q" type="search" placeholder="words in prompt id, chosen, rejected">
</label>
<button id="prev" type="button">&larr;</button>
<label>page <input id="page" type="number" min="1" value="1"> of <span id="pages">1</span></label>
<button id="next" type="button">&rarr;</button>
<span id="shown" class="muted"></span>
</div>
<div id="pairs"><p class="muted">Loading the pairs (JavaScript is needed for this part).</p></div>
</section>"""


_NAV = " · ".join(
    f'<a href="#{anchor}">{name}</a>'
    for anchor, name in (
        ("summary", "iterations"),
        ("figure-5", "Figure 5"),
        ("browser", "pairs"),
        ("evaluation", "evaluation"),
    )
)


def _asset(name: str) -> str:
    return resources.files("reports").joinpath("static", name).read_text()


def page(title: str, subtitle: str, sections: list[str], meta: dict[str, Any]) -> str:
    data = json.dumps(meta, ensure_ascii=True).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{_asset("report.css")}</style>
</head><body>
<header><h1>{html.escape(title)}</h1><div class="muted">{html.escape(subtitle)}</div>
<nav>{_NAV}</nav></header>
{"".join(sections)}
<script type="application/json" id="csr-meta">{data}</script>
<script>{_asset("report.js")}</script>
</body></html>
"""


@dataclass(frozen=True)
class Layout:
    """How the pairs are cut: shown per page, stored per data file."""

    page_size: int = PAGE_SIZE
    shard_size: int = SHARD_SIZE


def _write_pairs(staging: Path, by_iteration, images: _Images, layout: Layout):
    """Each iteration's data files and Figure 5; (figures, the page's iteration list)."""
    from services.runtime.plots import plot_relevance

    figures, listed = [], []
    for iteration in sorted(by_iteration):
        records = by_iteration[iteration]
        shards = write_iteration_data(
            staging / "data" / f"iteration-{iteration}",
            iteration,
            records,
            images,
            layout.shard_size,
        )
        listed.append({"iteration": iteration, "pairs": len(records), "shards": shards})
        name = f"figures/relevance-iteration-{iteration}.png"
        plot_relevance(records, staging / name, f"iteration {iteration}: {len(records)} pairs")
        figures.append((name, f"iteration {iteration}"))
    return figures, listed


def _subtitle(data: RunData, missing: int) -> str:
    text = f"{len(data.records)} pairs from {data.source}"
    if missing:
        text += (
            f"; {missing} pair images not found (give --image-root, the generators' "
            "CSR_GENERATOR_IMAGE_ROOT)"
        )
    return text


def build_report(
    data: RunData, out: Path, evaluation=None, layout: Layout | None = None
) -> ReportResult:
    """Write the report of `data` (and of its evaluations, a reports.evaluation.Evaluations)
    to `out`, whole or not at all; returns the path of index.html."""
    layout = layout or Layout()
    by_iteration: dict[int, list[PreferenceRecord]] = {}
    for record in data.records:
        by_iteration.setdefault(record.iteration, []).append(record)
    with staged_directory(out, MARKER, "csr pairs report") as staging:
        images = _Images(data, staging / "images")
        figures, listed = _write_pairs(staging, by_iteration, images, layout)
        sections = [summary_section(data, by_iteration)]
        if figures:
            sections.append(figure_section(figures))
        sections.append(browser_section(sorted(by_iteration)))
        if evaluation is not None:
            from reports.evaluation import evaluation_section

            sections.append(evaluation_section(evaluation, staging))
        meta = {"pageSize": layout.page_size, "shardSize": layout.shard_size, "iterations": listed}
        text = page("CSR run report", _subtitle(data, images.missing), sections, meta)
        (staging / "index.html").write_text(text)
        summary = {
            "source": data.source,
            "pairs": len(data.records),
            "iterations": listed,
            "missing_images": images.missing,
            "no_pairs": data.no_pairs.to_dict(),
            "evaluation": str(evaluation.source) if evaluation is not None else None,
        }
        (staging / MARKER).write_text(json.dumps(summary, indent=2))
    if images.missing:
        logger.warning(
            "%d pair images were not found; the report shows their paths", images.missing
        )
    return ReportResult(out.resolve() / "index.html", len(data.records), images.missing)
