"""The activation rule for open_clip weights (CSR_REWARD_QUICK_GELU), on tiny files.

Which network is built is read off the model itself: open_clip puts the activation module in
every MLP block (QuickGELU or torch.nn.GELU).
"""

from __future__ import annotations

import json
import logging

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from services.reward.models import ModelLoadError, load_backend
from services.reward.open_clip_weights import (
    UnknownActivation,
    checkpoint_format,
    create_arguments,
    resolve_weights,
)
from tests.models.clip import OPEN_CLIP_TINY_CFG, build_tiny_open_clip

TINY_NAME = "csr-test-tiny-clip"
ARCHIVE_ENTRIES = {
    "input_resolution": torch.tensor(32),
    "context_length": torch.tensor(77),
    "vocab_size": torch.tensor(49408),
}


def activations(backend) -> set[str]:
    """The activation classes in the model's MLPs (both towers)."""
    return {
        type(module).__name__
        for name, module in backend.model.named_modules()
        if name.endswith("mlp.gelu")
    }


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny CLIP's weights registered under TINY_NAME, as a bare state dict, an OpenAI-format
    state dict and a TorchScript archive."""
    root = tmp_path_factory.mktemp("tiny-weights")
    (root / f"{TINY_NAME}.json").write_text(json.dumps(OPEN_CLIP_TINY_CFG))
    open_clip.add_model_config(root / f"{TINY_NAME}.json")
    weights = open_clip.CLIP(**OPEN_CLIP_TINY_CFG).state_dict()
    torch.save(weights, root / "bare.pt")
    save_file({k: v.contiguous() for k, v in weights.items()}, str(root / "bare.safetensors"))
    torch.save(weights | ARCHIVE_ENTRIES, root / "openai.pt")

    class Holder(torch.nn.Module):
        def forward(self) -> int:
            return 0

    holder = Holder()
    holder.register_buffer("input_resolution", torch.tensor(32))
    torch.jit.save(torch.jit.script(holder), str(root / "archive.pt"))
    return root


def test_checkpoint_formats(tiny_weights):
    assert checkpoint_format(tiny_weights / "archive.pt") == "openai"
    assert checkpoint_format(tiny_weights / "openai.pt") == "openai"
    assert checkpoint_format(tiny_weights / "bare.pt") == "other"
    assert checkpoint_format(tiny_weights / "bare.safetensors") == "other"


def test_a_tag_says_what_it_was_trained_with():
    assert resolve_weights("ViT-L-14-336", "openai", "auto").quick_gelu is True
    assert resolve_weights("ViT-B-32", "laion2b_s34b_b79k", "auto").quick_gelu is False
    assert resolve_weights("ViT-L-14-336", "openai", "false").quick_gelu is False


def test_a_file_in_openai_format_means_quick_gelu(tiny_weights):
    for name in ("openai.pt", "archive.pt"):
        source = resolve_weights(TINY_NAME, str(tiny_weights / name), "auto")
        assert (source.kind, source.quick_gelu) == ("openai-file", True)


def test_another_file_needs_the_setting_unless_the_name_says(tiny_weights):
    bare = str(tiny_weights / "bare.pt")
    with pytest.raises(UnknownActivation, match="CSR_REWARD_QUICK_GELU=true .* or false"):
        resolve_weights(TINY_NAME, bare, "auto")
    assert resolve_weights("ViT-B-32-quickgelu", bare, "auto").quick_gelu is None  # config's
    assert resolve_weights(TINY_NAME, bare, "true").quick_gelu is True
    assert resolve_weights(TINY_NAME, bare, "false").quick_gelu is False


def test_a_setting_against_the_inferred_activation_is_obeyed_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert resolve_weights("ViT-L-14-336", "openai", "false").quick_gelu is False
    assert "pretrained tag 'openai' says QuickGELU: building with GELU" in caplog.text


def test_create_arguments_turn_it_on_and_off():
    source = resolve_weights("ViT-L-14-336", "openai", "auto")
    assert create_arguments(source) == {"force_quick_gelu": True}
    assert create_arguments(resolve_weights("ViT-L-14-336", "openai", "false")) == {
        "quick_gelu": False
    }


def test_backends_are_built_with_the_chosen_activation(tiny_weights, tmp_path):
    plain = build_tiny_open_clip(tmp_path / "plain")
    quick = build_tiny_open_clip(
        tmp_path / "quick", model_cfg=OPEN_CLIP_TINY_CFG | {"quick_gelu": True}
    )
    assert activations(load_backend("open_clip", str(plain), device="cpu")) == {"GELU"}
    assert activations(load_backend("open_clip", str(quick), device="cpu")) == {"QuickGELU"}
    assert activations(load_backend("open_clip", str(quick), device="cpu", quick_gelu="false")) == {
        "GELU"
    }
    assert activations(load_backend("open_clip", str(plain), device="cpu", quick_gelu="true")) == {
        "QuickGELU"
    }
    from_openai_file = load_backend("open_clip", TINY_NAME, str(tiny_weights / "openai.pt"), "cpu")
    assert activations(from_openai_file) == {"QuickGELU"}
    with pytest.raises(ModelLoadError, match="CSR_REWARD_QUICK_GELU"):
        load_backend("open_clip", TINY_NAME, str(tiny_weights / "bare.safetensors"), "cpu")


def test_an_openai_file_is_loaded_as_written(tiny_weights, caplog):
    with caplog.at_level(logging.INFO):
        backend = load_backend("open_clip", TINY_NAME, str(tiny_weights / "openai.pt"), "cpu")
    assert "loaded OpenAI-format weights" in caplog.text
    assert "initialized randomly" not in caplog.text  # open_clip's warning would be false
    written = torch.load(tiny_weights / "openai.pt", weights_only=True)
    loaded = backend.model.state_dict()
    assert all(torch.equal(loaded[k], written[k]) for k in written if k not in ARCHIVE_ENTRIES)


def test_the_openai_tag_builds_vit_l_14_336_with_quick_gelu():
    """The default configuration's network itself, as the tag's arguments build it (on the
    meta device: the structure without weights, and the tag's file is never read)."""
    arguments = create_arguments(resolve_weights("ViT-L-14-336", "openai", "auto"))
    with torch.device("meta"):
        quick = open_clip.create_model("ViT-L-14-336", pretrained=None, device="meta", **arguments)
        plain = open_clip.create_model("ViT-L-14-336", pretrained=None, device="meta")
    for model, expected in ((quick, "QuickGELU"), (plain, "GELU")):
        found = {type(m).__name__ for n, m in model.named_modules() if n.endswith("mlp.gelu")}
        assert found == {expected}
