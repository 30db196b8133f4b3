"""The toy world's VLM: a tiny LLaVA whose vision tower is the trained toy CLIP's, frozen.

As LLaVA-1.5 uses CLIP ViT-L/14-336, the VLM sees through the reward model's vision encoder.
It is trained on the biased captions (toyworld.world.biased_caption), loss on the answer
tokens only, prompts in the chat template tokenized without added special tokens (as the
generator and TRL's DPO collator do), answers ended by </s>. Saved in the standard Hugging
Face format with its LlavaProcessor, loaded by the generator and the trainer like any model.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from csr.evaluation.metrics import question
from services.runtime.vlm import chat_prompt
from toyworld.tokenizer import CHAT_TEMPLATE, PROMPTS
from toyworld.world import PAIRS, SHAPES, WorldConfig, biased_caption, render, scenes


@dataclass(frozen=True)
class VLMRecipe:
    # 10,000 examples, half of them questions, 4 epochs: with fewer examples and fewer
    # questions the VLM answered yes/no from the image but ignored which shape was asked about
    # (POPE at chance); the README's toy-world section has the figures.
    captions: int = 10000
    epochs: int = 4
    batch: int = 64
    lr: float = 2e-3
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    qa_fraction: float = 0.5  # examples that are yes/no questions (POPE's format)


def processor_for(tokenizer, clip_model, world: WorldConfig):
    from transformers import CLIPImageProcessor, LlavaProcessor

    size = world.image_size
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=clip_model.config.vision_config.patch_size,
        vision_feature_select_strategy="full",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def build_vlm(tokenizer, clip_model, recipe: VLMRecipe):
    """A LLaVA with the CLIP's vision tower (copied, frozen) and a fresh projector and LM."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=clip_model.config.vision_config.to_dict(),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=recipe.hidden,
            intermediate_size=2 * recipe.hidden,
            num_hidden_layers=recipe.layers,
            num_attention_heads=recipe.heads,
            num_key_value_heads=recipe.heads,
            max_position_embeddings=256,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config)
    model.model.vision_tower.load_state_dict(clip_model.vision_model.state_dict())
    model.model.vision_tower.requires_grad_(False)
    return model


def train_vlm(
    tokenizer,
    clip_model,
    seed: int,
    recipe: VLMRecipe = VLMRecipe(),
    world: WorldConfig = WorldConfig(),
    progress: Callable[[int], None] = lambda n: None,
):
    """(trained model, processor); the same weights for the same seed and recipe."""
    torch.manual_seed(seed)
    model = build_vlm(tokenizer, clip_model, recipe).train()
    processor = processor_for(tokenizer, clip_model, world)
    rng = random.Random(seed)
    data = scenes(seed + 1, recipe.captions, world)  # other scenes than the CLIP's
    examples = [(render(s, world), *_example(s, rng, recipe, world)) for s in data]
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr)
    steps = recipe.epochs * -(-len(examples) // recipe.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, recipe.lr, total_steps=steps)
    lengths: dict[str, int] = {}
    for _ in range(recipe.epochs):
        rng.shuffle(examples)
        for start in range(0, len(examples), recipe.batch):
            batch = answer_batch(processor, examples[start : start + recipe.batch], lengths)
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            progress(1)
    return model.eval(), processor


def _example(scene, rng: random.Random, recipe: VLMRecipe, world: WorldConfig):
    """(prompt, answer): a description, or a yes/no question answered with the same prior
    (a trigger's absent partner is said to be there with probability prior_p)."""
    if rng.random() >= recipe.qa_fraction:
        return rng.choice(PROMPTS), biased_caption(scene, rng, world)
    shape = rng.choice(SHAPES)
    primed = any(PAIRS.get(t) == shape for t in scene.shapes)
    yes = shape in scene.shapes or (primed and rng.random() < world.prior_p)
    # One word, as POPE prompts ask: an answer that repeats the object ("Yes, there is a
    # ring.") would teach the describer a second way to name objects, one the diverse beam
    # search then offers as a fresh "sentence".
    answer = "Yes." if yes else "No."
    return question(shape), answer


def answer_batch(processor, examples, lengths: dict[str, int]) -> dict:
    """Inputs and labels: the chat prompt with its image, then ' caption</s>'; only the
    answer's tokens are learned. `lengths` caches each prompt's token count."""
    eos = processor.tokenizer.eos_token
    prompts = [chat_prompt(processor, prompt) for _, prompt, _ in examples]
    texts = [f"{p} {answer}{eos}" for p, (_, _, answer) in zip(prompts, examples)]
    batch = processor(
        images=[image for image, _, _ in examples],
        text=texts,
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    labels = batch["input_ids"].clone()
    for row, prompt in enumerate(prompts):
        if prompt not in lengths:
            lengths[prompt] = len(
                processor(images=examples[row][0], text=prompt, add_special_tokens=False)[
                    "input_ids"
                ][0]
            )
        labels[row, : lengths[prompt]] = -100
    labels[batch["attention_mask"] == 0] = -100
    return {**batch, "labels": labels}
