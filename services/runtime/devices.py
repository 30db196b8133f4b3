"""Which device a model runs on, checked before anything is loaded.

Owns the meaning of the device settings of the generator, the trainer and the reward workers
(auto, cpu, cuda, cuda:N). A CUDA device that this process cannot use stops the service at
start with DeviceUnavailable, whose message names the cause:
- torch is a build without CUDA (a CPU wheel);
- no CUDA device is visible: no driver, a driver too old for the CUDA the torch wheel was
  built for, or no GPU given to the container;
- the device index is past the visible devices.
`auto` (local runs) takes CUDA when it is usable and the CPU otherwise, and says which: at
WARNING, with the reason, when it falls back to the CPU, where a 7B model runs in fp32 at a
small fraction of a GPU's speed.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

import torch

from services.runtime.settings import DEVICE_PATTERN

logger = logging.getLogger(__name__)


class DeviceUnavailable(RuntimeError):
    """The configured device cannot be used by this process; the message says why."""


@dataclass(frozen=True)
class CudaFacts:
    """What this process can see of CUDA."""

    torch_version: str
    built_for: str | None  # torch.version.cuda: the CUDA the wheel was built for; None: no CUDA
    devices: int  # visible CUDA devices
    error: str = ""  # why CUDA did not initialise
    visible: str | None = None  # CUDA_VISIBLE_DEVICES, if set


def cuda_facts() -> CudaFacts:
    """Initialise CUDA (if torch has it) and count the devices; keeps the driver's reason."""
    devices, error = 0, ""
    if torch.version.cuda is not None:
        try:
            torch.cuda.init()
            devices = torch.cuda.device_count()
        except (RuntimeError, AssertionError) as e:  # what torch raises when it cannot
            error = str(e).strip()
    return CudaFacts(
        torch.__version__,
        torch.version.cuda,
        devices,
        error,
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


def cuda_problem(requested: str, facts: CudaFacts) -> str:
    """Why `requested` (cuda or cuda:N) cannot run in this process; empty if it can."""
    if facts.built_for is None:
        return (
            f"torch {facts.torch_version} is a build without CUDA (a CPU wheel); install the "
            "CUDA build that constraints.txt pins (the GPU image has it)"
        )
    if facts.devices == 0:
        reason = facts.error or "torch.cuda.is_available() is False"
        visible = (
            f"; CUDA_VISIBLE_DEVICES is {facts.visible!r}" if facts.visible is not None else ""
        )
        return (
            f"no CUDA device is visible ({reason}{visible}). torch {facts.torch_version} was "
            f"built for CUDA {facts.built_for}: the host's NVIDIA driver must support CUDA "
            f"{facts.built_for} or newer (nvidia-smi shows the newest CUDA the driver "
            "supports), and the container must be given the GPU (compose: the nvidia driver "
            "and device_ids; Kubernetes: an nvidia.com/gpu limit)"
        )
    index = int(requested.partition(":")[2] or 0)
    if index >= facts.devices:
        return (
            f"{requested} is past the {facts.devices} visible CUDA device(s), cuda:0 to "
            f"cuda:{facts.devices - 1}; inside a container the GPUs it was given are numbered "
            "from 0, whatever the host calls them"
        )
    return ""


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    fallback: str = ""  # why device=auto runs on the CPU; empty if it did not fall back


def choose_device(requested: str, setting: str) -> DeviceChoice:
    """The device for the setting's value (setting: its variable, e.g. CSR_TRAINER_DEVICE).

    Raises DeviceUnavailable for a value that is no device, and for cuda or cuda:N that this
    process cannot use."""
    if not re.fullmatch(DEVICE_PATTERN, requested):
        raise DeviceUnavailable(
            f"{setting}={requested!r} is not a device: use cuda, cuda:N, cpu or auto"
        )
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"))
    facts = cuda_facts()
    problem = cuda_problem("cuda" if requested == "auto" else requested, facts)
    if requested == "auto":
        return DeviceChoice(torch.device("cpu"), problem) if problem else DeviceChoice(_cuda())
    if problem:
        raise DeviceUnavailable(f"{setting}={requested}: {problem}. Or set {setting}=cpu")
    return DeviceChoice(torch.device(requested))


def _cuda() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device())


def log_choice(choice: DeviceChoice, what: str, precision: str, setting: str) -> None:
    """Say where `what` runs and in which precision; at WARNING when auto fell back to the CPU."""
    if choice.fallback:
        logger.warning(
            "%s runs on the CPU in %s: %s=auto found no usable GPU: %s. Set %s=cuda to stop "
            "instead, or %s=cpu to choose the CPU",
            what,
            precision,
            setting,
            choice.fallback,
            setting,
            setting,
        )
    else:
        logger.info("%s runs on %s in %s", what, choice.device, precision)
