"""The adapter format that the trainer publishes and the generators load.

Owns the manifest (manifest.json beside a PEFT adapter: version, base model, sha256 of every
file) and the validation a reader runs before loading: PEFT format with safetensors weights
(no pickles), for the base model being served, every file matching its sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class AdapterError(ValueError):
    """The adapter was refused; the message says why. The serving adapter is unchanged."""


@dataclass(frozen=True)
class Manifest:
    version: str
    base_model: str
    files: dict[str, str]  # file name -> sha256 hex


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | Path, version: str, base_model: str, **extra) -> Manifest:
    """What a publisher writes beside the adapter (the trainer does this on publication)."""
    directory = Path(directory)
    files = {
        p.name: sha256_file(p)
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    data = {"version": version, "base_model": base_model, "files": files, **extra}
    (directory / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))
    return Manifest(version, base_model, files)


def validate_adapter(directory: str | Path, base_model: str) -> Manifest:
    """Check format, provenance and integrity; shapes are checked when loading."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterError(f"adapter {directory} is not a directory")
    for required in ("adapter_config.json", "adapter_model.safetensors", MANIFEST):
        if not (directory / required).is_file():
            raise AdapterError(
                f"adapter {directory} lacks {required} (PEFT format with "
                "safetensors weights and the publisher's manifest)"
            )
    pickles = [p.name for p in directory.iterdir() if p.suffix in _PICKLE_SUFFIXES]
    if pickles:
        raise AdapterError(
            f"adapter {directory} holds pickled weights ({', '.join(pickles)}): "
            "only safetensors are loaded"
        )
    try:
        data = json.loads((directory / MANIFEST).read_text())
        manifest = Manifest(str(data["version"]), str(data["base_model"]), dict(data["files"]))
    except (ValueError, KeyError, TypeError) as e:
        raise AdapterError(f"adapter {directory}: unreadable {MANIFEST}: {e}") from e
    if manifest.base_model != base_model:
        raise AdapterError(
            f"adapter {directory} was trained on {manifest.base_model!r}, but "
            f"this generator serves {base_model!r}"
        )
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != expected:
            raise AdapterError(
                f"adapter {directory}: {name} is missing or does not match its "
                "sha256 in the manifest (corrupt or partly written)"
            )
    return manifest
