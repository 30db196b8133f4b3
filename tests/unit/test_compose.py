"""docker-compose.yml against the code: commands exist, every CSR_* variable is a setting, every
${VAR} is documented in .env.example, and Debian's docker-compose accepts the file (no engine)."""

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


def settings_fields() -> dict[str, set[str]]:
    from services.generator.settings import GeneratorSettings
    from services.reward.settings import RewardSettings
    from services.trainer.settings import TrainerSettings

    return {cls.model_config["env_prefix"]: {name.upper() for name in cls.model_fields}
            for cls in (RewardSettings, GeneratorSettings, TrainerSettings)}


@pytest.mark.parametrize("name", ["reward", "generator", "trainer"])
def test_every_command_is_a_csr_subcommand(name):
    from csr_cli.main import app

    command = SERVICES[name]["command"]
    assert command[0] == "csr"
    result = CliRunner().invoke(app, [*command[1:], "--help"])
    assert result.exit_code == 0, result.output


def test_every_csr_variable_is_a_setting_of_its_service():
    fields = settings_fields()
    used = [key for service in SERVICES.values() for key in service.get("environment", {})
            if key.startswith("CSR_")]
    assert len(used) > 20
    for key in used:
        prefix = next((p for p in fields if key.startswith(p)), None)
        assert prefix is not None, f"{key} belongs to no service's settings"
        assert key[len(prefix):] in fields[prefix], f"{key} is not a field of {prefix}* settings"


def test_every_interpolated_variable_is_in_env_example():
    text = (ROOT / "docker-compose.yml").read_text()
    wanted = set(re.findall(r"\$\{([A-Z_]+)[:}?-]", text))
    example = {line.split("=")[0] for line in (ROOT / ".env.example").read_text().splitlines()
               if "=" in line and not line.startswith("#")}
    assert wanted and wanted <= example, sorted(wanted - example)
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    assert {"REDIS_PASSWORD", "CSR_VLM_MODEL", "CSR_REWARD_MODEL", "CSR_PROMPT_SET"} <= required


def test_redis_is_private_persistent_and_password_protected():
    redis = SERVICES["redis"]
    assert "ports" not in redis
    assert "--requirepass" in redis["command"] and "--appendonly" in redis["command"]
    assert "redis-data:/data" in redis["volumes"]
    for name in ("generator", "trainer"):
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert SERVICES[name]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] \
            == "nvidia"
    assert SERVICES["generator"]["environment"]["CSR_GENERATOR_REWARD_TARGET"] \
        == "dns:///reward:50051"


def test_docker_compose_accepts_the_file(tmp_path):
    tool = shutil.which("docker-compose")
    if tool is None:
        if os.environ.get("CSR_REQUIRE_COMPOSE"):
            pytest.fail("docker-compose is not installed (make test installs Debian's)")
        pytest.skip("docker-compose not installed; `make test` installs it")
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copy(tmp_path / ".env.example", tmp_path / ".env")
    ok = subprocess.run([tool, "config", "-q"], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / ".env").write_text("")  # the required settings must be refused when unset
    bad = subprocess.run([tool, "config", "-q"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    assert bad.returncode != 0 and "set REDIS_PASSWORD in .env" in bad.stderr
