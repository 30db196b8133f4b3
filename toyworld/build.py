"""`csr toyworld build`: train the toy world's CLIP and VLM once, save them, reuse them.

Owns the model directory: `clip/` (CLIPModel, tokenizer, image processor) and `vlm/` (LLaVA
and its processor), in the standard Hugging Face formats the reward service and the generator
load, plus `toyworld.json` (seed, recipe, sha256 of the weights). A directory whose record
matches the seed and recipe is reused as it is; otherwise both models are trained again, from
the seed, to the same bits on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from services.runtime.adapters import sha256_file
from toyworld.clip import ClipRecipe, train_clip
from toyworld.tokenizer import clip_tokenizer, vlm_tokenizer
from toyworld.vlm import VLMRecipe, train_vlm
from toyworld.world import WorldConfig

logger = logging.getLogger(__name__)
RECORD = "toyworld.json"


@dataclass(frozen=True)
class ToyWorldRecipe:
    world: WorldConfig = field(default_factory=WorldConfig)
    clip: ClipRecipe = field(default_factory=ClipRecipe)
    vlm: VLMRecipe = field(default_factory=VLMRecipe)


@dataclass(frozen=True)
class ToyWorldModels:
    clip: Path
    vlm: Path
    record: dict


def _wanted(seed: int, recipe: ToyWorldRecipe) -> dict:
    return {"seed": seed, "recipe": json.loads(json.dumps(asdict(recipe)))}


def load_cached(directory: Path, seed: int, recipe: ToyWorldRecipe) -> ToyWorldModels | None:
    try:
        record = json.loads((directory / RECORD).read_text())
    except (OSError, ValueError):
        return None
    wanted = _wanted(seed, recipe)
    if {k: record.get(k) for k in wanted} != wanted:
        return None
    for part in ("clip", "vlm"):
        if sha256_file(directory / part / "model.safetensors") != record["sha256"][part]:
            return None  # changed or partly written: build again
    return ToyWorldModels(directory / "clip", directory / "vlm", record)


def build_toyworld(
    directory: str | Path,
    seed: int = 0,
    recipe: ToyWorldRecipe = ToyWorldRecipe(),
    progress: bool = True,
    force: bool = False,
) -> ToyWorldModels:
    """The toy world's models in `directory`, trained now unless a matching build is there."""
    directory = Path(directory)
    cached = None if force else load_cached(directory, seed, recipe)
    if cached is not None:
        logger.info("toy world models in %s are current (seed %d)", directory, seed)
        return cached
    # the bars draw only on a terminal: a log line says what the next minutes are spent on
    logger.info("building the toy CLIP and VLM of seed %d in %s (2 to 3 minutes)", seed, directory)
    with _bars(progress, recipe) as (clip_bar, vlm_bar):
        clip = train_clip(clip_tokenizer(), seed, recipe.clip, recipe.world, clip_bar)
        vlm, processor = train_vlm(vlm_tokenizer(), clip, seed, recipe.vlm, recipe.world, vlm_bar)
    shutil.rmtree(directory / "clip", ignore_errors=True)
    shutil.rmtree(directory / "vlm", ignore_errors=True)
    _save_clip(clip, directory / "clip", recipe.world)
    vlm.save_pretrained(directory / "vlm")
    processor.save_pretrained(directory / "vlm")
    record = {
        **_wanted(seed, recipe),
        "sha256": {
            part: sha256_file(directory / part / "model.safetensors") for part in ("clip", "vlm")
        },
    }
    (directory / RECORD).write_text(json.dumps(record, indent=2))
    return ToyWorldModels(directory / "clip", directory / "vlm", record)


def _save_clip(model, directory: Path, world: WorldConfig) -> None:
    from transformers import CLIPImageProcessor

    model.save_pretrained(directory)
    clip_tokenizer().save_pretrained(directory)
    size = world.image_size
    CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    ).save_pretrained(directory)


@contextlib.contextmanager
def _bars(enabled: bool, recipe: ToyWorldRecipe):
    """Two rich progress bars (CLIP steps, VLM steps); yields their advance functions."""
    if not enabled:
        yield (lambda n: None), (lambda n: None)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    vlm_steps = recipe.vlm.epochs * -(-recipe.vlm.captions // recipe.vlm.batch)
    with Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bars:
        clip = bars.add_task("toy CLIP", total=recipe.clip.steps)
        vlm = bars.add_task("toy VLM ", total=vlm_steps)
        yield (lambda n: bars.advance(clip, n)), (lambda n: bars.advance(vlm, n))
