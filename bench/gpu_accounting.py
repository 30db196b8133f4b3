"""What each GPU service needs at the defaults, from the code's own accounting.

Nothing is allocated: parameter counts come from the real configs (tests/models/real_kinds.py)
built on the meta device, the generator's KV cache from services/generator/memory.py at the
default batch and search, the trainer's LoRA from the default DPO settings. The README's
table is this module's `markdown()`; `python bench/gpu_check.py --accounting` prints it.

Assumptions, stated in the table: bf16 weights for the generator and the trainer (their
default on CUDA), fp32 weights for the reward (it keeps fp32 and autocasts); an expansion at
its largest: every prompt with keep_top + keep_bottom kept prefixes of num_beams beams each,
every row holding the longest live prefix (max_response_tokens - 1) plus max_new_tokens; a
640x480 image (COCO's usual size); LoRA parameters in fp32 with a gradient and two Adam
moments, plus TRL's frozen copy of the adapter as the reference. Activations are not
accounted: `bench/gpu_check.py` measures the peaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from csr.config import CSRConfig
from services.generator.memory import expansion_kv_bytes, kv_bytes_per_token
from services.generator.settings import GeneratorSettings

GIB = 1024**3
PROMPT = "Describe this image in detail."
PINNED = ("torch", "transformers", "tokenizers", "accelerate", "peft", "trl", "open_clip_torch")
LORA_BYTES_PER_PARAMETER = 4 + 4 + 8 + 4  # fp32 weight, gradient, two Adam moments; TRL's ref


@dataclass(frozen=True)
class ModelFacts:
    name: str
    config: object
    parameters: int
    prompt_tokens: int  # chat template + PROMPT + one 640x480 image
    image_tokens: int
    lora_parameters: int


def _meta_parameters(model_class, config) -> int:
    with torch.device("meta"):
        model = model_class._from_config(config)
    return sum(p.numel() for p in model.parameters())


def lora_parameters(config, rank: int) -> int:
    """r x (inputs + outputs) for each of q k v o gate up down in every text layer."""
    text = config.get_text_config()
    width, inner = text.hidden_size, text.intermediate_size
    heads, kv = text.num_attention_heads, text.num_key_value_heads or text.num_attention_heads
    head = width // heads
    shapes = [(width, heads * head), (width, kv * head), (width, kv * head), (heads * head, width)]
    shapes += [(width, inner), (width, inner), (inner, width)]
    return text.num_hidden_layers * sum(rank * (i + o) for i, o in shapes)


def _prompt(processor, image_token: int) -> tuple[int, int]:
    from services.runtime.vlm import chat_prompt
    from tests.models.real_kinds import photo

    ids = processor(
        images=photo(640, 480),
        text=chat_prompt(processor, PROMPT),
        return_tensors="pt",
        add_special_tokens=False,
    )["input_ids"][0]
    return int(ids.numel()), int((ids == image_token).sum())


def model_facts() -> list[ModelFacts]:
    from transformers import LlavaForConditionalGeneration, Qwen2VLForConditionalGeneration

    from tests.models import real_kinds, real_tokenizers

    rank = CSRConfig().dpo.lora_r
    llava = real_kinds.llava_config()
    qwen = real_kinds.qwen2_vl_config()
    llava_prompt = _prompt(real_tokenizers.llava_processor(), llava.image_token_index)
    qwen_prompt = _prompt(real_tokenizers.qwen2_vl_processor(), qwen.image_token_id)
    return [
        ModelFacts(
            "LLaVA-1.5-7B",
            llava,
            _meta_parameters(LlavaForConditionalGeneration, llava),
            *llava_prompt,
            lora_parameters(llava, rank),
        ),
        ModelFacts(
            "Qwen2-VL-7B",
            qwen,
            _meta_parameters(Qwen2VLForConditionalGeneration, qwen),
            *qwen_prompt,
            lora_parameters(qwen, rank),
        ),
    ]


def clip_parameters() -> int:
    import open_clip

    from tests.models.real_kinds import CLIP_VIT_L14_336

    with torch.device("meta"):
        model = open_clip.CLIP(**CLIP_VIT_L14_336)
    return sum(p.numel() for p in model.parameters())


def expansion_bytes(facts: ModelFacts, shared: bool) -> int:
    """KV bytes of the largest expansion of one generator batch at the defaults (bf16)."""
    config, batch = CSRConfig(), GeneratorSettings().batch_size
    search = config.search
    rows = (search.keep_top + search.keep_bottom) * search.num_beams
    generated = search.max_response_tokens - 1 + search.max_new_tokens
    return expansion_kv_bytes(
        facts.config, torch.bfloat16, [facts.prompt_tokens] * batch, rows, generated, shared
    )


def pinned_versions(root: Path) -> dict[str, str]:
    pins = {}
    for line in (root / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        if name in PINNED:
            pins[name] = version
    return pins


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def rows() -> list[tuple[str, str, str]]:
    """(service, what, figure) at the defaults."""
    search, dpo = CSRConfig().search, CSRConfig().dpo
    batch = GeneratorSettings().batch_size
    out: list[tuple[str, str, str]] = []
    for facts in model_facts():
        weights = 2 * facts.parameters
        copies, shared = expansion_bytes(facts, False), expansion_bytes(facts, True)
        per_token = kv_bytes_per_token(facts.config, torch.bfloat16)
        lora = LORA_BYTES_PER_PARAMETER * facts.lora_parameters
        out += [
            (f"generator ({facts.name})", "weights, bf16", _gib(weights)),
            (
                f"generator ({facts.name})",
                f"prompt: {facts.prompt_tokens} tokens ({facts.image_tokens} image)",
                f"KV {per_token // 1024} KiB per token",
            ),
            (
                f"generator ({facts.name})",
                f"largest expansion, {batch} prompts x "
                f"{(search.keep_top + search.keep_bottom) * search.num_beams} rows, "
                f"{search.max_response_tokens - 1 + search.max_new_tokens} tokens each",
                f"KV {_gib(copies)} with a prompt copy per row, {_gib(shared)} shared",
            ),
            (f"trainer ({facts.name})", "weights, bf16", _gib(weights)),
            (
                f"trainer ({facts.name})",
                f"LoRA r{dpo.lora_r}: {facts.lora_parameters / 1e6:.0f}M parameters "
                "(+ gradient, Adam, reference copy)",
                _gib(lora),
            ),
        ]
    out.append(("reward (ViT-L-14-336)", "weights, fp32", _gib(4 * clip_parameters())))
    return out


def markdown(root: Path) -> str:
    """The README's table, then the GPUs and the pinned versions."""
    lines = ["| service | what | at the defaults |", "|---|---|---|"]
    lines += [f"| {service} | {what} | {figure} |" for service, what, figure in rows()]
    pins = ", ".join(f"{name} {version}" for name, version in pinned_versions(root).items())
    lines += ["", f"Pinned (constraints.txt): {pins}."]
    return "\n".join(lines)
