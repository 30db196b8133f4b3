"""CLIP checkpoints in OpenAI's format for tests, and the same weights in Hugging Face's layout.

Written from the two published layouts, not through either library's converter, so that the
open_clip backend and the transformers backend can be compared on the same weights:
- `random_openai_state_dict`: random ViT CLIP weights under OpenAI's key names, in fp16 as
  OpenAI ships them, with the archive's `input_resolution`/`context_length`/`vocab_size` entries;
- `save_torchscript_archive`: those weights as a TorchScript archive (OpenAI's .pt files are one);
- `write_hf_clip`: a CLIPModel directory (quick_gelu) with a CLIPTokenizer built from the CLIP
  BPE vocabulary that open_clip bundles, and a CLIPImageProcessor at the model's image size.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
START, END = "<|startoftext|>", "<|endoftext|>"


@dataclass(frozen=True)
class VitClipShape:
    """A ViT CLIP's sizes; the defaults are ViT-L/14-336's widths at reduced depth."""

    embed_dim: int = 768
    image_size: int = 336
    patch_size: int = 14
    vision_width: int = 1024
    vision_layers: int = 2
    text_width: int = 768
    text_layers: int = 2
    context_length: int = 77
    vocab_size: int = 49408
    head_width: int = 64

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    def open_clip_config(self) -> dict:
        """open_clip's model config for this shape (its default activation: plain GELU)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "layers": self.vision_layers,
                "width": self.vision_width,
                "patch_size": self.patch_size,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_width // self.head_width,
                "layers": self.text_layers,
            },
        }


def _block(prefix: str, width: int, normal, around_one) -> dict[str, torch.Tensor]:
    """One residual attention block in OpenAI's layout (packed q/k/v, c_fc/c_proj)."""
    hidden = 4 * width
    return {
        f"{prefix}ln_1.weight": around_one(width),
        f"{prefix}ln_1.bias": normal(width),
        f"{prefix}attn.in_proj_weight": normal(3 * width, width, std=width**-0.5),
        f"{prefix}attn.in_proj_bias": normal(3 * width),
        f"{prefix}attn.out_proj.weight": normal(width, width, std=width**-0.5),
        f"{prefix}attn.out_proj.bias": normal(width),
        f"{prefix}ln_2.weight": around_one(width),
        f"{prefix}ln_2.bias": normal(width),
        f"{prefix}mlp.c_fc.weight": normal(hidden, width, std=width**-0.5),
        f"{prefix}mlp.c_fc.bias": normal(hidden),
        f"{prefix}mlp.c_proj.weight": normal(width, hidden, std=hidden**-0.5),
        f"{prefix}mlp.c_proj.bias": normal(width),
    }


