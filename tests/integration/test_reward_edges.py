"""Reward workers refuse bad input by name and keep serving; auth, health, overload, deadlines."""

from __future__ import annotations

import base64
import io
import time

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from csr_api.v1 import reward_pb2, reward_pb2_grpc
from services.reward.client import RewardClient, RewardServiceError
from services.reward.models import ModelLoadError, load_backend
from tests.integration.conftest import png

OK = ["there is a cat ."]


def noise_png(side: int) -> bytes:
    """Random pixels do not compress: a side of 200 makes a PNG of about 120 kB."""
    buffer = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)
    ).save(buffer, "PNG")
    return buffer.getvalue()


def stub_for(worker):
    return reward_pb2_grpc.RewardServiceStub(grpc.insecure_channel(worker.grpc_address))


BAD_REQUESTS = [
    ({"image_bytes": b"definitely not an image", "sentences": OK}, "not a decodable image"),
    ({"image_bytes": b"", "sentences": OK}, "the image is empty"),
    ({"image_sha256": "ab" * 32, "sentences": OK}, "does not hold image"),
    ({"image_sha256": "XYZ", "sentences": OK}, "not 64 lower-case hex"),
    ({"sentences": OK}, "no image"),
    ({"image_bytes": png(), "sentences": []}, "no sentences"),
    ({"image_bytes": png(), "sentences": ["fine .", "   "]}, "sentence 1 is empty"),
    (
        {"image_bytes": png(), "sentences": ["a ."] * 9},
        "9 sentences in one request; the limit is 8",
    ),
    ({"image_bytes": png(), "sentences": ["x" * 5000]}, "sentence 0 has 5000 characters"),
    ({"image_bytes": noise_png(200), "sentences": OK}, "bytes; the limit is 20000"),
]


@pytest.fixture
def strict_worker(start_worker):
    return start_worker(max_sentences_per_request=8, max_image_bytes=20000)


@pytest.mark.parametrize("fields,message", BAD_REQUESTS)
def test_grpc_bad_input_is_invalid_argument_and_named(strict_worker, fields, message):
    with pytest.raises(grpc.RpcError) as info:
        stub_for(strict_worker).Score(reward_pb2.ScoreRequest(**fields))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert (
        len(
            stub_for(strict_worker)
            .Score(reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK))
            .scores
        )
        == 1
    )


def test_unknown_image_tells_the_client_to_send_bytes(strict_worker):
    with pytest.raises(grpc.RpcError) as info:
        stub_for(strict_worker).Score(reward_pb2.ScoreRequest(image_sha256="cd" * 32, sentences=OK))
    assert ("csr-error", "unknown-image") in info.value.trailing_metadata()
    assert "send the image bytes" in info.value.details()


def test_invalid_utf8_is_invalid_argument(strict_worker):
    # A ScoreRequest whose sentence (field 3) holds the bytes FF FE: not UTF-8.
    raw = reward_pb2.ScoreRequest(image_bytes=png()).SerializeToString() + b"\x1a\x02\xff\xfe"
    channel = grpc.insecure_channel(strict_worker.grpc_address)
    call = channel.unary_unary(
        "/csr.v1.RewardService/Score",
        request_serializer=lambda b: b,
        response_deserializer=reward_pb2.ScoreResponse.FromString,
    )
    with pytest.raises(grpc.RpcError) as info:
        call(raw)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in info.value.details()


@pytest.mark.parametrize(
    "body,message",
    [
        ({"image_base64": base64.b64encode(b"junk").decode(), "sentences": OK}, "not a decodable"),
        ({"image_base64": "%%%", "sentences": OK}, "not valid base64"),
        ({"sentences": OK}, "no image"),
        (
            {"image_base64": base64.b64encode(png()).decode(), "sentences": "a cat"},
            "list of strings",
        ),
        ({"image_base64": base64.b64encode(png()).decode(), "sentences": []}, "no sentences"),
    ],
)
def test_http_bad_input_is_400_and_named(strict_worker, body, message):
    response = httpx.post(f"{strict_worker.http_url}/v1/score", json=body)
    assert response.status_code == 400
    assert message in response.json()["detail"]


