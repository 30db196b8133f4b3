"""Hallucination metrics: CHAIR (Rohrbach et al. 2018) and POPE (Li et al. 2023).

Owns the arithmetic, given ground truth: which objects a caption mentions (through a synonym
vocabulary, word by word, plurals folded), CHAIR_s (captions with at least one hallucinated
object), CHAIR_i (hallucinated mentions over all mentions), recall (true objects mentioned
over all true objects) and caption length; POPE's yes/no parsing as LLaVA's evaluation does
it, the question sets (random, popular and adversarial negatives) and accuracy, precision,
recall, F1 and yes-ratio. Does not know models, COCO files or images.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


_IRREGULAR = {
    "men": "man",
    "women": "woman",
    "mice": "mouse",
    "geese": "goose",
    "buses": "bus",
    "knives": "knife",
    "scissors": "scissors",
    "glasses": "glass",
    "teeth": "tooth",
    "feet": "foot",
    "calves": "calf",
    "tvs": "tv",
    "buffaloes": "buffalo",
    "collies": "collie",
    "magpies": "magpie",
    "minibus": "minibus",
    "minibuses": "minibus",
    "airbus": "airbus",
    "cookies": "cookie",
    "ties": "tie",
    "pies": "pie",
}


def singular(word: str) -> str:
    """Fold the plurals captions use ('circles', 'boxes', 'people' stays): enough for CHAIR."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("men") and len(word) > 5:  # policemen, gentlemen, servicemen
        return word[:-3] + "man"
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def mentioned(text: str, vocabulary: Mapping[str, str]) -> set[str]:
    """Objects the text names: vocabulary maps a word or a two-word phrase to its object."""
    tokens = [singular(w) for w in words(text)]
    found = set()
    i = 0
    while i < len(tokens):
        pair = f"{tokens[i]} {tokens[i + 1]}" if i + 1 < len(tokens) else ""
        if pair in vocabulary:  # the phrase wins over its words ("hot dog" is not a dog)
            found.add(vocabulary[pair])
            i += 2
            continue
        if tokens[i] in vocabulary:
            found.add(vocabulary[tokens[i]])
        i += 1
    return found


@dataclass(frozen=True)
class ChairResult:
    chair_s: float
    chair_i: float
    recall: float
    mean_sentences: float
    mean_words: float
    captions: int


def _sentences(text: str) -> int:
    return len([s for s in re.split(r"[.!?]+", text) if s.strip()])


def chair(
    captions: Sequence[str], truths: Sequence[Iterable[str]], vocabulary: Mapping[str, str]
) -> ChairResult:
    """CHAIR over captions with their true object sets."""
    if len(captions) != len(truths) or not captions:
        raise ValueError(
            f"{len(captions)} captions for {len(truths)} ground truths; give one "
            "truth per caption, and at least one"
        )
    hallucinating = mentions = false_mentions = covered = true_total = 0
    for text, listed in zip(captions, truths):
        truth = set(listed)
        said = mentioned(text, vocabulary)
        wrong = said - truth
        hallucinating += bool(wrong)
        mentions += len(said)
        false_mentions += len(wrong)
        covered += len(said & truth)
        true_total += len(truth)
    n = len(captions)
    return ChairResult(
        hallucinating / n,
        false_mentions / mentions if mentions else 0.0,
        covered / true_total if true_total else 0.0,
        sum(_sentences(c) for c in captions) / n,
        sum(len(words(c)) for c in captions) / n,
        n,
    )


NEGATIVE_KINDS = ("random", "popular", "adversarial")


def pope_questions(
    truth: Iterable[str],
    objects: Sequence[str],
    kind: str,
    rng: random.Random,
    per_image: int = 3,
    popularity: Sequence[str] = (),
    co_occurring: Mapping[str, Sequence[str]] | None = None,
) -> list[tuple[str, bool]]:
    """Balanced (object, answer) probes for one image: up to per_image present objects (yes)
    and as many absent ones (no), chosen at random, by popularity (most frequent first), or
    adversarially (the objects that most often co-occur with the present ones)."""
    if kind not in NEGATIVE_KINDS:
        raise ValueError(f"POPE kind {kind!r} is not one of {', '.join(NEGATIVE_KINDS)}")
    present = sorted(set(truth))
    yes = rng.sample(present, min(per_image, len(present)))
    absent = [o for o in objects if o not in set(present)]
    if kind == "random":
        no = rng.sample(absent, min(len(yes), len(absent)))
    else:
        if kind == "popular":
            ranked = [o for o in popularity if o in absent]
        else:
            ranked = [o for p in present for o in (co_occurring or {}).get(p, ()) if o in absent]
        ranked = list(dict.fromkeys(ranked)) + [o for o in absent if o not in ranked]
        no = ranked[: len(yes)]
    return [(o, True) for o in yes] + [(o, False) for o in no]


def question(obj: str) -> str:
    return f"Is there a {obj} in the image?"


def parse_yes_no(answer: str) -> bool:
    """POPE's parsing as LLaVA evaluates it: the first sentence, 'no' or 'not' anywhere in it
    means no, anything else yes."""
    first = answer.split(".")[0].replace(",", "")
    tokens = set(first.split(" "))
    return not ({"No", "not", "no"} & tokens)


@dataclass(frozen=True)
class PopeResult:
    accuracy: float
    precision: float
    recall: float
    f1: float
    yes_ratio: float
    questions: int


def pope_metrics(labels: Sequence[bool], answers: Sequence[bool]) -> PopeResult:
    if len(labels) != len(answers) or not labels:
        raise ValueError(f"{len(answers)} answers for {len(labels)} questions")
    tp = sum(said and true for said, true in zip(answers, labels))
    fp = sum(said and not true for said, true in zip(answers, labels))
    fn = sum(not said and true for said, true in zip(answers, labels))
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PopeResult(
        (tp + tn) / len(labels), precision, recall, f1, (tp + fp) / len(labels), len(labels)
    )
