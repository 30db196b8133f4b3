"""The generator loop on a real (embedded) Redis, tiny VLMs (LLaVA; Qwen2-VL) and a real
reward worker."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from csr.config import CSRConfig, SearchConfig
from csr.records import PreferenceRecord
from services.generator.engine import VLMEngine
from services.generator.service import GeneratorLoop, GeneratorOptions, GeneratorParts
from services.reward.client import RewardClient
from services.runtime import embedded_redis
from services.runtime.prompt_sets import load_prompt_set
from services.runtime.prompts import PromptStreams, WorkItem
from tests.models.llava import build_tiny_llava, make_random_adapter, teach_sentences
from tests.models.qwen import build_tiny_qwen2_vl

CONFIG = replace(
    CSRConfig(),
    search=SearchConfig(num_beams=4, num_beam_groups=2, max_new_tokens=10, max_sentences=3),
)


@pytest.fixture(scope="module")
def taught_llava():
    model, processor = build_tiny_llava(seed=2)
    return teach_sentences(model, processor, steps=60), processor


@pytest.fixture
def world(tmp_path, taught_llava, start_worker):
    images = tmp_path / "images"
    images.mkdir()
    rows = []
    for i in range(6):
        Image.new("RGB", (40, 40), (40 * i, 200 - 30 * i, 90)).save(images / f"{i:04d}.png")
        rows.append(
            {"id": f"{i:04d}", "image": f"{i:04d}.png", "input": "<image>\ndescribe the image ."}
        )
    prompt_set = tmp_path / "prompts.json"
    prompt_set.write_text(json.dumps(rows))
    redis = embedded_redis.start(tmp_path / "redis.db", append_only=False)
    worker = start_worker("open_clip")
    client = RewardClient(worker.grpc_address)
    model, processor = taught_llava
    yield redis, prompt_set, images, client, VLMEngine(model, processor, CONFIG.search)
    client.close()
    embedded_redis.stop(redis)


def loop(redis, images, client, engine, consumer, reclaim_after_ms=60_000):
    streams = PromptStreams(redis, reclaim_after_ms=reclaim_after_ms)
    return GeneratorLoop(
        GeneratorParts(streams, engine, client.relevance),
        CONFIG,
        GeneratorOptions(Path(str(images)), consumer, batch_size=3),
    )


def test_prompt_set_in_the_authors_format_is_loaded_once(world):
    redis, prompt_set, _images, _client, _engine = world
    items = load_prompt_set(str(prompt_set), iteration=1)
    assert items[0] == WorkItem("0000", "describe the image .", "0000.png", 1)
    streams = PromptStreams(redis)
    assert streams.enqueue(items) == 6
    assert streams.enqueue(items) == 0  # loading the same set again queues nothing
    assert streams.enqueue(load_prompt_set(str(prompt_set), iteration=2)) == 6


def test_pairs_arrive_in_redis_with_a_valid_schema(world):
    redis, prompt_set, images, client, engine = world
    generator = loop(redis, images, client, engine, "g1")
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    while generator.run_once(block_ms=10):
        pass
    records = generator.streams.pairs()
    no_pairs = sum(generator.streams.no_pairs().values())
    assert len(records) + no_pairs == 6 and len(records) >= 3
    assert generator.streams.pending() == 0
    for record in records:
        assert PreferenceRecord.from_json(record.to_json()) == record
        assert (record.iteration, record.adapter_version) == (1, "base")
        assert record.image.endswith(".png") and record.chosen != record.rejected


def test_a_crashed_generator_loses_no_prompt_and_repeats_no_pair(world):
    redis, prompt_set, images, client, engine = world
    crashed = loop(redis, images, client, engine, "crashed", reclaim_after_ms=300)
    crashed.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    taken = crashed.streams.claim("crashed", 2, block_ms=10)  # took 2, then died
    assert len(taken) == 2
    survivor = loop(redis, images, client, engine, "survivor", reclaim_after_ms=300)
    deadline = time.monotonic() + 60
    while survivor.run_once(block_ms=10) or survivor.streams.pending():
        assert time.monotonic() < deadline, "prompts were left pending"
        time.sleep(0.05)
    records = survivor.streams.pairs()
    ids = [r.prompt_id for r in records]
    assert len(ids) == len(set(ids))  # no prompt produced two pairs
    assert len(records) + sum(survivor.streams.no_pairs().values()) == 6
    assert {r.prompt_id for r in records} <= {f"{i:04d}" for i in range(6)}
    # A redelivered prompt whose pair was already published is acknowledged, not repeated.
    replay = survivor.streams
    replay.enqueue([WorkItem("again", "describe .", "0000.png", 1)])
    [item] = replay.claim("survivor", 1, block_ms=10)
    record = records[0]
    assert replay.publish(item, record) is False
    assert len(replay.pairs()) == len(records) and replay.pending() == 0


def make_adapter(
    directory, version: str, base_name: str = "tiny-llava", seed: int = 5, hidden: int = 64
):
    return make_random_adapter(directory, version, base_name, seed, hidden)


def first_answers(generator, world_images, prompt_ids=("0000",)):
    from csr.search import SearchRequest
    from services.generator.pipeline import search_prompts
    from services.runtime.vlm import load_rgb

    requests = [
        SearchRequest(i, "describe the image .", str(world_images / f"{i}.png")) for i in prompt_ids
    ]
    outcomes = search_prompts(
        requests,
        generator.engine,
        lambda image, s: [1.0] * len(s),
        CONFIG,
        load_rgb,
        1,
        generator.adapter_version,
    )
    return [sorted(p.text for p in o.search.finished) for o in outcomes]


def test_hot_reload_changes_the_next_prompts_output_and_stamps_the_version(world, tmp_path):
    from services.generator.adapter_slot import AdapterSlot

    redis, prompt_set, images, client, engine = world
    model, processor = build_tiny_llava(seed=2)
    teach_sentences(model, processor, steps=60)
    engine = VLMEngine(model, processor, CONFIG.search)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis), engine, client.relevance, slot=AdapterSlot(model, "tiny-llava")
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g", batch_size=3),
    )
    before = first_answers(generator, images)
    done = generator.request_adapter(str(make_adapter(tmp_path / "v1", "1")))
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=2))
    generator.run_once(block_ms=10)  # the swap happens before this batch
    assert done.result(timeout=1) == "1" and generator.adapter_version == "1"
    assert {r.adapter_version for r in generator.streams.pairs()} == {"1"}
    after = first_answers(generator, images)
    assert after != before


def test_qwen2_vl_generator_publishes_pairs_and_hot_reloads(world, tmp_path):
    """The second architecture through the whole loop: pairs in Redis, then an adapter swap."""
    from services.generator.adapter_slot import AdapterSlot

    redis, prompt_set, images, client, _ = world
    model, processor = build_tiny_qwen2_vl(seed=2)
    teach_sentences(model, processor, steps=60)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis),
            VLMEngine(model, processor, CONFIG.search),
            client.relevance,
            slot=AdapterSlot(model, "tiny-qwen2-vl"),
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "q", batch_size=3),
    )
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    while generator.run_once(block_ms=10):
        pass
    records = generator.streams.pairs()
    assert len(records) + sum(generator.streams.no_pairs().values()) == 6 and len(records) >= 3
    for record in records:
        assert PreferenceRecord.from_json(record.to_json()) == record
        assert record.adapter_version == "base" and record.chosen != record.rejected
    before = first_answers(generator, images)
    adapter = make_random_adapter(
        tmp_path / "q1", "1", "tiny-qwen2-vl", builder=build_tiny_qwen2_vl
    )
    done = generator.request_adapter(str(adapter))
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=2))
    generator.run_once(block_ms=10)
    assert done.result(timeout=1) == "1"
    assert {r.adapter_version for r in generator.streams.pairs() if r.iteration == 2} == {"1"}
    assert first_answers(generator, images) != before


def tamper(adapter: Path, how: str, outside: Path) -> None:
    """Spoil a published adapter the way a hostile writer of the store could."""
    import hashlib
    import shutil

    path = adapter / "manifest.json"
    manifest = json.loads(path.read_text())
    if how == "empty-listing":  # the manifest vouches for nothing: any weights would pass
        manifest["files"] = {}
    elif how == "unlisted-file":
        (adapter / "notes.txt").write_text("not from the publisher")
    elif how in ("dotdot-name", "absolute-name"):  # a name that reads outside the folder
        (outside / "outside.bin").write_bytes(b"elsewhere")
        name = "../outside.bin" if how == "dotdot-name" else str(outside / "outside.bin")
        manifest["files"][name] = hashlib.sha256(b"elsewhere").hexdigest()
    elif how == "symlink":  # the same bytes, but from another place
        weights = adapter / "adapter_model.safetensors"
        shutil.copy(weights, outside / "weights.safetensors")
        weights.unlink()
        weights.symlink_to(outside / "weights.safetensors")
    elif how == "subfolder":
        (adapter / "extra").mkdir()
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    "spoil,message",
    [
        ("corrupt", "does not match its sha256"),
        ("pickle", "pickled weights"),
        ("other-base", "was trained on 'another-model'"),
        ("no-manifest", "lacks manifest.json"),
        ("wrong-shapes", "does not fit the model"),
        ("empty-listing", "files its manifest does not list"),
        ("unlisted-file", "does not list \\(notes.txt\\)"),
        ("dotdot-name", "names '../outside.bin', which is not a file name inside"),
        ("absolute-name", "which is not a file name inside"),
        ("symlink", "adapter_model.safetensors is a symbolic link"),
        ("subfolder", "extra is not a regular file"),
    ],
)
def test_a_bad_adapter_is_refused_and_the_old_one_keeps_serving(world, tmp_path, spoil, message):
    from services.generator.adapter_slot import AdapterSlot
    from services.runtime.adapters import AdapterError

    redis, _prompt_set, images, client, _engine = world
    model, processor = build_tiny_llava(seed=2)
    slot = AdapterSlot(model, "tiny-llava")
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis),
            VLMEngine(model, processor, CONFIG.search),
            client.relevance,
            slot=slot,
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g"),
    )
    assert generator.request_adapter(str(make_adapter(tmp_path / "good", "1"))) is not None
    generator.run_once(block_ms=10)
    serving = first_answers(generator, images)
    bad = make_adapter(
        tmp_path / "bad",
        "2",
        base_name="another-model" if spoil == "other-base" else "tiny-llava",
        hidden=128 if spoil == "wrong-shapes" else 64,
    )
    if spoil == "corrupt":
        weights = bad / "adapter_model.safetensors"
        data = bytearray(weights.read_bytes())
        data[-5] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif spoil == "pickle":
        (bad / "adapter_model.bin").write_bytes(b"not welcome")
    elif spoil == "no-manifest":
        (bad / "manifest.json").unlink()
    else:
        tamper(bad, spoil, tmp_path)
    done = generator.request_adapter(str(bad))
    generator.run_once(block_ms=10)
    with pytest.raises(AdapterError, match=message):
        done.result(timeout=1)
    assert generator.adapter_version == slot.version == "1"
    assert first_answers(generator, images) == serving


def test_admin_api_and_pubsub_reload_adapters_and_report_status(world, tmp_path):
    import threading

    import grpc

    from csr_api.v1 import generator_pb2, generator_pb2_grpc
    from services.generator.adapter_slot import AdapterSlot
    from services.generator.admin import create_server
    from services.runtime.announce import AdapterSubscriber, announce_adapter

    redis, _prompt_set, images, client, _engine = world
    model, processor = build_tiny_llava(seed=2)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis),
            VLMEngine(model, processor, CONFIG.search),
            client.relevance,
            slot=AdapterSlot(model, "tiny-llava"),
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g"),
    )
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            generator.run_once(block_ms=20)

    runner = threading.Thread(target=serve)
    runner.start()
    server, port = create_server(generator, "127.0.0.1", 0, swap_timeout=10)
    server.start()
    subscriber = AdapterSubscriber(redis, generator.request_adapter).start()
    try:
        admin = generator_pb2_grpc.GeneratorAdminStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        answer = admin.LoadAdapter(
            generator_pb2.LoadAdapterRequest(path=str(make_adapter(tmp_path / "v1", "1")))
        )
        assert answer.version == "1" and 0 < answer.swap_seconds < 10
        assert admin.Status(generator_pb2.StatusRequest()).adapter_version == "1"
        with pytest.raises(grpc.RpcError) as info:
            admin.LoadAdapter(generator_pb2.LoadAdapterRequest(path=str(tmp_path / "missing")))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "is not a directory" in info.value.details()
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        assert (
            health.Check(health_pb2.HealthCheckRequest()).status
            == health_pb2.HealthCheckResponse.SERVING
        )
        assert announce_adapter(redis, str(make_adapter(tmp_path / "v2", "2")), "2") == 1
        deadline = time.monotonic() + 10
        while generator.adapter_version != "2":
            assert time.monotonic() < deadline, "the announced adapter was never loaded"
            time.sleep(0.05)
    finally:
        subscriber.stop()
        server.stop(0)
        stop.set()
        runner.join(10)


def test_with_a_token_the_admin_api_refuses_callers_without_it(world, tmp_path):
    import threading

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from csr_api.v1 import generator_pb2, generator_pb2_grpc
    from services.generator.adapter_slot import AdapterSlot
    from services.generator.admin import create_server
    from services.runtime.announce import make_announcer

    redis, _prompt_set, images, client, _engine = world
    model, processor = build_tiny_llava(seed=2)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis),
            VLMEngine(model, processor, CONFIG.search),
            client.relevance,
            slot=AdapterSlot(model, "tiny-llava"),
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g"),
    )
    stop = threading.Event()
    runner = threading.Thread(
        target=lambda: [generator.run_once(20) for _ in iter(stop.is_set, True)]
    )
    runner.start()
    server, port = create_server(generator, "127.0.0.1", 0, swap_timeout=10, token="adm1n")
    server.start()
    target = f"127.0.0.1:{port}"
    try:
        channel = grpc.insecure_channel(target)
        admin = generator_pb2_grpc.GeneratorAdminStub(channel)
        request = generator_pb2.LoadAdapterRequest(path=str(make_adapter(tmp_path / "v1", "1")))
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "adm1n"),)):
            for call, message in ((admin.LoadAdapter, request), (admin.Status, None)):
                with pytest.raises(grpc.RpcError) as info:
                    call(message or generator_pb2.StatusRequest(), metadata=metadata)
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
                assert "CSR_GENERATOR_ADMIN_TOKEN" in info.value.details()
        assert generator.adapter_version == "base"  # nothing was loaded
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes need no token
        # The trainer's announcer without the token is refused; with it, the adapter serves.
        make_announcer(redis, [target], timeout=10)(request.path, "1")
        assert generator.adapter_version == "base"
        make_announcer(redis, [target], timeout=10, token="adm1n")(request.path, "1")
        assert generator.adapter_version == "1"
        status = admin.Status(
            generator_pb2.StatusRequest(), metadata=(("authorization", "Bearer adm1n"),)
        )
        assert status.adapter_version == "1"
    finally:
        server.stop(0)
        stop.set()
        runner.join(10)


def test_with_the_reward_service_down_no_prompt_is_lost_or_marked_done(world, clip_dirs, backends):
    import socket

    from services.reward.worker import BackgroundWorker
    from tests.integration.conftest import settings

    redis, prompt_set, images, _, engine = world
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    reward = RewardClient(f"127.0.0.1:{port}", timeout=2, retries=1, backoff=0.01)
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis, reclaim_after_ms=100),
            engine,
            reward.relevance,
            reward_probe=reward.info,
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g", batch_size=3, retry_after_s=0.05),
    )
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    assert generator.run_once(block_ms=10) == 0  # no reward service: nothing done
    assert not generator.healthy
    assert generator.run_once(block_ms=10) == 0  # stays off the queue while it is down
    assert generator.streams.pending() == 3 and generator.streams.pairs() == []
    import httpx

    from services.generator.observe import serve_health

    http, http_port = serve_health(generator, generator.metrics, "127.0.0.1", 0)
    health = httpx.get(f"http://127.0.0.1:{http_port}/healthz")
    assert health.status_code == 503 and health.json()["status"] == "reward-unavailable"
    worker = BackgroundWorker(
        settings("open_clip", clip_dirs["open_clip"], grpc_port=port), backends["open_clip"]
    ).start()
    try:
        deadline = time.monotonic() + 60
        while generator.run_once(block_ms=10) or generator.streams.pending():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        worker.stop()
        reward.close()
    assert generator.healthy
    assert httpx.get(f"http://127.0.0.1:{http_port}/healthz").status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics").text
    assert "csr_generator_tokens_total" in metrics, metrics
    assert "csr_generator_prompts_total 6.0" in metrics, [
        line for line in metrics.splitlines() if "total" in line
    ]
    http.shutdown()
    done = len(generator.streams.pairs()) + sum(generator.streams.no_pairs().values())
    assert done == 6
    assert generator.metrics.prompts._value.get() == 6  # the failed batch was not counted
    assert generator.metrics.pairs._value.get() == len(generator.streams.pairs())


def test_a_prompt_with_a_missing_image_fails_alone_and_its_batch_is_served(world):
    redis, prompt_set, images, client, engine = world
    generator = loop(redis, images, client, engine, "g")
    good = load_prompt_set(str(prompt_set), iteration=1)[:2]
    generator.streams.enqueue([good[0], WorkItem("lost", "describe .", "no-such.png", 1), good[1]])
    assert generator.run_once(block_ms=10) == 3
    assert generator.streams.pending() == 0
    [failed] = generator.streams.failed()
    assert failed["prompt_id"] == "lost" and "no-such.png" in failed["reason"]
    served = {r.prompt_id for r in generator.streams.pairs()}
    assert len(served) + sum(generator.streams.no_pairs().values()) == 3
    assert generator.streams.no_pairs().get("failed") == 1 and "lost" not in served


def test_a_failing_batch_leaves_its_prompts_pending_and_the_loop_running(world):
    redis, prompt_set, images, client, engine = world
    broken = GeneratorLoop(
        GeneratorParts(PromptStreams(redis), engine, lambda image, sentences: []),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g", batch_size=3),
    )  # wrong answer: RelevanceError
    broken.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1)[:3])
    assert broken.run_once(block_ms=10) == 0
    assert broken.streams.pending() == 3 and broken.streams.pairs() == []
    healthy = loop(redis, images, client, engine, "g")
    healthy.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1))
    assert healthy.run_once(block_ms=10) == 3  # the next batch is served


def test_a_prompt_that_breaks_its_batch_is_retried_alone_and_the_others_finish(world):
    redis, prompt_set, images, client, engine = world

    def fragile(image_ref, sentences):
        if image_ref.endswith("0001.png"):
            raise ValueError("this image breaks the model (simulated)")
        return client.relevance(image_ref, sentences)

    generator = GeneratorLoop(
        GeneratorParts(PromptStreams(redis), engine, fragile),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g", batch_size=3),
    )
    generator.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1)[:3])
    assert generator.run_once(block_ms=10) == 2  # 0000 and 0002 finished, 0001 left pending
    assert generator.streams.pending() == 1
    finished = {r.prompt_id for r in generator.streams.pairs()}
    assert "0001" not in finished
    assert len(finished) + sum(generator.streams.no_pairs().values()) == 2


def test_a_batch_slower_than_the_reclaim_time_is_not_taken_over(world):
    import threading

    redis, prompt_set, images, client, engine = world

    def slow(image_ref, sentences):
        time.sleep(0.15)
        return client.relevance(image_ref, sentences)

    owner = GeneratorLoop(
        GeneratorParts(PromptStreams(redis, reclaim_after_ms=200), engine, slow),
        CONFIG,
        GeneratorOptions(Path(str(images)), "owner", batch_size=2),
    )
    owner.streams.enqueue(load_prompt_set(str(prompt_set), iteration=1)[:2])
    stolen, running = [], threading.Event()

    def rival():  # a replica that takes over whatever has been idle for 200 ms
        while not running.is_set():
            answer = redis.xautoclaim(
                "csr:prompts", "generators", "rival", 200, start_id="0-0", count=2
            )
            stolen.extend(entry for entry in answer[1] if entry[1])
            time.sleep(0.02)

    started = time.monotonic()
    thread = threading.Thread(target=rival)
    thread.start()
    try:
        assert owner.run_once(block_ms=10) == 2
    finally:
        running.set()
        thread.join()
    assert time.monotonic() - started > 0.6  # well past the 200 ms reclaim time
    assert stolen == [] and owner.streams.pending() == 0


def test_an_unreadable_adapter_is_refused_without_stopping_the_loop(world, tmp_path):
    from services.generator.adapter_slot import AdapterSlot
    from services.runtime.adapters import AdapterError

    redis, _prompt_set, images, client, _engine = world
    model, processor = build_tiny_llava(seed=2)
    slot = AdapterSlot(model, "tiny-llava")
    generator = GeneratorLoop(
        GeneratorParts(
            PromptStreams(redis),
            VLMEngine(model, processor, CONFIG.search),
            client.relevance,
            slot=slot,
        ),
        CONFIG,
        GeneratorOptions(Path(str(images)), "g"),
    )
    adapter = make_adapter(tmp_path / "v1", "1")

    def unreadable(*args, **kwargs):
        raise PermissionError("permission denied (simulated)")

    slot.load = unreadable
    done = generator.request_adapter(str(adapter))
    generator.run_once(block_ms=10)
    with pytest.raises(AdapterError, match="permission denied"):
        done.result(timeout=1)
    assert generator.adapter_version == "base"
