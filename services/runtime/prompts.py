"""Redis streams of the generator: the prompt work queue in, preference records out.

Owns the delivery guarantees. Prompts are entries of a stream read through a consumer group,
so several generator replicas share one prompt set, and an entry a crashed replica had taken
is claimed again by another once it has been idle for `reclaim_after_ms`. A finished prompt's
record is appended to the pair stream and the prompt acknowledged in one atomic step (a Lua
script) that also remembers (iteration, prompt), so a prompt processed twice (a crash after
the work, before the acknowledgement; or a slow batch reclaimed by a replica running another
adapter) never yields a second pair for that iteration.

A prompt that keeps failing (a missing or unreadable image, say) must not circle for ever:
once delivered more than `max_deliveries` times it is acknowledged as failed, counted as a
no-pair ("failed"), and recorded with its last error in the failed stream for a person to see.
No-pairs are counted by reason (NO_PAIR) and by iteration and reason (NO_PAIR_BY_ITERATION).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from csr.records import PreferenceRecord
from services.runtime.keys import (
    DONE,
    FAILED,
    FINISHED,
    LOADED,
    NO_PAIR,
    NO_PAIR_BY_ITERATION,
    PAIRS,
    PROMPT_GROUP,
    PROMPTS,
    QUEUED,
    SEALED,
)

logger = logging.getLogger(__name__)


_ENQUEUE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'prompt_id', ARGV[2], 'prompt', ARGV[3], 'image', ARGV[4],
             'iteration', ARGV[5], 'adapter', ARGV[6], 'adapter_version', ARGV[7])
  redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
  return 1
end
return 0
"""

_PUBLISH = """
if redis.call('XACK', KEYS[3], ARGV[3], ARGV[4]) == 0 then
  return 0  -- finished already (by a replica that took it over, or failed): nothing to add
end
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
if ARGV[1] == '' then
  redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
  redis.call('HINCRBY', KEYS[6], ARGV[5] .. ':' .. ARGV[2], 1)
  return 0
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[1], '*', 'record', ARGV[2])
  return 1
end
return 0
"""

_FAIL = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'prompt_id', ARGV[3], 'iteration', ARGV[4], 'image', ARGV[5],
             'reason', ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'failed', 1)
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
  redis.call('HINCRBY', KEYS[5], ARGV[4] .. ':failed', 1)
  return 1
end
return 0
"""


@dataclass(frozen=True)
class WorkItem:
    """One prompt of one iteration: what a generator searches from."""

    prompt_id: str
    prompt: str
    image: str  # path under the shared image root
    iteration: int
    entry_id: str = ""  # the stream entry, set when claimed
    adapter: str = ""  # adapter directory to search with ("" = whatever is serving)
    adapter_version: str = ""  # its version, as its manifest says

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict) -> WorkItem:
        """The item of a stream entry; MalformedEntry (naming what is wrong) for an entry
        that is not one (missing fields, an iteration that is not a whole number >= 1, bytes
        that are not UTF-8): such an entry is failed alone, never fatal to a reader."""
        try:
            text = {_str(k): _str(v) for k, v in fields.items()}
            iteration = int(text["iteration"])
            if iteration < 1:
                raise ValueError(f"iteration {iteration} is below 1")
            return cls(
                text["prompt_id"],
                text["prompt"],
                text["image"],
                iteration,
                _str(entry_id),
                text.get("adapter", ""),
                text.get("adapter_version", ""),
            )
        except KeyError as e:
            raise MalformedEntry(f"prompt entry {_str(entry_id)} lacks the field {e}") from e
        except (ValueError, TypeError) as e:  # UnicodeDecodeError is a ValueError
            raise MalformedEntry(f"prompt entry {_str(entry_id)} is malformed: {e}") from e


class MalformedEntry(ValueError):
    """A prompt stream entry that is not a work item; the message says why."""


def _pairs(fields) -> dict:
    """A raw XAUTOCLAIM entry's flat [k1, v1, k2, v2, ...] as a dict."""
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2]))


