"""Plain-HTTP health and Prometheus endpoints shared by the generator and the trainer.

GET /healthz answers 200 with the service's status JSON while it is healthy and 503 while it
is not; GET /metrics is the Prometheus text format of its registry.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Status = Callable[[], tuple[bool, dict]]  # (healthy, what /healthz shows)


def serve_http(status: Status, registry: CollectorRegistry, host: str, port: int):
    """Start the endpoints in a daemon thread; returns (server, port). Port 0 picks one."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                body, kind, code = generate_latest(registry), CONTENT_TYPE_LATEST, 200
            elif self.path == "/healthz":
                healthy, shown = status()
                body, kind, code = (
                    json.dumps(shown).encode(),
                    "application/json",
                    (200 if healthy else 503),
                )
            else:
                body, kind, code = b'{"error": "not found"}', "application/json", 404
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # requests are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]
