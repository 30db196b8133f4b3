"""The real models' architectures from their published configs, with random weights.

Values are those of the checkpoints' config.json files (llava-hf/llava-1.5-7b-hf,
Qwen/Qwen2-VL-7B-Instruct) and of open_clip's ViT-L-14-336.json, so a model built here at
full depth has the checkpoint's every shape; the tests build it at true width and reduced
depth, `bench/gpu_check.py` at full depth on a GPU. `tiny=True` keeps the structure
(vocabulary padding, 576 image tokens, GQA, M-RoPE sections, the real tokenizers' kinds)
with small widths, for a smoke run on a CPU. Tokenizers and processors: real_tokenizers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.models import real_tokenizers as kinds

# llava-hf/llava-1.5-7b-hf config.json; the text_config keys it leaves out are LlamaConfig's
# defaults (Llama-2-7B: 4096 wide, 11008 MLP, 32 layers, 32 heads), written out here.
LLAVA_15_7B = {
    "text": {
        "vocab_size": 32064,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    },
    "vision": {  # CLIP ViT-L/14-336
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "image_token_index": 32000,
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",  # mlp2x_gelu: 1024 -> 4096 -> GELU -> 4096
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "tie_word_embeddings": False,
}

# Qwen/Qwen2-VL-7B-Instruct config.json
QWEN2_VL_7B = {
    "text": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": [16, 24, 24],
        },
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
    },
    "vision": {
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 3584,  # the merger's output: the language model's width
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_chans": 3,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "hidden_act": "quick_gelu",
    },
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "tie_word_embeddings": False,
}

# open_clip's model_configs/ViT-L-14-336.json; OpenAI trained it with QuickGELU.
CLIP_VIT_L14_336 = {
    "embed_dim": 768,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 336, "layers": 24, "width": 1024, "patch_size": 14},
    "text_cfg": {
        "context_length": 77,
        "vocab_size": 49408,
        "width": 768,
        "heads": 12,
        "layers": 12,
    },
}

_TINY_LLAVA = {
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
}
_TINY_QWEN = {
    "text": {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4},
    "vision": {"embed_dim": 32, "hidden_size": 64, "num_heads": 2},
    "mrope_section": [2, 3, 3],
    "num_key_value_heads": 2,
}


def _padded(columns: int) -> int:
    """Logit columns for a tokenizer of `columns` tokens, padded to a multiple of 64."""
    return -(-columns // 64) * 64


def llava_config(text_layers: int = 32, vision_layers: int = 24, tokenizer=None):
    """LlavaConfig of LLaVA-1.5-7B at the given depths (vision_feature_layer -2 needs 2).
    With a tokenizer (tiny models): small widths, and its vocabulary and ids."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    spec = LLAVA_15_7B
    text = {**spec["text"], "num_hidden_layers": text_layers}
    vision = {**spec["vision"], "num_hidden_layers": vision_layers}
    image, pad = spec["image_token_index"], spec["pad_token_id"]
    if tokenizer is not None:
        text.update(_TINY_LLAVA["text"], num_key_value_heads=4, vocab_size=_padded(len(tokenizer)))
        vision.update(_TINY_LLAVA["vision"])
        image, pad = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.pad_token_id
    return LlavaConfig(
        text_config=LlamaConfig(**text, pad_token_id=pad, bos_token_id=1, eos_token_id=2),
        vision_config=CLIPVisionConfig(**vision),
        image_token_index=image,
        projector_hidden_act=spec["projector_hidden_act"],
        vision_feature_layer=spec["vision_feature_layer"],
        vision_feature_select_strategy=spec["vision_feature_select_strategy"],
        tie_word_embeddings=False,
    )


_QWEN_IDS = {
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
}


