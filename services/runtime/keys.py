"""Every Redis key, stream, consumer group and channel of CSR, in one place.

The bus between the services: generators read prompts from PROMPTS and append preference
records to PAIRS; the trainer reads PAIRS, publishes adapters and announces them on
ADAPTER_CHANNEL. Tools that read a run (csr status, csr pairs) use the same names.
"""

from __future__ import annotations

# The prompt work queue (services.runtime.prompts)
PROMPTS = "csr:prompts"  # stream of work items: one prompt of one iteration
PROMPT_GROUP = "generators"  # consumer group of the generator replicas
LOADED = "csr:prompts:loaded"  # set of "iteration:prompt_id" already queued
FAILED = "csr:prompts:failed"  # stream of prompts given up on, with the reason
NO_PAIR = "csr:prompts:no-pair"  # hash: reason -> count
NO_PAIR_BY_ITERATION = "csr:prompts:no-pair:by-iteration"  # hash: "iteration:reason" -> count
QUEUED = "csr:iterations:queued"  # hash: iteration -> prompts queued
SEALED = "csr:iterations:sealed"  # hash: iteration -> 1 once all its prompts are queued
FINISHED = "csr:iterations:finished"  # hash: iteration -> prompts acknowledged (pair,
# no-pair or failed), each counted once

# The pair stream (services.runtime.pairs)
PAIRS = "csr:pairs"  # stream of preference records (field "record", JSON)
DONE = "csr:pairs:done"  # set of "iteration:prompt_id" whose pair is published
PAIR_GROUP = "trainers"  # consumer group of the trainer
DEAD_LETTERS = "csr:pairs:dead"  # stream of unusable records, with the reason
STALE = "csr:pairs:stale"  # counter of pairs dropped as too stale

# Adapter announcements (services.runtime.announce)
ADAPTER_CHANNEL = "csr:adapters"  # pub/sub messages: {"path": ..., "version": ...}
