"""The engine's shared-prefix KV cache against the model's own attention over the whole
sequence, for both architectures (LLaVA: 1-D positions; Qwen2-VL: M-RoPE, here with two KV
heads for four query heads) and both of transformers' attention implementations.

Two prompts of different lengths are encoded together (the shorter one left-padded), their
prefixes have different lengths (one has none), and the beam rows branch and swap parents.
At every step each row's next-token log-probs must equal those of one forward of the row's
whole sequence (prompt, prefix and new tokens) through the model, with no cache at all."""

from __future__ import annotations

import pytest
import torch

from csr.config import SearchConfig
from services.generator.engine import VLMEngine
from services.generator.kv_cache import shared_prefix_attention_on
from tests.integration.test_generator_engine import FromScratch, images
from tests.models.llava import build_tiny_llava
from tests.models.qwen import build_tiny_qwen2_vl

SEARCH = SearchConfig(num_beams=3, num_beam_groups=1, max_new_tokens=4)
# (parents, word indices) of three steps: the first branches each prefix into beams, the
# others reorder rows (rows die, rows are duplicated, rows swap places)
STEPS = (
    ([0, 0, 1, 2, 2, 2], [0, 2, 1, 0, 3, 4]),
    ([5, 0, 0, 3, 2], [5, 0, 1, 2, 3]),
    ([4, 3, 1, 0, 2, 2], [0, 0, 1, 2, 4, 5]),
)
PROMPTS = {"a": ("describe .", "red"), "b": ("what is there in the image ?", "blue")}


@pytest.fixture(
    scope="module",
    params=[("llava", "eager"), ("llava", "sdpa"), ("qwen2-vl", "eager"), ("qwen2-vl", "sdpa")],
)
def model(request):
    arch, implementation = request.param
    if arch == "llava":
        model, processor = build_tiny_llava(seed=4)
    else:
        model, processor = build_tiny_qwen2_vl(seed=4, kv_heads=2)
    model.set_attn_implementation(implementation)
    return model, processor


def test_each_row_attends_as_over_its_whole_sequence(model):
    model, processor = model
    assert _text(model)._attn_implementation in ("eager", "sdpa")
    engine = VLMEngine(model, processor, SEARCH)
    engine.encode_prompts([(key, text, images()[image]) for key, (text, image) in PROMPTS.items()])
    a, b = engine._prompt("a"), engine._prompt("b")
    assert a.length < b.length  # "a" is left-padded in the block
    words = processor.tokenizer("there is a red blue circle", add_special_tokens=False)
    words = words["input_ids"]
    prefixes = [("a", ()), ("b", tuple(words[:3])), ("a", tuple(words[:1]))]
    steps = [(torch.tensor(p), torch.tensor([words[w] for w in ws])) for p, ws in STEPS]
    reference = FromScratch(engine, [(*PROMPTS[p], g) for p, g in prefixes])
    expected = [reference.first()] + [reference.step(*step) for step in steps]
    with torch.inference_mode(), shared_prefix_attention_on(model):
        first, stepper = engine._start(
            [engine._prompt(p) for p, _ in prefixes], [g for _, g in prefixes]
        )
        got = [first] + [stepper(*step) for step in steps]
    for values, wanted in zip(got, expected):
        torch.testing.assert_close(values, wanted, atol=1e-4, rtol=0)
    # Besides the prompts' block the expansion holds the prefixes' tokens once (3 prefixes x
    # 3 positions, the longest), 3 prefixes x 3 beams rows x 4 new tokens, and one layer's
    # keys of those rows to swap with when reordering.
    per_token = 2 * _layers(model) * _kv_heads(model) * _head_dim(model) * 4  # fp32
    rows = 3 * 3 * 4
    swap = per_token * rows // (2 * _layers(model))
    assert stepper.cache.nbytes == per_token * (3 * 3 + rows) + swap
    assert a.block is b.block and a.block.keys[0].shape[2] == b.length  # one block
    assert engine.held_kv_bytes() == per_token * 2 * b.length + stepper.cache.nbytes


def _text(model):
    return model.config.get_text_config()


def _layers(model) -> int:
    return _text(model).num_hidden_layers


def _kv_heads(model) -> int:
    return _text(model).num_key_value_heads


def _head_dim(model) -> int:
    return _text(model).hidden_size // _text(model).num_attention_heads
