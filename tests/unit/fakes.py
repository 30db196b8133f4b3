"""Scripted stand-ins for the model step and the reward service, recording their calls."""

from __future__ import annotations

from collections.abc import Sequence

from csr.search import Candidate, Prefix


def cand(text: str, *logprobs: float, ends: bool = False) -> Candidate:
    return Candidate(text, tuple(logprobs), ends_response=ends)


class ScriptedModel:
    """expand(): the candidates scripted for each prefix text (none if unscripted)."""

    def __init__(self, script: dict[str, list[Candidate]]):
        self.script = script
        self.calls: list[list[str]] = []

    def __call__(self, prefixes: Sequence[Prefix]) -> list[list[Candidate]]:
        self.calls.append([p.text for p in prefixes])
        return [list(self.script.get(p.text, [])) for p in prefixes]


class ScriptedRelevance:
    """relevance(): R_I from a table of sentences, per image."""

    def __init__(self, table: dict[str, float]):
        self.table = table
        self.calls: list[tuple[str, list[str]]] = []

    def __call__(self, image_ref: str, sentences: Sequence[str]) -> list[float]:
        self.calls.append((image_ref, list(sentences)))
        return [self.table[s] for s in sentences]
