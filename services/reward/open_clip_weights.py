"""Where an open_clip model's weights come from, and which activation they were trained with.

OpenAI trained CLIP with QuickGELU, x·sigmoid(1.702x). open_clip's built-in configs use plain
GELU unless the name ends in -quickgelu, so OpenAI's weights in a GELU network compute another
function. The rule, for CSR_REWARD_QUICK_GELU=auto:
- a pretrained tag: what open_clip's registry says that tag was trained with ('openai': QuickGELU);
- a checkpoint file in OpenAI's format: QuickGELU. That format is OpenAI's TorchScript archive
  (their released .pt files), or a state dict taken from one, which keeps the archive's
  input_resolution, context_length and vocab_size entries beside the weights;
- an open_clip directory: its open_clip_config.json (quick_gelu; GELU when absent);
- any other checkpoint file with a built-in name ending in -quickgelu: QuickGELU, as named;
- any other checkpoint file: nothing says, so loading stops and asks for true or false.
CSR_REWARD_QUICK_GELU=true or false overrides all of these.

Owns the decision and reading OpenAI-format files; the backend (models.py) builds the model.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

logger = logging.getLogger(__name__)

# The non-weight entries of OpenAI's TorchScript archives' state dicts.
OPENAI_ARCHIVE_ENTRIES = ("input_resolution", "context_length", "vocab_size")

# "unmarked-file": a checkpoint file whose activation neither its format nor the name says.
SourceKind = Literal["directory", "tag", "openai-file", "file", "unmarked-file", "none"]


class UnknownActivation(ValueError):
    """A checkpoint file that cannot be read, or whose activation nothing says; the message
    names the fix."""


@dataclass(frozen=True)
class WeightsSource:
    """kind: where the weights come from. quick_gelu: the activation to build with (None: the
    model config's own). reason: why, for the log."""

    kind: SourceKind
    quick_gelu: bool | None
    reason: str


def checkpoint_format(path: str | Path) -> Literal["openai", "other"]:
    """'openai' for a TorchScript archive or a state dict holding OpenAI's archive entries."""
    if _is_torchscript(path):
        return "openai"
    return "openai" if set(OPENAI_ARCHIVE_ENTRIES) <= _state_dict_keys(path) else "other"


def _is_torchscript(path: str | Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        # torch.jit.save writes constants.pkl; torch.save never does.
        return any(name.rsplit("/", 1)[-1] == "constants.pkl" for name in archive.namelist())


def _state_dict_keys(path: str | Path) -> set[str]:
    """The entry names of a checkpoint file, without reading its tensors where the format allows."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return set(f.keys())
        try:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling and format errors come in many kinds
        raise UnknownActivation(
            f"cannot read checkpoint file {str(path)!r}: {e}. Give a "
            "state dict, a TorchScript archive or a .safetensors file"
        ) from e
    if isinstance(content, dict) and isinstance(content.get("state_dict"), dict):
        content = content["state_dict"]
    return set(content) if isinstance(content, dict) else set()


def read_openai_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of an OpenAI-format file, under open_clip's CLIP key names (which are
    OpenAI's), without the archive's non-weight entries."""
    if _is_torchscript(path):
        weights = torch.jit.load(str(path), map_location="cpu").state_dict()
    elif str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        weights = load_file(str(path))
    else:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v for k, v in weights.items() if k not in OPENAI_ARCHIVE_ENTRIES}


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def random_init_warning_silenced() -> Iterator[None]:
    """open_clip warns on the root logger that a model built without weights is initialised
    randomly; an OpenAI-format file's weights are loaded right after, so the warning is false."""
    quiet, root = _DropRandomInitWarning(), logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _inferred(model: str, pretrained: str) -> WeightsSource:
    """What auto decides; quick_gelu None where the config decides or nothing says."""
    import open_clip

    if Path(model).is_dir():
        return WeightsSource("directory", None, "the directory's open_clip_config.json")
    if not pretrained:
        return WeightsSource("none", None, "no pretrained weights: the config's activation")
    tag = open_clip.get_pretrained_cfg(model, pretrained)  # open_clip, too, tries a tag first
    if tag:
        return WeightsSource(
            "tag", bool(tag.get("quick_gelu", False)), f"pretrained tag {pretrained!r}"
        )
    if not Path(pretrained).is_file():  # neither: open_clip's own error names the choices
        return WeightsSource("tag", None, "unknown tag")
    if checkpoint_format(pretrained) == "openai":
        return WeightsSource("openai-file", True, "a checkpoint file in OpenAI's format")
    if (open_clip.get_model_config(model) or {}).get("quick_gelu"):
        return WeightsSource("file", None, f"the model name {model!r}")
    return WeightsSource("unmarked-file", None, "nothing in the file or the name says")


def resolve_weights(
    model: str, pretrained: str, setting: Literal["auto", "true", "false"]
) -> WeightsSource:
    """Where the weights come from and the activation to build with (module docstring)."""
    inferred = _inferred(model, pretrained)
    if setting == "auto":
        if inferred.kind == "unmarked-file":
            raise UnknownActivation(
                f"cannot tell which activation checkpoint {pretrained!r} was trained with: it "
                "is neither OpenAI's TorchScript archive nor a state dict taken from one, and "
                f"{model!r} is not a -quickgelu model. Set CSR_REWARD_QUICK_GELU=true for OpenAI's "
                "weights (and others trained with QuickGELU) or false for weights trained with "
                "GELU (most LAION and DataComp ones)"
            )
        return inferred
    chosen = setting == "true"
    if inferred.quick_gelu is not None and inferred.quick_gelu != chosen:
        logger.warning(
            "CSR_REWARD_QUICK_GELU=%s, but %s says %s: building with %s as set",
            setting,
            inferred.reason,
            _name(inferred.quick_gelu),
            _name(chosen),
        )
    return WeightsSource(inferred.kind, chosen, f"CSR_REWARD_QUICK_GELU={setting}")


def _name(quick_gelu: bool | None) -> str:
    return {True: "QuickGELU", False: "GELU", None: "the config's activation"}[quick_gelu]


def create_arguments(source: WeightsSource) -> dict:
    """Keyword arguments of open_clip.create_model_and_transforms for the chosen activation."""
    logger.info("open_clip activation: %s (%s)", _name(source.quick_gelu), source.reason)
    if source.quick_gelu is None:
        return {}
    # force_quick_gelu can only turn it on; a model keyword overrides the config either way.
    return {"force_quick_gelu": True} if source.quick_gelu else {"quick_gelu": False}
