"""A fake captioner and a fake CLIP over a one-scene world, to show the core at work.

Owns nothing the services use: it exists so that `csr demo` can run the real search,
selection and record code with no model. The fake captioner has a co-occurrence prior (a
circle makes it believe in a square, a triangle in a cross), so its likeliest caption
mentions an absent object; the fake CLIP scores present objects high and absent ones low.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from csr.search import Candidate, Prefix

SHAPES = ("circle", "square", "triangle", "cross", "diamond", "ring")
PRIOR_PARTNER = {"circle": "square", "triangle": "cross", "diamond": "ring"}


@dataclass(frozen=True)
class FakeWorld:
    """One scene (its present objects) and the two fake models that look at it."""

    present: frozenset[str]
    num_candidates: int = 5

    def _belief(self, shape: str, mentioned: set[str]) -> float:
        """The captioner's probability of mentioning `shape` next (unnormalised)."""
        if shape in self.present:
            return 0.30
        if any(PRIOR_PARTNER.get(m) == shape for m in mentioned | set(self.present)):
            return 0.45  # the prior: its partner is in view, so it 'sees' this one too
        return 0.02

    def expand(self, prefixes: Sequence[Prefix]) -> list[list[Candidate]]:
        """Candidates 'There is a {shape}.' for unmentioned shapes, plus ending the caption."""
        return [self._candidates(prefix) for prefix in prefixes]

    def _candidates(self, prefix: Prefix) -> list[Candidate]:
        mentioned = {shape for shape in SHAPES if shape in prefix.text}
        weights = {
            shape: self._belief(shape, mentioned) for shape in SHAPES if shape not in mentioned
        }
        end_weight = 0.25 * len(mentioned)
        total = sum(weights.values()) + end_weight
        ranked = sorted(weights.items(), key=lambda kv: -kv[1])
        out = [
            Candidate(
                f" There is a {shape}.", (-0.05, -0.02, -0.01, math.log(weight / total), -0.01)
            )
            for shape, weight in ranked
        ]
        if end_weight:
            out.append(Candidate("", (math.log(end_weight / total),), ends_response=True))
        out.sort(key=lambda c: -sum(c.token_logprobs))
        return out[: self.num_candidates]

    def relevance(self, image_ref: str, sentences: Sequence[str]) -> list[float]:
        """R_I: 31 for a present object, 19 for an absent one (a CLIP is never certain)."""
        return [
            31.0 if any(s in sentence and s in self.present for s in SHAPES) else 19.0
            for sentence in sentences
        ]
