"""Processes end with the process that started them: a `csr` child, the embedded Redis, and
what a killed `csr up` left in its run_dir. Parents here are real processes killed with
SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services.runtime import embedded_redis, lifeline
from services.stack.children import Children

ROOT = Path(__file__).parents[2]


def spawn_parent(code: str) -> tuple[subprocess.Popen, int]:
    """A parent process running code, which prints the pid it wants watched; (parent, pid)."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    line = parent.stdout.readline()
    assert line.strip().isdigit(), line
    return parent, int(line)


def gone_within(pid: int, started: float, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while lifeline.alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("use_prctl", [True, False])
def test_a_child_bound_to_its_parent_dies_with_it(use_prctl):
    child = (
        "from services.runtime.lifeline import exit_with_parent_from_env; "
        "exit_with_parent_from_env(); import time; time.sleep(120)"
        if use_prctl
        else "import os, time; from services.runtime.lifeline import PARENT_ENV, "
        "exit_with_parent; exit_with_parent(int(os.environ[PARENT_ENV]), use_prctl=False); "
        "time.sleep(120)"
    )
    parent, pid = spawn_parent(
        f"""
        import os, subprocess, sys, time
        from services.runtime.lifeline import child_env
        child = subprocess.Popen([sys.executable, "-c", {child!r}],
                                 env=child_env(os.environ), start_new_session=True)
        time.sleep(1.5)  # the child binds itself at its start
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    started = float(lifeline.identity(pid).partition(":")[2])
    assert lifeline.alive(pid, started)
    parent.kill()
    parent.wait()
    assert gone_within(pid, started, 5), "the child outlived its parent"


def test_the_embedded_redis_of_a_killed_process_is_stopped_and_its_data_kept(tmp_path):
    parent, pid = spawn_parent(
        f"""
        import time
        from services.runtime import embedded_redis
        server = embedded_redis.start({str(tmp_path / "redis.db")!r})
        server.set("kept", "yes")
        print(server.pid, flush=True)
        time.sleep(120)
        """
    )
    started = float(lifeline.identity(pid).partition(":")[2])
    parent.kill()
    parent.wait()
    assert gone_within(pid, started, 10), "the embedded Redis outlived its starter"
    again = embedded_redis.start(tmp_path / "redis.db")
    try:
        assert again.get("kept") == b"yes"  # stopped with SIGTERM: Redis saved first
    finally:
        embedded_redis.stop(again)
    assert again.csr_guard.poll() is not None  # stop ends the guard too


def test_leftovers_of_an_earlier_run_are_stopped_and_named_and_reused_pids_spared(tmp_path):
    orphan = subprocess.Popen(["sleep", "120"], start_new_session=True)
    try:
        record = Children(tmp_path)
        record.begin()
        record.add("generator-1", orphan.pid, group=True)
        record.add("not-ours", os.getpid(), group=False)
        data = record.read()
        data["supervisor"]["pid"] = 999_999_999  # that supervisor is gone
        data["children"][1]["started"] -= 1000  # this pid now belongs to another process
        record._data = data
        record._write()
        said: list[str] = []
        assert Children(tmp_path).stop_leftovers(said.append) == [f"generator-1 (pid {orphan.pid})"]
        assert orphan.wait(timeout=15) == -signal.SIGTERM
        assert said == [
            f"stopping generator-1 (pid {orphan.pid}), left running by an earlier csr up "
            "on this run_dir"
        ]
    finally:
        orphan.kill()


def test_a_live_supervisor_on_the_run_dir_makes_csr_up_refuse(tmp_path):
    from rich.console import Console

    from services.stack.config import load_stack_config
    from services.stack.up import Stack

    (tmp_path / "csr.yaml").write_text("run_dir: run\n")
    config = load_stack_config(tmp_path / "csr.yaml")
    config.run_dir.mkdir()
    other = subprocess.Popen(["sleep", "120"])
    try:
        record = Children(config.run_dir)
        record.begin()
        record._data["supervisor"] = {
            "name": "csr up",
            "pid": other.pid,
            "started": float(lifeline.identity(other.pid).partition(":")[2]),
        }
        record._write()
        console = Console(file=open(os.devnull, "w"))
        assert Stack(config, {}, console).run() == 2
        assert other.poll() is None  # a running csr up is never stopped by another
    finally:
        other.kill()
        other.wait()
