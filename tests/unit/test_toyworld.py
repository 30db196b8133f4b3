"""The toy world: deterministic scenes, exact truth, co-occurrence and the captions' prior."""

import random

import pytest

from toyworld.world import (
    PAIRS,
    SHAPES,
    SIGNATURE,
    WorldConfig,
    biased_caption,
    caption,
    render,
    scenes,
)


def test_scenes_are_the_same_for_the_same_seed_and_rendered_bit_identically():
    a, b = scenes(7, 50), scenes(7, 50)
    assert a == b and scenes(8, 50) != a
    assert render(a[0]).tobytes() == render(b[0]).tobytes()
    assert render(a[0]).size == (32, 32)


def test_objects_do_not_overlap_and_stay_inside():
    for scene in scenes(1, 300):
        assert 1 <= len(scene.objects) <= 3 and len(scene.shapes) == len(scene.objects)
        for i, o in enumerate(scene.objects):
            assert o.x >= 0 and o.x + o.size <= 32 and o.y >= 0 and o.y + o.size <= 32
            for p in scene.objects[i + 1 :]:
                assert (
                    o.x + o.size <= p.x
                    or p.x + p.size <= o.x
                    or o.y + o.size <= p.y
                    or p.y + p.size <= o.y
                )


def test_signature_colours_and_co_occurrence_follow_their_probabilities():
    sample = scenes(3, 4000)
    objects = [o for s in sample for o in s.objects]
    signature = sum(o.colour == SIGNATURE[o.shape] for o in objects) / len(objects)
    # worn with p = 0.7, plus 1/6 of the other 0.3 by chance: 0.75
    assert signature == pytest.approx(0.7 + 0.3 / 6, abs=0.03)
    with_trigger = [s for s in sample if "circle" in s.shapes]
    alone = [s for s in sample if "circle" not in s.shapes]
    together = sum("square" in s.shapes for s in with_trigger) / len(with_trigger)
    apart = sum("square" in s.shapes for s in alone) / len(alone)
    assert together > apart + 0.15  # the trigger brings its partner along


def test_correct_captions_and_the_biased_prior():
    assert caption({"ring", "circle"}) == "There is a circle. There is a ring."
    sample = scenes(5, 3000)
    rng = random.Random(0)
    eligible = [s for s in sample if "circle" in s.shapes and "square" not in s.shapes]
    added = sum("square" in biased_caption(s, rng) for s in eligible) / len(eligible)
    assert added == pytest.approx(0.7, abs=0.05)
    never = [s for s in sample if not any(t in s.shapes for t in PAIRS)]
    assert all(biased_caption(s, rng) == caption(s.shapes) for s in never)
    assert set(SHAPES) == set(SIGNATURE)


def test_bad_probabilities_are_refused_by_name():
    with pytest.raises(ValueError, match="prior_p=1.5"):
        WorldConfig(prior_p=1.5)
