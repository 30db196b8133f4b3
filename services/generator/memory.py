"""The generator's memory accounting: bytes of KV cache an expansion needs, from the config.

Owns the arithmetic the engine, the batch sizing and the GPU check share, so the figures a
user reads (README, `bench/gpu_check.py`) and the budget the generator fills come from one
place. Everything is computed from the model's text config (layers, KV heads, head width) and
the cache dtype; nothing is allocated.

A token's KV is 2 (keys and values) x layers x KV heads x head width x bytes per element. An
expansion holds, per prompt, the prompt's tokens, and per beam row that prompt's prefix plus
the new tokens. With per-row copies (`shared=False`) every row also holds its own copy of the
prompt; with a shared prompt cache (`shared=True`) the prompt is held once per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class AccountingError(ValueError):
    """A model config without the fields the KV arithmetic needs."""


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token occupies across all layers."""
    text = _text_config(config)
    try:
        layers = int(text.num_hidden_layers)
        heads = int(text.num_attention_heads)
        kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // heads)
    except (AttributeError, TypeError) as e:
        raise AccountingError(
            f"the model config {type(text).__name__} lacks a field the KV accounting needs "
            f"({e}); it reads num_hidden_layers, num_attention_heads, num_key_value_heads, "
            "head_dim or hidden_size"
        ) from e
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * layers * kv_heads * head_dim * itemsize


def expansion_kv_bytes(
    config: Any,
    dtype: torch.dtype,
    prompt_lengths: Sequence[int],
    rows_per_prompt: int,
    generated_tokens: int,
    shared: bool,
) -> int:
    """KV bytes of one expansion: `rows_per_prompt` beam rows for each prompt (kept prefixes
    times beams), each holding `generated_tokens` of its own (prefix plus new tokens), with
    the prompt's KV held once per prompt (`shared`) or once per row (copies)."""
    if rows_per_prompt < 1 or generated_tokens < 0 or any(n < 1 for n in prompt_lengths):
        raise AccountingError(
            f"rows_per_prompt={rows_per_prompt}, generated_tokens={generated_tokens} and "
            f"prompt lengths {list(prompt_lengths)} must be positive (tokens >= 0)"
        )
    per_token = kv_bytes_per_token(config, dtype)
    prompt_tokens = sum(prompt_lengths)
    held_prompt = prompt_tokens if shared else prompt_tokens * rows_per_prompt
    own = len(prompt_lengths) * rows_per_prompt * generated_tokens
    return per_token * (held_prompt + own)
