"""Image size bounds: a processor that resizes to a pixel count (Qwen2-VL's) is loaded with
the deployment's min_pixels/max_pixels, so one large image cannot widen a whole batch.

The processor is a tiny Qwen2-VL one with the real checkpoint's image settings (patch 14,
merge 2, so one image token per 28x28 pixels; min 3136 and max 12845056 pixels)."""

from __future__ import annotations

import dataclasses

import pytest
from PIL import Image

from services.runtime.settings import VLMSettings
from services.runtime.vlm import VLMLoadError, load_processor
from tests.models.qwen import build_tiny_qwen2_vl

TOKEN_PIXELS = 28 * 28  # one image token per merged 2x2 group of 14x14 patches


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("qwen2-vl")
    _, processor = build_tiny_qwen2_vl(patch_size=14, image_size=56)
    ip = processor.image_processor
    ip.size = dataclasses.replace(ip.size, shortest_edge=56 * 56, longest_edge=12845056)
    processor.save_pretrained(directory)
    return str(directory)


def image_tokens(processor, size: tuple[int, int]) -> int:
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe"}]}],
        add_generation_prompt=True,
    )
    image = Image.new("RGB", size, (90, 20, 200))
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    count = inputs["input_ids"][0].tolist().count(pad)
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert count == t * h * w // 4  # the prompt's tokens are the image's merged patches
    return count


def test_a_large_image_is_capped_at_the_default_bound(qwen_dir):
    default = VLMSettings()
    assert default.max_pixels == 1280 * TOKEN_PIXELS
    processor = load_processor(VLMSettings(model=qwen_dir))
    big = image_tokens(processor, (2000, 1500))  # 3.0 Mpx: 3816 tokens without the bound
    assert 1200 <= big <= default.max_pixels // TOKEN_PIXELS
    coco = image_tokens(processor, (640, 480))  # under the bound: as the checkpoint has it
    assert coco == round(640 / 28) * round(480 / 28)


def test_the_bounds_are_deployment_settings(qwen_dir):
    processor = load_processor(VLMSettings(model=qwen_dir, min_pixels=8 * 784, max_pixels=64 * 784))
    assert image_tokens(processor, (2000, 1500)) <= 64
    assert image_tokens(processor, (30, 30)) >= 8  # a tiny image is enlarged to min_pixels
    with pytest.raises(VLMLoadError, match="min_pixels 9000 is above max_pixels 8000"):
        load_processor(VLMSettings(model=qwen_dir, min_pixels=9000, max_pixels=8000))


def test_a_fixed_size_processor_is_left_as_it_is(tmp_path):
    from tests.models.llava import build_tiny_llava

    _, processor = build_tiny_llava(directory=tmp_path)
    loaded = load_processor(VLMSettings(model=str(tmp_path), max_pixels=64))
    assert loaded.image_processor.to_dict() == processor.image_processor.to_dict()
