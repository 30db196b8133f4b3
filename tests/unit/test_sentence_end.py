"""The sentence-end rule (csr.sentence_end) on texts judged by hand, and the search's use of it."""

from __future__ import annotations

import pytest

from csr.config import RewardConfig, SearchConfig, SelectionConfig
from csr.search import Candidate, SearchRequest, run_search
from csr.sentence_end import ends_sentence, ends_with_marker

ENDS = [
    "There is a dog.",
    "There is a dog. ",
    'The sign reads "stop."',
    "A dog (brown).",
    "A dog (brown.)",
    "He said 'hi.'",
    "“Stop.”",
    "A dog.\n",
    "A dog.\n\n",
    "It was built in 2019.",
    "1.",
    "So do I.",
    "They sell cats, dogs, etc.",
    "there is a circle .",
]
GOES_ON = [
    "Wait...",
    "Wait..",
    "Wait….",
    "Wait…",
    "There is Mr.",
    "Dr.",
    "It is red, e.g.",
    "(i.e.",
    "He lives in the U.S.",
    "A photo by J.",
    "There is a dog",
    "A dog.5",
    'A dog."x',
]


@pytest.mark.parametrize("text", ENDS)
def test_these_end_a_sentence(text):
    assert ends_sentence(text, ".")


@pytest.mark.parametrize("text", GOES_ON)
def test_these_do_not(text):
    assert not ends_sentence(text, ".")


def test_the_token_part_ignores_abbreviations_but_not_closers_or_ellipses():
    # what a token's own text can show: "Mr." may follow a word that is no title
    assert ends_with_marker("Mr.", ".") and ends_with_marker('."', ".")
    assert not ends_with_marker("...", ".") and not ends_with_marker("…", ".")


def test_other_markers_take_closers_and_repeats():
    assert ends_sentence('He asked "why?"', "?")
    assert ends_sentence("Why??", "?")
    assert not ends_sentence("Why? No", "?")
    assert ends_sentence("好。", "。")


def _finish_reasons(text: str) -> list[str]:
    """The finish reasons of a search whose only candidate is `text`, then nothing."""
    request = SearchRequest("p", "describe", "img")

    def expand(prefixes):
        return [[] if p.sentences else [Candidate(text, (-0.5, -0.5))] for p in prefixes]

    def relevance(image_ref, sentences):
        return [10.0] * len(sentences)

    config = SearchConfig(num_beams=1, num_beam_groups=1)
    [result] = run_search(
        [request], expand, relevance, config, RewardConfig(), SelectionConfig("mean")
    )
    return [p.finish_reason for p in result.finished]


def test_search_goes_on_after_a_quoted_sentence_end():
    # the candidate ended on a sentence end, so its path goes on (and ends for want of a
    # continuation) instead of being cut as an unterminated sentence
    assert _finish_reasons(' He said "hi."') == ["no_continuation"]
    assert _finish_reasons(" He said") == ["unterminated"]