def test_http_invalid_utf8_and_non_json(strict_worker):
    for raw in (b'{"sentences": ["\xff"]}', b"[1, 2"):
        response = httpx.post(
            f"{strict_worker.http_url}/v1/score",
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and "UTF-8 JSON" in response.json()["detail"]


TOO_LARGE = [  # (JSON body fields, message): each past one of strict_worker's limits
    ({"image_base64": base64.b64encode(noise_png(200)).decode()}, "bytes; the limit is 20000"),
    ({"sentences": ["a ."] * 9}, "9 sentences in one request; the limit is 8"),
    ({"sentences": ["x" * 5000]}, "sentence 0 has 5000 characters"),
]


@pytest.mark.parametrize("fields,message", TOO_LARGE)
def test_http_input_past_a_size_limit_is_413_too_large(strict_worker, fields, message):
    body = {"image_base64": base64.b64encode(png()).decode(), "sentences": OK, **fields}
    response = httpx.post(f"{strict_worker.http_url}/v1/score", json=body)
    assert response.status_code == 413 and response.json()["error"] == "too-large"
    assert message in response.json()["detail"]


def test_grpc_input_past_a_size_limit_is_invalid_argument_marked_too_large(strict_worker):
    with pytest.raises(grpc.RpcError) as info:
        stub_for(strict_worker).Score(
            reward_pb2.ScoreRequest(image_bytes=png(), sentences=["a ."] * 9)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # not retried by clients
    assert ("csr-error", "too-large") in info.value.trailing_metadata()


def test_http_multipart_past_the_form_limits_is_413_and_malformed_is_400(strict_worker):
    url = f"{strict_worker.http_url}/v1/score"
    files = {"image": ("a.png", png(), "image/png")}
    many = httpx.post(url, files=files, data={"sentences": ["a ."] * 1001})  # Starlette: 1000
    huge = httpx.post(url, files=files, data={"sentences": ["a " * 600_000]})  # a 1.2 MB field
    for response in (many, huge):
        assert response.status_code == 413 and response.json()["error"] == "too-large"
    assert "Maximum number of fields" in many.json()["detail"]
    assert "maximum size" in huge.json()["detail"]
    unbounded = httpx.post(url, content=b"x", headers={"content-type": "multipart/form-data"})
    assert unbounded.status_code == 400 and "boundary" in unbounded.json()["detail"]
    ok = httpx.post(url, files=files, data={"sentences": OK})
    assert ok.status_code == 200 and len(ok.json()["scores"]) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"sentences": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"sentences": ["a ."], "x": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}",
        b"[" * 100_000,  # deep and never closed
    ],
)
def test_http_deeply_nested_json_is_400_and_the_worker_keeps_serving(strict_worker, raw):
    response = httpx.post(
        f"{strict_worker.http_url}/v1/score",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid-argument"
    assert "nested" in response.json()["detail"]
    body = {"image_base64": base64.b64encode(png()).decode(), "sentences": OK}
    assert httpx.post(f"{strict_worker.http_url}/v1/score", json=body).status_code == 200


def test_token_is_required_on_both_apis_when_set(start_worker):
    worker = start_worker(token="s3cret")
    request = reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK)
    with pytest.raises(grpc.RpcError) as info:
        stub_for(worker).Score(request)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError):
        stub_for(worker).Score(request, metadata=(("authorization", "Bearer wrong"),))
    assert stub_for(worker).Score(request, metadata=(("authorization", "Bearer s3cret"),)).scores
    with RewardClient(worker.grpc_address, token="s3cret") as client:
        assert len(client.score(png(), OK)) == 1
    body = {"image_base64": base64.b64encode(png()).decode(), "sentences": OK}
    assert httpx.post(f"{worker.http_url}/v1/score", json=body).status_code == 401
    assert (
        httpx.post(
            f"{worker.http_url}/v1/score", json=body, headers={"authorization": "Bearer s3cret"}
        ).status_code
        == 200
    )
    health = health_pb2_grpc.HealthStub(grpc.insecure_channel(worker.grpc_address))
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )


def test_health_metrics_reflection_and_docs(start_worker):
    worker = start_worker()
    channel = grpc.insecure_channel(worker.grpc_address)
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="csr.v1.RewardService")).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    [answer] = list(
        reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    )
    names = {s.name for s in answer.list_services_response.service}
    assert {"csr.v1.RewardService", "grpc.health.v1.Health"} <= names
    assert httpx.get(f"{worker.http_url}/healthz").json()["status"] == "ok"
    with RewardClient(worker.grpc_address) as client:
        client.score(png(), OK)
    metrics = httpx.get(f"{worker.http_url}/metrics").text
    assert 'csr_reward_requests_total{api="grpc",outcome="ok"} 1.0' in metrics
    assert "csr_reward_batch_size_bucket" in metrics and "csr_reward_queue_wait_seconds" in metrics
    assert "/v1/score" in httpx.get(f"{worker.http_url}/openapi.json").text
    info = stub_for(worker).Info(reward_pb2.InfoRequest())
    assert (info.backend, info.embedding_dim, info.context_length) == ("open_clip", 32, 77)


def slowed(backend, seconds: float):
    original = backend.encode_texts_flagged

    def slow(texts):
        time.sleep(seconds)
        return original(texts)

    return original, slow


