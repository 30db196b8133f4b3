"""A tiny random LLaVA-architecture VLM with its processor, built from config (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.models.clip import TINY_WORDS, build_word_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_llava(
    directory: str | Path | None = None,
    seed: int = 0,
    hidden: int = 64,
    image_size: int = 32,
    patch_size: int = 8,
):
    """(model, processor); saved in Hugging Face format when a directory is given."""
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = build_word_tokenizer(
        [*TINY_WORDS, "describe", "image", "what", "see", "?"], 512, append_eos=False
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="full",
        chat_template=CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=512,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return instantiate(LlavaForConditionalGeneration, config, processor, seed, directory)


def instantiate(model_class, config, processor, seed: int, directory):
    """A random model of config, seeded; saved with its processor when a directory is given."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if directory is not None:
        model.save_pretrained(directory)
        processor.save_pretrained(directory)
    return model, processor


SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
COLOURS = ("red", "green", "blue", "yellow")


def _caption(rng) -> str:
    count = rng.randint(1, 4)
    return " ".join(
        f"there is a {rng.choice(COLOURS)} {rng.choice(SHAPES)} ." for _ in range(count)
    )


def teach_sentences(model, processor, steps: int = 60, seed: int = 0, lr: float = 3e-3):
    """Briefly train the language model on captions of 1-4 sentences ending in '.', so that a
    random tiny VLM writes sentence-shaped answers (benchmarks and tests need several search
    steps). Not a toy world: the captions ignore the images."""
    import random

    from PIL import Image

    rng = random.Random(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)

    def scene():
        image = Image.new("RGB", (40, 40), tuple(rng.randrange(256) for _ in range(3)))
        image.paste(
            Image.new("RGB", (12, 12), tuple(rng.randrange(256) for _ in range(3))),
            (rng.randrange(28), rng.randrange(28)),
        )
        return image

    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe ."}]}],
        add_generation_prompt=True,
    )
    prompt_length = processor(images=scene(), text=prompt, return_tensors="pt")["input_ids"].shape[
        1
    ]
    eos = processor.tokenizer.eos_token
    model.train()
    for _ in range(steps):
        texts = [f"{prompt} {_caption(rng)} {eos}" for _ in range(8)]
        batch = processor(
            images=[scene() for _ in texts], text=texts, return_tensors="pt", padding=True
        )
        labels = batch["input_ids"].clone()
        labels[:, :prompt_length] = -100
        labels[batch["attention_mask"] == 0] = -100
        loss = model(**batch, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_random_adapter(
    directory,
    version: str,
    base_name: str = "tiny-llava",
    seed: int = 5,
    hidden: int = 64,
    base_seed: int = 2,
    builder=None,
):
    """A LoRA adapter for builder(seed=base_seed, hidden=hidden) (default build_tiny_llava) on
    the language model's linear layers, with random non-zero weights, in PEFT format plus the
    publisher's manifest (tests and benchmarks of hot-reload)."""
    from peft import LoraConfig, get_peft_model

    from csr.config import LANGUAGE_MODEL_LINEAR_LAYERS
    from services.runtime.adapters import write_manifest

    model, _ = (builder or build_tiny_llava)(seed=base_seed, hidden=hidden)
    torch.manual_seed(seed)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=16, init_lora_weights=False, target_modules=LANGUAGE_MODEL_LINEAR_LAYERS
        ),
    )
    peft_model.save_pretrained(str(directory))
    write_manifest(directory, version, base_name)
    return Path(directory)
