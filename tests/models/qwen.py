"""A tiny random Qwen2-VL-architecture VLM with its processor, built from config (no download).

The second architecture the generator supports: its vision tokens get 3-D (M-RoPE) positions,
so the text after the image continues from a position below the prompt's length, which the
engine reads from the model after encoding the prompt (`rope_deltas`).
"""

from __future__ import annotations

from pathlib import Path

from tests.models.clip import TINY_WORDS, build_word_tokenizer
from tests.models.llava import instantiate

VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_tiny_qwen2_vl(
    directory: str | Path | None = None,
    seed: int = 0,
    hidden: int = 64,
    image_size: int = 32,
    patch_size: int = 4,
    kv_heads: int = 4,
):
    """(model, processor); saved in Hugging Face format when a directory is given. An
    image_size x image_size image gives (image_size / patch_size / 2)^2 image tokens. Four
    attention heads share kv_heads key/value heads (fewer: grouped-query attention)."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    tokenizer = build_word_tokenizer(
        [*TINY_WORDS, "describe", "image", "what", "see", "?"], 512, append_eos=False
    )
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=pixels,
        max_pixels=pixels,
    )
    video_processor = Qwen2VLVideoProcessor(
        patch_size=patch_size, merge_size=2, temporal_patch_size=2
    )
    processor = Qwen2VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in VISION_TOKENS}
    head_dim = hidden // 4
    config = Qwen2VLConfig(
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": kv_heads,
            "max_position_embeddings": 512,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": _mrope_section(head_dim),
            },
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return instantiate(Qwen2VLForConditionalGeneration, config, processor, seed, directory)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim / 2 rotary frequencies over (temporal, height, width), as Qwen2-VL's
    [16, 24, 24] splits 64."""
    half = head_dim // 2
    temporal = half // 4
    height = (half - temporal) // 2
    return [temporal, height, half - temporal - height]
