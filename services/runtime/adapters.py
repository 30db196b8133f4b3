"""The adapter format that the trainer publishes and the generators load.

Owns the manifest (manifest.json beside a PEFT adapter: version, base model, sha256 of every
file) and the validation a reader runs before loading: PEFT format with safetensors weights
(no pickles), for the base model being served, and the folder exactly as its publisher wrote
it: every file in it listed in the manifest (the two PEFT loads included) and matching its
sha256, every name a plain file name inside the folder (no path, no `..`), nothing but
regular files (no symbolic links, no subfolders).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from services.runtime.bounded import loads_json

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
    files = {name: sha256_file(directory / name) for name in sorted(_entries(directory))}
    files.pop(MANIFEST, None)
    data = {"version": version, "base_model": base_model, "files": files, **extra}
    (directory / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True))
    return Manifest(version, base_model, files)


def validate_adapter(directory: str | Path, base_model: str) -> Manifest:
    """Check format, provenance and integrity; shapes are checked when loading."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AdapterError(f"adapter {directory} is not a directory")
    present = _entries(directory)
    for required in ("adapter_config.json", "adapter_model.safetensors", MANIFEST):
        if required not in present:
            raise AdapterError(
                f"adapter {directory} lacks {required} (PEFT format with "
                "safetensors weights and the publisher's manifest)"
            )
    pickles = sorted(name for name in present if Path(name).suffix in _PICKLE_SUFFIXES)
    if pickles:
        raise AdapterError(
            f"adapter {directory} holds pickled weights ({', '.join(pickles)}): "
            "only safetensors are loaded"
        )
    manifest = _read_manifest(directory)
    if manifest.base_model != base_model:
        raise AdapterError(
            f"adapter {directory} was trained on {manifest.base_model!r}, but "
            f"this generator serves {base_model!r}"
        )
    _check_listing(directory, manifest, present)
    for name, expected in sorted(manifest.files.items()):
        if sha256_file(directory / name) != expected:
            raise AdapterError(
                f"adapter {directory}: {name} does not match its "
                "sha256 in the manifest (corrupt or partly written)"
            )
    return manifest


def _entries(directory: Path) -> set[str]:
    """The names in the folder, all regular files; AdapterError for anything else."""
    names = set()
    for entry in directory.iterdir():
        if entry.is_symlink():
            raise AdapterError(
                f"adapter {directory}: {entry.name} is a symbolic link; an adapter holds "
                "its own files only"
            )
        if not entry.is_file():
            raise AdapterError(
                f"adapter {directory}: {entry.name} is not a regular file; an adapter is "
                "one flat folder of files"
            )
        names.add(entry.name)
    return names


def _read_manifest(directory: Path) -> Manifest:
    try:
        data = loads_json((directory / MANIFEST).read_text())
        files = data["files"]
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise TypeError('"files" must map each file name to its sha256 hex')
        return Manifest(str(data["version"]), str(data["base_model"]), dict(files))
    except (ValueError, KeyError, TypeError) as e:  # JSON errors and deep nesting included
        raise AdapterError(f"adapter {directory}: unreadable {MANIFEST}: {e}") from e


def _check_listing(directory: Path, manifest: Manifest, present: set[str]) -> None:
    """The manifest names exactly the folder's files (itself aside), each by a plain name."""
    for name in manifest.files:
        if name in ("", ".", "..") or name != Path(name).name or "\\" in name:
            raise AdapterError(
                f"adapter {directory}: the manifest names {name!r}, which is not a file "
                "name inside the adapter folder"
            )
    unlisted = sorted(present - {MANIFEST} - set(manifest.files))
    if unlisted:
        raise AdapterError(
            f"adapter {directory} holds files its manifest does not list "
            f"({', '.join(unlisted)}): the publisher's manifest must vouch for every file"
        )
    missing = sorted(set(manifest.files) - present)
    if missing:
        raise AdapterError(
            f"adapter {directory}: {', '.join(missing)} listed in the manifest "
            "is missing (corrupt or partly written)"
        )
    if MANIFEST in manifest.files:
        raise AdapterError(f"adapter {directory}: the manifest lists itself")
