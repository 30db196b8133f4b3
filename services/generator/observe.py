"""Health and Prometheus metrics of a generator replica, served over plain HTTP.

GET /healthz answers 200 while the replica takes prompts and 503 while the reward service is
down (the loop then takes none); GET /metrics is the Prometheus text format.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest


class GeneratorMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.prompts = Counter("csr_generator_prompts", "Prompts searched.", registry=r)
        self.pairs = Counter("csr_generator_pairs", "Preference records published.", registry=r)
        self.repeats = Counter("csr_generator_repeats",
                               "Pairs not published again (redelivered prompts).", registry=r)
        self.no_pair = Counter("csr_generator_no_pair", "Prompts without a pair, by reason.",
                               ["reason"], registry=r)
        self.tokens = Counter("csr_generator_tokens", "Tokens generated (beam rows).", registry=r)
        self.batch_seconds = Histogram("csr_generator_batch_seconds",
                                       "Seconds to search one batch of prompts.", registry=r,
                                       buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))


def serve_health(loop, metrics: GeneratorMetrics, host: str, port: int):
    """Start the HTTP endpoint in a daemon thread; returns (server, port)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path == "/metrics":
                body, kind, status = generate_latest(metrics.registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                status = 200 if loop.healthy else 503
                body = json.dumps({"status": "ok" if loop.healthy else "reward-unavailable",
                                   "adapter_version": loop.adapter_version}).encode()
                kind = "application/json"
            else:
                body, kind, status = b'{"error": "not found"}', "application/json", 404
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # requests are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
