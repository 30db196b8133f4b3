"""docker-compose.yml against the code: commands exist, every CSR_* variable is a setting, every
${VAR} is documented in .env.example, every GPU service names its own devices, and Debian's
docker-compose accepts the file (no engine)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
GENERATORS = sorted(name for name in SERVICES if name.startswith("generator"))
GPU_SERVICES = ["reward", *GENERATORS, "trainer"]
ENV_EXAMPLE = dict(
    line.split("=", 1)
    for line in (ROOT / ".env.example").read_text().splitlines()
    if "=" in line and not line.startswith("#")
)


def settings_fields() -> dict[str, set[str]]:
    from services.generator.settings import GeneratorSettings
    from services.reward.settings import RewardSettings
    from services.trainer.settings import TrainerSettings

    return {
        cls.model_config["env_prefix"]: {name.upper() for name in cls.model_fields}
        for cls in (RewardSettings, GeneratorSettings, TrainerSettings)
    }


@pytest.mark.parametrize("name", ["reward", *GENERATORS, "trainer"])
def test_every_command_is_a_csr_subcommand(name):
    from csr_cli.main import app

    command = SERVICES[name]["command"]
    assert command[0] == "csr"
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output


def test_every_csr_variable_is_a_setting_of_its_service():
    fields = settings_fields()
    used = [
        key
        for service in SERVICES.values()
        for key in service.get("environment", {})
        if key.startswith("CSR_")
    ]
    assert len(used) > 20
    for key in used:
        prefix = next((p for p in fields if key.startswith(p)), None)
        assert prefix is not None, f"{key} belongs to no service's settings"
        assert key[len(prefix) :] in fields[prefix], f"{key} is not a field of {prefix}* settings"


def test_every_interpolated_variable_is_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    wanted = set(re.findall(r"\$\{([A-Z_]+)[:}?-]", text))
    example = {
        line.split("=")[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert wanted and wanted <= example, sorted(wanted - example)
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"REDIS_PASSWORD", "CSR_VLM_MODEL", "CSR_REWARD_MODEL", "CSR_PROMPT_SET"} <= required


def test_redis_is_private_persistent_and_password_protected():
    redis = SERVICES["redis"]
    assert "ports" not in redis
    assert "--requirepass" in redis["command"] and "--appendonly" in redis["command"]
    assert "redis-data:/data" in redis["volumes"]
    for name in (*GENERATORS, "trainer"):
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert (
            SERVICES[name]["deploy"]["resources"]["reservations"]["devices"][0]["driver"]
            == "nvidia"
        )
    for name in GENERATORS:
        assert SERVICES[name]["environment"]["CSR_GENERATOR_REWARD_TARGET"] == "dns:///reward:50051"


def test_only_the_reward_http_api_is_published_and_on_the_loopback_by_default():
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert list(published) == ["reward"], published
    [port] = published["reward"]
    loopback = r"\$\{CSR_PUBLISH_ADDRESS:-127\.0\.0\.1\}"
    assert re.fullmatch(loopback + r":\$\{[A-Z_]+:-[0-9-]+\}:8080", port), port
    assert ENV_EXAMPLE["CSR_PUBLISH_ADDRESS"] == "127.0.0.1"


def gpu_devices(service: dict) -> list[dict]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_no_gpu_reservation_by_count():
    # Docker gives a count of n the devices 0..n-1: every service would share the first GPUs.
    assert "count:" not in (ROOT / "docker-compose.yml").read_text()
    assert all(
        "count" not in device for service in SERVICES.values() for device in gpu_devices(service)
    )


def device_variables(name: str) -> list[str]:
    """The .env variables naming a service's GPUs; each device id must be one."""
    ids = [i for device in gpu_devices(SERVICES[name]) for i in device["device_ids"]]
    found = [re.fullmatch(r"\$\{([A-Z0-9_]+):\?[^}]+\}", i) for i in ids]
    assert ids and all(found), f"{name}: device ids {ids} are not required .env variables"
    return [m.group(1) for m in found]


def test_every_gpu_service_names_its_devices_from_env():
    assert [n for n in SERVICES if gpu_devices(SERVICES[n])] == GPU_SERVICES
    for name in GPU_SERVICES:
        for device in gpu_devices(SERVICES[name]):
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert all(v in ENV_EXAMPLE for v in device_variables(name)), name


def test_every_gpu_service_runs_on_cuda_and_never_falls_back_to_the_cpu():
    devices = {}
    for name in GPU_SERVICES:
        [key] = [k for k in SERVICES[name]["environment"] if k.endswith("_DEVICE")]
        value = SERVICES[name]["environment"][key]
        default = re.fullmatch(r"\$\{([A-Z_]+):-([^}]*)\}", value)
        devices[name] = (default[2], ENV_EXAMPLE[default[1]]) if default else (value,)
    assert all(set(d) == {"cuda"} for d in devices.values()), devices


