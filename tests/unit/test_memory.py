"""KV accounting (services.generator.memory), worked out by hand from the published configs."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaConfig, Qwen2VLConfig

from services.generator.memory import AccountingError, expansion_kv_bytes, kv_bytes_per_token

LLAVA_7B_TEXT = {
    "model_type": "llama",
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "intermediate_size": 11008,
    "vocab_size": 32064,
}
QWEN2_VL_7B_TEXT = {
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "num_hidden_layers": 28,
    "intermediate_size": 18944,
    "vocab_size": 152064,
}


def test_llava_7b_token_is_half_a_mebibyte_in_fp16():
    # 2 (K and V) x 32 layers x 32 heads x 128 wide x 2 bytes = 524,288 bytes
    config = LlavaConfig(text_config=LLAVA_7B_TEXT)
    assert kv_bytes_per_token(config, torch.float16) == 524_288
    assert kv_bytes_per_token(config, torch.float32) == 1_048_576


def test_qwen2_vl_7b_counts_its_four_kv_heads():
    # head width 3584 / 28 = 128; 2 x 28 layers x 4 KV heads x 128 x 2 bytes = 57,344 bytes
    config = Qwen2VLConfig(text_config=QWEN2_VL_7B_TEXT)
    assert kv_bytes_per_token(config, torch.bfloat16) == 57_344


def test_expansion_copies_against_shared_prompt():
    # 8 prompts of 650 tokens, 3 prefixes x 5 beams = 15 rows each, 74 tokens per row:
    # copies hold 8*650*15 + 8*15*74 = 78,000 + 8,880 tokens; shared 5,200 + 8,880
    config = LlavaConfig(text_config=LLAVA_7B_TEXT)
    lengths = [650] * 8
    copies = expansion_kv_bytes(config, torch.float16, lengths, 15, 74, shared=False)
    shared = expansion_kv_bytes(config, torch.float16, lengths, 15, 74, shared=True)
    assert copies == 524_288 * 86_880
    assert shared == 524_288 * 14_080


def test_bad_counts_and_configs_are_named():
    config = LlavaConfig(text_config=LLAVA_7B_TEXT)
    with pytest.raises(AccountingError, match="rows_per_prompt=0"):
        expansion_kv_bytes(config, torch.float16, [10], 0, 5, shared=True)
    with pytest.raises(AccountingError, match="lacks a field"):
        kv_bytes_per_token(object(), torch.float16)
