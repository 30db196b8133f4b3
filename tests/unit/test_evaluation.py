"""CHAIR and POPE arithmetic against hand-computed values."""

import random

import pytest

from csr.evaluation.metrics import (
    chair,
    mentioned,
    parse_yes_no,
    pope_metrics,
    pope_questions,
    singular,
)

VOCAB = {
    "circle": "circle",
    "square": "square",
    "ring": "ring",
    "dog": "dog",
    "puppy": "dog",
    "hot dog": "hot dog",
    "person": "person",
    "people": "person",
    "man": "person",
}


def test_mentions_fold_plurals_synonyms_and_two_word_names():
    assert singular("circles") == "circle" and singular("boxes") == "box"
    assert singular("puppies") == "puppy" and singular("glass") == "glass"
    assert mentioned("Two puppies and a man.", VOCAB) == {"dog", "person"}
    # "hot dog" is a food: the phrase wins over its second word
    assert mentioned("A hot dog on a plate.", VOCAB) == {"hot dog"}
    assert mentioned("Nothing here.", VOCAB) == set()


def test_chair_by_hand():
    captions = [
        "There is a circle. There is a square.",  # truth {circle}: square is false
        "There is a ring.",  # truth {ring, circle}: correct
        "There are circles. There is a dog. A man.",
    ]  # truth {circle}: dog, man false
    truths = [{"circle"}, {"ring", "circle"}, {"circle"}]
    result = chair(captions, truths, VOCAB)
    # captions with a hallucination: 1st and 3rd -> 2/3
    assert result.chair_s == pytest.approx(2 / 3)
    # mentions: {circle, square} + {ring} + {circle, dog, person} = 6; false: square, dog, person
    assert result.chair_i == pytest.approx(3 / 6)
    # true objects 1 + 2 + 1 = 4; covered: circle, ring, circle = 3
    assert result.recall == pytest.approx(3 / 4)
    assert result.mean_sentences == pytest.approx((2 + 1 + 3) / 3)
    with pytest.raises(ValueError, match="one truth per caption"):
        chair(captions, truths[:2], VOCAB)


def test_pope_parsing_follows_llava():
    assert parse_yes_no("Yes, there is a dog in the image.") is True
    assert parse_yes_no("No, there is no dog.") is False
    assert parse_yes_no("There is not a dog.") is False
    assert parse_yes_no("Yes. But no cat.") is True  # only the first sentence counts
    assert parse_yes_no("Nope") is True  # as the reference script: only No/no/not


def test_pope_metrics_by_hand():
    labels = [True, True, True, False, False, False]
    answers = [True, True, False, True, False, False]
    result = pope_metrics(labels, answers)
    # tp 2, fn 1, fp 1, tn 2
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.precision == pytest.approx(2 / 3) and result.recall == pytest.approx(2 / 3)
    assert result.f1 == pytest.approx(2 / 3) and result.yes_ratio == pytest.approx(3 / 6)


def test_pope_negatives_random_popular_and_adversarial():
    objects = ["circle", "square", "triangle", "cross", "diamond", "ring"]
    truth = {"circle", "triangle"}
    co = {"circle": ["square"], "triangle": ["cross"]}
    popular = ["ring", "circle", "diamond", "square"]
    rng = random.Random(0)
    adversarial = pope_questions(truth, objects, "adversarial", rng, co_occurring=co)
    assert sorted(o for o, yes in adversarial if yes) == ["circle", "triangle"]
    assert sorted(o for o, yes in adversarial if not yes) == ["cross", "square"]
    pop = pope_questions(truth, objects, "popular", rng, popularity=popular)
    assert [o for o, yes in pop if not yes] == ["ring", "diamond"]
    rand = pope_questions(truth, objects, "random", rng)
    negatives = [o for o, yes in rand if not yes]
    assert len(negatives) == 2 and not set(negatives) & truth
    with pytest.raises(ValueError, match="not one of random, popular, adversarial"):
        pope_questions(truth, objects, "hard", rng)
