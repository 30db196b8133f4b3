"""CHAIR on MS-COCO (Rohrbach et al. 2018), given annotations already read.

Owns COCO's object vocabulary and matching rules: the synonym list of the 80 COCO categories
that the CHAIR authors published (data/synonyms.txt of LisaAnne/Hallucination, which every
later CHAIR evaluation reuses), their rules for two-word names ("hot dog", "teddy bear"),
qualifiers that must not fire a person ("baby bird" is a bird, "passenger jet" a jet), and
"toilet seat" (not a chair). Ground truth for an image is the union of its instance
categories and the objects its reference captions mention, as in the original.

How a caption's words are found is a named choice (csr.evaluation.chair_text.TextRules):
- ORIGINAL (the default) reproduces the original code, so the numbers are on the scale of
  published CHAIR tables: nltk's Treebank words (hyphenated and slashed words stay whole and
  name nothing), Pattern's singulars ("bus" becomes "bu" and is never counted), the synonym
  list as published (" motor bike", " cheesecake" and "iPhone" never match), phrases matched
  as written ("wine glas" added for Pattern's "glas");
- CLEANED splits words at anything not a letter, folds plurals with its own rules, and uses
  the synonym list stripped and lowercased: it counts a "bus", a "motor bike", a "tv/monitor",
  and reads "hot-dogs" as hot dogs and "dog-walker" as a dog and a walker.

CHAIR_s: captions with a hallucinated object; CHAIR_i: hallucinated mentions over all
mentions, counting repeats as the original does; recall: ground-truth objects mentioned over
all ground-truth objects. Does not read files (evaluation.coco_files does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from csr.evaluation.chair_text import TextRules, original_words, pattern_singular, text_rules
from csr.evaluation.metrics import singular, words

# The synonym list exactly as published (data/synonyms.txt of the original): one line per
# category, its own name first. Its quirks are kept because the original's numbers depend on
# them: " motor bike" and " cheesecake" carry a leading space and "iPhone" a capital, so the
# original (which lowercases captions) never matches those three; some words repeat.
PUBLISHED_SYNONYMS = """\
person, girl, boy, man, woman, kid, child, chef, baker, people, adult, rider, children, \
baby, worker, passenger, sister, biker, policeman, cop, officer, lady, cowboy, bride, \
groom, male, female, guy, traveler, mother, father, gentleman, pitcher, player, skier, \
snowboarder, skater, skateboarder, person, woman, guy, foreigner, child, gentleman, caller, \
offender, coworker, trespasser, patient, politician, soldier, grandchild, serviceman, \
walker, drinker, doctor, bicyclist, thief, buyer, teenager, student, camper, driver, \
solider, hunter, shopper, villager
bicycle, bike, bicycle, bike, unicycle, minibike, trike
car, automobile, van, minivan, sedan, suv, hatchback, cab, jeep, coupe, taxicab, limo, taxi
motorcycle, scooter,  motor bike, motor cycle, motorbike, scooter, moped
airplane, jetliner, plane, air plane, monoplane, aircraft, jet, jetliner, airbus, biplane, \
seaplane
bus, minibus, trolley
train, locomotive, tramway, caboose
truck, pickup, lorry, hauler, firetruck
boat, ship, liner, sailboat, motorboat, dinghy, powerboat, speedboat, canoe, skiff, yacht, \
kayak, catamaran, pontoon, houseboat, vessel, rowboat, trawler, ferryboat, watercraft, \
tugboat, schooner, barge, ferry, sailboard, paddleboat, lifeboat, freighter, steamboat, \
riverboat, battleship, steamship
traffic light, street light, traffic signal, stop light, streetlight, stoplight
fire hydrant, hydrant
stop sign
parking meter
bench, pew
bird, ostrich, owl, seagull, goose, duck, parakeet, falcon, robin, pelican, waterfowl, \
heron, hummingbird, mallard, finch, pigeon, sparrow, seabird, osprey, blackbird, fowl, \
shorebird, woodpecker, egret, chickadee, quail, bluebird, kingfisher, buzzard, willet, \
gull, swan, bluejay, flamingo, cormorant, parrot, loon, gosling, waterbird, pheasant, \
rooster, sandpiper, crow, raven, turkey, oriole, cowbird, warbler, magpie, peacock, \
cockatiel, lorikeet, puffin, vulture, condor, macaw, peafowl, cockatoo, songbird
cat, kitten, feline, tabby
dog, puppy, beagle, pup, chihuahua, schnauzer, dachshund, rottweiler, canine, pitbull, \
collie, pug, terrier, poodle, labrador, doggie, doberman, mutt, doggy, spaniel, bulldog, \
sheepdog, weimaraner, corgi, cocker, greyhound, retriever, brindle, hound, whippet, husky
horse, colt, pony, racehorse, stallion, equine, mare, foal, palomino, mustang, clydesdale, \
bronc, bronco
sheep, lamb, ram, lamb, goat, ewe
cow, cattle, oxen, ox, calf, cattle, holstein, heifer, buffalo, bull, zebu, bison
elephant
bear, panda
zebra
giraffe
backpack, knapsack
umbrella
handbag, wallet, purse, briefcase
tie, bow, bow tie
suitcase, suit case, luggage
frisbee
skis, ski
snowboard
sports ball, ball
kite
baseball bat
baseball glove
skateboard
surfboard, longboard, skimboard, shortboard, wakeboard
tennis racket, racket
bottle
wine glass
cup
fork
knife, pocketknife, knive
spoon
bowl, container
banana
apple
sandwich, burger, sub, cheeseburger, hamburger
orange
broccoli
carrot
hot dog
pizza
donut, doughnut, bagel
cake,  cheesecake, cupcake, shortcake, coffeecake, pancake
chair, seat, stool
couch, sofa, recliner, futon, loveseat, settee, chesterfield
potted plant, houseplant
bed
dining table, table, desk
toilet, urinal, commode, toilet, lavatory, potty
tv, monitor, televison, television
laptop, computer, notebook, netbook, lenovo, macbook, laptop computer
mouse
remote
keyboard
cell phone, mobile phone, phone, cellphone, telephone, phon, smartphone, iPhone
microwave
oven, stovetop, stove, stove top oven
toaster
sink
refrigerator, fridge, fridge, freezer
book
clock
vase
scissors
teddy bear, teddybear
hair drier, hairdryer
toothbrush"""

_PUBLISHED_LINES = [line.strip().split(", ") for line in PUBLISHED_SYNONYMS.splitlines()]

# category -> the words that name it, cleaned: stripped, lowercased, each once
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    line[0]: tuple(dict.fromkeys(w.strip().lower() for w in line)) for line in _PUBLISHED_LINES
}

_ANIMALS = (
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "animal",
    "cub",
)
# Two words read as one name; a qualifier + animal/vehicle is that animal/vehicle (so "baby"
# or "passenger" does not fire a person); "bow tie" is a tie, "toilet seat" a toilet; "home
# plate" and "train track" name nothing (no plate, no train).
_PHRASES_AS_WRITTEN: dict[str, str] = {
    **{w: w for line in COCO_SYNONYMS.values() for w in line if w.count(" ") == 1},
    "home plate": "home plate",
    "train track": "train track",
    **{f"{q} {a}": a for a in _ANIMALS for q in ("baby", "adult")},
    "passenger jet": "jet",
    "passenger train": "train",
    "bow tie": "tie",
    "toilet seat": "toilet",
}
# Cleaned: matched after plurals are folded, so the keys are folded too ("tennis" -> "tenni").
_CLEANED_PHRASES = {
    " ".join(singular(w) for w in k.split()): v for k, v in _PHRASES_AS_WRITTEN.items()
}
# Original: the keys as written, matched against Pattern's singulars, so "sports ball" and
# "tennis racket" never pair ("sport", "tenni"; "ball" and "racket" alone still name them)
# and the original adds "wine glas" for Pattern's "glass" -> "glas". (Its own table lacks
# "dining table"; pairing it or not names the same category, "table" being one alone.)
_ORIGINAL_PHRASES = {**_PHRASES_AS_WRITTEN, "wine glas": "wine glass"}


def _name_of() -> dict[str, str]:
    names: dict[str, str] = {}
    for category, synonyms in COCO_SYNONYMS.items():
        for word in synonyms:
            names.setdefault(word, category)
    return names


NAME_OF: dict[str, str] = _name_of()  # any synonym -> its category (cleaned)
# any word as published -> its category; " motor bike", " cheesecake", "iPhone" as written
_ORIGINAL_NAME_OF: dict[str, str] = {w: line[0] for line in _PUBLISHED_LINES for w in line}


def _merge_phrases(tokens: list[str], phrases: dict[str, str]) -> list[str]:
    merged: list[str] = []
    i = 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        if i + 1 < len(tokens) and pair in phrases:
            merged.append(phrases[pair])
            i += 2
        else:
            merged.append(tokens[i])
            i += 1
    if "toilet" in merged and "seat" in merged:  # "the seat of the toilet" is no chair
        merged = [w for w in merged if w != "seat"]
    return merged


# Punctuation that separates words: a two-word name never spans it ("an adult, a giraffe").
_BREAK = re.compile(r"[.,;:!?()\[\]{}\"“”]+")


def _cleaned_tokens(text: str) -> list[str]:
    """The cleaned rules' words, folded to singular, with a break ("|") wherever punctuation
    stood, as the original's Treebank tokens keep the punctuation between words."""
    tokens: list[str] = []
    for clause in _BREAK.split(text):
        tokens.extend(singular(w) for w in words(clause))
        tokens.append("|")
    return tokens


