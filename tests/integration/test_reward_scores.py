"""Reward workers on port 0 with tiny CLIPs of both backends: scores, batching, cache, HTTP."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
import torch
from PIL import Image

from csr_api.v1 import reward_pb2, reward_pb2_grpc
from services.reward.client import RewardClient
from tests.integration.conftest import png

SENTENCES = ["there is a red square .", "a blue circle", "there is a " + "large " * 90 + "cat ."]


def direct_scores(backend, image: bytes, sentences):
    """R_I computed straight from the model, without the service."""
    image_embedding = backend.encode_images([Image.open(io.BytesIO(image)).convert("RGB")])[0]
    cosines = (backend.encode_texts(sentences) @ image_embedding).tolist()
    return [max(100.0 * c, 0.0) for c in cosines], cosines


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_scores_equal_a_direct_model_computation(start_worker, backends, backend):
    worker = start_worker(backend)
    image = png()
    with RewardClient(worker.grpc_address) as client:
        scores = client.score(image, SENTENCES)
    relevance, cosines = direct_scores(backends[backend], image, SENTENCES)
    assert [s.cosine for s in scores] == pytest.approx(cosines, abs=1e-5)
    assert [s.relevance for s in scores] == pytest.approx(relevance, abs=1e-5)
    assert [s.truncated for s in scores] == [False, False, True]
    assert any(c < 0 for c in cosines) or all(r == 100 * c for r, c in zip(relevance, cosines))


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_http_json_and_multipart_match_grpc(start_worker, backend):
    worker = start_worker(backend)
    image = png((20, 200, 40))
    with RewardClient(worker.grpc_address) as client:
        expected = [s.cosine for s in client.score(image, SENTENCES[:2])]
    by_json = httpx.post(
        f"{worker.http_url}/v1/score",
        json={"image_base64": base64.b64encode(image).decode(), "sentences": SENTENCES[:2]},
    )
    by_form = httpx.post(
        f"{worker.http_url}/v1/score",
        files={"image": ("x.png", image)},
        data={"sentences": SENTENCES[:2]},
    )
    by_hash = httpx.post(
        f"{worker.http_url}/v1/score",
        json={"image_sha256": by_json.json()["image_sha256"], "sentences": SENTENCES[:2]},
    )
    for response in (by_json, by_form, by_hash):
        assert response.status_code == 200, response.text
        assert [s["cosine"] for s in response.json()["scores"]] == pytest.approx(expected, abs=1e-6)


def _concurrent_scores(address, images, sentences_per_request):
    def one(i):
        with RewardClient(address) as client:
            return [
                s.cosine for s in client.score(images[i % len(images)], sentences_per_request[i])
            ]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(len(sentences_per_request))))


def test_batching_on_and_off_give_the_same_scores(start_worker):
    images = [png((200, 30, 30)), png((30, 30, 200), (50, 50))]
    requests = [
        [f"there is a {c} {s} ." for s in ("circle", "ring", "cross")]
        for c in ("red", "blue", "green", "yellow", "small", "large")
    ] * 3
    unbatched = start_worker(max_batch_size=1, max_wait_ms=0)
    batched = start_worker(max_batch_size=64, max_wait_ms=30)
    off = _concurrent_scores(unbatched.grpc_address, images, requests)
    on = _concurrent_scores(batched.grpc_address, images, requests)
    assert len(on) == len(off) == len(requests)
    for a, b in zip(on, off):
        assert a == pytest.approx(b, abs=1e-5)
    sizes = batched.worker.scorer.metrics.batch_size
    assert sizes._sum.get() / sum(b.get() for b in sizes._buckets) > 3  # several requests a batch
    unbatched_sizes = unbatched.worker.scorer.metrics.batch_size
    assert unbatched_sizes._sum.get() == sum(b.get() for b in unbatched_sizes._buckets)


def test_cache_hit_and_miss_give_the_same_scores(start_worker):
    worker = start_worker()
    image = png((120, 10, 200))
    stub = reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(worker.grpc_address))
    miss = stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=SENTENCES))
    by_hash = stub.Score(
        reward_pb2.ScoreRequest(image_sha256=miss.image_sha256, sentences=SENTENCES)
    )
    by_bytes_again = stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=SENTENCES))
    assert list(miss.scores) == list(by_hash.scores) == list(by_bytes_again.scores)
    cache = worker.worker.scorer.metrics.cache
    assert cache.labels("miss")._value.get() == 1
    assert cache.labels("hit")._value.get() == 2


def test_an_image_is_encoded_once_for_concurrent_requests(start_worker, backends):
    calls = []
    backend = backends["open_clip"]
    original = backend.encode_images

    def counting(images):
        calls.append(len(images))
        return original(images)

    backend.encode_images = counting
    try:
        worker = start_worker()
        image = png((1, 2, 3))
        _concurrent_scores(worker.grpc_address, [image], [["a cat ."]] * 16)
    finally:
        del backend.encode_images
    assert calls == [1]


def test_the_cache_is_bounded_in_bytes(start_worker):
    # One embedding of the tiny open_clip is 32 floats (128 bytes) + the key: a budget of
    # 700 bytes holds 2, so the third image evicts the first.
    worker = start_worker(cache_bytes=700)
    with RewardClient(worker.grpc_address) as client:
        for color in ((1, 1, 1), (2, 2, 2), (3, 3, 3)):
            client.score(png(color), ["a cat ."])
    cache = worker.worker.scorer.cache
    assert len(cache) == 2 and cache.nbytes <= 700


def test_open_clip_one_pass_tokenisation_matches_open_clips_own(backends, clip_dirs):
    import open_clip

    texts = SENTENCES + ["word " * 74 + ".", "word " * 75 + "."]  # 77 tokens fit, 78 do not
    tokens, flags = backends["open_clip"].tokenize(texts)
    reference = open_clip.get_tokenizer(f"local-dir:{clip_dirs['open_clip']}")(texts)
    assert torch.equal(tokens["text"], reference)
    assert flags == [False, False, True, False, True]
