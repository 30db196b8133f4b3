"""`csr toyworld agreement`: do two variants even make different preference pairs?

Owns the in-process comparison behind the README's finding on lambda = 1. For one seed it
takes the base model and the toy CLIP (`csr toyworld build`'s, reused when current) and the
first iteration's prompt set of `csr toyworld run`, and for each variant runs the generator's
own search (services.generator.pipeline.search_prompts, what `csr up` runs, with R_I from the
core's formula) under that variant's algorithm settings. It reports the CHAIR of the chosen
and rejected responses and, for every two variants, the share of prompts whose pairs are
identical (csr.evaluation.agreement). It searches from the base model (iteration 1) or from
an adapter a run published (`--adapter`, the next iteration), so that variants are compared
from the same start: runs of two variants soon search from adapters that differ by their
noise. No Redis, no gRPC and no training: seconds per variant.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import torch

from csr.evaluation.agreement import NothingToCompare, Pair, PairAgreement, pair_agreement
from csr.evaluation.metrics import ChairResult, chair
from toyworld.evaluate import VOCABULARY
from toyworld.experiment import PROMPT_SEED_BASE, RunPlan, algorithm_settings, write_prompt_set
from toyworld.world import scenes


@dataclass(frozen=True)
class VariantPairs:
    variant: str
    pairs: dict[str, Pair | None]  # prompt id -> (chosen, rejected), None: no pair
    chosen: ChairResult | None  # CHAIR of the chosen responses; None: no prompt made a pair
    rejected: ChairResult | None


@dataclass(frozen=True)
class AgreementReport:
    seed: int
    adapter: Path | None  # searched from this adapter version; None: the base model
    variants: list[VariantPairs]
    agreements: dict[tuple[str, str], PairAgreement | None]  # None: no prompt in common


def compare_variants(
    out: Path,
    seed: int,
    variants: list[str],
    plan: RunPlan,
    recipe=None,
    adapter: Path | None = None,
) -> AgreementReport:
    """The pairs under each variant, from the same model, CLIP and prompts: the base model
    (iteration 1), or the base with `adapter` (a run's adapter version: the iteration after
    it). `recipe`: the toy world's models, ToyWorldRecipe() unless given."""
    from toyworld.build import ToyWorldRecipe, build_toyworld

    recipe = recipe or ToyWorldRecipe()
    settings = {name: algorithm_settings(name, seed, plan) for name in dict.fromkeys(variants)}
    models = build_toyworld(
        out / "models" / f"seed-{seed}", seed=seed, recipe=recipe, progress=False
    )
    prompt_file = write_prompt_set(
        out / "prompts" / f"seed-{seed}", seed, plan.prompts, recipe.world
    )
    truths = {
        f"toy-{seed}-{i}": s.shapes
        for i, s in enumerate(scenes(PROMPT_SEED_BASE + seed, plan.prompts, recipe.world))
    }
    searcher = _Searcher(models.vlm, adapter, models.clip, prompt_file, plan.generator_batch)
    found = [_summarise(name, searcher.pairs(data), truths) for name, data in settings.items()]
    agreements = {
        (a.variant, b.variant): _agreement(a, b) for a, b in itertools.combinations(found, 2)
    }
    return AgreementReport(seed, adapter, found, agreements)


def _agreement(a: VariantPairs, b: VariantPairs) -> PairAgreement | None:
    try:
        return pair_agreement(a.pairs, b.pairs)
    except NothingToCompare:
        return None


def _summarise(variant: str, pairs: dict[str, Pair | None], truths: dict) -> VariantPairs:
    made = [key for key, pair in pairs.items() if pair is not None]
    if not made:
        return VariantPairs(variant, pairs, None, None)
    truth = [truths[key] for key in made]
    return VariantPairs(
        variant,
        pairs,
        chair([pairs[k][0] for k in made], truth, VOCABULARY),
        chair([pairs[k][1] for k in made], truth, VOCABULARY),
    )


class _Searcher:
    """The VLM (with an adapter, if given) and the toy CLIP, loaded once; one search of the
    prompt set per call."""

    def __init__(self, vlm: Path, adapter: Path | None, clip: Path, prompt_file: Path, batch: int):
        from PIL import Image

        from evaluation.generate import load_model
        from services.reward.models import load_backend
        from services.runtime.prompt_sets import load_prompt_set

        self.model, self.processor = load_model(vlm, adapter)
        self.clip = load_backend("hf", str(clip), "", "cpu", "fp32")
        self.clip.pad_to_context = True  # as a reward worker with fixed shapes
        self.items = load_prompt_set(str(prompt_file), 1)  # as the generator reads it
        root = prompt_file.parent / "images"
        self.images = {}
        for item in self.items:
            with Image.open(root / item.image) as image:
                self.images[item.image] = image.convert("RGB")
        self.batch = batch
        self._image_embeddings: dict[str, object] = {}

    def relevance(self, image_ref: str, sentences) -> list[float]:
        """R_I as a reward worker with its default settings computes it, to the bit: texts
        encoded in fixed shapes, cosines row by row."""
        from csr.rewards import relevance_score
        from services.reward.batcher import encode_in_chunks
        from services.reward.scorer import row_cosines
        from services.reward.settings import RewardSettings

        if image_ref not in self._image_embeddings:
            self._image_embeddings[image_ref] = self.clip.encode_images([self.images[image_ref]])[0]
        size = RewardSettings().max_batch_size
        texts = encode_in_chunks(self.clip.encode_texts, list(sentences), size, fixed=True)
        cosines = row_cosines(torch.stack(texts), self._image_embeddings[image_ref])
        return [relevance_score(c) for c in cosines.clamp(-1.0, 1.0).tolist()]

    def pairs(self, algorithm: dict) -> dict[str, Pair | None]:
        from csr.config import CSRConfig
        from csr.search import SearchRequest
        from csr.selection import NoPair
        from services.generator.engine import VLMEngine
        from services.generator.pipeline import search_prompts

        config = CSRConfig.from_dict(algorithm)
        engine = VLMEngine(self.model, self.processor, config.search)
        found: dict[str, Pair | None] = {}
        for start in range(0, len(self.items), self.batch):
            requests = [
                SearchRequest(item.prompt_id, item.prompt, item.image)
                for item in self.items[start : start + self.batch]
            ]
            for outcome in search_prompts(
                requests, engine, self.relevance, config, self.images.__getitem__, 1, "base"
            ):
                pair = outcome.pair
                found[outcome.search.request.prompt_id] = (
                    None if isinstance(pair, NoPair) else (pair.chosen.text, pair.rejected.text)
                )
        return found
