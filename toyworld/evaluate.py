"""`csr eval` on the toy world: CHAIR of greedy descriptions and POPE probes, on held-out
scenes, for a model directory with an optional adapter (any published version).

Owns running the model; the arithmetic is csr.evaluation.metrics and the truth is the scene's.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

from csr.evaluation.metrics import (
    NEGATIVE_KINDS,
    chair,
    parse_yes_no,
    pope_metrics,
    pope_questions,
    question,
)
from evaluation.generate import answers, load_model
from toyworld.world import PAIRS, SHAPES, WorldConfig, render, scenes

VOCABULARY = {shape: shape for shape in SHAPES}
HELD_OUT_SEED = 10_007  # scenes no training run draws (training seeds are small)
DESCRIBE = "Describe the image."
BATCH = 250  # prompts per generate call: the tiny models' time goes into per-step overhead
# What a stored evaluation was made with: a cached one that says otherwise is made again
EVALUATOR = f"captions greedy 48 tokens, POPE 2 per kind, batch {BATCH}"


def popularity(world: WorldConfig, seed: int = 0, count: int = 2000) -> list[str]:
    """Shapes by how often scenes hold them, most frequent first (POPE's popular negatives)."""
    counts = dict.fromkeys(SHAPES, 0)
    for scene in scenes(seed, count, world):
        for shape in scene.shapes:
            counts[shape] += 1
    return sorted(SHAPES, key=lambda s: -counts[s])


def evaluate(
    model_dir: str | Path,
    adapter: str | Path | None = None,
    count: int = 200,
    seed: int = HELD_OUT_SEED,
    world: WorldConfig = WorldConfig(),
) -> dict:
    model, processor = load_model(model_dir, adapter)
    held_out = scenes(seed, count, world)
    images = [render(s, world) for s in held_out]
    captions = answers(model, processor, images, [DESCRIBE] * count, batch=BATCH)
    result = {
        "model": str(model_dir),
        "adapter": str(adapter) if adapter else None,
        "scenes": count,
        "chair": asdict(chair(captions, [s.shapes for s in held_out], VOCABULARY)),
        "examples": captions[:5],
        # every held-out scene's caption and true shapes (scene i is scenes(seed, count)[i]),
        # for reports that show the captions of each iteration side by side
        "held_out_seed": seed,
        "captions": captions,
        "truth": [sorted(s.shapes) for s in held_out],
        "pope": {},
    }
    co_occurring = {**{t: [p] for t, p in PAIRS.items()}, **{p: [t] for t, p in PAIRS.items()}}
    popular = popularity(world)
    probes = {}
    for kind in NEGATIVE_KINDS:
        rng = random.Random(seed)
        probes[kind] = [
            (i, obj, label)
            for i, s in enumerate(held_out)
            for obj, label in pope_questions(s.shapes, SHAPES, kind, rng, 2, popular, co_occurring)
        ]
    # A reply depends on the image and the object asked about only: the three kinds share
    # their questions about present objects (and some negatives), each asked once.
    asked = list(dict.fromkeys((i, obj) for kind in probes.values() for i, obj, _ in kind))
    replies = answers(
        model,
        processor,
        [images[i] for i, _ in asked],
        [question(obj) for _, obj in asked],
        max_new_tokens=8,
        batch=BATCH,
    )
    said = {probe: parse_yes_no(reply) for probe, reply in zip(asked, replies)}
    for kind, kind_probes in probes.items():
        result["pope"][kind] = asdict(
            pope_metrics(
                [label for _, _, label in kind_probes],
                [said[(i, obj)] for i, obj, _ in kind_probes],
            )
        )
    return result
