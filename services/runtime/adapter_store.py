"""The shared adapter store: one directory per published adapter version.

Owns publication on disk. A version directory appears whole or not at all: the adapter is
written to a temporary directory beside the store, every file and the directory are fsynced,
the manifest (version, iteration, base model, sha256 of every file, pairs used, training
metrics) is written last, and one rename makes it visible. The last `keep` versions stay, so
any iteration can be evaluated or rolled back; older ones are removed after a publication.
Readers (the generators) validate the manifest's checksums before loading.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from services.runtime.adapters import MANIFEST, write_manifest
from services.runtime.bounded import loads_json

logger = logging.getLogger(__name__)


CLOSED = "closed.json"  # iteration -> the version that closed it


class StoreError(RuntimeError):
    """The adapter store cannot be used as configured; the message says how to fix it."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path, what: str) -> dict:
    """A JSON object the store keeps; StoreError naming the file if it is unreadable."""
    try:
        data = loads_json(path.read_text())
    except (OSError, ValueError) as e:  # decode errors and deep nesting included
        raise StoreError(f"cannot read {what}, {path}: {e}; restore or remove it") from e
    if not isinstance(data, dict):
        raise StoreError(f"{what}, {path}, is not a JSON object; restore or remove it")
    return data


class AdapterStore:
    def __init__(self, root: str | Path, keep: int = 5):
        if keep < 1:
            raise StoreError(f"keep={keep}: at least the latest version must be kept")
        self.root, self.keep = Path(root), keep
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create the adapter store {self.root}: {e}") from e

    def path(self, version: int) -> Path:
        return self.root / str(version)

    def versions(self) -> list[int]:
        """Published versions, oldest first (directories with a manifest only)."""
        found = [
            int(p.name)
            for p in self.root.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / MANIFEST).is_file()
        ]
        return sorted(found)

    def latest(self) -> int:
        """The newest published version, 0 (the base model) if none."""
        versions = self.versions()
        return versions[-1] if versions else 0

    def manifest(self, version: int) -> dict:
        return _read_json(self.path(version) / MANIFEST, "the manifest of a published version")

    def closed_iterations(self) -> dict[int, int]:
        """Iteration -> the version that closed it. Kept in closed.json, which outlives pruned
        versions, and completed from the manifests (a crash may come between a publication
        and the file's update)."""
        try:
            closed = {int(k): int(v) for k, v in self._read_closed().items()}
        except (TypeError, ValueError) as e:
            raise StoreError(
                f"{self.root / CLOSED} must map iterations to versions (whole numbers): {e}"
            ) from e
        for version in self.versions():
            manifest = self.manifest(version)
            if manifest.get("closes_iteration"):
                closed.setdefault(int(manifest["iteration"]), version)
        return closed

    def close_iteration(self, iteration: int, version: int) -> None:
        """Record that `version` closed `iteration`, atomically."""
        closed = {**self._read_closed(), str(iteration): version}
        staging = self.root / f".{CLOSED}.tmp"
        staging.write_text(json.dumps(closed, indent=2, sort_keys=True))
        _fsync(staging)
        os.replace(staging, self.root / CLOSED)

    def _read_closed(self) -> dict:
        if not (self.root / CLOSED).exists():
            return {}
        return _read_json(self.root / CLOSED, "the record of closed iterations")

    def version_of_iteration(self, iteration: int) -> int | None:
        """The version published at the end of `iteration`, if any."""
        return self.closed_iterations().get(iteration)

    def publish(self, save, version: int, base_model: str, **facts) -> Path:
        """save(directory) writes the adapter; returns the published version's directory."""
        final = self.path(version)
        if final.exists():
            raise StoreError(
                f"adapter version {version} already exists at {final}; versions "
                "are never overwritten"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=self.root))
        try:
            save(staging)
            for file in staging.iterdir():
                _fsync(file)
            write_manifest(staging, str(version), base_model, **facts)
            _fsync(staging / MANIFEST)
            _fsync(staging)
            os.rename(staging, final)
            _fsync(self.root)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("published adapter version %d at %s", version, final)
        self.prune()
        return final

    def prune(self) -> None:
        """Remove all but the newest `keep` versions, and staging left by a crash."""
        for old in self.versions()[: -self.keep]:
            shutil.rmtree(self.path(old), ignore_errors=True)
            logger.info("removed adapter version %d (keeping %d)", old, self.keep)
        for staging in self.root.glob(".staging-*"):
            shutil.rmtree(staging, ignore_errors=True)
