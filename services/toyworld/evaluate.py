"""`csr eval` on the toy world: CHAIR of greedy descriptions and POPE probes, on held-out
scenes, for a model directory with an optional adapter (any published version).

Owns running the model; the arithmetic is csr.evaluation.metrics and the truth is the scene's.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path

import torch

from csr.evaluation.metrics import (NEGATIVE_KINDS, chair, parse_yes_no, pope_metrics,
                                    pope_questions, question)
from csr.toyworld.world import PAIRS, SHAPES, WorldConfig, render, scenes
from services.generator.engine import chat_prompt

VOCABULARY = {shape: shape for shape in SHAPES}
HELD_OUT_SEED = 10_007  # scenes no training run draws (training seeds are small)
DESCRIBE = "Describe the image."


def load_model(model_dir: str | Path, adapter: str | Path | None = None):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir))
    if adapter:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.eval(), AutoProcessor.from_pretrained(str(model_dir))


@torch.inference_mode()
def answers(model, processor, images, prompts, max_new_tokens: int = 48,
            batch: int = 50) -> list[str]:
    """Greedy answers, batch by batch (prompts left-padded)."""
    out = []
    for start in range(0, len(images), batch):
        texts = [chat_prompt(processor, p) for p in prompts[start:start + batch]]
        inputs = processor(images=images[start:start + batch], text=texts, return_tensors="pt",
                           padding=True, padding_side="left", add_special_tokens=False)
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out += processor.tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:],
                                                skip_special_tokens=True)
    return [a.strip() for a in out]


def popularity(world: WorldConfig, seed: int = 0, count: int = 2000) -> list[str]:
    """Shapes by how often scenes hold them, most frequent first (POPE's popular negatives)."""
    counts = {s: 0 for s in SHAPES}
    for scene in scenes(seed, count, world):
        for shape in scene.shapes:
            counts[shape] += 1
    return sorted(SHAPES, key=lambda s: -counts[s])


def evaluate(model_dir: str | Path, adapter: str | Path | None = None, count: int = 200,
             seed: int = HELD_OUT_SEED, world: WorldConfig = WorldConfig()) -> dict:
    model, processor = load_model(model_dir, adapter)
    held_out = scenes(seed, count, world)
    images = [render(s, world) for s in held_out]
    captions = answers(model, processor, images, [DESCRIBE] * count)
    result = {"model": str(model_dir), "adapter": str(adapter) if adapter else None,
              "scenes": count, "chair": asdict(chair(captions, [s.shapes for s in held_out],
                                                     VOCABULARY)),
              "examples": captions[:5], "pope": {}}
    co_occurring = {**{t: [p] for t, p in PAIRS.items()}, **{p: [t] for t, p in PAIRS.items()}}
    popular = popularity(world)
    for kind in NEGATIVE_KINDS:
        rng = random.Random(seed)
        probes = [(i, obj, label) for i, s in enumerate(held_out)
                  for obj, label in pope_questions(s.shapes, SHAPES, kind, rng, 2, popular,
                                                   co_occurring)]
        replies = answers(model, processor, [images[i] for i, _, _ in probes],
                          [question(obj) for _, obj, _ in probes], max_new_tokens=8)
        result["pope"][kind] = asdict(pope_metrics([label for _, _, label in probes],
                                                   [parse_yes_no(r) for r in replies]))
    return result
