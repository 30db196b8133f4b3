"""Tiny random CLIPs of both backends, built from config: for tests and benchmarks, offline.

They load through exactly the same code as real models (a local directory), so a test of
the service with them tests the real loading path too.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_WORDS = [
    "there",
    "is",
    "a",
    "an",
    "the",
    "circle",
    "square",
    "triangle",
    "cross",
    "diamond",
    "ring",
    "red",
    "green",
    "blue",
    "yellow",
    "small",
    "large",
    "photo",
    "of",
    "cat",
    "dog",
    "sky",
    ".",
    ",",
]

OPEN_CLIP_TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def build_tiny_open_clip(
    directory: str | Path, seed: int = 0, model_cfg: dict | None = None
) -> Path:
    """Write an open_clip local-dir model (open_clip_config.json + safetensors weights)."""
    import open_clip
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = model_cfg or OPEN_CLIP_TINY_CFG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(directory / "open_clip_model.safetensors"),
    )
    (directory / "open_clip_config.json").write_text(
        json.dumps(
            {
                "model_cfg": cfg,
                "preprocess_cfg": {
                    "mean": [0.48145466, 0.4578275, 0.40821073],
                    "std": [0.26862954, 0.26130258, 0.27577711],
                },
            }
        )
    )
    return directory


def build_word_tokenizer(words=TINY_WORDS, model_max_length: int = 77, append_eos: bool = True):
    """A word-level fast tokenizer with <s>/</s>/<pad>, trained on the fly (no download).

    append_eos: CLIP text towers pool at </s>, so they need it; a chat LM must not get one
    after its prompt (it would read as the end of the answer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    tok.train_from_iterator([" ".join(words)], trainers.WordLevelTrainer(special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>" if append_eos else "<s> $A", special_tokens=[("<s>", 2), ("</s>", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


def build_tiny_hf_clip(
    directory: str | Path, seed: int = 0, image_size: int = 32, context_length: int = 16
) -> Path:
    """Write a Hugging Face CLIP directory: config, weights, tokenizer, image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = Path(directory)
    tokenizer = build_word_tokenizer(model_max_length=context_length)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": context_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    ).save_pretrained(directory)
    return directory
