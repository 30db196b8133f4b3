"""Processes that must not outlive the process that started them.

Owns two mechanisms, both keyed on the parent's pid:
- `exit_with_parent`, for a Python child: on Linux the kernel's parent-death signal
  (prctl(PR_SET_PDEATHSIG, SIGKILL), set by the child itself, so the parent needs no
  preexec_fn and may have threads), plus a watchdog thread that notices the parent's pid
  change (other systems, and the moment between fork and prctl). A parent passes its pid in
  PARENT_ENV (`child_env`); a `csr` command started with it calls `exit_with_parent_from_env`
  first thing, and removes it from its environment, so its own children are not bound to a
  grandparent.
- the guard, for a process that cannot watch its parent (the embedded Redis daemonises):
  `start_guard(pids)` starts `python -m services.runtime.lifeline PARENT PID:START ...`, a small
  process that waits for its parent to die and then stops those processes (SIGTERM, SIGKILL
  after the grace). A pid is named with its start time, so a pid reused by another process
  is never signalled. The guard ends by itself once its processes are gone, and on SIGTERM.

The parent-death signal follows the thread that started the child: start children from a
thread that lives as long as they should (csr up starts them from its main thread).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping

logger = logging.getLogger(__name__)

PARENT_ENV = "CSR_EXIT_WITH_PARENT"  # the pid whose death ends this process
_PR_SET_PDEATHSIG = 1


def child_env(env: Mapping[str, str]) -> dict[str, str]:
    """env for a child that must end when this process ends."""
    return {**env, PARENT_ENV: str(os.getpid())}


def exit_with_parent_from_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """Bind this process to the parent named in PARENT_ENV, if any (and remove it)."""
    value = environ.pop(PARENT_ENV, None)
    if value:
        try:
            exit_with_parent(int(value))
        except ValueError:
            logger.warning("ignored %s=%r: not a pid", PARENT_ENV, value)


def exit_with_parent(parent: int, use_prctl: bool = True, poll_s: float = 0.25) -> None:
    """Be killed (SIGKILL) as soon as `parent` is no longer this process's parent."""
    if use_prctl and sys.platform.startswith("linux"):
        _parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # it died before we could ask
        os.kill(os.getpid(), signal.SIGKILL)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _parent_death_signal(signum: int) -> None:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as e:  # no prctl: the watchdog alone
        logger.warning("no parent-death signal (%s); watching the parent's pid instead", e)


def identity(pid: int) -> str:
    """'PID:START' (the start time as psutil gives it), naming one process for good."""
    import psutil

    return f"{pid}:{psutil.Process(pid).create_time():.3f}"


def alive(pid: int, started: float) -> bool:
    """Whether pid is still the process that started at `started` (not a reuse)."""
    import psutil

    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 0.01 and (
            process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def stop_processes(
    named: Iterable[tuple[int, float]], grace: float = 10.0, group=False
) -> list[int]:
    """SIGTERM each live (pid, start) (its process group with group=True), SIGKILL those
    left after the grace; returns the pids that were alive."""
    live = [(pid, started) for pid, started in named if alive(pid, started)]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for pid, started in live:
            if alive(pid, started):
                _signal(pid, signum, group)
        deadline = time.monotonic() + (grace if signum == signal.SIGTERM else 5.0)
        while any(alive(p, s) for p, s in live) and time.monotonic() < deadline:
            time.sleep(0.05)
    return [pid for pid, _ in live]


def _signal(pid: int, signum: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def start_guard(identities: Iterable[str]) -> subprocess.Popen:
    """A guard process that stops these processes ('PID:START' each) if this one dies."""
    return subprocess.Popen(
        [sys.executable, "-m", "services.runtime.lifeline", str(os.getpid()), *identities],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal is its parent's to handle
    )


def stop_guard(guard: subprocess.Popen | None) -> None:
    if guard is not None and guard.poll() is None:
        guard.terminate()
        try:
            guard.wait(5)
        except subprocess.TimeoutExpired:
            guard.kill()
            guard.wait()


def _guard(parent: int, named: list[tuple[int, float]], poll_s: float = 0.1) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the parent stops them itself
    while os.getppid() == parent:
        if not any(alive(pid, started) for pid, started in named):
            return 0  # stopped by their owner
        time.sleep(poll_s)
    stop_processes(named)
    return 0


def main(argv: list[str]) -> int:
    """The guard: `python -m services.runtime.lifeline PARENT PID:START ...`."""
    named = []
    for item in argv[1:]:
        pid, _, started = item.partition(":")
        named.append((int(pid), float(started)))
    return _guard(int(argv[0]), named)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
