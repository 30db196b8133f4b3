"""Sentence-level beam search of CSR (the paper's Algorithm 1), over two injected callables.

Owns: growing responses sentence by sentence, scoring every candidate sentence, keeping the
best and worst prefixes, and recording finished responses. It drives many prompts in
lockstep, so one `expand` call per step covers every live prefix of every prompt.

Does not know: tokens, models, KV caches, images, CLIP, or the network. `expand` turns
prefixes into candidate next sentences (a model step, or a fake in tests) and may carry an
opaque `state` on each candidate that it gets back on the prefix next step; `relevance`
returns R_I for sentences of one image (a reward-service call, or a fake). A relevance that
also has a `many(queries)` method gets every prompt's sentences of a step in one call, so a
reward client can send them together (the reward service batches them into one forward).

Modes (SearchConfig.mode):
- "paper": every step's candidates get R_I at once; prefixes survive by the cumulative merit
  of the calibrated reward (Algorithm 1).
- "authors-code": prefixes survive by the running sum of R_T alone; R_I is computed after
  the search for every sibling group on a finished path, and merits are computed then.

Edge cases, decided here once:
- A candidate whose text has no letter or digit is empty. With the end-of-response flag it
  ends its prefix's response: as it stands by default, or, with RewardConfig.end_relevance
  set, as a scored sentence "" of its own (R_T from the end token, R_I = end_relevance) that
  competes with its siblings and counts in the path's reward. Otherwise it is dropped, and so
  is an end before the first sentence (a response says something). Only an empty end
  candidate is scored: a path stopped by a cap, a missing marker or no continuation carries
  no end sentence, so under the path mean reaching max_sentences skips the end's term; keep
  the cap above the responses expected.
- Siblings with the same stripped text are duplicates: the first (the expander's best) stays.
  A candidate with fewer than SearchConfig.min_words words is a fragment and is dropped.
  In paper mode, so is one whose R_I is below SearchConfig.min_relevance (off at 0), once
  R_I is known; a prefix left with no candidate then finishes as it stands.
  A candidate that repeats a sentence of its own prefix is dropped too: a response that says
  the same thing twice gains no reward for it (the path mean would otherwise pay for
  "There is a ring. There is a ring." as much as for the true sentence once). This holds in
  both modes; the released code has no such rule.
- A candidate that ends the response, lacks the sentence marker (it hit the token cap), or
  reaches the sentence or token cap finishes its path. Every finished candidate is kept,
  as in the released code; only unfinished ones compete for the keep_top/keep_bottom places.
- A prefix none of whose candidates survive finishes as it stands ("no_continuation").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from csr.config import RewardConfig, SearchConfig, SelectionConfig
from csr.errors import ExpansionError, RelevanceError
from csr.rewards import aggregate, calibrated_reward, self_score, sentence_merits
from csr.sentence_end import ends_with_marker


@dataclass(frozen=True)
class SearchRequest:
    """One (image, prompt) to search from; image_ref is opaque here (a path or a hash)."""

    prompt_id: str
    prompt: str
    image_ref: str


@dataclass(frozen=True)
class Candidate:
    """A candidate next sentence, as the expander produced it.

    text: the decoded new text, spacing included (joined verbatim into the response).
    token_logprobs: the model's own log-probability of each new token (<= 0).
    ends_response: the model ended the response (end-of-sequence) with this candidate.
    state: anything the expander wants back when this candidate's path is expanded.
    """

    text: str
    token_logprobs: tuple[float, ...]
    ends_response: bool = False
    state: Any = field(default=None, compare=False)


@dataclass(frozen=True)
class ScoredSentence:
    """A kept candidate with its rewards; r_i, r and merit are None until R_I is known."""

    text: str
    r_t: float
    r_i: float | None
    r: float | None
    merit: float | None
    num_tokens: int
    group: int
    index: int

    @property
    def sentence(self) -> str:
        return self.text.strip()


@dataclass(frozen=True)
class Prefix:
    """An unfinished response: what `expand` receives."""

    request: SearchRequest
    sentences: tuple[ScoredSentence, ...]
    state: Any = field(default=None, compare=False)

    @property
    def text(self) -> str:
        return response_text(self.sentences)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.sentences)


@dataclass(frozen=True)
class FinishedPath:
    """A finished response and why it finished."""

    sentences: tuple[ScoredSentence, ...]
    finish_reason: str

    @property
    def text(self) -> str:
        return response_text(self.sentences)

    def reward(self, aggregation: str) -> float:
        """Cumulative merit along the path (needs every sentence's merit)."""
        return aggregate([_merit_of(s) for s in self.sentences], aggregation)


@dataclass(frozen=True)
class SearchResult:
    request: SearchRequest
    finished: tuple[FinishedPath, ...]
    kept_per_step: tuple[tuple[str, ...], ...]
    expansions: int


Expand = Callable[[Sequence[Prefix]], Sequence[Sequence[Candidate]]]
Relevance = Callable[[str, Sequence[str]], Sequence[float]]
RelevanceQuery = tuple[str, Sequence[str]]  # (image_ref, sentences)


def response_text(sentences: Sequence[ScoredSentence]) -> str:
    return "".join(s.text for s in sentences).strip()


def _merit_of(sentence: ScoredSentence) -> float:
    if sentence.merit is None:
        raise ValueError(f"sentence {sentence.sentence!r} has no merit yet (R_I not applied)")
    return sentence.merit


def _is_empty(text: str) -> bool:
    return not any(ch.isalnum() for ch in text)


def _word_count(text: str) -> int:
    return sum(1 for word in text.split() if any(ch.isalnum() for ch in word))


def _check_candidate(candidate: Any, where: str) -> None:
    if not isinstance(candidate, Candidate):
        raise ExpansionError(f"{where} is a {type(candidate).__name__}, not a Candidate")
    if not isinstance(candidate.text, str):
        raise ExpansionError(f"{where} has text of type {type(candidate.text).__name__}")
    if not _is_empty(candidate.text) and len(candidate.token_logprobs) == 0:
        raise ExpansionError(f"{where} ({candidate.text!r}) has text but no token log-probs")
    for value in candidate.token_logprobs:
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value > 1e-6:
            raise ExpansionError(
                f"{where} ({candidate.text!r}) has token log-prob {value!r}; "
                "log-probs must be finite numbers <= 0 (pass log-softmax outputs, not logits)"
            )


def fetch_relevance_many(
    relevance: Relevance, queries: Sequence[RelevanceQuery]
) -> list[list[float]]:
    """R_I for several images' sentences: one `relevance.many` call when it has one, else one
    `relevance` call per image with sentences; every answer is checked."""
    asked = [(ref, list(sentences)) for ref, sentences in queries if sentences]
    many = getattr(relevance, "many", None)
    if not asked:
        answers = []
    elif many is not None:
        answers = list(many(asked))
        if len(answers) != len(asked):
            raise RelevanceError(
                f"relevance.many returned {len(answers)} answers for {len(asked)} queries"
            )
    else:
        answers = [relevance(ref, sentences) for ref, sentences in asked]
    checked = iter(
        [_checked(ref, sentences, scores) for (ref, sentences), scores in zip(asked, answers)]
    )
    return [next(checked) if sentences else [] for _, sentences in queries]


def _checked(image_ref: str, sentences: list[str], scores: Sequence[Any]) -> list[float]:
    scores = list(scores)
    if len(scores) != len(sentences):
        raise RelevanceError(
            f"relevance returned {len(scores)} scores for {len(sentences)} sentences of "
            f"image {image_ref!r}"
        )
    for sentence, value in zip(sentences, scores):
        if not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
            raise RelevanceError(
                f"relevance of {sentence!r} is {value!r}; R_I must be a finite number >= 0 "
                "(apply csr.rewards.relevance_score to a cosine)"
            )
    return [float(v) for v in scores]


class _PromptSearch:
    """The search state of one prompt: live prefixes, finished paths, sibling groups."""

    def __init__(
        self,
        request: SearchRequest,
        search: SearchConfig,
        reward: RewardConfig,
        selection: SelectionConfig,
    ) -> None:
        self.request, self.search, self.reward, self.selection = request, search, reward, selection
        self.live: list[Prefix] = [Prefix(request, ())]
        self.finished: list[FinishedPath] = []
        self.groups: list[list[tuple[str, float]]] = []  # group -> [(sentence, R_T)]
        # The scored end of a response (RewardConfig.end_relevance) is the sentence "".
        self.relevance_memo: dict[str, float] = (
            {} if reward.end_relevance is None else {"": reward.end_relevance}
        )
        self.kept_per_step: list[tuple[str, ...]] = []
        self.expansions = 0
        self._pending: list[tuple[Prefix, list[Candidate]]] = []

    def clean(self, expanded: Sequence[tuple[Prefix, Sequence[Candidate]]]) -> list[str]:
        """First half of a step: drop empty and duplicate candidates, finish prefixes that
        end; returns the sentences that still need R_I (paper mode) for `advance`."""
        self.expansions += len(expanded)
        self._pending = [
            (prefix, self._clean(prefix, candidates)) for prefix, candidates in expanded
        ]
        if self.search.mode != "paper":
            return []
        sentences = (c.text.strip() for _, kept in self._pending for c in kept)
        return list(dict.fromkeys(s for s in sentences if s not in self.relevance_memo))

    def advance(self, relevance_scores: Sequence[tuple[str, float]] = ()) -> None:
        """Second half: remember the R_I asked for by `clean`, score, keep the extremes."""
        self.relevance_memo.update(relevance_scores)
        children: list[Prefix] = []
        for prefix, candidates in self._pending:
            kept = self._relevant(prefix, candidates)
            for candidate, scored in zip(kept, self._score_group(kept)):
                path = prefix.sentences + (scored,)
                reason = self._finish_reason(candidate, path)
                if reason is None:
                    children.append(Prefix(self.request, path, candidate.state))
                else:
                    self.finished.append(FinishedPath(path, reason))
        self._pending = []
        self.live = self._keep_extremes(children)
        self.kept_per_step.append(tuple(p.text for p in self.live))

    def _clean(self, prefix: Prefix, candidates: Sequence[Candidate]) -> list[Candidate]:
        kept: list[Candidate] = []
        seen = {s.sentence for s in prefix.sentences}  # a response does not repeat itself
        end: Candidate | None = None
        for candidate in candidates:
            sentence = candidate.text.strip()
            if _is_empty(sentence):
                if candidate.ends_response and end is None:
                    end = candidate
            elif sentence not in seen and _word_count(sentence) >= self.search.min_words:
                seen.add(sentence)
                kept.append(candidate)
        if not prefix.sentences:
            return kept  # a response needs a sentence before it can end
        if end is not None and self.reward.end_relevance is not None:
            if not end.token_logprobs:
                raise ExpansionError(
                    f"the end-of-response candidate of {prefix.text!r} has no "
                    "token log-probs; end_relevance scores the end token's R_T"
                )
            return kept + [Candidate("", end.token_logprobs, ends_response=True)]
        if end is not None or not kept:
            reason = "end_of_response" if end is not None else "no_continuation"
            self.finished.append(FinishedPath(prefix.sentences, reason))
        return kept

    def _relevant(self, prefix: Prefix, kept: list[Candidate]) -> list[Candidate]:
        """The candidates at or above SearchConfig.min_relevance (paper mode); a prefix that
        had candidates and keeps none finishes as it stands."""
        floor = self.search.min_relevance
        if floor <= 0.0 or self.search.mode != "paper":
            return kept
        relevant = [c for c in kept if self.relevance_memo[c.text.strip()] >= floor]
        if kept and not relevant and prefix.sentences:
            self.finished.append(FinishedPath(prefix.sentences, "no_continuation"))
        return relevant

    def _score_group(self, kept: Sequence[Candidate]) -> list[ScoredSentence]:
        group = len(self.groups)
        r_t = [self_score(c.token_logprobs, self.reward.self_score) for c in kept]
        self.groups.append([(c.text.strip(), value) for c, value in zip(kept, r_t)])
        r_i: Sequence[float | None]
        r: Sequence[float | None]
        merits: Sequence[float | None]
        if self.search.mode == "paper":
            known = [self.relevance_memo[c.text.strip()] for c in kept]
            merits = sentence_merits(r_t, known, self.reward)
            r = [calibrated_reward(ri, rt, self.reward.lam) for rt, ri in zip(r_t, known)]
            r_i = known
        else:
            r_i = r = merits = [None] * len(kept)
        return [
            ScoredSentence(c.text, r_t[i], r_i[i], r[i], merits[i], len(c.token_logprobs), group, i)
            for i, c in enumerate(kept)
        ]

    def _finish_reason(self, candidate: Candidate, path: tuple[ScoredSentence, ...]) -> str | None:
        if candidate.ends_response:
            return "end_of_response"
        if not ends_with_marker(candidate.text, self.search.sentence_end):
            return "unterminated"
        if len(path) >= self.search.max_sentences:
            return "max_sentences"
        if sum(s.num_tokens for s in path) >= self.search.max_response_tokens:
            return "max_tokens"
        return None

    def guidance(self, prefix: Prefix) -> float:
        """What prefixes compete on: cumulative merit (paper), or summed R_T (authors' code)."""
        if self.search.mode == "paper":
            return aggregate([_merit_of(s) for s in prefix.sentences], self.selection.aggregation)
        return aggregate([s.r_t for s in prefix.sentences], "sum")

    def _keep_extremes(self, children: list[Prefix]) -> list[Prefix]:
        """Keep the keep_top best and keep_bottom worst; ties go to the earlier child first."""
        top, bottom = self.search.keep_top, self.search.keep_bottom
        if len(children) <= top + bottom:
            return children
        values = [self.guidance(child) for child in children]
        order = sorted(range(len(children)), key=lambda i: -values[i])  # stable: ties by arrival
        chosen = order[:top] + (order[len(order) - bottom :] if bottom else [])
        return [children[i] for i in chosen]

    def unscored_finished(self) -> list[str]:
        """authors-code: every sentence of a sibling group on a finished path lacking R_I."""
        used = sorted({s.group for path in self.finished for s in path.sentences})
        sentences = (text for g in used for text, _ in self.groups[g])
        return list(dict.fromkeys(s for s in sentences if s not in self.relevance_memo))

    def rescore_finished(self, relevance_scores: Sequence[tuple[str, float]]) -> None:
        """authors-code: R_I for every sibling group on a finished path, then merits."""
        self.relevance_memo.update(relevance_scores)
        used = sorted({s.group for path in self.finished for s in path.sentences})
        merits: dict[int, list[float]] = {}
        for g in used:
            r_t = [value for _, value in self.groups[g]]
            r_i = [self.relevance_memo[text] for text, _ in self.groups[g]]
            merits[g] = sentence_merits(r_t, r_i, self.reward)
        self.finished = [
            FinishedPath(
                tuple(self._with_merit(s, merits) for s in path.sentences), path.finish_reason
            )
            for path in self.finished
        ]

    def _with_merit(
        self, sentence: ScoredSentence, merits: dict[int, list[float]]
    ) -> ScoredSentence:
        r_i = self.relevance_memo[sentence.sentence]
        return replace(
            sentence,
            r_i=r_i,
            r=calibrated_reward(r_i, sentence.r_t, self.reward.lam),
            merit=merits[sentence.group][sentence.index],
        )

    def result(self) -> SearchResult:
        return SearchResult(
            self.request, tuple(self.finished), tuple(self.kept_per_step), self.expansions
        )


def run_search(
    requests: Sequence[SearchRequest],
    expand: Expand,
    relevance: Relevance,
    search: SearchConfig,
    reward: RewardConfig,
    selection: SelectionConfig,
) -> list[SearchResult]:
    """Search every request to the end: per step, one `expand` call for all live prefixes
    and one round of relevance for all prompts' new sentences."""
    states = [_PromptSearch(request, search, reward, selection) for request in requests]
    while True:
        active = [state for state in states if state.live]
        if not active:
            break
        prefixes = [prefix for state in active for prefix in state.live]
        expansions = list(expand(prefixes))
        if len(expansions) != len(prefixes):
            raise ExpansionError(
                f"expand returned {len(expansions)} candidate lists for {len(prefixes)} prefixes"
            )
        cursor, needed = 0, []
        for state in active:
            own = list(zip(state.live, expansions[cursor : cursor + len(state.live)]))
            cursor += len(state.live)
            for prefix, candidates in own:
                for c, candidate in enumerate(candidates):
                    _check_candidate(candidate, f"candidate {c} of prefix {prefix.text!r}")
            needed.append(state.clean(own))
        for state, scores in zip(active, _score_all(relevance, active, needed)):
            state.advance(scores)
    if search.mode == "authors-code":
        needed = [state.unscored_finished() for state in states]
        for state, scores in zip(states, _score_all(relevance, states, needed)):
            state.rescore_finished(scores)
    return [state.result() for state in states]


def _score_all(
    relevance: Relevance, states: Sequence[_PromptSearch], needed: Sequence[list[str]]
) -> list[list[tuple[str, float]]]:
    queries = [(state.request.image_ref, sentences) for state, sentences in zip(states, needed)]
    answers = fetch_relevance_many(relevance, queries)
    return [list(zip(sentences, scores)) for sentences, scores in zip(needed, answers)]