def _lenient(value) -> str:
    """Text of a field of any content, for naming a malformed entry."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PromptStreams:
    def __init__(
        self, client: redis.Redis, reclaim_after_ms: int = 60_000, max_deliveries: int = 5
    ):
        # redis-py types every reply as the union of all RESP shapes; these commands' shapes
        # are fixed (stream entries as (id, fields)), so the client is used untyped
        self.redis: Any = client
        self.reclaim_after_ms = reclaim_after_ms
        self.max_deliveries = max_deliveries
        self._publish = client.register_script(_PUBLISH)
        self._enqueue = client.register_script(_ENQUEUE)
        self._fail = client.register_script(_FAIL)
        self._replayed: set[str] = set()  # consumers whose own pending entries were re-read
        try:
            client.xgroup_create(PROMPTS, PROMPT_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def enqueue(self, items: list[WorkItem], seal: bool = True) -> int:
        """Queue the items not queued before for their iteration; returns how many were new.
        With seal, each iteration of the items is then marked whole: an iteration counts as
        complete only when sealed, so a crash in the middle of queuing it (some items in,
        others not) cannot pass for a finished iteration; queuing again completes it."""
        # Marking and queuing each item in one atomic step (a crash loses nothing), and all
        # of them in one transaction: a replica waiting for work sees the whole set at once,
        # so its batches (and with them the search's float sums) do not depend on timing.
        pipe = self.redis.pipeline(transaction=True)
        for item in items:
            self._enqueue(
                keys=[LOADED, PROMPTS, QUEUED],
                args=[
                    f"{item.iteration}:{item.prompt_id}",
                    item.prompt_id,
                    item.prompt,
                    item.image,
                    str(item.iteration),
                    item.adapter,
                    item.adapter_version,
                ],
                client=pipe,
            )
        added = sum(int(result) for result in pipe.execute()) if items else 0
        if seal and items:
            self.redis.hset(SEALED, mapping={str(i.iteration): 1 for i in items})
        return added

    def sealed(self, iteration: int) -> bool:
        return bool(self.redis.hexists(SEALED, str(iteration)))

    def claim(self, consumer: str, count: int, block_ms: int = 1000) -> list[WorkItem]:
        """Up to `count` items: first this consumer's own unacknowledged ones (a replica
        restarted under its old name), then those a silent replica left idle, then new ones.
        A stale item delivered more than max_deliveries times is failed instead of returned."""
        own = self._own_pending(consumer, count)
        if own:
            return own
        # Redis 6.2 answers [cursor, entries] and gives an entry deleted from the stream as
        # (nil, nil) while claiming it (it stays pending unless acknowledged); 7.x drops them.
        stale = self.redis.execute_command(
            "XAUTOCLAIM",
            PROMPTS,
            PROMPT_GROUP,
            consumer,
            self.reclaim_after_ms,
            "0-0",
            "COUNT",
            count,
        )[1]
        if any(not fields for _, fields in stale):
            self._ack_deleted(consumer)
        stale = [(entry_id, _pairs(fields)) for entry_id, fields in stale if fields]
        items = [item for item in self._items(stale) if not self._over_delivered(item)]
        if len(items) < count:
            answer = self.redis.xreadgroup(
                PROMPT_GROUP, consumer, {PROMPTS: ">"}, count=count - len(items), block=block_ms
            )
            for _, entries in answer or []:
                items.extend(self._items(entries))
        return items

    def _items(self, entries) -> list[WorkItem]:
        """The work items of claimed entries; a malformed entry is failed on the spot."""
        items = []
        for entry_id, fields in entries:
            try:
                items.append(WorkItem.from_entry(entry_id, fields))
            except MalformedEntry as e:
                logger.error("%s; failing it", e)
                text = {_lenient(k): _lenient(v) for k, v in _pairs(fields).items()}
                self.fail(
                    WorkItem(
                        text.get("prompt_id", "?"),
                        "",
                        text.get("image", ""),
                        0,
                        _str(entry_id),
                    ),
                    str(e),
                )
        return items

    def _own_pending(self, consumer: str, count: int) -> list[WorkItem]:
        """Once per consumer name and process: up to `count` entries it holds from a previous
        life (any more are reclaimed as idle entries later)."""
        if consumer in self._replayed:
            return []
        self._replayed.add(consumer)
        answer = self.redis.xreadgroup(PROMPT_GROUP, consumer, {PROMPTS: "0"}, count=count)
        entries = [entry for _, found in answer or [] for entry in found]
        items = self._items([(i, f) for i, f in entries if f])
        if any(not f for _, f in entries):
            self._ack_deleted(consumer)
        return [item for item in items if not self._over_delivered(item)]

    def _ack_deleted(self, consumer: str) -> None:
        """Acknowledge the entries this consumer holds that no longer exist in the stream."""
        held = self.redis.xpending_range(
            PROMPTS, PROMPT_GROUP, "-", "+", 1000, consumername=consumer
        )
        gone = [
            h["message_id"]
            for h in held
            if not self.redis.xrange(PROMPTS, h["message_id"], h["message_id"])
        ]
        if gone:
            logger.warning("acknowledging %d prompts deleted from %s", len(gone), PROMPTS)
            self.redis.xack(PROMPTS, PROMPT_GROUP, *gone)

    def _over_delivered(self, item: WorkItem) -> bool:
        [info] = self.redis.xpending_range(
            PROMPTS, PROMPT_GROUP, item.entry_id, item.entry_id, 1
        ) or [{"times_delivered": 0}]
        if info["times_delivered"] <= self.max_deliveries:
            return False
        logger.error(
            "prompt %s (iteration %d) was delivered %d times without finishing; "
            "giving up on it (see the %s stream)",
            item.prompt_id,
            item.iteration,
            info["times_delivered"],
            FAILED,
        )
        self.fail(item, f"delivered {info['times_delivered']} times without finishing")
        return True

    def fail(self, item: WorkItem, reason: str) -> bool:
        """Give up on an item: acknowledge it, count a 'failed' no-pair, keep the reason in the
        failed stream, atomically. False if it had been acknowledged already."""
        return bool(
            self._fail(
                keys=[PROMPTS, FAILED, NO_PAIR, FINISHED, NO_PAIR_BY_ITERATION],
                args=[
                    PROMPT_GROUP,
                    item.entry_id,
                    item.prompt_id,
                    str(item.iteration),
                    item.image,
                    reason,
                ],
            )
        )

    def keep_alive(self, consumer: str, items: list[WorkItem]) -> None:
        """Reset the idle time of items this consumer still holds, so a batch that runs longer
        than reclaim_after_ms is not claimed by another replica while it runs."""
        ours = [i.entry_id for i in items if self._owner(i.entry_id) == consumer]
        if ours:
            self.redis.xclaim(PROMPTS, PROMPT_GROUP, consumer, 0, ours, justid=True)

    def _owner(self, entry_id: str) -> str | None:
        found = self.redis.xpending_range(PROMPTS, PROMPT_GROUP, entry_id, entry_id, 1)
        return _str(found[0]["consumer"]) if found else None

    def publish(
        self, item: WorkItem, record: PreferenceRecord | None, no_pair_reason: str = ""
    ) -> bool:
        """Append the record (or count the no-pair reason) and acknowledge, atomically.

        Returns False when this prompt's pair for the iteration had been published already
        (a repeat after a crash, or by a replica that reclaimed a slow batch)."""
        keys = [PAIRS, DONE, PROMPTS, NO_PAIR, FINISHED, NO_PAIR_BY_ITERATION]
        if record is None:
            self._publish(
                keys=keys,
                args=["", no_pair_reason, PROMPT_GROUP, item.entry_id, str(item.iteration)],
            )
            return False
        key = f"{record.iteration}:{record.prompt_id}"
        return bool(
            self._publish(
                keys=keys,
                args=[key, record.to_json(), PROMPT_GROUP, item.entry_id, str(item.iteration)],
            )
        )

    def pending(self) -> int:
        return int(self.redis.xpending(PROMPTS, PROMPT_GROUP)["pending"])

    def pairs(self) -> list[PreferenceRecord]:
        return [
            PreferenceRecord.from_json(_str(f[b"record"] if b"record" in f else f["record"]))
            for _, f in self.redis.xrange(PAIRS)
        ]

    def no_pairs(self) -> dict[str, int]:
        return {_str(k): int(v) for k, v in self.redis.hgetall(NO_PAIR).items()}

    def failed(self) -> list[dict[str, str]]:
        return [{_str(k): _str(v) for k, v in f.items()} for _, f in self.redis.xrange(FAILED)]

    def iteration_progress(self, iteration: int) -> tuple[int, int]:
        """(prompts finished, prompts queued) of one iteration, over every replica."""
        finished, queued = (
            self.redis.hmget(FINISHED, str(iteration)),
            self.redis.hmget(QUEUED, str(iteration)),
        )
        return int(finished[0] or 0), int(queued[0] or 0)

    def items_of_iteration(self, iteration: int) -> list[WorkItem]:
        """The work items queued for an iteration (the stream keeps acknowledged entries)."""
        items = []
        for entry_id, fields in self.redis.xrange(PROMPTS):
            try:
                items.append(WorkItem.from_entry(entry_id, fields))
            except MalformedEntry:  # failed when it was claimed; not part of any iteration
                continue
        return [item for item in items if item.iteration == iteration]

    def progress(self) -> tuple[int, int]:
        """(prompts finished, prompts queued) over all iterations and replicas."""
        finished = self.redis.scard(DONE) + sum(self.no_pairs().values())
        return int(finished), int(self.redis.scard(LOADED))


def no_pairs_by_iteration(client: Any) -> dict[int, dict[str, int]]:
    """iteration -> reason -> prompts of that iteration that yielded no pair (failed ones
    included), read without writing. Empty for data written before the counts were kept per
    iteration (the reason totals, NO_PAIR, have them all)."""
    counts: dict[int, dict[str, int]] = {}
    for key, value in client.hgetall(NO_PAIR_BY_ITERATION).items():
        iteration, _, reason = _str(key).partition(":")
        counts.setdefault(int(iteration), {})[reason] = int(value)
    return counts
