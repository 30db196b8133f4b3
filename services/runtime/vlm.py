"""VLM I/O that the generator and the trainer share: loading a model and its processor, the
chat prompt both see, and images read from disk.

Generation and training must see the same tokens, so the prompt text is built here once.
"""

from __future__ import annotations

import torch
from PIL import Image

from services.runtime.settings import VLMSettings


def load_vlm(settings: VLMSettings):
    """The model on its device and dtype (settings.device, settings.dtype), with its processor."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
        settings.dtype, torch.bfloat16 if device.startswith("cuda") else torch.float32
    )
    try:
        model = AutoModelForImageTextToText.from_pretrained(settings.model, dtype=dtype)
        processor = AutoProcessor.from_pretrained(settings.model)
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"cannot load VLM {settings.model!r}: {e}. Offline, give a local "
            "directory with the model, its processor and chat template"
        ) from e
    # transformers wraps PreTrainedModel.to in a decorator its stubs type wrongly
    return model.to(device).eval(), processor  # type: ignore[arg-type]


def load_processor(model: str):
    """The processor alone (tokenizer, image processor, chat template)."""
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(model)
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"cannot load the processor of {model!r}: {e}. Offline, give a "
            "local directory with the model, its processor and chat template"
        ) from e


def chat_prompt(processor, prompt: str) -> str:
    """The prompt as the model sees it: one user turn (image, then text) in the processor's
    chat template, ready for the assistant's answer, starting with the tokenizer's BOS token
    if it has one. Tokenize it with add_special_tokens=False, as TRL's DPO collator does, so
    generation and training see the same tokens."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    bos = processor.tokenizer.bos_token
    return text if not bos or text.startswith(bos) else bos + text


def load_rgb(path: str) -> Image.Image:
    """The image at path as RGB, read whole and closed."""
    with Image.open(path) as image:
        return image.convert("RGB")
