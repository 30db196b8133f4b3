"""The engine never emits a special token or a logit column past the tokenizer, even when the
model prefers them: tiny models of both architectures with the real kinds of tokenizer, whose
logit rows are padded past the tokenizer as the real checkpoints' are."""

from __future__ import annotations

import pytest

from csr.config import SearchConfig
from csr.search import Prefix, SearchRequest
from services.generator.engine import VLMEngine
from tests.models.real_kinds import build_llava, build_qwen2_vl, photo


@pytest.fixture(scope="module", params=["llava", "qwen2-vl"])
def tiny(request):
    build = build_llava if request.param == "llava" else build_qwen2_vl
    return build(text_layers=1, vision_layers=2, tiny=True)


def _luring(model, columns):
    def hook(module, args, output):
        output[..., columns] = output.max(dim=-1, keepdim=True).values + 5.0
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("expansion", ["group-beam", "sample"])
def test_special_tokens_and_padding_columns_are_never_emitted(tiny, expansion):
    model, processor = tiny
    tokenizer = processor.tokenizer
    columns = model.config.get_text_config().vocab_size
    assert columns > len(tokenizer)  # padded past the tokenizer, as LLaVA's and Qwen's are
    specials = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    lured = [len(tokenizer), columns - 1, *sorted(specials - {tokenizer.eos_token_id})]
    engine = VLMEngine(model, processor, SearchConfig(max_new_tokens=5, expansion=expansion))
    handle = _luring(model, lured)
    try:
        engine.encode_prompt("p", "Describe this image.", photo(64, 48))
        [candidates] = engine.expand([Prefix(SearchRequest("p", "d", "i"), (), None)])
    finally:
        handle.remove()
    emitted = {token for c in candidates for token in c.state}
    assert emitted, "every candidate ended at once"
    assert not emitted & set(lured)
    assert all(t < len(tokenizer) for t in emitted)


def test_a_period_after_an_abbreviation_does_not_end_the_sentence(tiny):
    """The model is made to write " Mr. Smith is here." token by token, then EOS: the
    candidate is the whole sentence, not "Mr." (where a period ends nothing)."""
    model, processor = tiny
    tokenizer = processor.tokenizer
    script = tokenizer.encode(" Mr. Smith is here.", add_special_tokens=False)
    script.append(tokenizer.eos_token_id)
    forwards = []

    def hook(module, args, output):
        token = script[min(len(forwards), len(script) - 1)]
        forwards.append(token)
        output[..., token] = output.max(dim=-1, keepdim=True).values + 20.0
        return output

    search = SearchConfig(expansion="beam", num_beams=1, num_beam_groups=1, max_new_tokens=16)
    engine = VLMEngine(model, processor, search)
    handle = model.get_output_embeddings().register_forward_hook(hook)
    try:
        engine.encode_prompt("p", "Describe this image.", photo(64, 48))
        [candidates] = engine.expand([Prefix(SearchRequest("p", "d", "i"), (), None)])
    finally:
        handle.remove()
    assert candidates[0].text.strip() == "Mr. Smith is here."
