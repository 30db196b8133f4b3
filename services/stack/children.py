"""The processes of one `csr up` run, recorded in its run_dir, so that none outlives the run.

Owns run_dir/children.json: the supervisor (`csr up`, or the process that runs the stack in
itself) and every process it started (the embedded Redis, each service), each named by pid
and start time, so a pid the system has since given to another process is never touched.
The file is rewritten whole at each start and removed after a clean stop.

The children end with their supervisor by themselves (services.runtime.lifeline). Should one
survive anyway (a supervisor killed on a system without the parent-death signal, say), the
next `csr up` on the run_dir finds it here and stops it before it starts anything, naming
it; a live supervisor instead makes the next one refuse to start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from services.runtime import lifeline

CHILDREN_FILE = "children.json"


class Children:
    def __init__(self, run_dir: Path):
        self.path = run_dir / CHILDREN_FILE
        self._data: dict = {}

    def read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def running_supervisor(self) -> int | None:
        """The pid of the recorded supervisor if it still runs (and is not this process)."""
        pid, started = _identity(self.read().get("supervisor"))
        if pid and pid != os.getpid() and lifeline.alive(pid, started):
            return pid
        return None

    def stop_leftovers(self, say: Callable[[str], None]) -> list[str]:
        """Stop every recorded child still running from an earlier run; their names."""
        stopped = []
        for child in self.read().get("children", []):
            pid, started = _identity(child)
            if not pid or not lifeline.alive(pid, started):
                continue
            name = f"{child.get('name', '?')} (pid {pid})"
            say(f"stopping {name}, left running by an earlier csr up on this run_dir")
            lifeline.stop_processes([(pid, started)], group=bool(child.get("group")))
            stopped.append(name)
        return stopped

    def begin(self) -> None:
        """Record this process as the supervisor, with no children yet."""
        self._data = {"supervisor": _record("csr up", os.getpid(), False), "children": []}
        self._write()

    def add(self, name: str, pid: int, group: bool) -> None:
        """Record a started child; group: it leads its own process group (signal the group)."""
        import psutil

        try:
            record = _record(name, pid, group)
        except psutil.NoSuchProcess:  # gone already: nothing to stop later
            return
        self._data.setdefault("children", []).append(record)
        self._write()

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps(self._data, indent=2))
        os.replace(staging, self.path)


def _record(name: str, pid: int, group: bool) -> dict:
    identity = lifeline.identity(pid)
    return {"name": name, "pid": pid, "started": float(identity.partition(":")[2]), "group": group}


def _identity(entry) -> tuple[int, float]:
    if not isinstance(entry, dict):
        return 0, 0.0
    pid, started = entry.get("pid"), entry.get("started")
    if not isinstance(pid, int) or pid <= 0 or not isinstance(started, (int, float)):
        return 0, 0.0
    return pid, float(started)
