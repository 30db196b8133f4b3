"""The generator service: the sentence-level search on a VLM, batched, feeding Redis.

Modules: engine (the core's `expand` on a Hugging Face VLM), kv_cache (each prompt's KV held
once, rows' own tokens, the shared-prefix attention), memory (KV bytes from the model config,
the batch budget), beam and sampling (token-level expansion), tokens (banned tokens and
sentence ends), pipeline (prompts to records, and the authors'-way reference loop), service
(the Redis work loop) and parts (its collaborators), adapter_slot (LoRA hot-reload), admin
(gRPC admin API), observe (metrics, /healthz), settings, main (`csr generate`).
"""
