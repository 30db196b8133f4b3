"""An output directory written whole or not at all.

Owns the swap: the output is built in a staging directory beside its destination, and renamed
into place only once complete; an error on the way removes the staging directory and leaves
the destination as it was. A destination that exists must be an earlier output of the same
kind (it holds the marker file) or empty, so no other folder is ever replaced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputError(ValueError):
    """The output directory cannot be written; the message names it and the fix."""


@contextlib.contextmanager
def staged_directory(out: Path, marker: str, what: str) -> Iterator[Path]:
    """A staging directory that becomes `out` when the block ends without an error. The block
    must write `marker` into it (it marks `out` as replaceable next time)."""
    out = out.resolve()
    replaceable = (out / marker).is_file() or (out.is_dir() and not any(out.iterdir()))
    if out.exists() and not replaceable:
        raise OutputError(
            f"{out} exists and is not a {what} (it has no {marker}); choose another --out "
            "or remove it"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        yield staging
        if not (staging / marker).is_file():
            raise OutputError(f"internal: the {what} was built without its {marker}")
        staging.chmod(0o755)
        _swap(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap(staging: Path, out: Path) -> None:
    if not out.exists():
        os.replace(staging, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old / out.name)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
