"""The trainer's decisions, free of models, Redis and files.

Owns: adapter version numbers ("base" is 0, then 1, 2, ...), which pairs are too stale to
train on, how records become DPO examples (the TRL columns, with the response's leading whitespace
and the end-of-response token),
and when a schedule trains. The trainer service does the I/O around these.
"""

from __future__ import annotations

from dataclasses import dataclass

from csr.config import ScheduleConfig
from csr.records import PreferenceRecord

BASE_VERSION = "base"


class VersionError(ValueError):
    """An adapter version that is neither 'base' nor a whole number."""


def version_number(version: str) -> int:
    """'base' -> 0, '3' -> 3; anything else is refused by name."""
    if version == BASE_VERSION:
        return 0
    try:
        number = int(version)
    except (TypeError, ValueError) as e:
        raise VersionError(
            f"adapter version {version!r} is neither 'base' nor a whole "
            "number; the trainer publishes 1, 2, 3, ..."
        ) from e
    if number < 1 or str(number) != version:
        raise VersionError(f"adapter version {version!r} must be 'base' or 1, 2, 3, ...")
    return number


def is_stale(record: PreferenceRecord, current_version: int, schedule: ScheduleConfig) -> bool:
    """True if the pair was made by a version older than max_staleness behind the current."""
    return version_number(record.adapter_version) + schedule.max_staleness < current_version


@dataclass(frozen=True)
class DPOExample:
    """One TRL vision preference example, before the prompt is put in the chat template."""

    prompt: str  # the user's prompt, without the image marker
    image: str  # path under the image root
    chosen: str
    rejected: str


def dpo_example(record: PreferenceRecord, end_of_response: str, lead: str) -> DPOExample:
    """The record as a DPO example. Each response starts with `lead` and ends with the
    end-of-response token, so the update also teaches where a good answer stops (the search
    ended responses on it).

    TRL tokenizes a completion on its own, apart from the prompt, so its first token must
    come out as the one the model wrote after the chat prompt: `lead` is the whitespace that
    does it for this tokenizer and template (services.runtime.vlm.response_lead: " " for a
    byte-level BPE after a template ending in "ASSISTANT:", "" after one ending in a newline
    and for a SentencePiece tokenizer, which marks the word boundary itself)."""
    return DPOExample(
        record.prompt,
        record.image,
        f"{lead}{record.chosen.strip()}{end_of_response}",
        f"{lead}{record.rejected.strip()}{end_of_response}",
    )


def online_batches(waiting: int, schedule: ScheduleConfig) -> int:
    """How many full online updates `waiting` pairs make (0 under the iteration schedule)."""
    if schedule.schedule != "online":
        return 0
    return waiting // schedule.online_every


def iteration_complete(finished: int, queued: int) -> bool:
    """An iteration is complete when every queued prompt has a pair, a no-pair or a failure."""
    return queued > 0 and finished >= queued
