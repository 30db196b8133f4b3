"""KV accounting (services.generator.memory), worked out by hand from the published configs."""

from __future__ import annotations

import pytest
import torch
from transformers import LlavaConfig, Qwen2VLConfig

from csr.config import SearchConfig
from services.generator.memory import (
    AccountingError,
    engine_expansion_kv_bytes,
    expansion_kv_bytes,
    kv_budget_bytes,
    kv_bytes_per_token,
    search_kv_bytes,
)

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


def test_the_engines_expansion_holds_prompts_and_prefixes_once():
    # LLaVA-1.5-7B, fp16: 524,288 bytes a token, 32 layers. Prompts of 650 and 640 tokens
    # (the block pads to 650), 3 prefixes each padded to 40 tokens, 5 beams x 74 new tokens:
    # 2 * 650 + 6 * 40 + 30 * 74 = 1,300 + 240 + 2,220 = 3,760 tokens, plus one layer's keys
    # of the rows (2,220 tokens x 524,288 / 64 = 18,186,240 bytes) to swap with on reorder
    config = LlavaConfig(text_config=LLAVA_7B_TEXT)
    held = engine_expansion_kv_bytes(config, torch.float16, [650, 640], 3, 5, 40, 74)
    assert held == 524_288 * 3_760 + 18_186_240


def test_a_search_is_sized_at_the_search_settings_limits():
    # the paper's search: 1 + 2 prefixes kept, 5 beams, 74 new tokens, responses up to 256
    # tokens. Qwen2-VL-7B bf16 (57,344 bytes a token, 28 layers), prompts of 1,000 and 800:
    # 2 * 1,000 + 6 * 256 + 30 * 74 = 2,000 + 1,536 + 2,220 = 5,756 tokens, plus
    # 2,220 x 57,344 / 56 = 2,273,280 bytes of swap buffer
    config = Qwen2VLConfig(text_config=QWEN2_VL_7B_TEXT)
    assert search_kv_bytes(config, torch.bfloat16, [1000, 800], SearchConfig()) == (
        57_344 * 5_756 + 2_273_280
    )


def test_the_budget_is_the_setting_or_a_fixed_amount_on_the_cpu():
    assert kv_budget_bytes(1.5, torch.device("cpu")) == 3 * 2**29
    assert kv_budget_bytes(None, torch.device("cpu")) == 4 * 2**30
