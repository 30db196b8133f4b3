"""A service asked for a GPU it cannot use stays down: `csr train`, `csr generate` and
`csr reward serve` with device cuda on this machine (a CUDA build of torch, no GPU) stop at
start, before loading a model or opening a port, with the cause in their message."""

from __future__ import annotations

import asyncio

import pytest
import torch
from typer.testing import CliRunner

from services.runtime.devices import DeviceUnavailable, cuda_facts

pytestmark = pytest.mark.skipif(cuda_facts().devices > 0, reason="this machine has a GPU")
CAUSE = (
    f"driver must support CUDA {torch.version.cuda}"
    if torch.version.cuda
    else "a build without CUDA"
)
NOWHERE = "redis://127.0.0.1:9/0"  # never reached: the check comes first


def start(command: list[str], env: dict[str, str]):
    from csr_cli.main import app

    return CliRunner().invoke(app, command, env=env)


def test_the_trainer_stops_at_start_naming_the_cause(tmp_path):
    from services.trainer.main import build
    from services.trainer.settings import TrainerSettings

    missing = str(tmp_path / "no-model")  # a model would be loaded after the check
    with pytest.raises(DeviceUnavailable, match="CSR_TRAINER_DEVICE=cuda: no CUDA device"):
        build(TrainerSettings(model=missing, device="cuda", redis_url=NOWHERE))
    env = {
        "CSR_TRAINER_DEVICE": "cuda:0",
        "CSR_TRAINER_MODEL": missing,
        "CSR_TRAINER_REDIS_URL": NOWHERE,
        "CSR_TRAINER_WORK_DIR": str(tmp_path / "work"),
    }
    result = start(["train"], env)
    assert result.exit_code == 2, result.output
    assert "error: CSR_TRAINER_DEVICE=cuda:0: no CUDA device is visible" in result.output
    assert CAUSE in result.output
    assert not (tmp_path / "work").exists()


def test_the_generator_stops_before_loading_its_model(tmp_path):
    env = {
        "CSR_GENERATOR_DEVICE": "cuda",
        "CSR_GENERATOR_MODEL": str(tmp_path / "no-model"),  # the check comes first
        "CSR_GENERATOR_REDIS_URL": NOWHERE,
        "CSR_GENERATOR_PROGRESS": "false",
    }
    result = start(["generate"], env)
    assert result.exit_code == 2, result.output
    assert "error: CSR_GENERATOR_DEVICE=cuda: no CUDA device is visible" in result.output
    assert CAUSE in result.output and "cannot load VLM" not in result.output


def test_the_reward_worker_opens_no_port(clip_dirs):
    from services.reward.models import DeviceUnavailableError, ModelLoadError
    from services.reward.settings import RewardSettings
    from services.reward.worker import RewardWorker

    settings = RewardSettings(
        backend="hf", model=clip_dirs["hf"], device="cuda", grpc_port=0, http_port=0
    )
    worker = RewardWorker(settings)
    with pytest.raises(DeviceUnavailableError, match="CSR_REWARD_DEVICE=cuda: no CUDA") as e:
        asyncio.run(worker.start())
    assert isinstance(e.value, ModelLoadError) and isinstance(e.value, DeviceUnavailable)
    assert worker.grpc_server is None and worker.grpc_port == worker.http_port == 0
    env = {"CSR_REWARD_DEVICE": "cuda:1", "CSR_REWARD_BACKEND": "hf"}
    result = start(["reward", "serve"], {**env, "CSR_REWARD_MODEL": clip_dirs["hf"]})
    assert result.exit_code == 2, result.output
    assert "error: CSR_REWARD_DEVICE=cuda:1: no CUDA device is visible" in result.output
    assert CAUSE in result.output
