"""The Figure-5 statistic of the trainer's plots and the run reports: a response's mean R_I
over its own sentences."""

import pytest

from csr.pairs_view import response_relevance
from csr.records import SentenceRecord


def test_mean_relevance_leaves_out_the_scored_end_of_the_response():
    sentences = [
        SentenceRecord("There is a ring.", 0.5, 50.0, 45.05, 45.05),
        SentenceRecord("There is a cross.", 0.2, 20.0, 18.02, 18.02),
        SentenceRecord("", 0.9, 80.0, 72.09, 72.09),
    ]  # end_relevance 80
    assert response_relevance(sentences) == pytest.approx(35.0)  # (50 + 20) / 2, not 150 / 3
    assert response_relevance(sentences[2:]) == 0.0
