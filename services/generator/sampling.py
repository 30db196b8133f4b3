"""Sampled expansion: num_samples candidate sentences per prefix drawn at a temperature.

Owns the "sample" expansion mode (SearchConfig.expansion), the alternative to diverse group
beam search: every prefix grows num_samples independent rows, each drawing its next token from
softmax(log-probs / temperature) until a stop token or the token cap. Draws are reproducible
and independent of batching: each prefix has its own random generator, seeded from the
search seed and a key that names the prefix (prompt and tokens so far), so the same prefix
gets the same samples whatever else is expanded with it.

Like `beam.diverse_beam_search` it does not know the model: `step(parents, tokens)` advances
rows and returns their next-token log-probs. The draws are made where the log-probs are (the
model's device); only the drawn tokens and their log-probs cross to the host. Hypotheses
carry the model's own log-probs (at temperature 1, what R_T needs) and zero penalties.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence

import torch

from services.generator.beam import Ends, Hypothesis, Step


def prefix_generator(seed: int, key: str, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` seeded from the search seed and the prefix's key. The same seed
    and key draw the same samples on one kind of device (CPU and CUDA generators differ)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def sample_sentences(
    first_logprobs: torch.Tensor,
    step: Step,
    stop_ids: Collection[int],
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    generators: Sequence[torch.Generator],
    ends: Ends | None = None,
) -> list[list[Hypothesis]]:
    """num_samples hypotheses per prefix (row of first_logprobs), best mean log-prob first.
    `ends(tokens)`, if given, confirms that a stop token really ends the sample."""
    if len(generators) != first_logprobs.shape[0]:
        raise ValueError(f"{len(generators)} generators for {first_logprobs.shape[0]} prefixes")
    owners = [p for p in range(len(generators)) for _ in range(num_samples)]
    rows = list(owners)  # row of the current log-probs each live sample reads
    tokens: list[list[int]] = [[] for _ in owners]
    logprobs: list[list[float]] = [[] for _ in owners]
    done: list[Hypothesis | None] = [None] * len(owners)
    current = first_logprobs.float()  # stays on the model's device
    for generated in range(1, max_new_tokens + 1):
        live = [s for s in range(len(owners)) if done[s] is None]
        drawn = _draw(current, rows, live, owners, temperature, generators)
        own = current[torch.tensor([rows[s] for s in live], device=current.device), drawn]
        # only the drawn tokens and their log-probs come to the host (float64: both exact)
        picks, chosen = torch.stack([drawn.double(), own.double()]).cpu().tolist()
        for s, token, logprob in zip(live, (int(t) for t in picks), chosen):
            tokens[s].append(token)
            logprobs[s].append(logprob)
            stopped = token in stop_ids and (ends is None or ends(tokens[s]))
            if stopped or generated == max_new_tokens:
                done[s] = _hypothesis(tokens[s], logprobs[s], stopped)
        running = [s for s in live if done[s] is None]
        if not running:
            break
        parents = torch.tensor([rows[s] for s in running])
        current = step(parents, torch.tensor([tokens[s][-1] for s in running])).float()
        for new_row, s in enumerate(running):
            rows[s] = new_row
    per_prefix: list[list[Hypothesis]] = [[] for _ in generators]
    for s, owner in enumerate(owners):
        per_prefix[owner].append(done[s])
    return [sorted(hyps, key=lambda h: -h.score) for hyps in per_prefix]


def _draw(
    current: torch.Tensor,
    rows: list[int],
    live: list[int],
    owners: list[int],
    temperature: float,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """One token per live sample; each prefix's samples draw from that prefix's generator, on
    the device of the log-probs (generators made there: prefix_generator(..., device))."""
    picks: list[torch.Tensor] = []
    start = 0
    while start < len(live):
        owner = owners[live[start]]
        end = start
        while end < len(live) and owners[live[end]] == owner:
            end += 1
        own_rows = current[[rows[s] for s in live[start:end]]]
        generator = generators[owner]
        noise = torch.rand(own_rows.shape, generator=generator, device=generator.device)
        gumbel = -torch.log(-torch.log(noise.clamp_(min=1e-20)))  # argmax(logits/T + Gumbel)
        picks.append((own_rows / temperature + gumbel.to(own_rows.device)).argmax(dim=-1))
        start = end  # ... is distributed as softmax(logits/T)
    return torch.cat(picks)


def _hypothesis(tokens: list[int], logprobs: list[float], stopped: bool) -> Hypothesis:
    return Hypothesis(
        tuple(tokens), tuple(logprobs), (0.0,) * len(tokens), sum(logprobs) / len(tokens), stopped
    )