def random_openai_state_dict(shape: VitClipShape = VitClipShape(), seed: int = 0) -> dict:
    """Random weights under OpenAI's key names, fp16. Matrices have std 1/sqrt(fan-in), so the
    MLP's pre-activations are of order one, where GELU and QuickGELU differ; biases and norm
    weights are non-trivial, so a mis-mapped one changes the output."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*size, std=0.02):
        return torch.randn(*size, generator=generator) * std

    def around_one(width):
        return 1.0 + normal(width, std=0.1)

    v, t = shape.vision_width, shape.text_width
    weights = {
        "visual.class_embedding": normal(v, std=v**-0.5),
        "visual.positional_embedding": normal(shape.grid**2 + 1, v, std=v**-0.5),
        "visual.conv1.weight": normal(
            v, 3, shape.patch_size, shape.patch_size, std=(3 * shape.patch_size**2) ** -0.5
        ),
        "visual.ln_pre.weight": around_one(v),
        "visual.ln_pre.bias": normal(v),
        "visual.ln_post.weight": around_one(v),
        "visual.ln_post.bias": normal(v),
        "visual.proj": normal(v, shape.embed_dim, std=v**-0.5),
        "token_embedding.weight": normal(shape.vocab_size, t),
        "positional_embedding": normal(shape.context_length, t, std=0.01),
        "ln_final.weight": around_one(t),
        "ln_final.bias": normal(t),
        "text_projection": normal(t, shape.embed_dim, std=t**-0.5),
        "logit_scale": torch.tensor(4.6052),
    }
    for i in range(shape.vision_layers):
        weights |= _block(f"visual.transformer.resblocks.{i}.", v, normal, around_one)
    for i in range(shape.text_layers):
        weights |= _block(f"transformer.resblocks.{i}.", t, normal, around_one)
    weights = {k: w.half() for k, w in weights.items()}
    # The entries OpenAI's TorchScript archives carry beside the weights.
    weights |= {
        "input_resolution": torch.tensor(shape.image_size),
        "context_length": torch.tensor(shape.context_length),
        "vocab_size": torch.tensor(shape.vocab_size),
    }
    return weights


class _Holder(torch.nn.Module):
    def forward(self) -> int:
        return 0


def save_torchscript_archive(state_dict: dict, path: Path) -> Path:
    """A TorchScript archive whose state_dict() is `state_dict` (keys nest as submodules)."""
    root = _Holder()
    for key, tensor in state_dict.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_buffer(leaf, tensor.clone())
    torch.jit.save(torch.jit.script(root), str(path))
    return path


def _hf_block(source: str, target: str, weights: dict) -> dict[str, torch.Tensor]:
    q, k, v = weights[f"{source}attn.in_proj_weight"].chunk(3)
    qb, kb, vb = weights[f"{source}attn.in_proj_bias"].chunk(3)
    renamed = {
        "ln_1": "layer_norm1",
        "ln_2": "layer_norm2",
        "attn.out_proj": "self_attn.out_proj",
        "mlp.c_fc": "mlp.fc1",
        "mlp.c_proj": "mlp.fc2",
    }
    out = {
        f"{target}self_attn.q_proj.weight": q,
        f"{target}self_attn.k_proj.weight": k,
        f"{target}self_attn.v_proj.weight": v,
        f"{target}self_attn.q_proj.bias": qb,
        f"{target}self_attn.k_proj.bias": kb,
        f"{target}self_attn.v_proj.bias": vb,
    }
    for old, new in renamed.items():
        for kind in ("weight", "bias"):
            out[f"{target}{new}.{kind}"] = weights[f"{source}{old}.{kind}"]
    return out


def to_hf_state_dict(weights: dict, shape: VitClipShape) -> dict[str, torch.Tensor]:
    """OpenAI's layout -> transformers CLIPModel's (fp32): split q/k/v, rename, transpose the
    projections (OpenAI multiplies x @ proj, a Linear holds proj transposed)."""
    hf = {
        "logit_scale": weights["logit_scale"],
        "text_model.embeddings.token_embedding.weight": weights["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": weights["positional_embedding"],
        "text_model.final_layer_norm.weight": weights["ln_final.weight"],
        "text_model.final_layer_norm.bias": weights["ln_final.bias"],
        "text_projection.weight": weights["text_projection"].T,
        "vision_model.embeddings.class_embedding": weights["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": weights["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": weights["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": weights["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": weights["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": weights["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": weights["visual.ln_post.bias"],
        "visual_projection.weight": weights["visual.proj"].T,
    }
    for i in range(shape.text_layers):
        hf |= _hf_block(f"transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}.", weights)
    for i in range(shape.vision_layers):
        hf |= _hf_block(
            f"visual.transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}.", weights
        )
    return {k: w.float().contiguous() for k, w in hf.items()}


def _byte_symbols() -> list[str]:
    """CLIP's (and GPT-2's) printable stand-ins for the 256 bytes, in vocabulary order: first
    the printable Latin-1 bytes, which stand for themselves, in byte order; then every other
    byte, in byte order, as the code points from 256 up."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = 256 - len(printable)
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(others)]


def clip_bpe_vocabulary(bpe_path: str | Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """CLIP's vocabulary from its merges file (bpe_simple_vocab_16e6.txt.gz): the 256 byte
    symbols, the same with the end-of-word mark, one entry per merge (the first 48,894), then
    the start and end tokens: 49,408 entries."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [START, END]
    return {token: i for i, token in enumerate(tokens)}, merges


def clip_tokenizer(bpe_path: str | Path, context_length: int = 77):
    """A transformers CLIPTokenizer over CLIP's BPE vocabulary, built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_bpe_vocabulary(bpe_path)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)


def write_hf_clip(
    weights: dict,
    shape: VitClipShape,
    directory: Path,
    bpe_path: str | Path,
    hidden_act: str = "quick_gelu",
) -> Path:
    """A transformers CLIPModel directory holding `weights` (OpenAI's layout), with tokenizer
    and image processor, loadable offline by the hf backend."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    heads = {
        "text": shape.text_width // shape.head_width,
        "vision": shape.vision_width // shape.head_width,
    }
    config = CLIPConfig(
        text_config={
            "vocab_size": shape.vocab_size,
            "hidden_size": shape.text_width,
            "intermediate_size": 4 * shape.text_width,
            "num_hidden_layers": shape.text_layers,
            "num_attention_heads": heads["text"],
            "max_position_embeddings": shape.context_length,
            "hidden_act": hidden_act,
            "bos_token_id": shape.vocab_size - 2,
            "eos_token_id": shape.vocab_size - 1,
            "pad_token_id": shape.vocab_size - 1,
        },
        vision_config={
            "hidden_size": shape.vision_width,
            "intermediate_size": 4 * shape.vision_width,
            "num_hidden_layers": shape.vision_layers,
            "num_attention_heads": heads["vision"],
            "image_size": shape.image_size,
            "patch_size": shape.patch_size,
            "hidden_act": hidden_act,
        },
        projection_dim=shape.embed_dim,
    )
    model = CLIPModel(config)
    missing, unexpected = model.load_state_dict(to_hf_state_dict(weights, shape), strict=False)
    if unexpected or [k for k in missing if not k.endswith("position_ids")]:
        raise AssertionError(f"HF layout mismatch: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(directory)
    clip_tokenizer(bpe_path, shape.context_length).save_pretrained(directory)
    size = shape.image_size
    CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    ).save_pretrained(directory)
    return directory
