"""LLaVA-1.5-7B, Qwen2-VL-7B and CLIP ViT-L-14-336 at their true widths, random weights.

The VLMs have their checkpoints' every width, vocabulary, head layout and image geometry,
with one text layer (LLaVA two vision layers, as vision_feature_layer -2 needs; Qwen2-VL
one) and the real tokenizers' kinds (tests/models). Each runs, in fp32 and in bf16, prompt
encoding, one expansion of the generator's engine with the default search (8 new tokens
instead of 74) and one DPO step of the trainer (LoRA r128/a256). The reward scores through
the service's scorer. Values are checked against independent computations: the model's own
cache against the KV accounting, the expansion's log-probs against one forward of the whole
sequence, the first DPO loss against ln 2, the reward against 100 cos clipped at 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import torch

from csr.config import DPOSettings, SearchConfig
from csr.search import Prefix, SearchRequest
from csr.training import DPOExample
from services.generator.engine import VLMEngine
from services.generator.memory import kv_bytes_per_token
from tests.models.real_kinds import build_llava, build_qwen2_vl, photo

pytestmark = pytest.mark.slow

PROMPT = "Describe this image."
SEARCH = SearchConfig(max_new_tokens=8)  # the paper's 5 beams in 5 groups, penalty 3.0
# bf16 rounds the cached and the whole-sequence paths differently
LOGPROB_TOLERANCE = {torch.float32: 2e-3, torch.bfloat16: 0.25}


@dataclass
class Case:
    kind: str
    dtype: torch.dtype
    model: object
    processor: object
    image: object
    image_tokens: int  # worked out by hand from the image geometry
    kv_heads: int
    engine: VLMEngine | None = None


def _case(kind: str, dtype: torch.dtype) -> Case:
    if kind == "llava":
        model, processor = build_llava(text_layers=1, vision_layers=2, dtype=dtype)
        # CLIP at 336 with patch 14: (336 / 14)^2 = 576 patches, CLS dropped ("default")
        return Case(kind, dtype, model, processor, photo(640, 480), 576, 32)
    model, processor = build_qwen2_vl(text_layers=1, vision_layers=1, dtype=dtype)
    # 140 x 112 is already a multiple of 28 inside [min_pixels, max_pixels]: 10 x 8 patches of
    # 28 (14 merged 2 x 2) give 80 / 4 = 20 image tokens
    return Case(kind, dtype, model, processor, photo(140, 112), 20, 4)


@pytest.fixture(
    scope="module",
    # the largest first (Qwen2-VL in fp32: 5.6 GB of weights), on a heap nothing has used yet
    params=[
        ("qwen2-vl", torch.float32),
        ("qwen2-vl", torch.bfloat16),
        ("llava", torch.float32),
        ("llava", torch.bfloat16),
    ],
    ids=["qwen2vl-fp32", "qwen2vl-bf16", "llava-fp32", "llava-bf16"],
)
def case(request):
    built = _case(*request.param)
    yield built
    built.engine = built.model = None
    del built
    _give_memory_back()


def _give_memory_back() -> None:
    """Collect, and hand freed heap pages back to the system (glibc keeps them otherwise)."""
    import ctypes
    import ctypes.util

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc).malloc_trim(0)


def _prompt_inputs(case: Case, extra: tuple[int, ...] = ()) -> dict:
    from services.runtime.vlm import chat_prompt

    inputs = dict(
        case.processor(
            images=case.image,
            text=chat_prompt(case.processor, PROMPT),
            return_tensors="pt",
            add_special_tokens=False,
        )
    )
    if extra:
        tail = torch.tensor([extra], dtype=torch.long)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], tail], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(tail)], 1)
        if "mm_token_type_ids" in inputs:
            zeros = torch.zeros_like(tail).to(inputs["mm_token_type_ids"].dtype)
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], zeros], 1)
    return inputs


def _image_token(model) -> int:
    config = model.config
    return getattr(config, "image_token_index", None) or config.image_token_id


def test_prompt_encoding_has_the_real_image_tokens_and_kv_shapes(case):
    inputs = _prompt_inputs(case)
    ids = inputs["input_ids"][0]
    assert int((ids == _image_token(case.model)).sum()) == case.image_tokens
    with torch.inference_mode():
        out = case.model(**inputs, use_cache=True)
    length = ids.shape[0]
    assert out.logits.shape == (1, length, case.model.config.get_text_config().vocab_size)
    assert torch.isfinite(out.logits).all()
    [layer] = out.past_key_values.layers  # one text layer
    assert layer.keys.shape == (1, case.kv_heads, length, 128) == layer.values.shape
    assert layer.keys.dtype == case.dtype
    measured = layer.keys.numel() * layer.keys.element_size() * 2
    assert measured == kv_bytes_per_token(case.model.config, case.dtype) * length


def _banned_by_hand(tokenizer, columns: int) -> set[int]:
    """Every special token but EOS, and the logit columns no token has."""
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return (specials - {tokenizer.eos_token_id}) | set(range(len(tokenizer), columns))


def _lure(model, columns: list[int]):
    """Make `columns` the most likely next tokens everywhere (a forward hook on the head)."""

    def hook(module, args, output):
        output[..., columns] = output.max(dim=-1, keepdim=True).values + 2.0
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def test_one_expansion_matches_a_whole_sequence_forward(case):
    tokenizer = case.processor.tokenizer
    columns = case.model.config.get_text_config().vocab_size
    banned = _banned_by_hand(tokenizer, columns)
    # the search must pass over the image placeholder and a padding column past the tokenizer
    lure = _lure(case.model, [_image_token(case.model), len(tokenizer) + 3])
    try:
        case.engine = VLMEngine(case.model, case.processor, SEARCH)
        request = SearchRequest("p", PROMPT, "image")
        case.engine.encode_prompt("p", PROMPT, case.image)
        [candidates] = case.engine.expand([Prefix(request, (), None)])
        case.engine.release("p")
        assert len(candidates) == SEARCH.num_beams
        assert len({c.state for c in candidates}) == SEARCH.num_beams  # diverse groups differ
        for candidate in candidates:
            assert all(math.isfinite(lp) and lp <= 0 for lp in candidate.token_logprobs)
            assert not set(candidate.state) & banned
        best = candidates[0]
        inputs = _prompt_inputs(case, best.state)
        with torch.inference_mode():
            logits = case.model(**inputs).logits[0].float()
    finally:
        lure.remove()
    start = inputs["input_ids"].shape[1] - len(best.state) - 1
    rows = torch.log_softmax(logits[start : start + len(best.state)], dim=-1)
    expected = rows.gather(1, torch.tensor(best.state)[:, None])[:, 0].tolist()
    tolerance = LOGPROB_TOLERANCE[case.dtype]
    assert list(best.token_logprobs[: len(best.state)]) == pytest.approx(expected, abs=tolerance)


def test_one_dpo_step_at_r128_has_loss_ln2_and_a_lora_gradient(case):
    from transformers import TrainerCallback

    from services.trainer.dpo import train_update

    grads: dict[str, torch.Tensor] = {}

    class Probe(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            for name, param in model.named_parameters():
                if param.requires_grad and param.grad is not None:
                    grads[name] = param.grad.detach().float().clone()

    eos = case.processor.tokenizer.eos_token
    example = DPOExample(
        PROMPT, "image.png", f" A dog sits on the grass.{eos}", f" A cat is on a table.{eos}"
    )
    dpo = DPOSettings()
    assert (dpo.lora_r, dpo.lora_alpha) == (128, 256)
    case.engine = None
    with tempfile.TemporaryDirectory() as out:
        result = train_update(
            case.model, case.processor, None, [example], lambda _: case.image, dpo, out,
            callbacks=[Probe()],
        )  # fmt: skip
    assert result.steps == 1
    # A fresh LoRA has B = 0: the policy equals the reference, so the loss is -log sigmoid(0)
    assert result.metrics["loss"] == pytest.approx(math.log(2), abs=1e-4)
    for key in ("logps/chosen", "logps/rejected"):
        assert math.isfinite(result.metrics[key]) and result.metrics[key] < 0
    b_grads = [g for name, g in grads.items() if "lora_B" in name]
    a_grads = [g for name, g in grads.items() if "lora_A" in name]
    assert len(b_grads) == len(a_grads) == 7  # q k v o gate up down of the one layer
    assert all(torch.isfinite(g).all() for g in b_grads)
    assert any(g.abs().sum() > 0 for g in b_grads)
    # and with B = 0, no gradient reaches A yet
    assert all(g.abs().sum() == 0 for g in a_grads)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from tests.models.real_kinds import build_clip_dir

    return build_clip_dir(tmp_path_factory.mktemp("vit-l-14-336"), vision_layers=2, text_layers=1)


def _independent_cosines(directory, image, sentences) -> list[float]:
    """cos(image, sentence) with open_clip's model class, preprocessing written out by hand."""
    import json

    import numpy as np
    import open_clip
    from PIL import Image
    from safetensors.torch import load_file

    cfg = json.loads((directory / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**cfg["model_cfg"]).eval()
    model.load_state_dict(load_file(str(directory / "open_clip_model.safetensors")))
    width, height = image.size
    scale = 336 / min(width, height)
    resized = image.resize((round(width * scale), round(height * scale)), Image.BICUBIC)
    left, top = (resized.width - 336) // 2, (resized.height - 336) // 2
    crop = resized.crop((left, top, left + 336, top + 336))
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32)) / 255
    mean = torch.tensor(cfg["preprocess_cfg"]["mean"])
    std = torch.tensor(cfg["preprocess_cfg"]["std"])
    pixels = ((pixels - mean) / std).permute(2, 0, 1)[None]
    with torch.no_grad():
        image_features = model.encode_image(pixels)
        text_features = model.encode_text(open_clip.tokenize(sentences))
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return (text_features @ image_features[0]).tolist()


