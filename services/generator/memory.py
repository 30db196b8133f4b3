"""The generator's memory accounting: bytes of KV cache an expansion needs, from the config.

Owns the arithmetic the engine, the batch sizing and the GPU check share, so the figures a
user reads (README, `bench/gpu_check.py`) and the budget the generator fills come from one
place. Everything is computed from the model's text config (layers, KV heads, head width) and
the cache dtype; nothing is allocated. (`kv_budget_bytes` alone asks the device what is free.)

A token's KV is 2 (keys and values) x layers x KV heads x head width x bytes per element.
- `expansion_kv_bytes`: an expansion where every beam row holds its prompt's prefix plus the
  new tokens, and either its own copy of the prompt (`shared=False`, the plain per-row cache)
  or reads the prompt held once (`shared=True`).
- `engine_expansion_kv_bytes`: what the engine holds (services.generator.kv_cache): the
  batch's prompts as one block (each padded to the longest), each prefix's tokens once
  (padded to the longest prefix), each beam row's new tokens, and one more layer's row buffer
  that reordering swaps with.
- `search_kv_bytes`: the most an engine's search of a batch holds at once, at the search
  settings' limits; what the generator fills its batches by, up to `kv_budget_bytes`
  (CSR_GENERATOR_KV_BUDGET_GB, by default a share of the GPU memory free at start).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from csr.config import SearchConfig


class AccountingError(ValueError):
    """A model config without the fields the KV arithmetic needs."""


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def kv_bytes_per_token(config: Any, dtype: torch.dtype) -> int:
    """Bytes of keys and values one token occupies across all layers."""
    layers, kv_heads, head_dim = _kv_shape(config)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * layers * kv_heads * head_dim * itemsize


def _kv_shape(config: Any) -> tuple[int, int, int]:
    """(layers, KV heads, head width) of the model's language part."""
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
    return layers, kv_heads, head_dim


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


def engine_expansion_kv_bytes(
    config: Any,
    dtype: torch.dtype,
    prompt_lengths: Sequence[int],
    prefixes_per_prompt: int,
    beams: int,
    prefix_tokens: int,
    new_tokens: int,
) -> int:
    """KV bytes the engine holds during one expansion of `prefixes_per_prompt` prefixes of
    each prompt (the longest has `prefix_tokens` tokens), each grown by `beams` rows of up to
    `new_tokens` tokens: prompt block + prefix block + row buffers + one layer's swap buffer."""
    if prefixes_per_prompt < 1 or beams < 1 or prefix_tokens < 0 or new_tokens < 1:
        raise AccountingError(
            f"prefixes_per_prompt={prefixes_per_prompt}, beams={beams} and "
            f"new_tokens={new_tokens} must be positive, prefix_tokens={prefix_tokens} >= 0"
        )
    if not prompt_lengths or any(n < 1 for n in prompt_lengths):
        raise AccountingError(f"prompt lengths {list(prompt_lengths)} must be positive")
    per_token = kv_bytes_per_token(config, dtype)
    layers = _kv_shape(config)[0]
    prefixes = len(prompt_lengths) * prefixes_per_prompt
    rows_tokens = prefixes * beams * new_tokens
    held = len(prompt_lengths) * max(prompt_lengths) + prefixes * prefix_tokens + rows_tokens
    swap = -(-per_token * rows_tokens // (2 * layers))  # one layer's keys (or values)
    return per_token * held + swap


def search_kv_bytes(
    config: Any, dtype: torch.dtype, prompt_lengths: Sequence[int], search: SearchConfig
) -> int:
    """The most KV bytes the engine holds while searching these prompts together: every step
    keeps keep_top + keep_bottom prefixes per prompt, at most max_response_tokens long, and
    grows each by num_beams rows of max_new_tokens."""
    return engine_expansion_kv_bytes(
        config,
        dtype,
        prompt_lengths,
        max(1, search.keep_top + search.keep_bottom),
        search.num_beams,
        search.max_response_tokens,
        search.max_new_tokens,
    )


CPU_KV_BUDGET_GB = 4.0  # the default budget on the CPU
CUDA_FREE_SHARE = 0.5  # the default budget on CUDA: this share of the memory free at start


def kv_budget_bytes(budget_gb: float | None, device: torch.device) -> int:
    """The KV bytes a generator's batch may hold: budget_gb GiB if given, else a share of the
    GPU memory free now (call it once the model is loaded) on CUDA, a fixed amount on the CPU."""
    if budget_gb is not None:
        return int(budget_gb * 2**30)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FREE_SHARE)
    return int(CPU_KV_BUDGET_GB * 2**30)
