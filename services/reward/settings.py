"""Deployment settings of a reward worker, read from CSR_REWARD_* environment variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RewardSettings(BaseSettings):
    """One reward worker. Every field is set by CSR_REWARD_<FIELD> (e.g. CSR_REWARD_MODEL)."""

    model_config = SettingsConfigDict(env_prefix="CSR_REWARD_", extra="ignore")

    backend: Literal["open_clip", "hf"] = Field(
        "open_clip", description="open_clip or hf (transformers CLIPModel)."
    )
    model: str = Field(
        "ViT-L-14-336",
        description="open_clip model name or directory (open_clip_config.json), "
        "or an HF CLIP directory/name (e.g. openai/clip-vit-large-patch14-336).",
    )
    pretrained: str = Field(
        "openai",
        description="open_clip only: a pretrained tag or a local checkpoint file; "
        "ignored for directories.",
    )
    quick_gelu: Literal["auto", "true", "false"] = Field(
        "auto",
        description="open_clip only: build with QuickGELU, the activation OpenAI's "
        "weights were trained with. auto: as the pretrained tag says ('openai': true), true for "
        "a checkpoint file in OpenAI's format (TorchScript archive, or a state dict taken from "
        "one), as open_clip_config.json says for a directory; another checkpoint file needs "
        "true or false.",
    )
    device: str = Field(
        "auto",
        description="cuda or cuda:N (a start where CUDA cannot run stops with the cause), "
        "cpu, or auto (cuda if usable, else the CPU with a warning).",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto: fp32 on CPU, fp16 autocast on CUDA; fp16 or bf16 autocast on any "
        "device when named.",
    )
    host: str = Field("0.0.0.0", description="Address both APIs bind.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    http_enabled: bool = Field(True, description="Serve the HTTP API beside gRPC.")
    max_batch_size: int = Field(64, ge=1, description="Most sentences in one text-encoder batch.")
    fixed_shapes: bool = Field(
        True,
        description="Every text-encoder call has max_batch_size rows, each padded to the "
        "context length, so a sentence's score depends on the sentence and the image only, "
        "not on what it was batched with: repeated runs score alike. false: pad to the "
        "batch's longest text and encode only the rows there are (faster on a CPU with small "
        "batches; scores then vary in their last bits with the load).",
    )
    max_wait_ms: float = Field(
        5.0, ge=0, description="Longest a sentence waits for its batch to fill."
    )
    max_queue_sentences: int = Field(
        4096,
        ge=1,
        description="Queued sentences past which requests fail fast "
        "(RESOURCE_EXHAUSTED / HTTP 429).",
    )
    max_sentences_per_request: int = Field(256, ge=1, description="Sentences per request, at most.")
    max_sentence_chars: int = Field(4096, ge=1, description="Characters per sentence, at most.")
    max_image_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Encoded image size, at most.")
    max_image_pixels: int = Field(64_000_000, ge=1, description="Decoded image pixels, at most.")
    cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Bytes of image embeddings kept (LRU)."
    )
    token: SecretStr | None = Field(
        None, description="When set, both APIs require the header 'Authorization: Bearer TOKEN'."
    )
    grace_seconds: float = Field(5.0, ge=0, description="Shutdown grace for in-flight requests.")

    @model_validator(mode="after")
    def _request_fits_the_queue(self) -> RewardSettings:
        if self.max_sentences_per_request > self.max_queue_sentences:
            raise ValueError(
                f"max_sentences_per_request={self.max_sentences_per_request} exceeds "
                f"max_queue_sentences={self.max_queue_sentences}: such a request could never be "
                "queued; raise CSR_REWARD_MAX_QUEUE_SENTENCES or lower the per-request limit"
            )
        return self
