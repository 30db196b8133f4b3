"""The batched, KV-cached expansion engine against a from-scratch reference, on tiny random
VLMs of both supported architectures: LLaVA (1-D positions) and Qwen2-VL (3-D M-RoPE)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from csr.config import SearchConfig
from csr.search import Prefix, SearchRequest
from services.generator.beam import diverse_beam_search
from services.generator.engine import VLMEngine
from tests.models.llava import build_tiny_llava
from tests.models.qwen import build_tiny_qwen2_vl

SEARCH = SearchConfig(num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_new_tokens=6)


@pytest.fixture(scope="module", params=["llava", "qwen2-vl"])
def llava(request):
    """A tiny VLM of each architecture (named llava for history: most tests began there)."""
    if request.param == "llava":
        return build_tiny_llava(seed=3)
    return build_tiny_qwen2_vl(seed=3)


def images():
    return {
        "red": Image.new("RGB", (40, 40), (220, 20, 20)),
        "blue": Image.new("RGB", (48, 32), (20, 20, 220)),
    }


class FromScratch:
    """Every step re-encodes image + prompt + all tokens of every row: no cache, no batching."""

    def __init__(self, engine: VLMEngine, rows: list[tuple[str, str, tuple[int, ...]]]):
        self.engine, self.rows = engine, rows  # (prompt text, image key, tokens)

    def logprobs(self, prompt: str, image_key: str, tokens: tuple[int, ...]) -> torch.Tensor:
        inputs = dict(
            self.engine.processor(
                images=images()[image_key],
                text=self.engine.prompt_text(prompt),
                return_tensors="pt",
                add_special_tokens=False,
            )
        )
        extra = torch.tensor([tokens], dtype=torch.long)
        # The whole sequence in one forward: the model computes every position itself
        # (for Qwen2-VL, its own 3-D rope index), independently of the engine's offsets.
        for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
            if key in inputs:
                tail = (
                    extra
                    if key == "input_ids"
                    else (
                        torch.ones_like(extra)
                        if key == "attention_mask"
                        else torch.zeros_like(extra)
                    )
                )
                inputs[key] = torch.cat([inputs[key], tail.to(inputs[key].dtype)], dim=1)
        with torch.inference_mode():
            logits = self.engine.model(**inputs).logits
        return self.engine._logprobs(logits[0, -1])

    def first(self) -> torch.Tensor:
        return torch.stack([self.logprobs(*row) for row in self.rows])

    def step(self, parents, tokens):
        self.rows = [
            (p, k, t + (tok,))
            for (p, k, t), tok in zip([self.rows[i] for i in parents.tolist()], tokens.tolist())
        ]
        return torch.stack([self.logprobs(*row) for row in self.rows])


def test_batched_cached_expansion_equals_from_scratch_search(llava):
    model, processor = llava
    engine = VLMEngine(model, processor, SEARCH)
    requests = [
        SearchRequest("a", "describe the image .", "red"),
        SearchRequest("b", "what is there ?", "blue"),
    ]
    for request in requests:
        engine.encode_prompt(request.prompt_id, request.prompt, images()[request.image_ref])
    first_tokens = processor.tokenizer("there is a", add_special_tokens=False)["input_ids"]
    prefixes = [
        Prefix(requests[0], (), None),
        Prefix(requests[1], (), tuple(first_tokens)),
        Prefix(requests[0], (), tuple(first_tokens[:1])),
    ]
    got = engine.expand(prefixes)
    reference = FromScratch(
        engine, [(p.request.prompt, p.request.image_ref, tuple(p.state or ())) for p in prefixes]
    )
    expected = diverse_beam_search(reference.first(), reference.step, engine.stop_ids, 4, 2, 1.0, 6)
    assert len(got) == 3
    eos = processor.tokenizer.eos_token_id
    for prefix, candidates, hypotheses in zip(prefixes, got, expected):
        before = len(prefix.state or ())
        new_tokens = [c.state[before:] + ((eos,) if c.ends_response else ()) for c in candidates]
        assert new_tokens == [h.tokens for h in hypotheses]
        for c, h in zip(candidates, hypotheses):
            assert c.token_logprobs == pytest.approx(h.logprobs, abs=1e-4)


def test_candidates_carry_text_and_state_for_the_next_step(llava):
    model, processor = llava
    engine = VLMEngine(model, processor, SEARCH)
    request = SearchRequest("a", "describe the image .", "red")
    engine.encode_prompt("a", request.prompt, images()["red"])
    [candidates] = engine.expand([Prefix(request, (), None)])
    assert len(candidates) == 4
    for c in candidates:
        assert all(lp <= 0 for lp in c.token_logprobs)
        assert len(c.token_logprobs) >= len(c.state)
        assert processor.tokenizer.decode(list(c.state)).strip() == c.text.strip()
    assert engine.forwards <= 1 + SEARCH.max_new_tokens


def test_engine_and_reference_loop_give_identical_pairs(llava, start_worker):
    from dataclasses import replace

    from csr.config import CSRConfig
    from services.generator.pipeline import reference_pairs, search_prompts
    from services.reward.client import RewardClient

    model, processor = llava
    config = replace(CSRConfig(), search=replace(SEARCH, max_sentences=3, max_new_tokens=5))
    engine = VLMEngine(model, processor, config.search)
    worker = start_worker("open_clip")
    pictures = images()
    requests = [
        SearchRequest(f"p{i}", prompt, key)
        for i, (prompt, key) in enumerate(
            [("describe the image .", "red"), ("what is there ?", "blue"), ("describe .", "blue")]
        )
    ]
    with RewardClient(worker.grpc_address) as client:

        def relevance(image_ref, sentences):
            import io

            buffer = io.BytesIO()
            pictures[image_ref].save(buffer, "PNG")
            return [s.relevance for s in client.score(buffer.getvalue(), sentences)]

        fast = search_prompts(requests, engine, relevance, config, pictures.__getitem__, 1, "base")
        slow = reference_pairs(requests, engine, relevance, config, pictures.__getitem__, 1, "base")

    # Same pairs; the rewards agree to float rounding (batched and single forwards differ ~1e-7).
    def key(outcome):
        r = outcome.record
        return None if r is None else (r.pair_id, r.chosen, r.rejected)

    assert [key(o) for o in fast] == [key(o) for o in slow]
    for a, b in zip(fast, slow):
        if a.record is not None:
            assert a.record.chosen_reward == pytest.approx(b.record.chosen_reward, rel=1e-5)
            assert a.record.rejected_reward == pytest.approx(b.record.rejected_reward, rel=1e-5)
    assert sum(o.record is not None for o in fast) >= 2
    assert all(r.chosen != r.rejected for r in (o.record for o in fast) if r is not None)


def test_sampling_draws_reproducibly_whatever_is_batched_with_it(llava):
    model, processor = llava
    search = SearchConfig(expansion="sample", num_beams=4, max_new_tokens=6, seed=11)
    engine = VLMEngine(model, processor, search)
    requests = [
        SearchRequest("a", "describe the image .", "red"),
        SearchRequest("b", "what is there ?", "blue"),
    ]
    for request in requests:
        engine.encode_prompt(request.prompt_id, request.prompt, images()[request.image_ref])
    [alone] = engine.expand([Prefix(requests[1], (), None)])
    both = engine.expand([Prefix(requests[0], (), None), Prefix(requests[1], (), None)])
    assert [c.state for c in both[1]] == [c.state for c in alone]  # the same draws
    for batched, single in zip(both[1], alone):  # batched forwards differ by float rounding
        assert batched.token_logprobs == pytest.approx(single.token_logprobs, abs=1e-5)
    assert len(alone) == 4 and all(lp <= 0 for c in alone for lp in c.token_logprobs)
    other = VLMEngine(
        model, processor, SearchConfig(expansion="sample", num_beams=4, max_new_tokens=6, seed=12)
    )
    other.encode_prompt("b", requests[1].prompt, images()["blue"])
    [reseeded] = other.expand([Prefix(requests[1], (), None)])
    assert [c.state for c in reseeded] != [c.state for c in alone]


def test_sampled_tokens_carry_the_models_own_logprobs(llava):
    model, processor = llava
    engine = VLMEngine(
        model,
        processor,
        SearchConfig(expansion="sample", num_beams=3, max_new_tokens=5, temperature=0.7),
    )
    request = SearchRequest("a", "describe the image .", "red")
    engine.encode_prompt("a", request.prompt, images()["red"])
    [candidates] = engine.expand([Prefix(request, (), None)])
    reference = FromScratch(engine, [])
    eos = processor.tokenizer.eos_token_id
    for c in candidates:
        tokens = c.state + ((eos,) if c.ends_response else ())
        expected = [
            float(reference.logprobs(request.prompt, "red", tokens[:i])[t])
            for i, t in enumerate(tokens)
        ]
        assert list(c.token_logprobs) == pytest.approx(expected, abs=1e-4)


def test_prompts_encoded_together_expand_like_prompts_encoded_alone(llava):
    model, processor = llava
    requests = [
        SearchRequest("a", "describe .", "red"),
        SearchRequest("b", "what is there in the image ?", "blue"),
    ]  # padding
    together, alone = VLMEngine(model, processor, SEARCH), VLMEngine(model, processor, SEARCH)
    together.encode_prompts([(r.prompt_id, r.prompt, images()[r.image_ref]) for r in requests])
    for r in requests:
        alone.encode_prompt(r.prompt_id, r.prompt, images()[r.image_ref])
    assert together.forwards == 1 and alone.forwards == 2
    lengths = [alone._prompt(r.prompt_id).length for r in requests]
    assert lengths[0] < lengths[1]  # the first row really is left-padded
    for r in requests:
        assert together._prompt(r.prompt_id).length == alone._prompt(r.prompt_id).length
        assert (
            together._prompt(r.prompt_id).next_position == alone._prompt(r.prompt_id).next_position
        )
    prefixes = [Prefix(r, (), None) for r in requests]
    for got, expected in zip(together.expand(prefixes), alone.expand(prefixes)):
        assert [c.state for c in got] == [c.state for c in expected]
        for c, e in zip(got, expected):
            assert c.token_logprobs == pytest.approx(e.token_logprobs, abs=1e-4)


def test_prompt_encoding_computes_logits_of_the_last_position_only(llava):
    model, processor = llava
    engine = VLMEngine(model, processor, SEARCH)
    shapes = []
    hook = model.get_output_embeddings().register_forward_hook(
        lambda module, args, out: shapes.append(tuple(out.shape))
    )
    try:
        engine.encode_prompts(
            [("a", "describe .", images()["red"]), ("b", "what is there ?", images()["blue"])]
        )
    finally:
        hook.remove()
    assert shapes == [(2, 1, model.config.get_text_config().vocab_size)]
    reference = FromScratch(engine, [])  # each prompt alone, logits at every position
    for key, prompt, image in (("a", "describe .", "red"), ("b", "what is there ?", "blue")):
        expected = reference.logprobs(prompt, image, ())
        torch.testing.assert_close(engine._prompt(key).next_logprobs, expected, atol=1e-5, rtol=0)


def test_a_batch_leaves_no_keys_or_values_behind(llava):
    import weakref
    from dataclasses import replace

    from csr.config import CSRConfig
    from services.generator.pipeline import search_prompts

    model, processor = llava
    config = replace(CSRConfig(), search=replace(SEARCH, max_sentences=2, max_new_tokens=4))
    engine = VLMEngine(model, processor, config.search)
    requests = [SearchRequest("a", "describe .", "red"), SearchRequest("b", "what ?", "blue")]
    seen = []
    expand = engine.expand

    def watched(prefixes):
        if not seen:
            block = engine._prompt("a").block
            seen.append((weakref.ref(block.keys[0]), block.nbytes))
        candidates = expand(prefixes)
        seen.append(engine.held_kv_bytes())  # the expansion's buffers are gone
        return candidates

    engine.expand = watched
    relevance = lambda image_ref, sentences: [0.5] * len(sentences)  # noqa: E731
    search_prompts(requests, engine, relevance, config, images().__getitem__, 1, "base")
    (keys, block_bytes), *after_each = seen
    assert after_each and all(held == block_bytes for held in after_each)
    assert keys() is None and engine.held_kv_bytes() == 0 and not engine._prompts
