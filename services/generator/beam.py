"""Diverse (group) beam search over a token stepper: the token-level expansion of CSR.

Owns the search of Vijayakumar et al. (2018) as transformers 4.x implemented it, which 5.x
removed from `generate`: num_beams beams split into num_groups groups, groups decoded in turn
at every step, and each group's log-probs lowered by diversity_penalty times the number of
times earlier groups chose the same token at this step (Hamming diversity). Each group keeps
group_size finished hypotheses; a candidate that hits a stop token is finished only if it
ranks within the group's top group_size, and a group is done once its best running beam
cannot beat its worst finished one (early_stopping=False).

Each hypothesis keeps the model's own log-probs apart from the penalties the search applied,
so R_T can be computed from the model alone while ranking follows the penalised scores.
One deliberate difference from transformers 4.x: a finished hypothesis includes its stop
token and its length counts it (4.x divided by the length without it).

Does not know the model: `step(parents, tokens)` advances rows (row r continues previous
row parents[r] with tokens[r]) and returns each new row's next-token log-probs. The log-probs
stay on the device they come from: the scores, diversity penalties and top-k are computed
there, and only each group's 2 x group_size best candidates cross to the host per step.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Whether a candidate whose last token is a stop token really ends there (its tokens so far).
Ends = Callable[[Sequence[int]], bool]


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]
    logprobs: tuple[float, ...]  # the model's own log-prob of each token
    penalties: tuple[float, ...]  # what the diversity penalty did to each token (<= 0)
    score: float  # sum(logprobs + penalties) / len ** length_penalty
    stopped: bool  # ended on a stop token, not on the token cap


@dataclass(frozen=True)
class _Beam:
    row: int
    tokens: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    penalties: tuple[float, ...] = ()
    total: float = 0.0  # penalised sum, what beams compete on

    def extend(self, token: int, logprob: float, penalty: float) -> _Beam:
        return _Beam(
            self.row,
            self.tokens + (token,),
            self.logprobs + (logprob,),
            self.penalties + (penalty,),
            self.total + logprob + penalty,
        )

    def finish(self, stopped: bool, length_penalty: float) -> Hypothesis:
        score = self.total / (len(self.tokens) ** length_penalty)
        return Hypothesis(self.tokens, self.logprobs, self.penalties, score, stopped)


class _Group:
    """One group of one prefix: its running beams and its best finished hypotheses."""

    def __init__(self, row: int, size: int, length_penalty: float):
        self.size, self.length_penalty = size, length_penalty
        self.running = [_Beam(row)]  # at the first step a group grows from one beam
        self.finished: list[Hypothesis] = []
        self.done = False

    def add_finished(self, hypothesis: Hypothesis) -> None:
        self.finished.append(hypothesis)
        self.finished.sort(key=lambda h: -h.score)
        del self.finished[self.size :]

    def update_done(self, generated: int) -> None:
        if len(self.finished) < self.size:
            return
        if not self.running:
            self.done = True
            return
        best_running = max(b.total for b in self.running) / (generated**self.length_penalty)
        self.done = self.finished[-1].score >= best_running


def _advance_groups(
    active: list[tuple[int, _Group]],
    logprobs: torch.Tensor,
    counts: torch.Tensor,
    penalty: float,
    stop_ids: Collection[int],
    ends: Ends | None = None,
) -> None:
    """One step of the same group of many prefixes, batched: pick each group's next beams,
    finish those that stop, and count the chosen tokens for the groups after it.

    Scores, penalties and the top-k run where the log-probs are (the model's device); only
    each group's 2 x group_size best candidates come to the host."""
    size, vocab, device = active[0][1].size, logprobs.shape[-1], logprobs.device
    missing = [size - len(group.running) for _, group in active]
    rows = torch.tensor(
        [[b.row for b in g.running] + [0] * n for (_, g), n in zip(active, missing)],
        device=device,
    )
    totals = torch.tensor(
        [[b.total for b in g.running] + [float("-inf")] * n for (_, g), n in zip(active, missing)],
        dtype=torch.float32,
        device=device,
    )
    prefixes = [prefix for prefix, _ in active]
    model = logprobs[rows]  # (a, size, V)
    penalties = -penalty * counts[torch.tensor(prefixes, device=device)]  # (a, V)
    scores = (totals[:, :, None] + model + penalties[:, None, :]).view(len(active), -1)
    k = min(2 * size, scores.shape[-1])
    top, flat = torch.topk(scores, k)
    chosen_model = model.view(len(active), -1).gather(1, flat)
    chosen_penalty = penalties.gather(1, flat % vocab)
    # float64 holds the float32 values and the indices exactly: one transfer for all four
    candidates = torch.stack(
        [top.double(), flat.double(), chosen_model.double(), chosen_penalty.double()]
    )
    picked = candidates.cpu().tolist()
    counted: list[tuple[int, int]] = []
    for a, (prefix, group) in enumerate(active):
        indices = [int(i) for i in picked[1][a]]
        picks = zip(picked[0][a], indices, picked[2][a], picked[3][a])
        counted.extend((prefix, token) for token in _pick(group, picks, vocab, stop_ids, ends))
    if counted and penalty:
        where = torch.tensor(counted, dtype=torch.long, device=device).T
        counts.index_put_((where[0], where[1]), counts.new_ones(len(counted)), accumulate=True)


def _pick(
    group: _Group, picks, vocab: int, stop_ids: Collection[int], ends: Ends | None = None
) -> list[int]:
    """Extend the group's beams by the ranked candidates; returns the tokens that continue.
    A stop token finishes a beam only where `ends` agrees (a period after "Mr" does not)."""
    chosen: list[_Beam] = []
    for rank, (score, index, model_logprob, penalty) in enumerate(picks):
        if score == float("-inf"):
            break  # only padding (or impossible tokens) is left
        beam_index, token = divmod(index, vocab)
        child = group.running[beam_index].extend(token, model_logprob, penalty)
        if token in stop_ids and (ends is None or ends(child.tokens)):
            if rank < group.size:
                group.add_finished(child.finish(True, group.length_penalty))
        else:
            chosen.append(child)
            if len(chosen) == group.size:
                break
    group.running = chosen
    return [beam.tokens[-1] for beam in chosen]


def diverse_beam_search(
    first_logprobs: torch.Tensor,
    step: Step,
    stop_ids: Collection[int],
    num_beams: int,
    num_groups: int,
    diversity_penalty: float,
    max_new_tokens: int,
    length_penalty: float = 1.0,
    ends: Ends | None = None,
) -> list[list[Hypothesis]]:
    """Hypotheses of every prefix (row of first_logprobs), best score first, num_beams each.
    `ends(tokens)`, if given, confirms that a stop token really ends the candidate."""
    if num_beams % num_groups:
        raise ValueError(f"num_beams={num_beams} is not a multiple of num_groups={num_groups}")
    size = num_beams // num_groups
    prefixes = first_logprobs.shape[0]
    groups = [[_Group(i, size, length_penalty) for _ in range(num_groups)] for i in range(prefixes)]
    logprobs = first_logprobs.float()  # stays on the model's device
    for generated in range(1, max_new_tokens + 1):
        # tokens chosen at this step, per prefix
        counts = torch.zeros(prefixes, logprobs.shape[-1], device=logprobs.device)
        for g in range(num_groups):
            active = [
                (i, own[g]) for i, own in enumerate(groups) if not own[g].done and own[g].running
            ]
            if active:
                _advance_groups(active, logprobs, counts, diversity_penalty, stop_ids, ends)
            for _, group in active:
                group.update_done(generated)
        parents, tokens = _renumber(groups)
        if not parents or generated == max_new_tokens:
            break
        logprobs = step(torch.tensor(parents), torch.tensor(tokens)).float()
    return [_collect(own, length_penalty, num_beams) for own in groups]


def _renumber(groups: list[list[_Group]]) -> tuple[list[int], list[int]]:
    """Give live beams consecutive new rows; return each one's parent row and last token."""
    parents: list[int] = []
    tokens: list[int] = []
    for own in groups:
        for group in own:
            if group.done:
                continue
            renumbered = []
            for beam in group.running:
                parents.append(beam.row)
                tokens.append(beam.tokens[-1])
                renumbered.append(
                    _Beam(len(parents) - 1, beam.tokens, beam.logprobs, beam.penalties, beam.total)
                )
            group.running = renumbered
    return parents, tokens


def _collect(own: list[_Group], length_penalty: float, num_beams: int) -> list[Hypothesis]:
    """Finished hypotheses, topped up per group with running beams cut by the token cap."""
    out: list[Hypothesis] = []
    for group in own:
        if not group.done:
            for beam in group.running:
                group.add_finished(beam.finish(False, length_penalty))
        out.extend(group.finished)
    return sorted(out, key=lambda h: -h.score)[:num_beams]
