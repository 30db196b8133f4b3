"""Prompts to preference records on a VLM: the engine's `expand`, a `relevance`, the core.

Owns the per-batch lifecycle: encode each prompt once, search all of them in lockstep
(csr.pairs.generate_pairs), release the prompt caches. Also holds the reference loop built the
authors' way (one search call per tree node with a full re-encode, one relevance call per
sentence), which the benchmark and a test compare against the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from csr.config import CSRConfig
from csr.pairs import PromptOutcome, generate_pairs
from csr.search import Candidate, Prefix, Relevance, SearchRequest
from services.generator.engine import VLMEngine

LoadImage = Callable[[str], object]


def search_prompts(
    requests: Sequence[SearchRequest],
    engine: VLMEngine,
    relevance: Relevance,
    config: CSRConfig,
    load_image: LoadImage,
    iteration: int,
    adapter_version: str,
) -> list[PromptOutcome]:
    """One lockstep search over `requests`; every prompt is encoded exactly once."""
    try:
        engine.encode_prompts([(r.prompt_id, r.prompt, load_image(r.image_ref)) for r in requests])
        return generate_pairs(
            requests, engine.expand, relevance, config, iteration, adapter_version
        )
    finally:
        for request in requests:
            engine.release(request.prompt_id)


class ReferenceExpander:
    """The authors' loop: every tree node re-encodes image and prompt and is searched alone.

    Like `generate(num_beams=n)` in the released code (transformers 4.x expands the inputs to
    n rows before the first forward), the image and prompt run through the model as num_beams
    rows; the search then grows the node's beams from that cache. `prompt_rows=1` is a
    stricter reference that encodes them once per node."""

    def __init__(self, engine: VLMEngine, load_image: LoadImage, prompt_rows: int | None = None):
        self.engine, self.load_image = engine, load_image
        self.prompt_rows = prompt_rows or engine.search.num_beams

    def __call__(self, prefixes: Sequence[Prefix]) -> list[list[Candidate]]:
        out = []
        rows = self.prompt_rows
        for prefix in prefixes:
            request = prefix.request
            keys = [f"reference:{request.prompt_id}:{row}" for row in range(rows)]
            image = self.load_image(request.image_ref)
            self.engine.encode_prompts([(key, request.prompt, image) for key in keys])
            alias = Prefix(
                SearchRequest(keys[0], request.prompt, request.image_ref),
                prefix.sentences,
                prefix.state,
            )
            out.extend(self.engine.expand([alias]))
            for key in keys:
                self.engine.release(key)
        return out


def one_sentence_at_a_time(relevance: Relevance) -> Relevance:
    """The authors' CLIP loop: one relevance call (one forward) per sentence."""

    def score(image_ref: str, sentences: Sequence[str]) -> list[float]:
        return [value for sentence in sentences for value in relevance(image_ref, [sentence])]

    return score


def reference_pairs(
    requests: Sequence[SearchRequest],
    engine: VLMEngine,
    relevance: Relevance,
    config: CSRConfig,
    load_image: LoadImage,
    iteration: int,
    adapter_version: str,
    prompt_rows: int | None = None,
) -> list[PromptOutcome]:
    """The same pairs as search_prompts, computed prompt by prompt the authors' way."""
    expand = ReferenceExpander(engine, load_image, prompt_rows)
    outcomes = []
    for request in requests:
        outcomes.extend(
            generate_pairs(
                [request],
                expand,
                one_sentence_at_a_time(relevance),
                config,
                iteration,
                adapter_version,
            )
        )
    return outcomes
