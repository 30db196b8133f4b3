"""The generator's expansion engine: the core's `expand` on a Hugging Face VLM, batched.

Owns the model side of the sentence-level search:
- the prompts of a batch (chat template + image) are encoded in one forward (left-padded,
  logits of the last position only); their KV cache is kept as one block until every prompt
  of it is released, so a kept prefix never re-encodes the image or prompt;
- one `expand` call grows every live prefix of every prompt: the prefixes' own sentence tokens
  run in one forward, and the diverse group beam search then advances all beams of all
  prefixes with one forward per token step. Rows read their prompt's and their prefix's keys
  where they are held, once (services.generator.kv_cache); only their new tokens are theirs;
- the KV bytes a batch needs, from the model config and the prompt lengths
  (services.generator.memory), which the generator fills its batches by.

Does not know about the reward, Redis or files: images arrive as PIL images, and the
candidate sentences go back to the core. A candidate's `state` is the tuple of token ids
generated so far, which the next expansion feeds on top of the prompt cache.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from csr.config import SearchConfig
from csr.search import Candidate, Prefix
from services.generator.beam import Hypothesis, diverse_beam_search
from services.generator.kv_cache import (
    CACHE_KWARG,
    ExpansionCache,
    KVBlock,
    shared_prefix_attention_on,
)
from services.generator.memory import search_kv_bytes
from services.generator.sampling import prefix_generator, sample_sentences
from services.generator.tokens import (
    SentenceEnds,
    banned_token_ids,
    logit_columns,
    sentence_end_ids,
)
from services.runtime.vlm import chat_prompt


@dataclass
class _PromptCache:
    block: KVBlock  # the batch's encoding, shared with the prompts encoded with this one
    row: int  # this prompt's row of it
    next_logprobs: torch.Tensor  # (vocab,)
    length: int  # cache positions
    next_position: int  # position id of the first generated token (M-RoPE models: < length)


def stop_token_ids(tokenizer, marker: str) -> set[int]:
    """Every token whose own text can end a sentence (tokens.sentence_end_ids)."""
    return sentence_end_ids(tokenizer, marker)


class VLMEngine:
    """Expansion for one model; not thread-safe (one search loop drives it)."""

    def __init__(self, model, processor, search: SearchConfig):
        self.model, self.processor, self.search = model.eval(), processor, search
        self.tokenizer = processor.tokenizer
        self.device = next(model.parameters()).device
        self.eos_ids = {self.tokenizer.eos_token_id}
        # tokens that may end a sentence, and the check that one does (not after "Mr")
        self.sentence_end = SentenceEnds(self.tokenizer, search.sentence_end, self.eos_ids)
        self.stop_ids = set(self.sentence_end.token_ids)
        # special tokens but EOS, and the logit columns past the tokenizer (tokens.py)
        self._banned = banned_token_ids(self.tokenizer, logit_columns(model), self.eos_ids)
        self._prompts: dict[str, _PromptCache] = {}
        # Qwen2-VL-style models keep the offset between cache length and text position here
        self._rope_holder = next((m for m in model.modules() if hasattr(m, "rope_deltas")), None)
        self._held: weakref.WeakSet = weakref.WeakSet()  # KV blocks and expansion caches alive
        self.forwards = 0  # model forward calls, for benchmarks
        self.prompt_forwards = 0  # of which encoded prompts
        self.step_rows = 0  # beam rows advanced by one token, summed over steps
        self.decode_seconds = 0.0  # time in the token-by-token search (forwards + bookkeeping)
        self.encode_seconds = 0.0  # time encoding prompts
        self.expand_seconds = 0.0  # time in expand (prefix feeds, search, candidates)

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if self._banned.device != logprobs.device:
            self._banned = self._banned.to(logprobs.device)
        logprobs[..., self._banned] = float("-inf")  # e.g. never <image>
        return logprobs

    def prompt_text(self, prompt: str) -> str:
        return chat_prompt(self.processor, prompt)

    # -- memory -----------------------------------------------------------------------------------
    @property
    def kv_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def prompt_length(self, prompt: str, image) -> int:
        """Cache positions the prompt (with its image) takes."""
        inputs = self.processor(
            images=[image], text=[self.prompt_text(prompt)], add_special_tokens=False
        )
        return len(inputs["input_ids"][0])

    def search_kv_bytes(self, prompt_lengths: Sequence[int]) -> int:
        """The most KV bytes searching these prompts together holds at once."""
        return search_kv_bytes(self.model.config, self.kv_dtype, prompt_lengths, self.search)

    def held_kv_bytes(self) -> int:
        """Bytes of keys and values the engine still holds (prompt blocks, expansions)."""
        return sum(item.nbytes for item in list(self._held))

    def free_memory(self) -> None:
        """Hand the allocator's cached blocks back to the device (between batches)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- prompts ----------------------------------------------------------------------------------
    def encode_prompt(self, prompt_id: str, prompt: str, image) -> None:
        """Run the image and prompt through the model once; keep the cache for the search."""
        self.encode_prompts([(prompt_id, prompt, image)])

    @torch.inference_mode()
    def encode_prompts(self, items) -> None:
        """encode_prompt for many (prompt_id, prompt, image) in one forward, left-padded and
        masked; their keys and values stay where the forward left them, as one block."""
        items = list(items)
        started = time.perf_counter()
        inputs = self.processor(
            images=[image for _, _, image in items],
            text=[self.prompt_text(prompt) for _, prompt, _ in items],
            return_tensors="pt",
            add_special_tokens=False,
            padding=True,
            padding_side="left",
        )
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        mask = inputs["attention_mask"]
        if self._rope_holder is None:  # 1-D positions: count only each row's own tokens
            inputs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        # M-RoPE models place padded rows themselves; only the last position's logits are needed
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        self.forwards += 1
        self.prompt_forwards += 1
        layers = out.cache.layers
        block = KVBlock([x.keys for x in layers], [x.values for x in layers], mask.bool())
        self._held.add(block)
        logprobs = self._logprobs(out.logits[:, -1])
        deltas = getattr(self._rope_holder, "rope_deltas", None)
        lengths = mask.sum(-1).tolist()
        for row, (prompt_id, _, _) in enumerate(items):
            offset = int(deltas.reshape(-1)[row]) if deltas is not None else 0
            self._prompts[prompt_id] = _PromptCache(
                block, row, logprobs[row], lengths[row], lengths[row] + offset
            )
        self.encode_seconds += time.perf_counter() - started

    def release(self, prompt_id: str) -> None:
        """Forget a prompt; its block goes once every prompt encoded with it is released."""
        self._prompts.pop(prompt_id, None)

    def _prompt(self, prompt_id: str) -> _PromptCache:
        try:
            return self._prompts[prompt_id]
        except KeyError as e:
            raise KeyError(f"prompt {prompt_id!r} was not encoded: call encode_prompt first") from e

    # -- expansion --------------------------------------------------------------------------------
    def expand(self, prefixes: Sequence[Prefix]) -> list[list[Candidate]]:
        """The core's `expand`: num_beams candidate next sentences for every prefix."""
        if not prefixes:
            return []
        began = time.perf_counter()
        generated = [tuple(p.state or ()) for p in prefixes]
        prompts = [self._prompt(p.request.prompt_id) for p in prefixes]
        with torch.inference_mode(), shared_prefix_attention_on(self.model):
            first, stepper = self._start(prompts, generated)
            started = time.perf_counter()
            hypotheses = self._search(first, stepper, prefixes, generated)
            self.decode_seconds += time.perf_counter() - started
        candidates = [self._candidates(g, hyps) for g, hyps in zip(generated, hypotheses)]
        self.expand_seconds += time.perf_counter() - began
        return candidates

    def _search(self, first, stepper, prefixes, generated) -> list[list[Hypothesis]]:
        s = self.search
        if s.expansion == "sample":
            generators = [
                prefix_generator(s.seed, f"{p.request.prompt_id}:{g}", self.device)
                for p, g in zip(prefixes, generated)
            ]
            return sample_sentences(
                first,
                stepper,
                self.stop_ids,
                s.num_beams,
                s.max_new_tokens,
                s.temperature,
                generators,
                ends=self.sentence_end.ends,
            )
        groups = s.num_beam_groups if s.expansion == "group-beam" else 1
        penalty = s.diversity_penalty if s.expansion == "group-beam" else 0.0
        return diverse_beam_search(
            first,
            stepper,
            self.stop_ids,
            s.num_beams,
            groups,
            penalty,
            s.max_new_tokens,
            ends=self.sentence_end.ends,
        )

    def _start(self, prompts: list[_PromptCache], generated: list[tuple[int, ...]]):
        """The expansion's cache; each prefix's own tokens fed; log-probs + stepper."""
        cache = ExpansionCache(
            [(p.block, p.row) for p in prompts],
            max_rows=len(prompts) * self.search.num_beams,
            new_tokens=self.search.max_new_tokens,
            device=self.device,
        )
        self._held.add(cache)
        positions = [p.next_position + len(g) for p, g in zip(prompts, generated)]
        first = torch.stack([p.next_logprobs for p in prompts])
        if any(generated):
            first = self._feed_generated(cache, prompts, generated, first)
        return first, _Stepper(self, cache, positions)

    def _feed_generated(self, cache, prompts, generated, first):
        longest = max(len(g) for g in generated)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(prompts), longest), pad, dtype=torch.long)
        pos = torch.zeros((len(prompts), longest), dtype=torch.long)
        for row, (p, g) in enumerate(zip(prompts, generated)):
            if g:
                ids[row, longest - len(g) :] = torch.tensor(g)
                pos[row, longest - len(g) :] = torch.arange(
                    p.next_position, p.next_position + len(g)
                )
        cache.feed([len(g) for g in generated], longest)
        out = self.model(
            input_ids=ids.to(self.device),
            position_ids=pos.to(self.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **{CACHE_KWARG: cache},
        )
        cache.fed()
        self.forwards += 1
        fed = self._logprobs(out.logits[:, -1])
        has_tokens = torch.tensor([bool(g) for g in generated], device=first.device)
        return torch.where(has_tokens[:, None], fed, first)

    def _candidates(
        self, generated: tuple[int, ...], hypotheses: list[Hypothesis]
    ) -> list[Candidate]:
        before = self.tokenizer.decode(list(generated), skip_special_tokens=True)
        return [self._candidate(generated, before, h) for h in hypotheses]

    def _candidate(
        self, generated: tuple[int, ...], before: str, hypothesis: Hypothesis
    ) -> Candidate:
        tokens = hypothesis.tokens
        ends = tokens[-1] in self.eos_ids
        sentence = tokens[:-1] if ends else tokens
        after = self.tokenizer.decode(list(generated + sentence), skip_special_tokens=True)
        text = (
            after[len(before) :]
            if after.startswith(before)
            else (" " + self.tokenizer.decode(list(sentence), skip_special_tokens=True))
        )
        return Candidate(
            text, tuple(hypothesis.logprobs), ends_response=ends, state=generated + sentence
        )


class _Stepper:
    """Advances beam rows: each row continues its parent with one token, in one forward."""

    def __init__(self, engine: VLMEngine, cache: ExpansionCache, positions: list[int]):
        self.engine, self.cache, self.positions = engine, cache, positions

    def __call__(self, parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        engine = self.engine
        parent_rows = parents.tolist()
        self.cache.step(parent_rows)
        self.positions = [self.positions[p] for p in parent_rows]
        out = engine.model(
            input_ids=tokens.to(engine.device)[:, None],
            position_ids=torch.tensor(self.positions, device=engine.device)[:, None],
            cache=self.cache,
            use_cache=True,
            **{CACHE_KWARG: self.cache},
        )
        self.cache.stepped()
        self.positions = [p + 1 for p in self.positions]
        engine.forwards += 1
        engine.step_rows += len(parent_rows)
        return engine._logprobs(out.logits[:, -1])
