"""The toy world's CLIP: a tiny Hugging Face CLIPModel trained contrastively on correct pairs.

Two losses, so that it learns both which sentence fits and whether an object is there:
InfoNCE between each image and one of its object sentences, and a sigmoid (SigLIP-style) loss
of every image against all six object sentences, positive where the object is present. The
model is saved in the standard Hugging Face format (CLIPModel, tokenizer, CLIPImageProcessor),
which the reward service loads with `CSR_REWARD_BACKEND=hf`, and its vision tower becomes the
VLM's.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from services.reward.models import _pooled
from toyworld.world import SHAPES, WorldConfig, render, scenes, sentence

MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's normalisation, as CLIPImageProcessor
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipRecipe:
    images: int = 16000
    steps: int = 1500
    batch: int = 128
    lr: float = 3e-3
    width: int = 96
    layers: int = 2
    heads: int = 4
    patch: int = 8
    junk_per_step: int = 16  # non-sentences per step that must match no image (0: none)


def pixels(images) -> torch.Tensor:
    """(n, 3, H, W) normalised as CLIPImageProcessor does for images already at its size."""
    array = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    array = (array - np.array(MEAN, dtype=np.float32)) / np.array(STD, dtype=np.float32)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def clip_config(vocab: int, recipe: ClipRecipe, world: WorldConfig, context: int = 32):
    from transformers import CLIPConfig

    common = {
        "hidden_size": recipe.width,
        "intermediate_size": 2 * recipe.width,
        "num_hidden_layers": recipe.layers,
        "num_attention_heads": recipe.heads,
    }
    return CLIPConfig(
        text_config={
            **common,
            "vocab_size": vocab,
            "max_position_embeddings": context,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "eos_token_id": 3,
        },
        vision_config={**common, "image_size": world.image_size, "patch_size": recipe.patch},
        projection_dim=recipe.width,
    )


def train_clip(
    tokenizer,
    seed: int,
    recipe: ClipRecipe = ClipRecipe(),
    world: WorldConfig = WorldConfig(),
    progress: Callable[[int], None] = lambda n: None,
):
    """A trained CLIPModel; the same weights for the same seed and recipe."""
    from transformers import CLIPModel

    torch.manual_seed(seed)
    model = CLIPModel(clip_config(len(tokenizer), recipe, world)).train()
    data = scenes(seed, recipe.images, world)
    images = pixels([render(s, world) for s in data])
    present = torch.tensor(
        [[shape in s.shapes for shape in SHAPES] for s in data], dtype=torch.float32
    )
    shape_tokens = tokenizer([sentence(s) for s in SHAPES], padding=True, return_tensors="pt")
    bias = torch.nn.Parameter(torch.tensor(-5.0))  # SigLIP's learnable bias
    optimizer = torch.optim.AdamW([*model.parameters(), bias], lr=recipe.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=recipe.steps)
    rng = random.Random(seed)
    for _step in range(recipe.steps):
        rows = rng.sample(range(len(data)), recipe.batch)
        junk = (
            tokenizer(
                junk_texts(tokenizer, rng, recipe.junk_per_step), padding=True, return_tensors="pt"
            )
            if recipe.junk_per_step
            else None
        )
        loss = _loss(
            model,
            images[rows],
            present[rows],
            [data[r] for r in rows],
            shape_tokens,
            tokenizer,
            bias,
            rng,
            junk,
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        progress(1)
    return model.eval()


FIXED_JUNK = ("", "Yes.", "No.", "There is a.", "There is a", "There is", "Describe the image.")


def junk_texts(tokenizer, rng: random.Random, count: int) -> list[str]:
    """Texts that claim no object: fragments, one-word answers, and the sentence frame with
    random tokens for an object. A real CLIP has seen such text next to unrelated images; the
    toy one must learn it too, or a model's garbled candidate would out-score a sentence about
    an absent object."""
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in specials]
    out = list(FIXED_JUNK[:count])
    while len(out) < count:
        filler = tokenizer.decode(rng.sample(ids, rng.randint(1, 2)))
        text = f"There is a{rng.choice(['', ' '])}{filler}{rng.choice(['.', ''])}"
        if not any(shape in text for shape in SHAPES):
            out.append(text)
    return out


def _loss(model, batch, present, batch_scenes, shape_tokens, tokenizer, bias, rng, junk=None):
    flip = torch.rand(len(batch)) < 0.5  # horizontal flips keep every object's identity
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    own = [sentence(rng.choice(sorted(s.shapes))) for s in batch_scenes]
    texts = tokenizer(own, padding=True, return_tensors="pt")
    image = torch.nn.functional.normalize(image_features(model, batch), dim=-1)
    text = torch.nn.functional.normalize(_text_features(model, texts), dim=-1)
    scale = model.logit_scale.exp()
    logits = scale * image @ text.T
    same = torch.tensor([[a == b for b in own] for a in own], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)  # a repeated sentence is a positive too
    info_nce = (
        torch.nn.functional.cross_entropy(logits, targets)
        + torch.nn.functional.cross_entropy(logits.T, targets.T)
    ) / 2
    shapes = torch.nn.functional.normalize(_text_features(model, shape_tokens), dim=-1)
    sig = torch.nn.functional.binary_cross_entropy_with_logits(
        scale * image @ shapes.T + bias, present
    )
    if junk is None:
        return info_nce + sig
    nothing = torch.nn.functional.normalize(_text_features(model, junk), dim=-1)
    logits = scale * image @ nothing.T + bias
    return (
        info_nce
        + sig
        + torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
    )


def image_features(model, batch: torch.Tensor) -> torch.Tensor:
    return _pooled(model.get_image_features(pixel_values=batch))


def _text_features(model, tokens) -> torch.Tensor:
    return _pooled(
        model.get_text_features(
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
        )
    )