def qwen2_vl_config(text_layers: int = 28, vision_layers: int = 32, tokenizer=None):
    """Qwen2VLConfig of Qwen2-VL-7B-Instruct at the given depths. With a tokenizer (tiny
    models): small widths, 2 KV heads, and its vocabulary and ids."""
    from transformers import Qwen2VLConfig

    spec = QWEN2_VL_7B
    text = {**spec["text"], "num_hidden_layers": text_layers}
    vision = {**spec["vision"], "depth": vision_layers}
    ids = {k: v for k, v in spec.items() if k.endswith("_token_id")}
    if tokenizer is not None:
        tiny = _TINY_QWEN
        text.update(tiny["text"], num_key_value_heads=tiny["num_key_value_heads"])
        rope = {**text["rope_parameters"], "mrope_section": tiny["mrope_section"]}
        text["rope_parameters"] = rope
        text.update(
            vocab_size=_padded(len(tokenizer)),
            bos_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        vision.update(tiny["vision"])
        ids = {k: tokenizer.convert_tokens_to_ids(t) for k, t in _QWEN_IDS.items()}
    return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


_BLOCK = 1_000_003  # a prime: tiled blocks never line up with a weight's rows


def randomize(model, seed: int = 0, std: float = 0.02):
    """Random weights, fast: every weight is a seeded block of normals (std `std`) tiled
    from an offset of its own (drawing 7B, or even 1.4B, values one by one takes minutes
    on a CPU); normalisation layers get weight 1, biases 0, as transformers starts them."""
    device = next(model.parameters()).device
    block = torch.randn(_BLOCK, generator=torch.Generator().manual_seed(seed)) * std
    block = block.to(device)
    norms = {
        id(p)
        for m in model.modules()
        if "Norm" in type(m).__name__
        for p in m.parameters(recurse=False)
    }
    with torch.no_grad():
        for index, (name, param) in enumerate(model.named_parameters()):
            if id(param) in norms or name.endswith("bias"):
                param.fill_(1.0 if id(param) in norms and name.endswith("weight") else 0.0)
            else:
                _tile(param.view(-1), block, (index * 7919) % _BLOCK)
    return model


def _tile(flat: torch.Tensor, block: torch.Tensor, start: int) -> None:
    done = 0
    while done < flat.numel():
        take = min(block.numel() - start, flat.numel() - done)
        flat[done : done + take].copy_(block[start : start + take])
        done, start = done + take, 0


def _build(model_class, config, dtype: torch.dtype, device: str, seed: int):
    from transformers.initialization import no_init_weights

    with torch.device(device), no_init_weights():
        model = model_class._from_config(config, dtype=dtype)
    return randomize(model, seed).eval()


def build_llava(
    text_layers: int = 1,
    vision_layers: int = 2,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    tiny: bool = False,
    seed: int = 0,
):
    """(model, processor): LLaVA-1.5-7B's architecture, random weights, llava-hf's processor
    (SentencePiece Llama tokenizer of 32002 tokens, or the learned part alone when tiny)."""
    from transformers import LlavaForConditionalGeneration

    tokenizer = kinds.llama_tokenizer(None if tiny else kinds.LLAMA_BASE)
    config = llava_config(text_layers, vision_layers, tokenizer if tiny else None)
    processor = kinds.llava_processor(tokenizer)
    return _build(LlavaForConditionalGeneration, config, dtype, device, seed), processor


def build_qwen2_vl(
    text_layers: int = 1,
    vision_layers: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    tiny: bool = False,
    seed: int = 0,
    min_pixels: int = 3136,
    max_pixels: int = 12845056,
):
    """(model, processor): Qwen2-VL-7B's architecture, random weights, its processor with
    the given pixel bounds (byte-level BPE of 151657 tokens, or the learned part when tiny)."""
    from transformers import Qwen2VLForConditionalGeneration

    tokenizer = kinds.qwen2_tokenizer(None if tiny else kinds.QWEN2_BASE)
    config = qwen2_vl_config(text_layers, vision_layers, tokenizer if tiny else None)
    processor = kinds.qwen2_vl_processor(tokenizer, min_pixels, max_pixels)
    return _build(Qwen2VLForConditionalGeneration, config, dtype, device, seed), processor


def clip_config(vision_layers: int = 24, text_layers: int = 12, tiny: bool = False) -> dict:
    """open_clip model config of ViT-L-14-336 at the given depths."""
    cfg = json.loads(json.dumps(CLIP_VIT_L14_336))
    cfg["vision_cfg"]["layers"], cfg["text_cfg"]["layers"] = vision_layers, text_layers
    if tiny:
        cfg["embed_dim"] = 32
        cfg["vision_cfg"].update(width=64, head_width=32)
        cfg["text_cfg"].update(width=64, heads=2)
    return cfg


def build_clip_dir(directory: str | Path, vision_layers: int = 2, text_layers: int = 1, **kw):
    """An open_clip local-dir model of ViT-L-14-336's shape (random), as the reward loads it."""
    from tests.models.clip import build_tiny_open_clip

    return build_tiny_open_clip(directory, model_cfg=clip_config(vision_layers, text_layers, **kw))


def photo(width: int = 640, height: int = 480, seed: int = 0):
    """A photo-like RGB image (colour gradients and noise, seeded), COCO's usual 640x480."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = rng.uniform(40, 200, size=3)
    channels = [
        base[0] + 50 * x / width,
        base[1] + 50 * y / height,
        base[2] + 50 * (x * y) / (width * height),
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype("uint8"), "RGB")
