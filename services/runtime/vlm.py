"""VLM I/O that the generator and the trainer share: loading a model (on a checked device)
and its processor (with the image size bounds), the chat prompt both see, the whitespace a
response starts with, and images read from disk.

Generation and training must see the same tokens, so the prompt text, the image sizes and
the response's first token are decided here once.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
from PIL import Image

from services.runtime.devices import DeviceChoice, choose_device, log_choice
from services.runtime.settings import VLMSettings

logger = logging.getLogger(__name__)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class VLMLoadError(RuntimeError):
    """The configured VLM or its processor cannot be loaded; the message names it."""


def device_setting(settings: VLMSettings) -> str:
    """The variable of the device setting, e.g. CSR_TRAINER_DEVICE."""
    return f"{settings.model_config.get('env_prefix', '')}DEVICE"


def vlm_device(settings: VLMSettings) -> DeviceChoice:
    """The device the settings ask for; DeviceUnavailable (naming the cause) if cuda or
    cuda:N cannot run here. Services call it at start, before anything is loaded."""
    return choose_device(settings.device, device_setting(settings))


def model_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """The dtype setting on this device: auto is bf16 on CUDA, fp32 on the CPU."""
    if dtype in DTYPES:
        return DTYPES[dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_vlm(settings: VLMSettings):
    """The model on its device and dtype (settings.device, settings.dtype), with its processor."""
    return load_model(settings), load_processor(settings)


def load_model(settings: VLMSettings):
    """The model alone, in eval mode, on the device and in the dtype of the settings (said in
    the log; at WARNING when device=auto fell back to the CPU)."""
    from transformers import AutoModelForImageTextToText

    choice = vlm_device(settings)
    dtype = model_dtype(settings.dtype, choice.device)
    name = next(k for k, v in DTYPES.items() if v == dtype)
    log_choice(choice, f"VLM {settings.model}", name, device_setting(settings))
    try:
        model = AutoModelForImageTextToText.from_pretrained(settings.model, dtype=dtype)
    except (OSError, ValueError) as e:
        raise VLMLoadError(
            f"cannot load VLM {settings.model!r}: {e}. Offline, give a local "
            "directory with the model, its processor and chat template"
        ) from e
    # transformers wraps PreTrainedModel.to in a decorator its stubs type wrongly
    return model.to(choice.device).eval()  # type: ignore[arg-type]


def load_processor(settings: VLMSettings):
    """The processor alone (tokenizer, image processor, chat template), with the image size
    bounds of the settings (min_pixels, max_pixels) where its image processor takes them."""
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(settings.model)
    except (OSError, ValueError) as e:
        raise VLMLoadError(
            f"cannot load the processor of {settings.model!r}: {e}. Offline, give a "
            "local directory with the model, its processor and chat template"
        ) from e
    bound_pixels(processor, settings.min_pixels, settings.max_pixels)
    return processor


def takes_pixel_bounds(image_processor) -> bool:
    """Whether the image processor resizes each image to a pixel count within bounds (the
    Qwen2-VL family) rather than to a fixed size (LLaVA's CLIP processor)."""
    kwargs = getattr(image_processor, "valid_kwargs", None)
    return "max_pixels" in getattr(kwargs, "__annotations__", {})


def bound_pixels(processor, min_pixels: int, max_pixels: int) -> None:
    """Resize every image to between min_pixels and max_pixels pixels (aspect kept), so one
    large image cannot set the width of a whole batch; a processor with a fixed input size
    is left as it is."""
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not takes_pixel_bounds(image_processor):
        return
    if min_pixels > max_pixels:
        raise VLMLoadError(
            f"min_pixels {min_pixels} is above max_pixels {max_pixels}; lower min_pixels"
        )
    size = image_processor.size
    bounds = {"shortest_edge": min_pixels, "longest_edge": max_pixels}  # pixel counts here
    image_processor.size = (
        {**size, **bounds} if isinstance(size, dict) else dataclasses.replace(size, **bounds)
    )
    logger.info("images resized to between %d and %d pixels", min_pixels, max_pixels)


def chat_prompt(processor, prompt: str) -> str:
    """The prompt as the model sees it: one user turn (image, then text) in the processor's
    chat template, ready for the assistant's answer, starting with the tokenizer's BOS token
    if it has one. Tokenize it with add_special_tokens=False, as TRL's DPO collator does, so
    generation and training see the same tokens."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    bos = processor.tokenizer.bos_token
    return text if not bos or text.startswith(bos) else bos + text


def response_lead(processor, probe: str = "image") -> str:
    """The whitespace to put before a response so that, tokenized on its own (as TRL's DPO
    collator tokenizes completions, apart from the prompt), it starts with the token the
    model writes after the chat prompt.

    A model learned its answers tokenized together with the prompt: after a template that ends
    in whitespace (Qwen2-VL's "assistant\\n") the first word follows without a space, after
    one that ends in a mark (LLaVA's "ASSISTANT:") it follows a space. Tokenizers spell that
    space differently alone: a byte-level BPE needs it in the text (" The" is "ĠThe", "The"
    is "The"), a SentencePiece tokenizer adds its word-boundary marker to a text tokenized
    alone ("The" is "▁The"), so under the legacy normalizer a leading space would add a second
    marker. This finds, with a probe word, the lead whose tokens alone equal its tokens after
    the prompt; if none does, it warns and keeps the template's space."""
    tokenizer = processor.tokenizer
    prompt = chat_prompt(processor, probe)
    space = "" if prompt[-1:].isspace() else " "

    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    head, joint = ids(prompt), ids(prompt + space + probe)
    wanted = joint[len(head) :] if joint[: len(head)] == head else None
    for lead in dict.fromkeys((space, "", " ")):
        if wanted is not None and ids(lead + probe) == wanted:
            return lead
    logger.warning(
        "no leading whitespace makes a response tokenized alone start as it does after the "
        "chat prompt (%r after the prompt, %r alone); DPO completions start with %r",
        tokenizer.convert_ids_to_tokens(wanted or []),
        tokenizer.convert_ids_to_tokens(ids(space + probe)),
        space,
    )
    return space


def load_rgb(path: str) -> Image.Image:
    """The image at path as RGB, read whole and closed."""
    with Image.open(path) as image:
        return image.convert("RGB")
