"""Settings the generator and the trainer share: which VLM, where it runs, the bounds of its
image sizes, which Redis.

Each service's settings class inherits these fields and sets its own environment prefix
(CSR_GENERATOR_MODEL, CSR_TRAINER_MODEL, ...), so both load the model the same way
(services.runtime.vlm.load_vlm).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

DEVICE_PATTERN = r"auto|cpu|cuda(:[0-9]+)?"  # services.runtime.devices says what each means


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
    device: str = Field(
        "auto",
        pattern=f"^({DEVICE_PATTERN})$",
        description="cuda or cuda:N (the GPU images; a start on a machine whose CUDA cannot run "
        "stops with the cause), cpu, or auto (local runs: cuda if usable, else the CPU with a "
        "warning).",
    )
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on CUDA, fp32 on CPU."
    )
    min_pixels: int = Field(
        56 * 56,
        ge=1,
        description="Fewest pixels an image is resized to, for image processors that take "
        "pixel bounds (Qwen2-VL; LLaVA's is a fixed 336x336). Generator and trainer must agree.",
    )
    max_pixels: int = Field(
        1280 * 28 * 28,
        ge=1,
        description="Most pixels an image is resized to (aspect kept), for image processors "
        "that take pixel bounds: at most 1280 image tokens on Qwen2-VL, which leaves COCO's "
        "640x480 as it is. Generator and trainer must agree.",
    )
    redis_url: str = Field("redis://localhost:6379/0", description="Redis holding the streams.")
    algorithm: str = Field(
        "",
        description="YAML/JSON file of algorithm settings (preset, "
        "iterations, search, reward, selection, dpo, schedule); empty: the "
        "paper's defaults.",
    )
