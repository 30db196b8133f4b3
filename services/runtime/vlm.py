"""VLM I/O that the generator and the trainer share: loading a model and its processor, the
chat prompt both see, and images read from disk.

Generation and training must see the same tokens, so the prompt text is built here once.
"""

from __future__ import annotations

import logging

import torch
from PIL import Image

from services.runtime.settings import VLMSettings

logger = logging.getLogger(__name__)


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
