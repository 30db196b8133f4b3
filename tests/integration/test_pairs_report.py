"""`csr pairs report`: a static report of a finished run that needs no network, checked in its
files and in a real browser (headless Chromium): every pair there, sentence by sentence with
its rewards, every image loaded; and at 12,000 pairs the page stays the same size and pages."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from csr_cli.main import app
from reports.html import PAGE_SIZE, SHARD_SIZE, Layout, build_report
from reports.source import load_run
from tests.integration.browser import Elements, dump_dom
from tests.integration.pairs_runs import append_raw, small_records, write_many, write_run

runner = CliRunner()
IMAGES = [f"scene-{i}.png" for i in range(5)]
NETWORK = re.compile(
    r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import"""
)


@pytest.fixture
def run(tmp_path):
    return write_run(
        tmp_path / "runs",
        small_records(IMAGES),
        no_pairs={1: {"tied_rewards": 2}, 2: {"single_response": 1}},
        failed={2: 1},
    )


def report(*args: str):
    result = runner.invoke(app, ["pairs", "report", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_the_report_is_static_files_beside_the_run(run):
    before = run.digest()
    code, output = report(str(run.run_dir))
    assert code == 0, output
    out = run.run_dir.parent / "report"
    assert f"report: {out / 'index.html'}" in output
    assert run.digest() == before  # the run's files are untouched
    for path in out.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            assert not NETWORK.search(path.read_text()), path  # nothing to fetch from a network
    summary = json.loads((out / "report.json").read_text())
    assert summary["pairs"] == 7
    assert [(i["iteration"], i["pairs"], i["shards"]) for i in summary["iterations"]] == [
        (1, 4, 1),
        (2, 3, 1),
    ]
    assert summary["no_pairs"]["by_iteration"] == {
        "1": {"tied_rewards": 2},
        "2": {"failed": 1, "single_response": 1},
    }
    assert len(list((out / "images").iterdir())) == 5  # each image once
    for figure in ("relevance-iteration-1.png", "relevance-iteration-2.png"):
        with Image.open(out / "figures" / figure) as image:
            assert image.width > 100
    index = Elements((out / "index.html").read_text())
    [summary_table] = [e for e in index.found if e["tag"] == "table"][:1]
    # iteration 1: 6 queued, 4 pairs, no failed, no single response, 2 tied
    assert re.search(r"1\s*6\s*4\s*0\s*0\s*2\s*base", summary_table["text"])
    assert "cannot read image missing.png" in (out / "index.html").read_text()


def test_an_unknown_iteration_or_a_future_schema_is_refused_and_nothing_is_written(run):
    out = run.run_dir.parent / "report"
    code, output = report(str(run.run_dir), "--iteration", "3")
    assert code == 1 and "iteration 3 is not in this run; it has 1, 2" in output
    append_raw(run, {**run.records[0].to_dict(), "schema_version": 2})
    code, output = report(str(run.run_dir))
    assert code == 1 and "schema_version 2 is not supported" in output
    assert not out.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["csr.yaml", "images", "run"]


def test_the_evaluation_shows_metrics_and_every_iterations_captions(run, tmp_path):
    def evaluation(iteration: int, captions: list[str], chair_s: float) -> dict:
        return {
            "iteration": iteration,
            "adapter": f"run/adapters/{iteration}" if iteration else None,
            "chair": {"chair_s": chair_s, "chair_i": 0.2, "recall": 0.9, "mean_sentences": 2.0},
            "pope": {"adversarial": {"accuracy": 0.8, "f1": 0.81}},
            "examples": captions[:5],
            "held_out_seed": 10_007,
            "captions": captions,
            "truth": [["circle"], ["cross", "triangle"]],
        }

    base = ["There is a circle. There is a square.", "There is a triangle. There is a cross."]
    after = ["There is a circle.", "There is a triangle. There is a cross."]
    (run.run_dir.parent / "eval.json").write_text(
        json.dumps({"evaluations": [evaluation(0, base, 0.5), evaluation(1, after, 0.0)]})
    )
    code, output = report(str(run.run_dir))
    assert code == 0, output
    out = run.run_dir.parent / "report"
    page = (out / "index.html").read_text()
    assert (out / "figures" / "metrics-by-iteration.png").is_file()
    assert len(list((out / "eval-scenes").iterdir())) == 2  # the held-out scenes, drawn again
    found = Elements(page).found
    [table] = [
        e for e in found if e["tag"] == "table" and "captions" in e["attrs"].get("class", "")
    ]
    text = " ".join(table["text"].split())
    assert "base model iteration 1" in text  # one column per model
    assert "circle There is a circle. There is a square. There is a circle." in text  # scene 0
    marked = [e["text"].strip() for e in found if e["attrs"].get("class") == "absent"]
    assert marked == ["There is a square."]  # scene 0 holds a circle only
    metrics = " ".join(
        next(e for e in found if e["tag"] == "table" and "CHAIR_s" in e["text"])["text"].split()
    )
    assert "base model 0.500 0.200 0.900 2.000 0.800 0.810 iteration 1 0.000" in metrics


def _check(index, fragment: str = "check=1") -> dict:
    dom = dump_dom(f"{index.as_uri()}#{fragment}")
    [pre] = [e for e in Elements(dom).found if e["attrs"].get("id") == "csr-check"]
    return json.loads(pre["text"])


def test_in_a_browser_every_pair_is_shown_with_its_image_and_rewards(run):
    code, output = report(str(run.run_dir))
    assert code == 0, output
    index = run.run_dir.parent / "report" / "index.html"
    seen = _check(index)
    assert [p["id"] for p in seen["pairs"]] == [r.pair_id for r in run.records]
    assert seen["images"] == {"loaded": 7, "broken": []}
    for shown, record in zip(seen["pairs"], run.records):
        assert (shown["iteration"], shown["chosen"], shown["rejected"]) == (record.iteration, 2, 2)
        with Image.open(run.images / record.image) as image:
            assert shown["image"] == image.width  # naturalWidth: the image itself was decoded
    # pages of 3 over data files of 2: the walk crosses pages and files in both iterations
    small = build_report(
        load_run(str(run.run_dir)), run.run_dir.parent / "paged", layout=Layout(3, 2)
    )
    paged = _check(small.index)
    assert [p["id"] for p in paged["pairs"]] == [r.pair_id for r in run.records]
    assert paged["images"] == {"loaded": 7, "broken": []}
    # the first page as a person sees it: pair p0, by hand (R = 0.9 R_I + 0.1 R_T, path mean)
    dom = Elements(dump_dom(index.as_uri()))
    cards = [e for e in dom.found if e["tag"] == "article"]
    assert [c["attrs"]["data-pair-id"] for c in cards] == [r.pair_id for r in run.records[:4]]
    text = " ".join(cards[0]["text"].split())
    for expected in (
        "prompt p0 · adapter base · margin 12.397",  # 37.0972 - 24.7005
        "chosen · path mean R 37.097",  # (42.6014 + 31.593) / 2
        "1 There is a circle. 0.3140 47.30 42.601",
        "2 (end of response) 0.9300 35.00 31.593",
        "rejected · path mean R 24.701",  # (41.519 + 7.882) / 2
        "2 There is a ring. 0.5200 8.70 7.882",
    ):
        assert expected in text, text


@pytest.mark.slow
def test_twelve_thousand_pairs_keep_the_page_small_and_page_in_the_browser(tmp_path):
    small = write_many(tmp_path / "small", 120)
    large = write_many(tmp_path / "large", 12_000)
    for made in (small, large):
        code, output = report(str(made.run_dir))
        assert code == 0, output
    small_index = (small.run_dir.parent / "report" / "index.html").stat().st_size
    out = large.run_dir.parent / "report"
    assert abs((out / "index.html").stat().st_size - small_index) < 300  # the same page
    shards = sorted((out / "data" / "iteration-1").glob("shard-*.js"))
    assert len(shards) == 12_000 // SHARD_SIZE
    assert max(s.stat().st_size for s in shards) < 60_000  # what one page loads at most per shard
    assert (out / "data" / "iteration-1" / "index.js").stat().st_size < 12_000 * 120
    last = _check_page(out / "index.html", "iteration=1&page=480")
    assert last == [r.pair_id for r in large.records[-PAGE_SIZE:]]
    assert _check_page(out / "index.html", "iteration=1&page=1&q=p11999") == [
        large.records[11_999].pair_id
    ]
    by_margin = sorted(
        range(12_000),
        key=lambda i: (large.records[i].chosen_reward - large.records[i].rejected_reward, i),
    )
    assert _check_page(out / "index.html", "iteration=1&page=1&sort=margin-asc") == [
        large.records[i].pair_id for i in by_margin[:PAGE_SIZE]
    ]


def _check_page(index, fragment: str) -> list[str]:
    dom = Elements(dump_dom(f"{index.as_uri()}#{fragment}"))
    return [e["attrs"]["data-pair-id"] for e in dom.found if e["tag"] == "article"]


def test_a_report_from_a_url_without_images_shows_their_paths(run, tmp_path):
    from services.runtime import embedded_redis

    server = embedded_redis.start(run.run_dir / "redis.db")
    try:
        code, output = report(f"unix://{server.socket_file}", "--out", str(tmp_path / "r"))
    finally:
        embedded_redis.stop(server)
    assert code == 0, output
    assert json.loads((tmp_path / "r" / "report.json").read_text())["missing_images"] == 7
    assert (
        "7 pair images not found (give --image-root" in (tmp_path / "r" / "index.html").read_text()
    )
    assert not (tmp_path / "r" / "images").exists()
    code, output = report(f"unix://{tmp_path}/no-such.socket", "--out", str(tmp_path / "s"))
    assert code == 1 and "cannot read the run from unix://" in output