def coco_mentions(text: str, rules: TextRules = TextRules.ORIGINAL) -> list[str]:
    """The COCO categories a text names, in order, repeats kept (CHAIR_i counts them)."""
    if text_rules(rules) is TextRules.ORIGINAL:
        tokens = [pattern_singular(w) for w in original_words(text)]
        names, phrases = _ORIGINAL_NAME_OF, _ORIGINAL_PHRASES
    else:
        tokens = _cleaned_tokens(text)
        names, phrases = NAME_OF, _CLEANED_PHRASES
    return [names[w] for w in _merge_phrases(tokens, phrases) if w in names]


def ground_truth(
    instance_categories: Mapping[int, Iterable[str]],
    reference_captions: Mapping[int, Iterable[str]],
    rules: TextRules = TextRules.ORIGINAL,
) -> dict[int, set[str]]:
    """image id -> true categories: its instance annotations' category names plus the
    objects its reference captions mention (read with `rules`)."""
    truth: dict[int, set[str]] = {}
    for image_id in set(instance_categories) | set(reference_captions):
        objects = {NAME_OF.get(c, c) for c in instance_categories.get(image_id, ())}
        for caption in reference_captions.get(image_id, ()):
            objects.update(coco_mentions(caption, rules))
        truth[image_id] = objects
    return truth


