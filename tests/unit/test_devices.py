"""Device settings: a requested CUDA device that cannot run stops the service with its cause;
auto says where it runs, loudly when that is the CPU. The causes are checked on hand-written
facts, and the real check on this machine, which has a CUDA build of torch and no GPU."""

from __future__ import annotations

import logging

import pytest
import torch

from services.runtime.devices import (
    CudaFacts,
    DeviceUnavailable,
    choose_device,
    cuda_facts,
    cuda_problem,
    log_choice,
)

GPU_HOST = CudaFacts("2.14.1+cu130", "13.0", 2)


def test_a_usable_device_has_no_problem():
    assert cuda_problem("cuda", GPU_HOST) == "" and cuda_problem("cuda:1", GPU_HOST) == ""


def test_a_cpu_wheel_is_named():
    problem = cuda_problem("cuda", CudaFacts("2.14.1+cpu", None, 0))
    assert "torch 2.14.1+cpu is a build without CUDA" in problem
    assert "constraints.txt" in problem


def test_no_visible_device_names_the_wheels_cuda_and_the_driver():
    old_driver = CudaFacts(
        "2.14.1+cu130", "13.0", 0, "The NVIDIA driver on your system is too old (found 12020)"
    )
    problem = cuda_problem("cuda:0", old_driver)
    assert "too old (found 12020)" in problem  # the driver's own reason, kept
    assert "built for CUDA 13.0" in problem and "driver must support CUDA 13.0" in problem
    hidden = cuda_problem("cuda", CudaFacts("2.14.1+cu130", "13.0", 0, "", visible=""))
    assert "torch.cuda.is_available() is False" in hidden
    assert "CUDA_VISIBLE_DEVICES is ''" in hidden


def test_an_index_past_the_visible_devices_is_named():
    problem = cuda_problem("cuda:2", GPU_HOST)
    assert "cuda:2 is past the 2 visible CUDA device(s), cuda:0 to cuda:1" in problem
    assert "numbered from 0" in problem


def test_requesting_cuda_here_stops_with_the_cause():
    facts = cuda_facts()
    if facts.devices:
        pytest.skip("this machine has a GPU")
    for requested in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(DeviceUnavailable) as caught:
            choose_device(requested, "CSR_TRAINER_DEVICE")
        message = str(caught.value)
        assert message.startswith(f"CSR_TRAINER_DEVICE={requested}: ")
        if torch.version.cuda is None:
            assert "a build without CUDA" in message
        else:
            assert f"driver must support CUDA {torch.version.cuda}" in message
        assert message.endswith("Or set CSR_TRAINER_DEVICE=cpu")


def test_a_value_that_is_no_device_is_refused():
    for bad in ("gpu", "cuda:", "cuda:x", "CUDA", "mps"):
        with pytest.raises(DeviceUnavailable, match="is not a device: use cuda, cuda:N"):
            choose_device(bad, "CSR_REWARD_DEVICE")


def test_auto_falls_back_to_the_cpu_with_a_warning_naming_why(caplog):
    if cuda_facts().devices:
        pytest.skip("this machine has a GPU")
    choice = choose_device("auto", "CSR_GENERATOR_DEVICE")
    assert choice.device == torch.device("cpu") and choice.fallback
    with caplog.at_level(logging.INFO, logger="services.runtime.devices"):
        log_choice(choice, "VLM m", "fp32", "CSR_GENERATOR_DEVICE")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "VLM m runs on the CPU in fp32" in text and choice.fallback in text
    assert "Set CSR_GENERATOR_DEVICE=cuda to stop instead" in text


def test_a_chosen_device_is_said_at_info(caplog):
    choice = choose_device("cpu", "CSR_TRAINER_DEVICE")
    with caplog.at_level(logging.INFO, logger="services.runtime.devices"):
        log_choice(choice, "VLM m", "fp32", "CSR_TRAINER_DEVICE")
    [record] = caplog.records
    assert record.levelno == logging.INFO and record.getMessage() == "VLM m runs on cpu in fp32"