def test_a_full_queue_fails_fast_with_resource_exhausted(start_worker, backends):
    backend = backends["open_clip"]
    worker = start_worker(
        max_queue_sentences=8, max_sentences_per_request=8, max_batch_size=8, max_wait_ms=0
    )
    image = png((9, 9, 9))
    stub = stub_for(worker)
    stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=OK))  # image now cached
    _original, slow = slowed(backend, 0.8)
    backend.encode_texts_flagged = slow
    try:
        eight = reward_pb2.ScoreRequest(image_bytes=image, sentences=OK * 8)
        first = stub.Score.future(eight)  # taken into a batch at once, encodes for 0.8 s
        time.sleep(0.2)
        second = stub.Score.future(eight)  # waits in the queue: 8 of 8 places
        time.sleep(0.2)
        with pytest.raises(grpc.RpcError) as info:
            stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=OK))
        body = {"image_base64": base64.b64encode(image).decode(), "sentences": OK}
        response = httpx.post(f"{worker.http_url}/v1/score", json=body)
        assert len(first.result().scores) == len(second.result().scores) == 8
    finally:
        del backend.encode_texts_flagged
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "8 sentences are queued (limit 8)" in info.value.details()
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert stub.Score(reward_pb2.ScoreRequest(image_bytes=image, sentences=OK)).scores


def test_a_request_limit_beyond_the_queue_is_refused_at_start():
    from pydantic import ValidationError

    from services.reward.settings import RewardSettings

    with pytest.raises(ValidationError, match="max_sentences_per_request=10 exceeds"):
        RewardSettings(max_queue_sentences=4, max_sentences_per_request=10)


def test_an_oversized_body_is_413_with_or_without_a_length(strict_worker):
    too_big = b"x" * (9 * 1024 * 1024)  # the limit: 4/3 of 20000 image bytes + 8 MiB
    with_length = httpx.post(
        f"{strict_worker.http_url}/v1/score",
        content=too_big,
        headers={"content-type": "application/json"},
    )
    chunked = httpx.post(
        f"{strict_worker.http_url}/v1/score",
        content=(too_big[i : i + 65536] for i in range(0, len(too_big), 65536)),
        headers={"content-type": "application/json"},
    )
    for response in (with_length, chunked):
        assert response.status_code == 413 and response.json()["error"] == "too-large"
    assert stub_for(strict_worker).Score(reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK))


def test_a_model_failure_is_internal_named_and_counted(start_worker, backends):
    backend = backends["open_clip"]

    def broken(texts):
        raise RuntimeError("CUDA out of memory (simulated)")

    worker = start_worker()
    backend.encode_texts_flagged = broken
    try:
        with pytest.raises(grpc.RpcError) as info:
            stub_for(worker).Score(reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK))
        body = {"image_base64": base64.b64encode(png()).decode(), "sentences": OK}
        response = httpx.post(f"{worker.http_url}/v1/score", json=body)
    finally:
        del backend.encode_texts_flagged
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "out of memory" in info.value.details()
    assert response.status_code == 500 and "out of memory" in response.json()["detail"]
    requests = worker.worker.scorer.metrics.requests
    assert requests.labels("grpc", "internal")._value.get() == 1
    assert requests.labels("grpc", "ok")._value.get() == 0
    assert stub_for(worker).Score(reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK))


def test_a_failed_start_releases_what_it_started(clip_dirs, backends):
    import socket

    from services.reward.worker import BackgroundWorker
    from tests.integration.conftest import settings

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    grpc_port = free.getsockname()[1]
    free.close()
    worker = BackgroundWorker(
        settings(
            "open_clip",
            clip_dirs["open_clip"],
            grpc_port=grpc_port,
            http_port=taken.getsockname()[1],
        ),
        backends["open_clip"],
    )
    with pytest.raises(OSError):
        worker.start()
    taken.close()
    probe = socket.socket()
    probe.bind(("127.0.0.1", grpc_port))  # the gRPC port was given back
    probe.close()


def test_the_client_splits_requests_beyond_the_workers_limit(start_worker):
    worker = start_worker(max_sentences_per_request=3, max_queue_sentences=64)
    sentences = [f"there is a {w} ." for w in ("cat", "dog", "sky", "car", "sun", "red", "ring")]
    with RewardClient(worker.grpc_address, max_sentences_per_call=3) as client:
        together = [s.cosine for s in client.score(png(), sentences)]
        alone = [client.score(png(), [s])[0].cosine for s in sentences]
    assert together == pytest.approx(alone, abs=1e-5)


def test_client_deadline_is_honoured_and_the_worker_keeps_serving(start_worker, backends):
    backend = backends["open_clip"]
    _, slow = slowed(backend, 0.6)
    backend.encode_texts_flagged = slow
    try:
        worker = start_worker()
        started = time.perf_counter()
        with pytest.raises(grpc.RpcError) as info:
            stub_for(worker).Score(
                reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK), timeout=0.2
            )
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.perf_counter() - started < 0.55
    finally:
        del backend.encode_texts_flagged
    assert stub_for(worker).Score(reward_pb2.ScoreRequest(image_bytes=png(), sentences=OK))


@pytest.mark.parametrize("backend", ["open_clip", "hf"])
def test_a_missing_model_fails_at_start_naming_it(backend, tmp_path):
    with pytest.raises(ModelLoadError, match="no-such-model"):
        load_backend(backend, str(tmp_path / "no-such-model"))


def test_client_reports_an_unreachable_service():
    with RewardClient("127.0.0.1:1", timeout=0.5, retries=1, backoff=0.01) as client:
        with pytest.raises(RewardServiceError, match="UNAVAILABLE"):
            client.score(png(), OK)
