"""The test tokenizers and processors are of the real kinds: the ids, templates and image token
counts of llava-hf/llava-1.5-7b-hf and Qwen/Qwen2-VL-7B-Instruct, worked out by hand."""

from __future__ import annotations

import pytest

from services.runtime.vlm import chat_prompt
from tests.models.real_kinds import photo
from tests.models.real_tokenizers import (
    llama_tokenizer,
    llava_processor,
    qwen2_tokenizer,
    qwen2_vl_processor,
)

MESSAGE = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it."}]}
]


@pytest.fixture(scope="module")
def llava():
    return llava_processor(llama_tokenizer())


@pytest.fixture(scope="module")
def qwen():
    return qwen2_tokenizer()


def test_llava_hf_vocabulary_template_and_576_image_tokens(llava):
    tokenizer = llava.tokenizer
    assert len(tokenizer) == 32002
    pieces = tokenizer.convert_ids_to_tokens([0, 1, 2, 3, 13, 258, 32000, 32001])
    assert pieces == ["<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "<0xFF>", "<image>", "<pad>"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 32001)
    text = llava.apply_chat_template(MESSAGE, add_generation_prompt=True)
    assert text == "USER: <image>\nDescribe it. ASSISTANT:"
    prompt = chat_prompt(llava, "Describe it.")
    ids = llava(images=photo(640, 480), text=prompt, return_tensors="pt")["input_ids"][0]
    assert ids[0] == 1  # <s>, once
    assert (ids == 32000).sum() == (336 // 14) ** 2 == 576
    after_image = ids.tolist().index(32000) + 576
    assert tokenizer.convert_ids_to_tokens(int(ids[after_image])) == "<0x0A>"  # byte fallback
    words = tokenizer.tokenize("A dog sits on the grass.")
    assert words[0].startswith("▁") and words[-1] == "."


def test_qwen2_vl_vocabulary_and_template(qwen):
    assert len(qwen) == 151657
    specials = qwen.convert_ids_to_tokens(list(range(151643, 151657)))
    assert specials[:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert specials[9:] == [
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    assert (qwen.eos_token_id, qwen.pad_token_id, qwen.bos_token) == (151645, 151643, None)
    processor = qwen2_vl_processor(qwen)
    text = processor.apply_chat_template(MESSAGE, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Describe it.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert qwen.tokenize(" dog.\n") == ["Ġdog", ".Ċ"]  # byte-level: Ġ a space, Ċ a newline


@pytest.mark.parametrize(
    ("size", "max_pixels", "tokens"),
    [
        # 640 x 480 -> 644 x 476 (the nearest multiples of 28): 23 x 17 = 391 tokens
        ((640, 480), 12845056, 391),
        # 2000 x 1500 capped at 448^2 pixels: scale sqrt(3e6 / 200704) = 3.866, floored to
        # multiples of 28: 504 x 364, i.e. 18 x 13 = 234 tokens
        ((2000, 1500), 448 * 448, 234),
        # 20 x 20 raised to min_pixels (56^2): 2 x 2 = 4 tokens
        ((20, 20), 12845056, 4),
    ],
)
def test_qwen2_vl_image_tokens_follow_min_and_max_pixels(qwen, size, max_pixels, tokens):
    processor = qwen2_vl_processor(qwen, max_pixels=max_pixels)
    prompt = chat_prompt(processor, "Describe it.")
    inputs = processor(images=photo(*size), text=prompt, return_tensors="pt")
    assert (inputs["input_ids"][0] == 151655).sum() == tokens
    assert int(inputs["image_grid_thw"].prod()) == 4 * tokens  # before the 2 x 2 merge
