"""The reward worker's batcher and embedding cache, with a fake encoder (no model)."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from services.reward.batcher import Overloaded, TextBatcher, WorkerStopping, encode_in_chunks
from services.reward.cache import EmbeddingCache
from services.reward.metrics import RewardMetrics


def run_batcher(scenario, **limits):
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return [t.upper() for t in texts]

    async def main():
        batcher = TextBatcher(
            encode,
            ThreadPoolExecutor(1),
            limits.get("max_batch_size", 8),
            limits.get("max_wait_s", 0.05),
            limits.get("max_queue", 100),
            RewardMetrics(),
        )
        batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(main()), calls


def test_concurrent_requests_share_one_batch_and_get_their_own_results():
    async def scenario(batcher):
        return await asyncio.gather(
            batcher.submit(["a", "b"]), batcher.submit(["c"]), batcher.submit(["d", "e", "f"])
        )

    results, calls = run_batcher(scenario)
    assert results == [["A", "B"], ["C"], ["D", "E", "F"]]
    assert calls == [["a", "b", "c", "d", "e", "f"]]


def test_batches_are_capped_and_big_requests_chunked():
    async def scenario(batcher):
        return await asyncio.gather(batcher.submit(list("abcde")), batcher.submit(["x"]))

    results, calls = run_batcher(scenario, max_batch_size=2)
    assert results == [list("ABCDE"), ["X"]]
    assert all(len(call) <= 2 for call in calls)
    assert [t for call in calls for t in call] == list("abcdex")


def test_a_request_that_overflows_a_batch_is_split_so_every_batch_is_full():
    async def scenario(batcher):
        return await asyncio.gather(
            batcher.submit(list("abc")), batcher.submit(list("def")), batcher.submit(list("gh"))
        )

    results, calls = run_batcher(scenario, max_batch_size=4)
    assert results == [list("ABC"), list("DEF"), list("GH")]
    # whole requests would have made three calls: abc+def (6 > 4, two chunks), then gh
    assert calls == [list("abcd"), list("efgh")]


def test_a_failed_batch_fails_the_split_request_and_its_rest_is_not_encoded():
    calls = []

    def encode(texts):
        calls.append(list(texts))
        if "a" in texts:
            raise RuntimeError("the model failed")
        return [t.upper() for t in texts]

    async def main():
        batcher = TextBatcher(encode, ThreadPoolExecutor(1), 4, 0.05, 100, RewardMetrics())
        batcher.start()
        try:
            with pytest.raises(RuntimeError, match="the model failed"):
                await batcher.submit(list("abcdef"))
            return await batcher.submit(["x"])
        finally:
            await batcher.stop()

    assert asyncio.run(main()) == ["X"]
    assert calls == [list("abcd"), ["x"]]


def test_a_full_queue_is_refused_at_once():
    async def scenario(batcher):
        with pytest.raises(Overloaded, match="limit 3"):
            await batcher.submit(list("abcd"))
        return await batcher.submit(list("abc"))

    results, _ = run_batcher(scenario, max_queue=3)
    assert results == list("ABC")


def test_a_cancelled_request_is_skipped():
    async def scenario(batcher):
        doomed = asyncio.ensure_future(batcher.submit(["gone"]))
        await asyncio.sleep(0)
        doomed.cancel()
        return await batcher.submit(["kept"])

    results, calls = run_batcher(scenario, max_wait_s=0.02)
    assert results == ["KEPT"]
    assert ["gone"] not in calls and all("gone" not in call for call in calls)


def test_cache_evicts_least_recently_used_within_its_byte_budget():
    one = torch.zeros(32)  # 128 bytes + 164 of key overhead = 292 bytes an entry
    cache = EmbeddingCache(max_bytes=600)
    cache.put("a", one)
    cache.put("b", one)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", one)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.nbytes == 584 and len(cache) == 2
    cache.put("huge", torch.zeros(1000))  # larger than the whole budget: not kept
    assert cache.get("huge") is None and len(cache) == 2


def test_stopping_fails_waiting_requests_and_refuses_new_ones():
    import time

    def slow(texts):
        time.sleep(0.3)
        return texts

    async def main():
        batcher = TextBatcher(slow, ThreadPoolExecutor(1), 1, 0.0, 100, RewardMetrics())
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(["a"]))
        waiting = asyncio.ensure_future(batcher.submit(["b"]))
        await asyncio.sleep(0.05)
        await batcher.stop()
        results = await asyncio.gather(running, waiting, return_exceptions=True)
        with pytest.raises(WorkerStopping):
            await batcher.submit(["c"])
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, WorkerStopping) for r in results)


def test_stopping_fails_a_request_its_batch_was_still_waiting_to_fill():
    async def main():
        batcher = TextBatcher(
            lambda texts: texts, ThreadPoolExecutor(1), 8, 30.0, 100, RewardMetrics()
        )
        batcher.start()
        waiting = asyncio.ensure_future(batcher.submit(["a"]))
        await asyncio.sleep(0.05)  # taken from the queue; its batch waits up to 30 s for more
        await batcher.stop()
        return await asyncio.wait_for(asyncio.gather(waiting, return_exceptions=True), 2.0)

    (result,) = asyncio.run(main())
    assert isinstance(result, WorkerStopping)


def test_fixed_shapes_fill_every_encoder_call_to_the_batch_size():
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return [t.upper() for t in texts]

    assert encode_in_chunks(encode, list("abcde"), 4, fixed=True) == list("ABCDE")
    assert calls == [list("abcd"), ["e", "e", "e", "e"]]
    calls.clear()
    assert encode_in_chunks(encode, list("abcde"), 4, fixed=False) == list("ABCDE")
    assert calls == [list("abcd"), ["e"]]
