"""ScoreBatch: several images' sentences in one call, equal to one Score call per image; the
first bad request fails the call by its index; the client's hash protocol works across it."""

from __future__ import annotations

import grpc
import pytest

from csr_api.v1 import reward_pb2, reward_pb2_grpc
from services.reward.client import RewardClient
from tests.integration.conftest import png

ITEMS = [
    (png((200, 30, 30)), ["there is a red square .", "a cat ."]),
    (png((30, 30, 200), (48, 32)), ["there is a blue circle ."]),
    (png((30, 200, 30)), ["a dog .", "a car .", "the sky ."]),
]


def test_a_batch_scores_like_one_call_per_image(start_worker):
    worker = start_worker()
    with RewardClient(worker.grpc_address) as client:
        alone = [client.score(image, sentences) for image, sentences in ITEMS]
    with RewardClient(worker.grpc_address) as client:
        together = client.score_batch(ITEMS)
    assert [len(t) for t in together] == [2, 1, 3]
    for got, expected in zip(together, alone):
        assert [s.relevance for s in got] == pytest.approx(
            [s.relevance for s in expected], abs=1e-5
        )
        assert [s.cosine for s in got] == pytest.approx([s.cosine for s in expected], abs=1e-7)


def test_the_first_bad_request_fails_the_call_by_its_index(start_worker):
    stub = reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(start_worker().grpc_address))
    batch = reward_pb2.ScoreBatchRequest(
        requests=[
            reward_pb2.ScoreRequest(image_bytes=png(), sentences=["fine ."]),
            reward_pb2.ScoreRequest(image_bytes=b"not an image", sentences=["fine ."]),
        ]
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(batch)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request 1:" in info.value.details() and "not a decodable image" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        stub.ScoreBatch(reward_pb2.ScoreBatchRequest())
    assert "1 to 1024 requests, not 0" in info.value.details()
    ok = stub.ScoreBatch(reward_pb2.ScoreBatchRequest(requests=batch.requests[:1]))
    assert len(ok.responses) == 1  # and the worker keeps serving


def test_a_worker_that_lost_the_images_gets_the_bytes_again(start_worker):
    first = start_worker()
    with RewardClient(first.grpc_address) as client:
        expected = client.score_batch(ITEMS)
        first.stop()
        second = start_worker()  # knows none of the images the client sent by hash before
        client._channel.close()
        client._channel = grpc.insecure_channel(second.grpc_address)
        client._stub = reward_pb2_grpc.RewardServiceStub(client._channel)
        again = client.score_batch(ITEMS)
    assert [s.relevance for own in again for s in own] == pytest.approx(
        [s.relevance for own in expected for s in own], abs=1e-5
    )
    refused = second.worker.scorer.metrics.requests.labels("grpc", "unknown-image")
    assert refused._value.get() == 1  # the hashes were refused once, then bytes were sent


def test_batches_are_split_at_the_per_call_sentence_limit(start_worker):
    worker = start_worker(max_sentences_per_request=4)
    with RewardClient(worker.grpc_address, max_sentences_per_call=4) as client:
        scores = client.score_batch(ITEMS + [(png(), [f"word {i} ." for i in range(6)])])
    assert [len(s) for s in scores] == [2, 1, 3, 6]
