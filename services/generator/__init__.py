"""The generator service: the sentence-level search on a VLM, batched, feeding Redis.

Modules: engine (the core's `expand` on a Hugging Face VLM), beam and sampling (token-level
expansion), pipeline (prompts to records), service (the Redis work loop), adapter_slot (LoRA
hot-reload), admin (gRPC admin API), observe (metrics, /healthz), main (`csr generate`).
"""
