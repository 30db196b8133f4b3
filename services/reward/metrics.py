"""Prometheus metrics of one reward worker, in a registry of its own (tests run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class RewardMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "csr_reward_requests",
            "Score requests by API and outcome.",
            ["api", "outcome"],
            registry=r,
        )
        self.sentences = Counter("csr_reward_sentences", "Sentences scored.", registry=r)
        self.batch_size = Histogram(
            "csr_reward_batch_size",
            "Sentences per text-encoder batch.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "csr_reward_queue_wait_seconds",
            "Time a request's sentences waited for their batch.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "csr_reward_request_seconds",
            "Score request latency by API.",
            ["api"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "csr_reward_image_cache", "Image-embedding cache lookups.", ["result"], registry=r
        )
