"""From requests to preference records: search, selection and record building in one call.

Owns the composition only; every rule lives in csr.search, csr.selection and csr.records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from csr.config import CSRConfig
from csr.records import PreferenceRecord, build_record
from csr.search import Expand, Relevance, SearchRequest, SearchResult, run_search
from csr.selection import NoPair, PreferencePair, select_pair


@dataclass(frozen=True)
class PromptOutcome:
    """What one prompt produced: a record, or a NoPair with its reason."""

    search: SearchResult
    pair: PreferencePair | NoPair
    record: PreferenceRecord | None


def generate_pairs(
    requests: Sequence[SearchRequest],
    expand: Expand,
    relevance: Relevance,
    config: CSRConfig,
    iteration: int,
    adapter_version: str,
) -> list[PromptOutcome]:
    """Search every request in lockstep, pick each one's pair and build its record."""
    results = run_search(
        requests, expand, relevance, config.search, config.reward, config.selection
    )
    outcomes = []
    for result in results:
        pair = select_pair(
            result.finished,
            config.selection.aggregation,
            config.selection.min_margin,
            config.selection.min_sentence_gap,
            config.selection.gap_sentences,
        )
        record = (
            build_record(result.request, pair, config, iteration, adapter_version)
            if isinstance(pair, PreferencePair)
            else None
        )
        outcomes.append(PromptOutcome(result, pair, record))
    return outcomes
