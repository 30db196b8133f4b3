"""Deployment settings of the trainer, read from CSR_TRAINER_* environment variables.

Only deployment lives here (where the model, Redis, the store and the images are; ports;
checkpoints). The algorithm (β, LoRA rank, learning rate, schedule, T) is the algorithm file's
(CSR_TRAINER_ALGORITHM, csr.config.CSRConfig), so each setting has one place.
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import VLMSettings


class TrainerSettings(VLMSettings):
    """The trainer. Every field is set by CSR_TRAINER_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CSR_TRAINER_", extra="ignore")

    image_root: str = Field(".", description="Directory the records' image paths are under.")
    adapter_store: str = Field(
        "adapters",
        description="Shared directory of published adapter versions (the generators read it).",
    )
    keep_versions: int = Field(5, ge=1, description="Published versions kept in the store.")
    work_dir: str = Field("trainer-work", description="Checkpoints, TensorBoard logs and plots.")
    prompt_set: str = Field(
        "",
        description="Prompt set to queue as iteration 1 (authors' JSON "
        "list, JSONL or datasets folder); empty if the generators queue it.",
    )
    checkpoint_steps: int = Field(
        0,
        ge=0,
        description="Save a resumable checkpoint every N steps within an update; 0 saves none.",
    )
    generator_admin: str = Field(
        "",
        description="Comma-separated generator admin gRPC "
        "addresses told to load each new adapter (besides pub/sub).",
    )
    generator_admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the generators' admin API (their CSR_GENERATOR_ADMIN_TOKEN).",
    )
    consumer: str = Field(
        "trainer",
        description="This trainer's name in the consumer group; "
        "keep it across restarts, so the records it had taken come back to it.",
    )
    http_host: str = Field("0.0.0.0", description="Address of HTTP /healthz and /metrics.")
    http_port: int = Field(8082, ge=0, le=65535, description="HTTP port; 0 picks one.")
    tensorboard: bool = Field(
        True, description="Log training scalars to TensorBoard under work_dir/tensorboard."
    )
