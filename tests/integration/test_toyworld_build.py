"""`csr toyworld build` on a small recipe: saved in the standard formats, rebuilt to the same
bits from the seed, reused when current, and loaded by the reward service and the generator."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from toyworld.build import ToyWorldRecipe, build_toyworld
from toyworld.clip import ClipRecipe
from toyworld.vlm import VLMRecipe
from toyworld.world import WorldConfig

SMALL = ToyWorldRecipe(
    WorldConfig(),
    ClipRecipe(images=256, steps=12, batch=32),
    VLMRecipe(captions=96, epochs=1, batch=32),
)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_toyworld(tmp_path_factory.mktemp("toy"), seed=3, recipe=SMALL, progress=False)


def test_a_rebuild_from_the_seed_gives_the_same_bits_and_a_current_build_is_reused(
    built, tmp_path, monkeypatch
):
    again = build_toyworld(tmp_path, seed=3, recipe=SMALL, progress=False)
    assert again.record["sha256"] == built.record["sha256"]
    other = build_toyworld(tmp_path / "other", seed=4, recipe=SMALL, progress=False)
    assert other.record["sha256"] != built.record["sha256"]
    from toyworld import build

    monkeypatch.setattr(build, "train_clip", lambda *a, **k: pytest.fail("retrained"))
    assert build_toyworld(tmp_path, seed=3, recipe=SMALL, progress=False).record == again.record
    (tmp_path / "vlm" / "model.safetensors").write_bytes(b"damaged")
    monkeypatch.undo()
    repaired = build_toyworld(tmp_path, seed=3, recipe=SMALL, progress=False)
    assert repaired.record["sha256"] == built.record["sha256"]
    assert json.loads((tmp_path / "toyworld.json").read_text())["seed"] == 3


def test_the_reward_service_and_the_generator_load_them_like_real_models(built):
    from csr.config import SearchConfig
    from csr.search import Prefix, SearchRequest
    from services.generator.engine import VLMEngine
    from services.generator.settings import GeneratorSettings
    from services.reward.models import load_backend
    from services.runtime.vlm import load_vlm
    from toyworld.world import render, scenes

    clip = load_backend("hf", str(built.clip), "", "cpu", "fp32")
    scene = scenes(0, 1)[0]
    assert clip.info.image_size == 32
    model, processor = load_vlm(GeneratorSettings(model=str(built.vlm)))
    engine = VLMEngine(
        model, processor, SearchConfig(num_beams=2, num_beam_groups=2, max_new_tokens=6)
    )
    request = SearchRequest("p", "Describe the image.", "x")
    engine.encode_prompt("p", request.prompt, render(scene))
    [candidates] = engine.expand([Prefix(request, ())])
    assert len(candidates) == 2 and all(c.token_logprobs for c in candidates)


def test_eval_scores_a_model_and_an_adapter_on_held_out_scenes(built, tmp_path):
    from peft import LoraConfig, get_peft_model

    from csr.config import LANGUAGE_MODEL_LINEAR_LAYERS
    from toyworld.evaluate import evaluate, load_model

    base = evaluate(built.vlm, count=12)
    assert base["scenes"] == 12 and base["chair"]["captions"] == 12
    assert 0 <= base["chair"]["chair_s"] <= 1 and 0 <= base["chair"]["recall"] <= 1
    assert set(base["pope"]) == {"random", "popular", "adversarial"}
    assert all(p["questions"] >= 12 for p in base["pope"].values())
    # every caption is kept with its scene's shapes (the run report shows them side by side)
    from toyworld.world import scenes

    assert len(base["captions"]) == 12 and base["captions"][:5] == base["examples"]
    assert base["truth"] == [sorted(s.shapes) for s in scenes(base["held_out_seed"], 12)]
    model, _ = load_model(built.vlm)
    noisy = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=64, init_lora_weights=False, target_modules=LANGUAGE_MODEL_LINEAR_LAYERS
        ),
    )
    noisy.save_pretrained(str(tmp_path / "adapter"))
    shifted = evaluate(built.vlm, tmp_path / "adapter", count=12)
    assert shifted["adapter"] == str(tmp_path / "adapter")
    assert shifted["examples"] != base["examples"]  # the adapter is applied


def test_csr_eval_writes_the_table_json_and_a_plot(built, tmp_path):
    import json

    from csr_cli.main import main
    from toyworld.evaluate import evaluate

    with pytest.raises(SystemExit) as done:
        main(
            [
                "eval",
                "--model",
                str(built.vlm),
                "--count",
                "6",
                "--json",
                str(tmp_path / "e.json"),
                "--plot",
                str(tmp_path / "e.png"),
            ]
        )
    assert done.value.code == 0
    [written] = json.loads((tmp_path / "e.json").read_text())
    assert written["chair"] == evaluate(built.vlm, count=6)["chair"]
    assert (tmp_path / "e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_agreement_searches_every_prompt_per_variant_without_one_search_leaking_into_another(
    tmp_path,
):
    from csr.evaluation.agreement import pair_agreement
    from csr.evaluation.metrics import chair
    from toyworld.agreement import compare_variants
    from toyworld.evaluate import VOCABULARY
    from toyworld.experiment import PROMPT_SEED_BASE, RunPlan
    from toyworld.world import scenes

    # trained just enough to write two or three sentences, so that the search makes pairs (under
    # the paper's selection: this barely trained model's worst sentences are too alike for the
    # toy default's min_sentence_gap)
    writer = replace(SMALL, vlm=VLMRecipe(captions=1024, epochs=3, batch=32))
    plan = RunPlan(prompts=6, generator_batch=4)
    report = compare_variants(tmp_path, 3, ["no-gap", "relevant"], plan, writer)
    backwards = compare_variants(tmp_path, 3, ["relevant", "no-gap"], plan, writer)
    ids = {f"toy-3-{i}" for i in range(6)}
    by_name = {v.variant: v for v in report.variants}
    assert set(by_name) == {"no-gap", "relevant"}
    for v in backwards.variants:  # the same pairs whichever variant is searched first
        assert set(v.pairs) == ids and v.pairs == by_name[v.variant].pairs
    csr, relevant = by_name["no-gap"], by_name["relevant"]
    made = [k for k, p in csr.pairs.items() if p]
    assert made, csr.pairs
    assert report.agreements[("no-gap", "relevant")] == pair_agreement(csr.pairs, relevant.pairs)
    truths = {f"toy-3-{i}": s.shapes for i, s in enumerate(scenes(PROMPT_SEED_BASE + 3, 6))}
    assert csr.chosen == chair(
        [csr.pairs[k][0] for k in made], [truths[k] for k in made], VOCABULARY
    )
    from peft import LoraConfig, get_peft_model

    from csr.config import LANGUAGE_MODEL_LINEAR_LAYERS
    from evaluation.generate import load_model

    model, _ = load_model(tmp_path / "models" / "seed-3" / "vlm")
    noisy = get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=64, init_lora_weights=False, target_modules=LANGUAGE_MODEL_LINEAR_LAYERS
        ),
    )
    noisy.save_pretrained(str(tmp_path / "adapter"))
    moved = compare_variants(
        tmp_path, 3, ["no-gap", "relevant"], plan, writer, adapter=tmp_path / "adapter"
    )
    assert moved.adapter == tmp_path / "adapter"
    assert moved.variants[0].pairs != csr.pairs  # searched from the adapter, not the base
