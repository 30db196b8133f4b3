"""Every benchmark the README runs starts the way the README runs it: `.venv/bin/python
bench/<name>.py` from the repository root, with nothing on PYTHONPATH. Benchmarks build their
models from the tests' tiny-model code, so each must find it on its own."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
BENCHMARKS = sorted(set(re.findall(r"(?<![\w./-])(bench/\w+\.py)", README)))


def test_the_readme_runs_several_benchmarks():
    assert len(BENCHMARKS) >= 5, BENCHMARKS


def test_every_benchmark_the_readme_runs_starts_without_pythonpath():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    started = {
        script: subprocess.Popen(
            [sys.executable, script, "--help"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in BENCHMARKS
    }
    failed = {}
    for script, process in started.items():
        out, err = process.communicate(timeout=240)
        if process.returncode != 0:
            failed[script] = err.strip().splitlines()[-1:] or out.strip().splitlines()[-1:]
    assert failed == {}
