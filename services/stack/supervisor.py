"""Child processes of `csr up`: start in order, wait for health, one combined log, stop gently.

Owns process lifetimes. Each service is a `csr <command>` subprocess in its own process group,
its output read line by line and printed with a coloured `name |` prefix. A service counts as
started once its HTTP /healthz answers 200. Stopping sends SIGTERM (services finish the work
in hand: a generator its batch, the trainer its update) and SIGKILL only after the grace.

No service outlives its supervisor: each is started bound to this process
(services.runtime.lifeline: the kernel's parent-death signal and a watchdog), so a supervisor
killed outright (SIGKILL, the OOM killer) takes its services with it, as a crash: work in hand
stays pending in Redis for the next run. Start services from a thread that lives as long as
they should: the parent-death signal follows the thread that started the child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from services.runtime import lifeline

logger = logging.getLogger(__name__)

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red"]


class ServiceFailed(RuntimeError):
    """A service exited or never became healthy; the message says which and how it ended."""


@dataclass
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    http_port: int
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    colour: str = "white"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/healthz", timeout=2
            ) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False


class Supervisor:
    def __init__(
        self,
        print_line: Callable[[str, str, str], None],
        on_start: Callable[[Service], None] = lambda service: None,
    ):
        self.print_line = print_line  # (service name, colour, line)
        self.on_start = on_start  # told of each started process (csr up records it)
        self.services: list[Service] = []
        self._pumps: list[threading.Thread] = []

    def start(
        self, service: Service, timeout: float, stopping: threading.Event | None = None
    ) -> None:
        """Start a service and return once it is healthy (or once `stopping` is set);
        ServiceFailed otherwise."""
        service.colour = COLOURS[len(self.services) % len(COLOURS)]
        env = lifeline.child_env({**os.environ, **service.env, "PYTHONUNBUFFERED": "1"})
        service.process = subprocess.Popen(
            [sys.executable, "-m", "csr_cli.main", *service.command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            errors="replace",  # a stray byte must not stop the log
            start_new_session=True,
        )  # our Ctrl-C is ours to forward, in order
        self.services.append(service)
        self.on_start(service)
        pump = threading.Thread(target=self._pump, args=(service,), daemon=True)
        pump.start()
        self._pumps.append(pump)
        deadline = time.monotonic() + timeout
        while not service.healthy():
            if stopping is not None and stopping.is_set():
                return
            if service.process.poll() is not None:
                raise ServiceFailed(
                    f"{service.name} exited with status "
                    f"{service.process.returncode} while starting (see its log)"
                )
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{service.name} was not healthy within {timeout:.0f}s")
            time.sleep(0.2)
        self.print_line(service.name, service.colour, "healthy")

    def _pump(self, service: Service) -> None:
        """Copy the service's output to the log until it closes; never stop early, or the
        child would block once its pipe is full."""
        for line in service.process.stdout:
            try:
                self.print_line(service.name, service.colour, line.rstrip("\n"))
            except Exception:  # a line the console cannot print is dropped, not the pump
                logger.exception("could not print a line of %s", service.name)

    def exited(self) -> list[Service]:
        return [s for s in self.services if s.process is not None and s.process.poll() is not None]

    def stop(self, grace: float = 60.0, last: Callable[[Service], bool] = lambda s: False) -> None:
        """Stop the services in two waves, each with SIGTERM to all of its services at once
        and, past the grace, SIGKILL: first every service `last` does not pick (the trainer
        and the generators: they stop taking work at once and finish what they hold), then the
        others (the reward workers, which the generators' last batches still need)."""
        front = [s for s in reversed(self.services) if not last(s)]
        for wave in (front, [s for s in reversed(self.services) if last(s)]):
            for service in wave:
                if service.process.poll() is None:
                    service.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            for service in wave:
                self._wait_or_kill(service, max(0.1, deadline - time.monotonic()), grace)
        for pump in self._pumps:
            pump.join(timeout=1)

    @staticmethod
    def _wait_or_kill(service: Service, timeout: float, grace: float) -> None:
        try:
            service.process.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop within %.0fs; killing it", service.name, grace)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()
