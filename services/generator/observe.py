"""Health and Prometheus metrics of a generator replica, served over plain HTTP.

GET /healthz answers 200 while the replica takes prompts and 503 while the reward service is
down (the loop then takes none); GET /metrics is the Prometheus text format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from services.runtime.health import serve_http


class GeneratorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.prompts = Counter("csr_generator_prompts", "Prompts searched.", registry=r)
        self.pairs = Counter("csr_generator_pairs", "Preference records published.", registry=r)
        self.repeats = Counter(
            "csr_generator_repeats", "Pairs not published again (redelivered prompts).", registry=r
        )
        self.no_pair = Counter(
            "csr_generator_no_pair", "Prompts without a pair, by reason.", ["reason"], registry=r
        )
        self.tokens = Counter("csr_generator_tokens", "Tokens generated (beam rows).", registry=r)
        self.batch_seconds = Histogram(
            "csr_generator_batch_seconds",
            "Seconds to search one batch of prompts.",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )


def serve_health(loop, metrics: GeneratorMetrics, host: str, port: int):
    """Start /healthz (200, or 503 while the reward service is down) and /metrics in a daemon
    thread; returns (server, port)."""

    def status() -> tuple[bool, dict]:
        return loop.healthy, {
            "status": "ok" if loop.healthy else "reward-unavailable",
            "adapter_version": loop.adapter_version,
        }

    return serve_http(status, metrics.registry, host, port)
