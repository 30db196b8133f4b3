"""Headless Chromium for the report tests: load a page, let its scripts run, return the DOM.

`make test` installs Debian's chromium (`make browser-tool`) and sets CSR_REQUIRE_BROWSER=1,
which turns a missing browser into a failure instead of a skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest


def chromium() -> str:
    found = os.environ.get("CSR_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    if found is None:
        if os.environ.get("CSR_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (make test installs Debian's)")
        pytest.skip("chromium not installed; `make test` installs it")
    return found


def dump_dom(url: str, budget_ms: int = 20_000, timeout: float = 120) -> str:
    """The page's DOM after its scripts ran (virtual time: loads and timers finish first),
    with every network name unresolvable: the page must need none."""
    with tempfile.TemporaryDirectory(prefix="csr-chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--virtual-time-budget={budget_ms}",
                "--dump-dom",
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class Elements(HTMLParser):
    """Every element's tag, attributes and text (its own and its descendants', a space
    between elements)."""

    def __init__(self, html: str):
        super().__init__()
        self.found: list[dict] = []
        self._open: list[dict] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.handle_data(" ")
        element = {"tag": tag, "attrs": dict(attrs), "text": ""}
        self.found.append(element)
        if tag not in ("img", "br", "meta", "input", "link"):
            self._open.append(element)

    def handle_endtag(self, tag):
        self.handle_data(" ")
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data):
        for element in self._open:
            element["text"] += data

    def having(self, **attrs) -> list[dict]:
        return [e for e in self.found if all(e["attrs"].get(k) == v for k, v in attrs.items())]
