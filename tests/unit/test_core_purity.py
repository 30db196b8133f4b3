"""The core imports no transport, storage or model code (the services bring those)."""

import subprocess
import sys

FORBIDDEN = ("grpc", "redis", "fastapi", "httpx", "requests", "torch", "transformers",
             "socket", "sqlite3", "urllib.request")


def test_core_modules_import_nothing_forbidden():
    code = ("import sys, csr, csr.config, csr.rewards, csr.search, csr.selection, csr.records, "
            "csr.pairs, csr.demo, csr.training, csr.toyworld.world, csr.evaluation.metrics; "
            f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
