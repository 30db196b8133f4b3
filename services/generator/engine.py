"""The generator's expansion engine: the core's `expand` on a Hugging Face VLM, batched.

Owns the model side of the sentence-level search:
- each prompt (chat template + image) is encoded once; its KV cache and next-token
  log-probs are kept until `release`, so a kept prefix never re-encodes the image or prompt;
- one `expand` call grows every live prefix of every prompt: the prompt caches are stacked
  (left-padded, masked), the prefixes' own sentence tokens run in one forward, and the diverse
  group beam search then advances all beams of all prefixes with one forward per token step.

Does not know about the reward, Redis or files: images arrive as PIL images, and the
candidate sentences go back to the core. A candidate's `state` is the tuple of token ids
generated so far, which the next expansion feeds on top of the prompt cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from csr.config import SearchConfig
from csr.search import Candidate, Prefix
from services.generator.beam import Hypothesis, diverse_beam_search
from services.generator.sampling import prefix_generator, sample_sentences
from services.generator.tokens import banned_token_ids, logit_columns, sentence_end_ids
from services.runtime.vlm import chat_prompt


@dataclass
class _PromptCache:
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # (1, heads, length, dim) per layer
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
        self.stop_ids = stop_token_ids(self.tokenizer, search.sentence_end) | self.eos_ids
        # special tokens but EOS, and the logit columns past the tokenizer (tokens.py)
        self._banned = banned_token_ids(self.tokenizer, logit_columns(model), self.eos_ids)
        self._prompts: dict[str, _PromptCache] = {}
        # Qwen2-VL-style models keep the offset between cache length and text position here
        self._rope_holder = next((m for m in model.modules() if hasattr(m, "rope_deltas")), None)
        self.forwards = 0  # model forward calls, for benchmarks
        self.prompt_forwards = 0  # of which encoded prompts
        self.step_rows = 0  # beam rows advanced by one token, summed over steps

    def _logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        logprobs[..., self._banned.to(logprobs.device)] = float("-inf")  # e.g. never <image>
        return logprobs

    def prompt_text(self, prompt: str) -> str:
        return chat_prompt(self.processor, prompt)

    def encode_prompt(self, prompt_id: str, prompt: str, image) -> None:
        """Run the image and prompt through the model once; keep the cache for the search."""
        self.encode_prompts([(prompt_id, prompt, image)])

    @torch.inference_mode()
    def encode_prompts(self, items) -> None:
        """encode_prompt for many (prompt_id, prompt, image) in one forward: left-padded and
        masked, each row then cut back to its own tokens."""
        items = list(items)
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
        out = self.model(**inputs, use_cache=True)  # M-RoPE models place padded rows themselves
        self.forwards += 1
        self.prompt_forwards += 1
        layers = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        deltas = getattr(self._rope_holder, "rope_deltas", None)
        for row, (prompt_id, _, _) in enumerate(items):
            length = int(mask[row].sum())
            own = [
                (k[row : row + 1, :, -length:], v[row : row + 1, :, -length:]) for k, v in layers
            ]
            offset = int(deltas.reshape(-1)[row]) if deltas is not None else 0
            self._prompts[prompt_id] = _PromptCache(
                own, self._logprobs(out.logits[row, -1]), length, length + offset
            )

    def release(self, prompt_id: str) -> None:
        self._prompts.pop(prompt_id, None)

    def expand(self, prefixes: Sequence[Prefix]) -> list[list[Candidate]]:
        """The core's `expand`: num_beams candidate next sentences for every prefix."""
        if not prefixes:
            return []
        generated = [tuple(p.state or ()) for p in prefixes]
        prompts = [self._prompt(p.request.prompt_id) for p in prefixes]
        with torch.inference_mode():
            first, stepper = self._start(prompts, generated)
            hypotheses = self._search(first, stepper, prefixes, generated)
        return [[self._candidate(g, h) for h in hyps] for g, hyps in zip(generated, hypotheses)]

    def _search(self, first, stepper, prefixes, generated) -> list[list[Hypothesis]]:
        s = self.search
        if s.expansion == "sample":
            generators = [
                prefix_generator(s.seed, f"{p.request.prompt_id}:{g}")
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
            )
        groups = s.num_beam_groups if s.expansion == "group-beam" else 1
        penalty = s.diversity_penalty if s.expansion == "group-beam" else 0.0
        return diverse_beam_search(
            first, stepper, self.stop_ids, s.num_beams, groups, penalty, s.max_new_tokens
        )

    def _prompt(self, prompt_id: str) -> _PromptCache:
        try:
            return self._prompts[prompt_id]
        except KeyError as e:
            raise KeyError(f"prompt {prompt_id!r} was not encoded: call encode_prompt first") from e

    def _start(self, prompts: list[_PromptCache], generated: list[tuple[int, ...]]):
        """Stack the prompt caches, feed each prefix's own tokens, return log-probs + stepper."""
        width = max(p.length for p in prompts)
        longest = max(len(g) for g in generated)
        layers = []
        for index in range(len(prompts[0].layers)):
            keys = [_left_pad(p.layers[index][0], width) for p in prompts]
            values = [_left_pad(p.layers[index][1], width) for p in prompts]
            layers.append((torch.cat(keys), torch.cat(values)))
        cache = DynamicCache(ddp_cache_data=layers)
        mask = torch.zeros(len(prompts), width + longest, dtype=torch.long, device=self.device)
        positions = torch.zeros(len(prompts), dtype=torch.long, device=self.device)
        for row, (p, g) in enumerate(zip(prompts, generated)):
            mask[row, width - p.length : width] = 1
            mask[row, width + longest - len(g) :] = 1
            positions[row] = p.next_position + len(g)
        first = torch.stack([p.next_logprobs for p in prompts])
        if longest:
            first = self._feed_generated(cache, mask, prompts, generated, longest, first)
        return first, _Stepper(self, cache, mask, positions)

    def _feed_generated(self, cache, mask, prompts, generated, longest, first):
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(prompts), longest), pad, dtype=torch.long, device=self.device)
        pos = torch.zeros((len(prompts), longest), dtype=torch.long, device=self.device)
        for row, (p, g) in enumerate(zip(prompts, generated)):
            if g:
                ids[row, longest - len(g) :] = torch.tensor(g)
                pos[row, longest - len(g) :] = torch.arange(
                    p.next_position, p.next_position + len(g)
                )
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
        )
        self.forwards += 1
        fed = self._logprobs(out.logits[:, -1])
        has_tokens = torch.tensor([bool(g) for g in generated], device=first.device)
        return torch.where(has_tokens[:, None], fed, first)

    def _candidate(self, generated: tuple[int, ...], hypothesis: Hypothesis) -> Candidate:
        tokens = hypothesis.tokens
        ends = tokens[-1] in self.eos_ids
        sentence = tokens[:-1] if ends else tokens
        before = self.tokenizer.decode(list(generated), skip_special_tokens=True)
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
    """Advances beam rows: reorder the cache to the parents, feed one token per row."""

    def __init__(self, engine: VLMEngine, cache, mask: torch.Tensor, positions: torch.Tensor):
        self.engine, self.cache, self.mask, self.positions = engine, cache, mask, positions

    def __call__(self, parents: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        device = self.engine.device
        parents = parents.to(device)
        rows = self.mask.shape[0]
        # With one beam per group (the paper's 5 beams in 5 groups) most steps keep every row
        # where it was: then the cache, mask and positions need no reordering copy.
        if len(parents) != rows or not torch.equal(parents, torch.arange(rows, device=device)):
            self.cache.reorder_cache(parents)
            self.mask, self.positions = self.mask[parents], self.positions[parents]
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(parents), 1)], dim=1)
        positions = self.positions
        out = self.engine.model(
            input_ids=tokens.to(device)[:, None],
            attention_mask=self.mask,
            position_ids=positions[:, None],
            past_key_values=self.cache,
            use_cache=True,
        )
        self.engine.forwards += 1
        self.engine.step_rows += len(parents)
        self.positions = positions + 1
        return self.engine._logprobs(out.logits[:, -1])


def _left_pad(tensor: torch.Tensor, width: int) -> torch.Tensor:
    missing = width - tensor.shape[-2]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[-2] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=-2)
