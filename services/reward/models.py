"""CLIP backends: open_clip and Hugging Face CLIPModel behind one small interface.

Owns model loading (by name or local path, offline), preprocessing, tokenisation with
truncation flags, and L2-normalised embeddings. fp32 on CPU; fp16/bf16 autocast on CUDA.
Does not know about requests, batching or caching (see scorer.py).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch
from PIL import Image

from services.reward.open_clip_weights import (
    UnknownActivation,
    WeightsSource,
    create_arguments,
    random_init_warning_silenced,
    read_openai_checkpoint,
    resolve_weights,
)
from services.runtime.devices import DeviceChoice, DeviceUnavailable, choose_device, log_choice

logger = logging.getLogger(__name__)

DEVICE_SETTING = "CSR_REWARD_DEVICE"


class ModelLoadError(RuntimeError):
    """The configured model cannot be found or loaded; the message names it."""


@dataclass(frozen=True)
class ModelInfo:
    backend: str
    model: str
    embedding_dim: int
    context_length: int
    image_size: int
    device: str


class DeviceUnavailableError(ModelLoadError, DeviceUnavailable):
    """CSR_REWARD_DEVICE names a device this process cannot use; the message says why."""


def resolve_device(device: str) -> DeviceChoice:
    """CSR_REWARD_DEVICE's device (services.runtime.devices): cuda or cuda:N that cannot run
    here raises DeviceUnavailableError naming the cause; auto falls back to the CPU."""
    try:
        return choose_device(device, DEVICE_SETTING)
    except DeviceUnavailable as e:
        raise DeviceUnavailableError(str(e)) from e


def precision_name(device: torch.device, precision: str) -> str:
    dtype = autocast_dtype(device, precision)
    return "fp32" if dtype is None else f"{str(dtype).removeprefix('torch.')} autocast"


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None means plain fp32. auto is fp32 on the CPU and fp16 autocast on CUDA; a named
    precision is autocast on any device (the CPU's autocast runs bf16 and fp16 too)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


class ClipBackend:
    """Shared plumbing: device, autocast, normalisation. Subclasses load and encode.

    pad_to_context: tokenise every text to the full context length, not to the batch's
    longest, so that a text's embedding does not depend on its batch (open_clip always
    does; set by the scorer with fixed shapes)."""

    info: ModelInfo
    pad_to_context: bool = False

    def __init__(self, device: torch.device, precision: str):
        self.device = device
        self.dtype = autocast_dtype(device, precision)

    def _autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    @torch.inference_mode()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """(n, d) float32 unit vectors on the CPU."""
        pixels = self.preprocess(images).to(self.device)
        with self._autocast():
            features = self._image_features(pixels)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """(n, d) float32 unit vectors on the CPU; over-long texts are truncated."""
        return self.encode_texts_flagged(texts)[0]

    @torch.inference_mode()
    def encode_texts_flagged(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """Embeddings as encode_texts, and which texts were truncated (one tokenisation)."""
        tokens, truncated = self.tokenize(texts)
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with self._autocast():
            features = self._text_features(tokens)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu(), truncated

    # Implemented by each backend.
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor: ...
    def tokenize(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]: ...
    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor: ...
    def _text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor: ...


class OpenClipBackend(ClipBackend):
    """open_clip: a built-in name with a pretrained tag or checkpoint, or a local directory,
    built with the activation its weights were trained with (open_clip_weights.py)."""

    def __init__(
        self,
        model: str,
        pretrained: str,
        device: torch.device,
        precision: str,
        quick_gelu: str = "auto",
    ):
        super().__init__(device, precision)
        import open_clip

        try:
            source = resolve_weights(model, pretrained, quick_gelu)
        except UnknownActivation as e:
            raise ModelLoadError(str(e)) from e
        name = f"local-dir:{model}" if source.kind == "directory" else model
        try:
            self.model, self._transform = self._create(name, pretrained, source)
            self._tokenizer = open_clip.get_tokenizer(name)
        except Exception as e:  # open_clip raises many kinds; all mean "cannot load this"
            raise ModelLoadError(
                f"cannot load open_clip model {model!r} (pretrained={pretrained!r}): {e}. Offline, "
                "use a directory with open_clip_config.json and weights, or a built-in name with "
                "a local checkpoint file as pretrained"
            ) from e
        self.model.eval()
        context = int(getattr(self._tokenizer, "context_length", 77))
        image_size = self.model.visual.image_size
        self.info = ModelInfo(
            "open_clip",
            model,
            int(self.model.text_projection.shape[-1])
            if hasattr(self.model, "text_projection")
            else 0,
            context,
            int(image_size[0] if isinstance(image_size, (tuple, list)) else image_size),
            str(device),
        )

    def _create(self, name: str, pretrained: str, source: WeightsSource):
        """(model, inference transform). open_clip reads tags, directories and its own files;
        an OpenAI-format file is read here and loaded strictly into the named architecture."""
        import open_clip

        arguments = create_arguments(source)
        if source.kind == "openai-file":
            with random_init_warning_silenced():
                model, _, transform = open_clip.create_model_and_transforms(
                    name, pretrained=None, device=self.device, **arguments
                )
            model.load_state_dict(read_openai_checkpoint(pretrained))
            logger.info("loaded OpenAI-format weights from %s", pretrained)
            return model, transform
        weights = None if source.kind == "directory" else (pretrained or None)
        model, _, transform = open_clip.create_model_and_transforms(
            name, pretrained=weights, device=self.device, **arguments
        )
        return model, transform

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self._transform(image) for image in images])

    def tokenize(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        context = self.info.context_length
        if getattr(self._tokenizer, "reduction_fn", True) is not None:
            # Not the plain CLIP BPE tokenizer: count tokens separately to flag truncation.
            inner = getattr(self._tokenizer, "tokenizer", self._tokenizer)
            flags = [len(inner.encode(t)) > context for t in texts]
            return {"text": self._tokenizer(texts)}, flags
        # One pass at context + 1: a token in the extra column means the text did not fit.
        wide = self._tokenizer(texts, context_length=context + 1)
        flags = (wide[:, context] != 0).tolist()
        ids = wide[:, :context].clone()
        ids[wide[:, context] != 0, context - 1] = self._tokenizer.eot_token_id
        return {"text": ids}, flags

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def _text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.encode_text(tokens["text"])


def _pooled(output) -> torch.Tensor:
    """transformers 4.x returns a tensor, 5.x an output object with pooler_output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFClipBackend(ClipBackend):
    """transformers CLIPModel with its tokenizer and image processor, by name or directory."""

    def __init__(self, model: str, device: torch.device, precision: str):
        super().__init__(device, precision)
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(model).to(device).eval()
            self._tokenizer = AutoTokenizer.from_pretrained(model)
            self._processor = AutoImageProcessor.from_pretrained(model)
        except Exception as e:  # OSError, ValueError, hub errors: all mean "cannot load this"
            raise ModelLoadError(
                f"cannot load Hugging Face CLIP {model!r}: {e}. Offline, give a local directory "
                "with config.json, weights, tokenizer and preprocessor_config.json"
            ) from e
        config = self.model.config
        self.context_length = int(config.text_config.max_position_embeddings)
        self.info = ModelInfo(
            "hf",
            model,
            int(config.projection_dim),
            self.context_length,
            int(config.vision_config.image_size),
            str(device),
        )

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return self._processor(images=images, return_tensors="pt")["pixel_values"]

    def tokenize(self, texts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        full = self._tokenizer(texts, truncation=False)["input_ids"]
        flags = [len(ids) > self.context_length for ids in full]
        tokens = self._tokenizer(
            texts,
            padding="max_length" if self.pad_to_context else True,
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return dict(tokens), flags

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _pooled(self.model.get_image_features(pixel_values=pixels))

    def _text_features(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        return _pooled(self.model.get_text_features(**tokens))


def load_backend(
    backend: str,
    model: str,
    pretrained: str = "",
    device: str = "auto",
    precision: str = "auto",
    quick_gelu: str = "auto",
) -> ClipBackend:
    """Load the configured CLIP; fail with ModelLoadError naming the model.

    quick_gelu (open_clip only): auto, true or false, as CSR_REWARD_QUICK_GELU."""
    choice = resolve_device(device)
    where = choice.device
    log_choice(
        choice, f"{backend} CLIP {model!r}", precision_name(where, precision), DEVICE_SETTING
    )
    if backend == "open_clip":
        return OpenClipBackend(model, pretrained, where, precision, quick_gelu)
    if backend == "hf":
        return HFClipBackend(model, where, precision)
    raise ModelLoadError(f"unknown CLIP backend {backend!r}; use 'open_clip' or 'hf'")
