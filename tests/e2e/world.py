"""What a user brings, made small: a saved tiny LLaVA taught to write sentences, a tiny
open_clip, images on disk and a prompt set in the authors' format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.models.clip import build_tiny_open_clip
from tests.models.llava import build_tiny_llava, teach_sentences


@dataclass(frozen=True)
class SavedWorld:
    vlm: Path
    clip: Path
    images: Path
    prompt_set: Path


def save_world(root: Path, prompts: int = 4) -> SavedWorld:
    model, processor = build_tiny_llava(seed=2)
    teach_sentences(model, processor, steps=60)
    model.save_pretrained(root / "vlm")
    processor.save_pretrained(root / "vlm")
    images = root / "images"
    images.mkdir()
    rows = []
    for i in range(prompts):
        Image.new("RGB", (40, 40), (40 * i, 90, 220 - 30 * i)).save(images / f"{i}.jpg")
        rows.append({"id": str(i), "image": f"{i}.jpg", "input": "<image>\ndescribe ."})
    (root / "prompts.json").write_text(json.dumps(rows))
    return SavedWorld(
        root / "vlm", build_tiny_open_clip(root / "clip"), images, root / "prompts.json"
    )
