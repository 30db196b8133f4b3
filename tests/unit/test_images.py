"""The Docker images against the pins: the GPU image's CUDA is the one the pinned torch wheel
needs, every image installs with the constraints, and the GPU images run on cuda."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
DOCKERFILES = {
    name: (ROOT / "docker" / name).read_text() for name in ("Dockerfile.gpu", "Dockerfile.reward")
}
PINS = dict(
    line.split("==", 1)
    for line in (ROOT / "constraints.txt").read_text().splitlines()
    if "==" in line and not line.startswith("#")
)


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def wheel_cuda() -> str:
    """The CUDA (major.minor) of the constraints' CUDA pins: the toolkit and runtime that
    torch's wheel requires; they must agree with each other."""
    cudas = {major_minor(PINS[name]) for name in ("cuda-toolkit", "nvidia-cuda-runtime")}
    majors = {
        re.fullmatch(r"nvidia-[a-z-]+-cu(\d+)", n)[1]
        for n in PINS
        if n.endswith(("-cu12", "-cu13"))
    }
    assert len(cudas) == 1 and {c.split(".")[0] for c in cudas} == majors, (cudas, majors)
    return cudas.pop()


def test_the_gpu_image_has_the_cuda_of_the_pinned_torch_wheel():
    [base] = re.findall(
        r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-\S+ AS gpu-base$", DOCKERFILES["Dockerfile.gpu"], re.M
    )
    assert base == wheel_cuda(), (base, wheel_cuda())


def test_the_installed_torch_is_the_pinned_one():
    import torch

    assert torch.__version__.split("+")[0] == PINS["torch"]
    assert torch.version.cuda is None or major_minor(torch.version.cuda) == wheel_cuda()


def test_every_image_installs_with_the_constraints():
    for name, text in DOCKERFILES.items():
        installs = re.findall(r"pip install[^\n]*", text)
        assert installs and all("-c constraints.txt" in line for line in installs), name
        assert re.search(r"^COPY [^\n]*constraints\.txt", text, re.M), name


def test_the_gpu_images_run_on_cuda():
    env = re.findall(r"CSR_(GENERATOR|TRAINER)_DEVICE=(\S+)", DOCKERFILES["Dockerfile.gpu"])
    assert sorted(env) == [("GENERATOR", "cuda"), ("TRAINER", "cuda")]


def test_the_csr_user_gets_uid_1000_on_an_ubuntu_24_base():
    """The deployments run as uid 1000; Ubuntu 24.04 images already give it to "ubuntu"."""
    text = DOCKERFILES["Dockerfile.gpu"]
    add = text.index("useradd --create-home --uid 1000 csr")
    if re.search(r"^FROM \S+ubuntu24\.04", text, re.M):
        assert 0 <= text.find("userdel --remove ubuntu") < add
