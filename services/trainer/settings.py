"""Deployment settings of the trainer, read from CSR_TRAINER_* environment variables.

Algorithm settings (β, LoRA rank, schedule, T) are CSRConfig's; the fields here that mirror
them (learning rate, epochs, batch size, schedule) override its defaults for a deployment,
because they depend on the model size (see DPOSettings.learning_rate).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import VLMSettings


class TrainerSettings(VLMSettings):
    """The trainer. Every field is set by CSR_TRAINER_<FIELD>."""

    model_config = SettingsConfigDict(env_prefix="CSR_TRAINER_", extra="ignore")

    image_root: str = Field(".", description="Directory the records' image paths are under.")
    adapter_store: str = Field("adapters", description="Shared directory of published adapter "
                               "versions (the generators read it).")
    keep_versions: int = Field(5, ge=1, description="Published versions kept in the store.")
    work_dir: str = Field("trainer-work", description="Checkpoints, TensorBoard logs and plots.")
    prompt_set: str = Field("", description="Prompt set to queue as iteration 1 (authors' JSON "
                            "list, JSONL or datasets folder); empty if the generators queue it.")
    schedule: Literal["iteration", "online"] = Field(
        "iteration", description="iteration: train once per pass over the prompt set (the "
        "paper); online: train on every online_every pairs.")
    online_every: int = Field(64, ge=1, description="Pairs per update in the online schedule.")
    max_staleness: int = Field(1, ge=0, description="Pairs made by an adapter more than this "
                               "many versions old are dropped.")
    iterations: int = Field(3, ge=1, description="CSR iterations T before the trainer stops.")
    learning_rate: float = Field(1e-7, gt=0, description="DPO learning rate (the released "
                                 "7B script's 1e-7; tiny models need ~5e-4).")
    epochs: int = Field(1, ge=1, description="Epochs over each update's pairs.")
    batch_size: int = Field(1, ge=1, description="Pairs per device batch.")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    lora_r: int = Field(128, ge=1, description="LoRA rank (the paper: 128).")
    lora_alpha: int = Field(256, ge=1, description="LoRA alpha (the paper: 256).")
    checkpoint_steps: int = Field(0, ge=0, description="Save a resumable checkpoint every N "
                                  "steps within an update; 0 saves none.")
    seed: int = Field(0, ge=0, description="Seed of the updates.")
    generator_admin: str = Field("", description="Comma-separated generator admin gRPC "
                                 "addresses told to load each new adapter (besides pub/sub).")
    consumer: str = Field("trainer", description="This trainer's name in the consumer group; "
                          "keep it across restarts, so the records it had taken come back to it.")
    http_host: str = Field("0.0.0.0", description="Address of HTTP /healthz and /metrics.")
    http_port: int = Field(8082, ge=0, le=65535, description="HTTP port; 0 picks one.")
    tensorboard: bool = Field(True, description="Log training scalars to TensorBoard under "
                              "work_dir/tensorboard.")
