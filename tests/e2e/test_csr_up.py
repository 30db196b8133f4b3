"""`csr up` as a user runs it: tiny models, two reward workers, a generator and the trainer as
separate processes on free ports. One iteration runs to a published adapter, the run is
stopped with SIGTERM in the middle of the second; a second `csr up` is killed with SIGKILL
once it runs, and nothing it started (services, Redis, guard) is left running; a third
finishes the run, and every prompt of every iteration ended exactly once (a pair or a
counted no-pair) and every pair was trained exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import redis as redis_lib
import yaml

from services.runtime import embedded_redis
from services.runtime.lifeline import child_env
from services.runtime.prompts import PromptStreams
from tests.e2e.world import save_world

PROMPTS = 8  # batches of 2: a stop mid-iteration leaves some undone


def write_world(root):
    world = save_world(root, PROMPTS)
    common = {"MODEL": str(world.vlm), "BASE_NAME": "tiny-llava", "IMAGE_ROOT": str(world.images)}
    config = {
        "run_dir": "run",
        "algorithm": {
            "iterations": 2,
            "dpo": {"learning_rate": 5e-4, "lora_r": 4, "lora_alpha": 8, "batch_size": 2},
        },
        "reward": {"workers": 2, "settings": {"MODEL": str(world.clip)}},
        "generator": {
            "replicas": 1,
            "settings": {
                **common,
                "PROMPT_SET": str(world.prompt_set),
                "BATCH_SIZE": 2,
                "RECLAIM_AFTER_MS": 2000,
            },
        },
        "trainer": {"settings": common},
    }
    (root / "csr.yaml").write_text(yaml.safe_dump(config))


def start(root, log_name):
    log = open(root / log_name, "w")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CSR_")}
    return subprocess.Popen(
        [sys.executable, "-m", "csr_cli.main", "up", "-c", str(root / "csr.yaml")],
        env=child_env(env),  # ends with this test process, and its services with it
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root,
    ), log


def wait_for(condition, process, log_path, timeout=300):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.1)


def test_csr_up_survives_a_stop_mid_iteration_and_processes_everything_once(tmp_path):
    write_world(tmp_path)
    run = tmp_path / "run"
    first, log = start(tmp_path, "first.log")
    try:
        wait_for((run / "state.json").is_file, first, tmp_path / "first.log")
        state = json.loads((run / "state.json").read_text())
        live = PromptStreams(redis_lib.Redis.from_url(state["redis_url"]))
        # One iteration to a published adapter, then stop in the middle of the second.
        status = subprocess.run(
            [sys.executable, "-m", "csr_cli.main", "status", "-c", str(tmp_path / "csr.yaml")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0, status.stderr
        for shown in ("reward-1", "reward-2", "generator-1", "trainer", "ok", "prompts"):
            assert shown in status.stdout, status.stdout
        wait_for(lambda: live.iteration_progress(2)[0] >= 1, first, tmp_path / "first.log")
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) == 0, (tmp_path / "first.log").read_text()[-4000:]
    finally:
        first.kill()
        log.close()
    assert (run / "adapters" / "1").is_dir() and not (run / "adapters" / "2").exists()
    stopped = embedded_redis.start(run / "redis.db")
    done_before_restart = PromptStreams(stopped).iteration_progress(2)[0]
    embedded_redis.stop(stopped)
    assert 1 <= done_before_restart < PROMPTS  # the second iteration was cut in the middle
    kill_and_check_nothing_is_left(tmp_path, run)
    third, log = start(tmp_path, "third.log")
    try:
        assert third.wait(timeout=600) == 0, (tmp_path / "third.log").read_text()[-4000:]
    finally:
        third.kill()
        log.close()
    text = (tmp_path / "third.log").read_text()
    assert "trainer |" in text and "reward-2 |" in text  # the combined, prefixed log
    redis = embedded_redis.start(run / "redis.db")
    try:
        check_exactly_once(redis, run)
    finally:
        embedded_redis.stop(redis)


def kill_and_check_nothing_is_left(root, run):
    """Start `csr up`, SIGKILL it once every service is healthy: within seconds, nothing it
    started runs any more."""
    import psutil

    from services.runtime.lifeline import alive

    (run / "state.json").unlink(missing_ok=True)  # the first run's, removed as it stopped
    up, log = start(root, "killed.log")
    try:
        wait_for((run / "state.json").is_file, up, root / "killed.log")
        recorded = json.loads((run / "children.json").read_text())["children"]
        started = {(c["pid"], c["started"]) for c in recorded}
        started |= {(p.pid, p.create_time()) for p in psutil.Process(up.pid).children(True)}
        names = {c["name"] for c in recorded}
        assert {"redis", "reward-1", "reward-2", "generator-1", "trainer"} <= names
        assert len(started) >= 6  # and the guard of the embedded Redis
        up.send_signal(signal.SIGKILL)
        up.wait()
    finally:
        up.kill()
        log.close()
    deadline = time.monotonic() + 10
    while any(alive(pid, when) for pid, when in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid, when in started if alive(pid, when)]
    assert left == [], f"left running after csr up was killed: {left}"


def check_exactly_once(redis, run):
    streams = PromptStreams(redis)
    records = streams.pairs()
    per_prompt = Counter((r.iteration, r.prompt_id) for r in records)
    assert per_prompt and max(per_prompt.values()) == 1  # one pair per prompt and iteration
    for iteration in (1, 2):
        assert streams.iteration_progress(iteration) == (PROMPTS, PROMPTS)
    no_pairs = sum(streams.no_pairs().values())
    assert len(records) + no_pairs == 2 * PROMPTS  # every prompt ended once, counted
    trained = Counter(
        pair
        for v in (1, 2)
        for pair in json.loads((run / "adapters" / str(v) / "manifest.json").read_text())[
            "pair_ids"
        ]
    )
    assert set(trained) == {r.pair_id for r in records}  # every pair trained...
    assert max(trained.values()) == 1  # ...exactly once
    assert {r.adapter_version for r in records if r.iteration == 2} == {"1"}
    assert redis.xpending("csr:pairs", "trainers")["pending"] == 0
    assert redis.xpending("csr:prompts", "generators")["pending"] == 0
