"""A sentence's score is the same bits whatever it is batched with (fixed shapes): alone, or
amid concurrent requests of other lengths and counts, on both backends; the same holds for
the in-process scoring the toy world's agreement command uses."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from csr_api.v1 import reward_pb2, reward_pb2_grpc
from tests.integration.conftest import png

TARGET = "there is a red square ."
WORDS = ["there", "is", "a", "red", "blue", "square", "circle", "cat", "dog", "the", "sky"]


def _others(rng: random.Random, count: int) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(1, 12))) + " ." for _ in range(count)]


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_a_sentence_scores_the_same_bits_alone_and_in_any_batch(start_worker, backend):
    import grpc

    worker = start_worker(backend, max_batch_size=16, max_wait_ms=20.0)
    stub = reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(worker.grpc_address))
    image = png()
    alone = stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=[TARGET])).scores[0]
    rng = random.Random(0)
    requests = []
    for _ in range(12):  # the target at every place of requests of 1 to 20 sentences
        others = _others(rng, rng.randint(0, 19))
        place = rng.randint(0, len(others))
        requests.append((others[:place] + [TARGET] + others[place:], place))

    def score(request):
        sentences, place = request
        reply = stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=sentences))
        return reply.scores[place]

    with ThreadPoolExecutor(6) as pool:  # concurrent: the batcher merges them as they come
        got = list(pool.map(score, requests))
    assert {(s.cosine, s.relevance) for s in got} == {(alone.cosine, alone.relevance)}
