"""The trainer's Figure-5 statistic: a response's mean R_I over its own sentences."""

import pytest

from csr.records import SentenceRecord
from services.trainer.observe import _mean_relevance


def test_mean_relevance_leaves_out_the_scored_end_of_the_response():
    sentences = [
        SentenceRecord("There is a ring.", 0.5, 50.0, 45.05, 45.05),
        SentenceRecord("There is a cross.", 0.2, 20.0, 18.02, 18.02),
        SentenceRecord("", 0.9, 80.0, 72.09, 72.09),
    ]  # end_relevance 80
    assert _mean_relevance(sentences) == pytest.approx(35.0)  # (50 + 20) / 2, not 150 / 3
    assert _mean_relevance(sentences[2:]) == 0.0
