"""Redis streams of the generator: the prompt work queue in, preference records out.

Owns the delivery guarantees. Prompts are entries of a stream read through a consumer group,
so several generator replicas share one prompt set, and an entry a crashed replica had taken
is claimed again by another once it has been idle for `reclaim_after_ms`. A finished prompt's
record is appended to the pair stream and the prompt acknowledged in one atomic step (a Lua
script) that also remembers the pair id, so a prompt processed twice (a crash after the work,
before the acknowledgement) never yields a second copy of its pair.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import redis

from csr.records import PreferenceRecord

logger = logging.getLogger(__name__)

PROMPTS = "csr:prompts"
PAIRS = "csr:pairs"
GROUP = "generators"
DONE = "csr:pairs:ids"          # set of pair ids already published
NO_PAIR = "csr:prompts:no-pair"  # hash: reason -> count
LOADED = "csr:prompts:loaded"    # set of "iteration:prompt_id" already queued

_ENQUEUE = """
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], '*', 'prompt_id', ARGV[2], 'prompt', ARGV[3], 'image', ARGV[4],
             'iteration', ARGV[5])
  return 1
end
return 0
"""

_PUBLISH = """
local added = 0
if ARGV[1] ~= '' then
  if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
    redis.call('XADD', KEYS[1], '*', 'record', ARGV[2])
    added = 1
  end
else
  redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
end
redis.call('XACK', KEYS[3], ARGV[3], ARGV[4])
return added
"""


@dataclass(frozen=True)
class WorkItem:
    """One prompt of one iteration: what a generator searches from."""

    prompt_id: str
    prompt: str
    image: str  # path under the shared image root
    iteration: int
    entry_id: str = ""  # the stream entry, set when claimed

    def fields(self) -> dict[str, str]:
        return {"prompt_id": self.prompt_id, "prompt": self.prompt, "image": self.image,
                "iteration": str(self.iteration)}

    @classmethod
    def from_entry(cls, entry_id: str, fields: dict) -> WorkItem:
        text = {_str(k): _str(v) for k, v in fields.items()}
        return cls(text["prompt_id"], text["prompt"], text["image"], int(text["iteration"]),
                   _str(entry_id))


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PromptStreams:
    def __init__(self, client: redis.Redis, reclaim_after_ms: int = 60_000):
        self.redis, self.reclaim_after_ms = client, reclaim_after_ms
        self._publish = client.register_script(_PUBLISH)
        self._enqueue = client.register_script(_ENQUEUE)
        try:
            client.xgroup_create(PROMPTS, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def enqueue(self, items: list[WorkItem]) -> int:
        """Queue the items not queued before for their iteration; returns how many were new."""
        added = 0
        for item in items:  # marking and queuing in one atomic step: a crash loses nothing
            added += int(self._enqueue(keys=[LOADED, PROMPTS], args=[
                f"{item.iteration}:{item.prompt_id}", item.prompt_id, item.prompt, item.image,
                str(item.iteration)]))
        return added

    def claim(self, consumer: str, count: int, block_ms: int = 1000) -> list[WorkItem]:
        """Up to `count` items: first those a silent replica left idle, then new ones."""
        # Redis 6.2 answers [cursor, entries], 7.x adds the ids of deleted entries.
        stale = self.redis.xautoclaim(PROMPTS, GROUP, consumer, self.reclaim_after_ms,
                                      start_id="0-0", count=count)[1]
        items = [WorkItem.from_entry(i, f) for i, f in stale if f]
        if len(items) < count:
            answer = self.redis.xreadgroup(GROUP, consumer, {PROMPTS: ">"},
                                           count=count - len(items), block=block_ms)
            for _, entries in answer or []:
                items.extend(WorkItem.from_entry(i, f) for i, f in entries)
        return items

    def publish(self, item: WorkItem, record: PreferenceRecord | None,
                no_pair_reason: str = "") -> bool:
        """Append the record (or count the no-pair reason) and acknowledge, atomically.

        Returns False when this pair id had been published already (a repeat after a crash)."""
        if record is None:
            self._publish(keys=[PAIRS, DONE, PROMPTS, NO_PAIR],
                          args=["", no_pair_reason, GROUP, item.entry_id])
            return False
        return bool(self._publish(keys=[PAIRS, DONE, PROMPTS, NO_PAIR],
                                  args=[record.pair_id, record.to_json(), GROUP, item.entry_id]))

    def pending(self) -> int:
        return int(self.redis.xpending(PROMPTS, GROUP)["pending"])

    def pairs(self) -> list[PreferenceRecord]:
        return [PreferenceRecord.from_json(_str(f[b"record"] if b"record" in f else f["record"]))
                for _, f in self.redis.xrange(PAIRS)]

    def no_pairs(self) -> dict[str, int]:
        return {_str(k): int(v) for k, v in self.redis.hgetall(NO_PAIR).items()}


def load_prompt_set(path: str, iteration: int) -> list[WorkItem]:
    """The authors' format (a JSON list of {id, image, input}) or JSONL of the same objects.

    `<image>` markers in `input` are removed: the chat template places the image."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        rows = json.loads(text) if text.lstrip().startswith("[") else [
            json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"prompt set {path} is neither a JSON list nor JSONL: {e}") from e
    items = []
    for n, row in enumerate(rows):
        missing = {"id", "image", "input"} - set(row) if isinstance(row, dict) else {"object"}
        if missing:
            raise ValueError(f"prompt set {path}, entry {n}: missing {', '.join(sorted(missing))}")
        prompt = str(row["input"]).replace("<image>", "").strip()
        items.append(WorkItem(str(row["id"]), prompt, str(row["image"]), iteration))
    return items