def test_reward_at_vit_l_14_336_widths_is_100_cos_clipped(clip_dir):
    import io

    from services.reward.metrics import RewardMetrics
    from services.reward.models import load_backend
    from services.reward.scorer import Scorer
    from services.reward.settings import RewardSettings

    image = photo(640, 480, seed=3)
    sentences = [f"There is a {w} in the image." for w in ("dog", "red car", "tree", "man")]
    sentences += ["A photo of a kitchen.", "Two people sit on a bench."]
    backend = load_backend("open_clip", str(clip_dir), device="cpu")
    assert (backend.info.embedding_dim, backend.info.image_size) == (768, 336)
    assert backend.info.context_length == 77
    encoded = io.BytesIO()
    image.save(encoded, "PNG")

    async def score():
        with ThreadPoolExecutor(1) as executor:
            scorer = Scorer(backend, RewardSettings(), executor, RewardMetrics())
            scorer.batcher.start()
            try:
                return await scorer.score(encoded.getvalue(), None, sentences)
            finally:
                await scorer.batcher.stop()

    result = asyncio.run(score())
    cosines = _independent_cosines(clip_dir, image, sentences)
    assert [s.cosine for s in result.scores] == pytest.approx(cosines, abs=5e-4)
    expected = [max(100 * c, 0.0) for c in cosines]
    assert [s.relevance for s in result.scores] == pytest.approx(expected, abs=0.05)
    assert any(e > 0 for e in expected)
