"""Records and files a hostile writer could leave in Redis or on disk, read by the services on a
real (embedded) Redis: each is refused by name, set aside, and the reader goes on."""

from __future__ import annotations

import json
import time

import pytest

from services.runtime.adapter_store import AdapterStore, StoreError
from services.runtime.announce import AdapterSubscriber
from services.runtime.pairs import PairConsumer
from services.runtime.prompt_sets import PromptSetError, load_prompt_set
from services.runtime.prompts import PromptStreams, WorkItem

DEEP = "[" * 100_000 + "]" * 100_000


def test_malformed_prompt_entries_are_failed_alone_and_the_good_ones_claimed(redis):
    streams = PromptStreams(redis)
    streams.enqueue([WorkItem("good", "describe .", "0.png", 1)])
    redis.xadd("csr:prompts", {"prompt_id": "no-iteration", "prompt": "p", "image": "i"})
    redis.xadd(
        "csr:prompts", {"prompt_id": "bad-iteration", "prompt": "p", "image": "i", "iteration": "x"}
    )
    redis.xadd(
        "csr:prompts",
        {"prompt_id": "not-utf8", "prompt": b"\xff\xfe", "image": "i", "iteration": 1},
    )
    items = streams.claim("g", 10, block_ms=10)
    assert [i.prompt_id for i in items] == ["good"]
    failed = {f["prompt_id"]: f["reason"] for f in streams.failed()}
    assert set(failed) == {"no-iteration", "bad-iteration", "not-utf8"}
    assert "lacks the field 'iteration'" in failed["no-iteration"]
    assert "invalid literal for int()" in failed["bad-iteration"]
    assert "utf-8" in failed["not-utf8"]
    assert streams.pending() == 1  # only the good one waits for its result
    assert [i.prompt_id for i in streams.items_of_iteration(1)] == ["good"]


def test_a_deeply_nested_pair_record_is_dead_lettered_not_fatal(redis):
    consumer = PairConsumer(redis, "trainer")
    redis.xadd("csr:pairs", {"record": DEEP})
    redis.xadd("csr:pairs", {"record": '{"a": ' * 5000 + "1" + "}" * 5000})
    assert consumer.read(count=10, block_ms=10) == []
    reasons = [d["reason"] for d in consumer.dead_letters()]
    assert len(reasons) == 2 and all("nests deeper" in r for r in reasons)
    assert consumer.pending() == 0


def test_malformed_announcements_are_ignored_and_the_next_one_is_heard(redis):
    asked = []

    def request(path, version):
        from concurrent.futures import Future

        asked.append((path, version))
        done: Future = Future()
        done.set_result(version)
        return done

    subscriber = AdapterSubscriber(redis, request).start()
    try:
        for bad in (DEEP, "[1, 2]", '{"path": 5}', "not json", '{"version": "3"}'):
            redis.publish("csr:adapters", bad)
        redis.publish("csr:adapters", json.dumps({"path": "/adapters/4", "version": "4"}))
        deadline = time.monotonic() + 10
        while not asked and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        subscriber.stop()
    assert asked == [("/adapters/4", "4")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DEEP, "nested deeper than 64 levels"),
        ('{"id": 1, "image": "a.png", "input": "x"}\n{"id": 2, "image": [}', "line 2 column"),
        ('[{"id": 1, "image": "a.png", "input": ["describe"]}]', "input must be the prompt's text"),
        ('[{"id": {"a": 1}, "image": "a.png", "input": "x"}]', "id must be text or a number"),
    ],
)
def test_a_malformed_prompt_set_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "prompts.json"
    path.write_text(text)
    with pytest.raises(PromptSetError, match=message):
        load_prompt_set(str(path), 1)


def test_a_prompt_set_that_is_not_utf8_is_refused_by_name(tmp_path):
    path = tmp_path / "prompts.json"
    path.write_bytes(b'[{"id": 1, "image": "a.png", "input": "\xff"}]')
    with pytest.raises(PromptSetError, match="cannot read the prompt set"):
        load_prompt_set(str(path), 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "cannot read the record of closed iterations"), ('{"1": "x"}', "whole numbers")],
)
def test_a_corrupt_closed_iterations_file_is_a_store_error(tmp_path, content, message):
    store = AdapterStore(tmp_path / "adapters")
    (tmp_path / "adapters" / "closed.json").write_text(content)
    with pytest.raises(StoreError, match=message):
        store.closed_iterations()


def test_an_admin_request_that_does_not_parse_is_invalid_argument():
    import types

    import grpc

    from csr_api.v1 import generator_pb2
    from services.generator.admin import create_server

    server, port = create_server(types.SimpleNamespace(), "127.0.0.1", 0, token="t")
    server.start()
    try:
        call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary(
            "/csr.v1.GeneratorAdmin/LoadAdapter",
            request_serializer=lambda raw: raw,
            response_deserializer=generator_pb2.LoadAdapterResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:  # path (field 1) holds the bytes FF FE
            call(b"\x0a\x02\xff\xfe", metadata=(("authorization", "Bearer t"),))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "UTF-8" in info.value.details()
    finally:
        server.stop(0)


@pytest.mark.parametrize(
    ("key", "field", "value"),
    [("csr:prompts:no-pair", "empty", "many"), ("csr:iterations:queued", "one", "3")],
)
def test_a_run_count_that_is_not_a_number_is_named_by_its_key(redis, key, field, value):
    from reports.source import RunDataError, read_run

    redis.hset(key, field, value)
    with pytest.raises(RunDataError, match=f"{key} holds b?'(many|one)' where a count is written"):
        read_run(redis, "the run")
