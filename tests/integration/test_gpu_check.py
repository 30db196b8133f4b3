"""bench/gpu_check.py, the GPU check, runs on the CPU with --tiny: its table parses and every
figure it promises is there and positive; --accounting prints the README's table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
VLM_FIGURES = [
    "build",
    "parameters",
    "process after the build",
    "prompt encoding, 2 prompts",
    "prompt tokens (mean)",
    "prompt encoding peak memory",
    "first expansion, 2 prefixes x 5 beams",
    "first expansion beam-row tokens/s",
    "first expansion peak memory",
    "widest expansion, 6 prefixes of 20 tokens",
    "widest expansion peak memory",
    "widest expansion KV accounted, prompt copied per row",
    "widest expansion KV accounted, prompt shared",
    "widest expansion KV accounted, the engine's layout",
    "search batch, 2 prompts",
    "search batch pairs",
    "search pairs per minute",
    "sentences per finished response",
    "search batch peak memory",
    "DPO r128/a256, 2 steps of 1 pair",
    "DPO s/step",
    "DPO peak memory",
]
REWARD_FIGURES = ["sentences/s (batches of 64)", "image encoding", "peak memory"]


@pytest.mark.slow
def test_tiny_run_prints_every_figure_positive():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    assert rows[0] == "| part | figure | value | unit |"
    table = {}
    for row in rows[1:]:
        part, figure, value, _ = (cell.strip() for cell in row.strip("|").split("|"))
        assert figure != "error", row
        table[(part, figure)] = float(value)
    expected = [(kind, f) for kind in ("llava", "qwen2-vl") for f in VLM_FIGURES]
    expected += [("reward", f) for f in REWARD_FIGURES] + [("all", "wall time")]
    assert sorted(table) == sorted(expected)
    assert all(value > 0 for value in table.values()), table
    name, value = re.fullmatch(r"(\w+): ([0-9.]+)", lines[-1]).groups()
    assert name == "llava_search_pairs_per_min"
    assert float(value) == table[("llava", "search pairs per minute")]


def test_accounting_is_the_readme_table():
    from bench.gpu_accounting import markdown

    table = markdown(ROOT)
    assert table in (ROOT / "README.md").read_text(), (
        "README's GPU table is out of date: paste `python bench/gpu_check.py --accounting`\n"
        + table
    )


def test_the_check_bounds_qwen_images_as_the_services_do_by_default():
    import argparse
    import importlib.util

    from services.runtime.settings import VLMSettings

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    _, processor = gpu_check.build("qwen2-vl", argparse.Namespace(tiny=True, device="cpu"))
    size = processor.image_processor.size
    size = size if isinstance(size, dict) else vars(size)
    assert size["longest_edge"] == VLMSettings.model_fields["max_pixels"].default == 1280 * 28 * 28
    assert size["shortest_edge"] == VLMSettings.model_fields["min_pixels"].default == 56 * 56