def test_generators_and_the_trainer_see_the_same_image_tokens():
    bounds = {
        name: {
            k.removeprefix("CSR_GENERATOR_").removeprefix("CSR_TRAINER_"): v
            for k, v in SERVICES[name]["environment"].items()
            if k.endswith("_PIXELS")
        }
        for name in [*GENERATORS, "trainer"]
    }
    from services.runtime.settings import VLMSettings

    defaults = VLMSettings()
    assert bounds["trainer"] == {
        "MIN_PIXELS": f"${{CSR_VLM_MIN_PIXELS:-{defaults.min_pixels}}}",
        "MAX_PIXELS": f"${{CSR_VLM_MAX_PIXELS:-{defaults.max_pixels}}}",
    }
    assert all(b == bounds["trainer"] for b in bounds.values()), bounds
    assert ENV_EXAMPLE["CSR_VLM_MIN_PIXELS"] == str(defaults.min_pixels)
    assert ENV_EXAMPLE["CSR_VLM_MAX_PIXELS"] == str(defaults.max_pixels)


def test_generators_and_the_trainer_get_different_gpus_by_default():
    assigned = {
        name: [ENV_EXAMPLE[v] for v in device_variables(name)] for name in [*GENERATORS, "trainer"]
    }
    flat = [gpu for gpus in assigned.values() for gpu in gpus]
    assert len(GENERATORS) >= 2 and len(flat) == len(set(flat)), assigned
    assert all(gpu.isdigit() for gpu in flat)
    assert ENV_EXAMPLE[device_variables("reward")[0]].isdigit()


def test_generators_differ_only_in_name_gpu_and_profile():
    assert [f"generator-{k}" for k in range(len(GENERATORS))] == GENERATORS
    first = SERVICES["generator-0"]
    assert "profiles" not in first  # always runs; the trainer waits for it
    assert SERVICES["trainer"]["depends_on"]["generator-0"]["condition"] == "service_healthy"
    assert ENV_EXAMPLE["CSR_GENERATOR_ADMINS"] == "generator-0:50061"
    for k, name in enumerate(GENERATORS):
        service = SERVICES[name]
        assert service.get("profiles", []) == ([name] if k else [])
        assert service["environment"]["CSR_GENERATOR_CONSUMER"] == name
        assert device_variables(name) == [f"GENERATOR_{k}_GPU"]
        same = ("command", "image", "build", "volumes", "depends_on", "stop_grace_period")
        assert {key: service[key] for key in same} == {key: first[key] for key in same}
        others = {
            key: v for key, v in service["environment"].items() if key != "CSR_GENERATOR_CONSUMER"
        }
        assert others == {
            key: v for key, v in first["environment"].items() if key != "CSR_GENERATOR_CONSUMER"
        }


def test_docker_compose_accepts_the_file(tmp_path):
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CSR_REQUIRE_COMPOSE"):
            pytest.fail("docker-compose is not installed (make test installs Debian's)")
        pytest.skip("docker-compose not installed; `make test` installs it")
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(tmp_path / ".env.example", tmp_path / ".env")
    ok = subprocess.run(
        [tool, "config", "-q"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    resolved = subprocess.run(
        [tool, "config"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    services = yaml.safe_load(resolved.stdout)["services"]
    gpus = {
        name: [i for d in gpu_devices(services[name]) for i in d["device_ids"]]
        for name in GPU_SERVICES
    }
    dedicated = [gpu for name in [*GENERATORS, "trainer"] for gpu in gpus[name]]
    assert len(dedicated) == len(set(dedicated)) == len(GENERATORS) + 1, gpus
    assert all(gpu.isdigit() for gpu in [*dedicated, *gpus["reward"]]), gpus
    # docker-compose renders the published port with the loopback address from .env
    assert services["reward"]["ports"] == ["127.0.0.1:8080-8089:8080/tcp"]
    (tmp_path / ".env").write_text("")  # the required settings must be refused when unset
    bad = subprocess.run(
        [tool, "config", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
        check=False,
    )
    assert bad.returncode != 0 and "set REDIS_PASSWORD in .env" in bad.stderr


def test_the_admin_token_is_required_and_the_trainer_sends_the_generators_one():
    required = "${CSR_GENERATOR_ADMIN_TOKEN:?set CSR_GENERATOR_ADMIN_TOKEN in .env}"
    for name in GENERATORS:
        assert SERVICES[name]["environment"]["CSR_GENERATOR_ADMIN_TOKEN"] == required
    assert SERVICES["trainer"]["environment"]["CSR_TRAINER_GENERATOR_ADMIN_TOKEN"] == required
    assert ENV_EXAMPLE["CSR_GENERATOR_ADMIN_TOKEN"]
