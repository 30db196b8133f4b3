"""The reading side of the pair stream (the trainer's): consumer group reads,
acknowledgement, dead letters.

Owns the delivery guarantees of training. Records are read through the consumer group
"trainers"; a record is acknowledged only after the adapter trained on it has been published
(AdapterStore.publish), so a crash before that delivers it again and loses nothing. A
restarted trainer first re-reads the records it had been given and not acknowledged (its
pending list), then new ones. A record that cannot be used (not JSON, wrong fields, an unknown
schema version, an adapter version that is not 'base' or a number) goes to the dead-letter
stream with the reason and is acknowledged, so it never blocks the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from csr.errors import RecordError
from csr.records import PreferenceRecord
from csr.training import VersionError, version_number
from services.runtime.bounded import json_depth_exceeds
from services.runtime.keys import DEAD_LETTERS, PAIR_GROUP, PAIRS, STALE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivered:
    entry_id: str
    record: PreferenceRecord


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class PairConsumer:
    def __init__(self, client: redis.Redis, consumer: str):
        # redis-py types every reply as the union of all RESP shapes; these commands' shapes
        # are fixed (stream entries as (id, fields)), so the client is used untyped
        self.redis: Any = client
        self.consumer = consumer
        self._replayed = False
        self.last_read = 0  # entries the last read got from Redis, usable or not
        try:
            client.xgroup_create(PAIRS, PAIR_GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def read(self, count: int = 256, block_ms: int = 1000) -> list[Delivered]:
        """Up to `count` usable records: first this consumer's unacknowledged ones (once per
        start), then new ones. Unusable records are dead-lettered on the way."""
        delivered: list[Delivered] = []
        if not self._replayed:
            last = "0"
            while True:  # the whole pending list, page by page
                page = self._read_group(last, count, 0)
                if not page:
                    break
                delivered.extend(self._usable(page))
                last = _text(page[-1][0])
            self._replayed = True
            if delivered:
                logger.info("re-read %d records delivered before a restart", len(delivered))
                return delivered
        return self._usable(self._read_group(">", count, block_ms))

    def _read_group(self, start: str, count: int, block_ms: int) -> list:
        answer = self.redis.xreadgroup(
            PAIR_GROUP,
            self.consumer,
            {PAIRS: start},
            count=count,
            block=block_ms if start == ">" and block_ms > 0 else None,
        )
        entries = [entry for _, entries in answer or [] for entry in entries]
        self.last_read = len(entries)
        return entries

    def _usable(self, entries) -> list[Delivered]:
        usable = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if not fields:  # deleted from the stream while pending (Redis 6.2 lists it)
                self.ack([entry_id])
                continue
            raw = fields.get(b"record", fields.get("record"))
            try:
                text = _text(raw) if raw is not None else ""
                if json_depth_exceeds(text):
                    raise ValueError("the record nests deeper than a preference record can")
                record = PreferenceRecord.from_json(text)
                version_number(record.adapter_version)
            except (RecordError, VersionError, ValueError, RecursionError) as e:
                self.dead_letter(entry_id, fields, str(e))
                continue
            usable.append(Delivered(entry_id, record))
        return usable

    def dead_letter(self, entry_id: str, fields: dict, reason: str) -> None:
        """Move an unusable record aside with the reason, and acknowledge it atomically."""
        logger.error("pair %s is unusable and goes to %s: %s", entry_id, DEAD_LETTERS, reason)
        raw = fields.get(b"record", fields.get("record", b"")) or b""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_LETTERS, {"entry_id": entry_id, "reason": reason[:2000], "record": raw})
            pipe.xack(PAIRS, PAIR_GROUP, entry_id)
            pipe.execute()

    def drop_stale(self, delivered: list[Delivered]) -> None:
        """Acknowledge pairs too stale to train on, and count them."""
        if delivered:
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.xack(PAIRS, PAIR_GROUP, *[d.entry_id for d in delivered])
                pipe.incrby(STALE, len(delivered))
                pipe.execute()

    def ack(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.redis.xack(PAIRS, PAIR_GROUP, *entry_ids)

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {_text(k): _text(v) for k, v in f.items()} for _, f in self.redis.xrange(DEAD_LETTERS)
        ]

    def stale_count(self) -> int:
        return int(self.redis.get(STALE) or 0)

    def pending(self) -> int:
        return int(self.redis.xpending(PAIRS, PAIR_GROUP)["pending"])
