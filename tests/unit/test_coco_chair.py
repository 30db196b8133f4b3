"""COCO CHAIR: the standard synonym list and matching rules, and the arithmetic, by hand.
The mentions are the cleaned rules' (`TextRules.CLEANED`; the original's, and where the two
differ, are in test_chair_text_rules.py); the arithmetic is the same under both."""

import pytest

from csr.evaluation.chair_text import TextRules
from csr.evaluation.coco import COCO_SYNONYMS, coco_chair, coco_mentions, ground_truth


def test_the_synonym_list_has_the_80_coco_categories_each_named_first():
    assert len(COCO_SYNONYMS) == 80
    assert all(synonyms[0] == category for category, synonyms in COCO_SYNONYMS.items())
    assert {"person", "dining table", "hair drier", "teddy bear", "toothbrush"} <= set(
        COCO_SYNONYMS
    )
    assert "puppy" in COCO_SYNONYMS["dog"] and "sofa" in COCO_SYNONYMS["couch"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Two men playing tennis with tennis rackets.", ["person", "tennis racket"]),
        # "hot dog" is a food, not a dog; "baby elephant" is an elephant, not a person
        ("A baby elephant next to a hot dog stand.", ["elephant", "hot dog"]),
        # "the seat of the toilet" fires no chair
        ("The seat of the toilet is up.", ["toilet"]),
        ("A passenger jet over buses and a teddy bear.", ["airplane", "bus", "teddy bear"]),
        # repeats are kept (CHAIR_i counts every mention); plurals folded; "bow tie" is a tie
        ("A dog and two puppies, wine glasses, a bow tie.", ["dog", "dog", "wine glass", "tie"]),
        ("A sofa, a chair and a stool by the desk.", ["couch", "chair", "chair", "dining table"]),
        ("Nothing COCO knows of here.", []),
        ("Two policemen, calves, collies and a minibus.", ["person", "cow", "dog", "bus"]),
    ],
)
def test_mentions_follow_the_chair_rules(text, expected):
    assert coco_mentions(text, TextRules.CLEANED) == expected


def test_ground_truth_is_instances_plus_what_reference_captions_name():
    truth = ground_truth(
        {1: ["dog", "frisbee"], 2: ["car"]},
        {
            1: ["A puppy catches a frisbee on the grass."],
            2: ["A man driving a van.", "Cars and a bus."],
        },
        TextRules.CLEANED,
    )
    assert truth == {1: {"dog", "frisbee"}, 2: {"car", "person", "bus"}}


@pytest.mark.parametrize("rules", list(TextRules))  # plain words: both read them alike
def test_coco_chair_by_hand(rules):
    truth = {1: {"dog", "frisbee"}, 2: {"car", "person"}, 3: {"pizza"}}
    captions = [
        (1, "A dog with a frisbee and a cat."),  # cat false: 1 of 3 mentions
        (2, "A man in a car. Another man."),  # person, car, person: all true
        (3, "A pizza and a knife, and another knife."),  # knife twice false: 2 of 3
    ]
    result = coco_chair(captions, truth, rules)
    assert result.chair_s == pytest.approx(2 / 3)  # captions 1 and 3
    assert result.chair_i == pytest.approx(3 / 9)  # 1 + 0 + 2 false of 3 + 3 + 3
    assert result.recall == pytest.approx((2 + 2 + 1) / 5)  # every true object named
    assert result.hallucinated == ((1, ("cat",)), (3, ("knife", "knife")))
    assert result.mean_words == pytest.approx((8 + 7 + 8) / 3)


def test_coco_chair_refuses_images_without_annotations():
    with pytest.raises(ValueError, match=r"images \[9\] have no annotations"):
        coco_chair([(9, "A dog.")], {1: {"dog"}})
    with pytest.raises(ValueError, match="no captions"):
        coco_chair([], {1: {"dog"}})
