"""Deployment settings of a generator replica, read from CSR_GENERATOR_* environment variables."""

from __future__ import annotations

import os
import socket

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import VLMSettings


class GeneratorSettings(VLMSettings):
    """One generator replica. Every field is set by CSR_GENERATOR_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CSR_GENERATOR_", extra="ignore")

    reward_target: str = Field(
        "localhost:50051",
        description="gRPC target of the reward workers, e.g. dns:///reward:50051 for all of them.",
    )
    reward_token: SecretStr | None = Field(None, description="Bearer token of the reward service.")
    image_root: str = Field(".", description="Directory the prompt set's image paths are under.")
    prompt_set: str = Field(
        "",
        description="Prompt set to queue at start (authors' JSON list, "
        "JSONL, or a Hugging Face datasets folder); empty queues nothing.",
    )
    iteration: int = Field(1, ge=1, description="CSR iteration of the queued prompt set.")
    consumer: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}",
        description="This replica's name in the consumer group.",
    )
    batch_size: int = Field(
        8, ge=1, description="Prompts searched together, at most (the KV budget may take fewer)."
    )
    kv_budget_gb: float | None = Field(
        None,
        gt=0,
        description="GiB of KV cache a batch may hold: batches are filled up to it from the "
        "model config and the prompt lengths, and a prompt that alone needs more fails with a "
        "reason. Unset: half the GPU memory free once the model is loaded (CUDA), 4 on the CPU.",
    )
    max_prompt_tokens: int = Field(
        0,
        ge=0,
        description="Tokens a prompt may have (chat template and image tokens included); a "
        "longer one fails alone (csr:prompts:failed) before it reaches the model. 0: the "
        "model's context (max_position_embeddings).",
    )
    reclaim_after_ms: int = Field(
        60_000,
        ge=1,
        description="Idle time after which another replica's unacknowledged prompt is taken over.",
    )
    max_deliveries: int = Field(
        5,
        ge=1,
        description="Deliveries after which a prompt that "
        "never finishes is failed (csr:prompts:failed) instead of retried.",
    )
    progress: bool = Field(True, description="Show a progress bar on the terminal (stderr).")
    adapter: str = Field("", description="Adapter directory to serve from the start.")
    admin_host: str = Field("0.0.0.0", description="Address of the admin gRPC API.")
    admin_port: int = Field(50061, ge=0, le=65535, description="Admin gRPC port; 0 picks one.")
    admin_token: SecretStr | None = Field(
        None,
        description="When set, the admin gRPC API (LoadAdapter, Status) requires the metadata "
        "'authorization: Bearer TOKEN'; gRPC health checks stay open.",
    )
    http_port: int = Field(
        8081, ge=0, le=65535, description="HTTP /healthz and /metrics port; 0 picks one."
    )
    exit_when_idle: bool = Field(
        False, description="Stop once no prompt is queued or pending (batch jobs and tests)."
    )
