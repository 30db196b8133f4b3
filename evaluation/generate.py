"""Greedy answers from a VLM directory with an optional LoRA adapter (any published version).

Owns running a model for evaluation: load it (the adapter merged in), then answer (image,
prompt) pairs batch by batch, prompts left-padded, in the model's chat template.
"""

from __future__ import annotations

from pathlib import Path

import torch

from services.runtime.vlm import chat_prompt


def load_model(model_dir: str | Path, adapter: str | Path | None = None):
    """(model in eval mode, processor); the adapter, if any, merged into the weights."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir))
    if adapter:
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return model.eval(), AutoProcessor.from_pretrained(str(model_dir))


@torch.inference_mode()
def answers(
    model, processor, images, prompts, max_new_tokens: int = 48, batch: int = 50
) -> list[str]:
    """Greedy answers, batch by batch (prompts left-padded)."""
    out = []
    for start in range(0, len(images), batch):
        texts = [chat_prompt(processor, p) for p in prompts[start : start + batch]]
        inputs = processor(
            images=images[start : start + batch],
            text=texts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=False,
        )
        generated = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out += processor.tokenizer.batch_decode(
            generated[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
    return [a.strip() for a in out]
