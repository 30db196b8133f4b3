"""What `csr up` shows while it runs and `csr status` shows from outside.

Owns the state file (pid, Redis URL, each service's pid and ports, counts at start) and the
figures read from Redis and the services' /healthz: iteration, adapter version, prompts done
and queued, pairs waiting for the trainer, and pairs per minute since the start.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from services.runtime.keys import PAIR_GROUP, PAIRS
from services.runtime.prompts import PromptStreams


class StackState:
    def __init__(self, path: Path):
        self.path = path

    def write(self, pid: int, redis_url: str, services, counts: dict) -> None:
        data = {
            "pid": pid,
            "redis_url": redis_url,
            "started": time.time(),
            "at_start": counts,
            "services": [
                {"name": s.name, "pid": s.process.pid, "http_port": s.http_port, **s.ports}
                for s in services
            ],
        }
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps(data, indent=2))
        os.replace(staging, self.path)

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _undelivered(redis, stream: str, group: str) -> int:
    """Entries the group has not been given yet (XINFO's lag, also on Redis 6.2)."""
    for info in redis.xinfo_groups(stream):
        if info["name"] in (group, group.encode()):
            last = info["last-delivered-id"]
            last = last.decode() if isinstance(last, bytes) else last
            return len(redis.xrange(stream, f"({last}", "+"))
    return redis.xlen(stream) if redis.exists(stream) else 0


def read_counts(redis) -> dict:
    """Prompts finished / queued, pairs in the stream, and pairs the trainer has yet to ack."""
    finished, queued = PromptStreams(redis).progress()
    pairs = redis.xlen(PAIRS) if redis.exists(PAIRS) else 0
    waiting = 0
    if pairs:
        groups = [g["name"] for g in redis.xinfo_groups(PAIRS)]
        if PAIR_GROUP in groups or PAIR_GROUP.encode() in groups:
            waiting = redis.xpending(PAIRS, PAIR_GROUP)["pending"] + _undelivered(
                redis, PAIRS, PAIR_GROUP
            )
        else:
            waiting = pairs
    return {"finished": finished, "queued": queued, "pairs": pairs, "waiting": waiting}


def health(port: int) -> tuple[str, dict]:
    """('ok' | 'unhealthy' | 'down', the service's /healthz JSON)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return "ok", json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return "unhealthy", json.loads(e.read() or b"{}")
        except ValueError:
            return "unhealthy", {}
    except (urllib.error.URLError, OSError, ValueError):
        return "down", {}


def _trainer_facts(state: dict) -> dict:
    trainer = next((s for s in state.get("services", []) if s["name"] == "trainer"), None)
    return health(trainer["http_port"])[1] if trainer else {}


def status_line(redis, state: dict) -> str:
    counts = read_counts(redis)
    trainer = _trainer_facts(state)
    minutes = max((time.time() - state.get("started", time.time())) / 60, 1e-9)
    made = counts["pairs"] - state.get("at_start", {}).get("pairs", counts["pairs"])
    return (
        f"iteration {trainer.get('iteration', '?')}, adapter "
        f"{trainer.get('adapter_version', '?')} | prompts {counts['finished']}/"
        f"{counts['queued']} | pairs {counts['pairs']} ({counts['waiting']} waiting for "
        f"the trainer) | {made / minutes:.1f} pairs/min"
    )