@dataclass(frozen=True)
class CocoChair:
    chair_s: float
    chair_i: float
    recall: float
    mean_words: float
    captions: int
    hallucinated: tuple[tuple[int, tuple[str, ...]], ...]  # (image id, false objects)
    text_rules: TextRules = TextRules.ORIGINAL


def coco_chair(
    captions: Sequence[tuple[int, str]],
    truth: Mapping[int, set[str]],
    rules: TextRules = TextRules.ORIGINAL,
) -> CocoChair:
    """CHAIR of (image id, generated caption) pairs against `ground_truth`'s sets (made
    with the same `rules`)."""
    rules = text_rules(rules)
    if not captions:
        raise ValueError("no captions to evaluate: give at least one (image id, caption)")
    missing = sorted({i for i, _ in captions if i not in truth})
    if missing:
        raise ValueError(
            f"images {missing[:5]} have no annotations; evaluate images of the "
            "annotation files given (COCO val2014 for the paper's CHAIR)"
        )
    bad_captions = mentions = false_mentions = covered = true_total = word_count = 0
    hallucinated = []
    for image_id, text in captions:
        said, gold = coco_mentions(text, rules), truth[image_id]
        wrong = tuple(o for o in said if o not in gold)
        if wrong:
            bad_captions += 1
            hallucinated.append((image_id, wrong))
        mentions += len(said)
        false_mentions += len(wrong)
        covered += len(set(said) & gold)
        true_total += len(gold)
        word_count += len(words(text))
    n = len(captions)
    return CocoChair(
        bad_captions / n,
        false_mentions / mentions if mentions else 0.0,
        covered / true_total if true_total else 0.0,
        word_count / n,
        n,
        tuple(hallucinated),
        rules,
    )
