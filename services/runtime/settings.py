"""Settings the generator and the trainer share: which VLM, where it runs, which Redis.

Each service's settings class inherits these fields and sets its own environment prefix
(CSR_GENERATOR_MODEL, CSR_TRAINER_MODEL, ...), so both load the model the same way
(services.generator.main.load_vlm).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings


class VLMSettings(BaseSettings):
    model: str = Field(
        "llava-hf/llava-1.5-7b-hf",
        description="Hugging Face VLM name or local directory (image-text-to-text).",
    )
    base_name: str = Field(
        "",
        description="Base-model name in adapter manifests (published "
        "adapters must name it); empty means the model setting.",
    )
    device: str = Field("auto", description="auto (cuda if available), cpu, or cuda:N.")
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA, fp32 on CPU."
    )
    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding the streams.")
    algorithm: str = Field(
        "",
        description="YAML/JSON file of algorithm settings (preset, "
        "iterations, search, reward, selection, dpo, schedule); empty: the "
        "paper's defaults.",
    )
