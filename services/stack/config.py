"""The `csr up` configuration: one YAML file for the whole local system, environment on top.

Owns how a service's settings are assembled for `csr up`:

    run_dir: run                 # Redis data, adapter store, trainer work, state file
    algorithm: {iterations: 3, dpo: {learning_rate: 5.0e-4}}   # or the path of a file
    reward:    {workers: 2, settings: {MODEL: ..., PRETRAINED: ...}}
    generator: {replicas: 1, settings: {MODEL: ..., PROMPT_SET: ..., IMAGE_ROOT: ...}}
    trainer:   {settings: {MODEL: ..., IMAGE_ROOT: ...}}

`algorithm` is the one algorithm configuration of the run (csr.config.CSRConfig.from_dict's
form, inline or as a file's path): csr up writes it to run_dir/algorithm.yaml and gives that
file to the generators and the trainer alike. `settings` keys are the services' own
deployment settings without their prefix (MODEL is CSR_GENERATOR_MODEL for the generator). A
variable already in the environment wins over the file, so `CSR_GENERATOR_BATCH_SIZE=4 csr up`
needs no edit. Ports, addresses, the Redis URL and the generators' admin token (a new random
one per run, given to the generators and the trainer) are `csr up`'s to choose and are not
read from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from services.runtime.bounded import load_yaml

PREFIXES = {"reward": "CSR_REWARD_", "generator": "CSR_GENERATOR_", "trainer": "CSR_TRAINER_"}
_CHOSEN_BY_UP = {
    "reward": {"HOST", "GRPC_PORT", "HTTP_PORT"},
    "generator": {
        "REDIS_URL",
        "REWARD_TARGET",
        "ADMIN_HOST",
        "ADMIN_PORT",
        "HTTP_PORT",
        "ADMIN_TOKEN",
        "CONSUMER",
        "PROGRESS",
    },
    "trainer": {
        "REDIS_URL",
        "GENERATOR_ADMIN",
        "GENERATOR_ADMIN_TOKEN",
        "HTTP_HOST",
        "HTTP_PORT",
    },
}


class StackConfigError(ValueError):
    """The csr up configuration is unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class StackConfig:
    path: Path
    run_dir: Path
    reward_workers: int = 1
    generator_replicas: int = 1
    settings: dict[str, dict[str, str]] = field(default_factory=dict)  # service -> KEY -> value
    algorithm: dict | None = None  # the run's algorithm settings, checked; None: each service's

    @property
    def algorithm_file(self) -> Path:
        return self.run_dir / "algorithm.yaml"

    def env(self, service: str, environ: dict[str, str]) -> dict[str, str]:
        """CSR_<SERVICE>_* from the file, then the environment's own, which win."""
        prefix = PREFIXES[service]
        merged = {prefix + key: value for key, value in self.settings.get(service, {}).items()}
        if self.algorithm is not None and service in ("generator", "trainer"):
            merged[prefix + "ALGORITHM"] = str(self.algorithm_file)
        merged.update({k: v for k, v in environ.items() if k.startswith(prefix)})
        return merged

    def write_algorithm(self) -> None:
        """The run's algorithm settings where the services read them (before they start)."""
        if self.algorithm is not None:
            self.algorithm_file.parent.mkdir(parents=True, exist_ok=True)
            self.algorithm_file.write_text(yaml.safe_dump(self.algorithm, sort_keys=False))


def _count(section: dict, key: str, where: str) -> int:
    value = section.get(key, 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise StackConfigError(f"{where}.{key} = {value!r}: give a whole number >= 1")
    return value


_SECTION_KEYS = {"reward": {"workers", "settings"}, "generator": {"replicas", "settings"}}


def _read_yaml(path: Path, what: str):
    try:
        return load_yaml(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:  # TooDeep is a ValueError
        raise StackConfigError(f"cannot read the {what} {path}: {e}") from e


def _section(data: dict, service: str, path: Path) -> dict:
    section = data.get(service) or {}
    if not isinstance(section, dict):
        raise StackConfigError(
            f"{path}: {service} must be a mapping of {', '.join(sorted(_allowed(service)))}"
        )
    unknown = {str(k) for k in section} - _allowed(service)
    if unknown:
        raise StackConfigError(
            f"{path}: {service} has unknown keys {sorted(unknown)}; use "
            f"{', '.join(sorted(_allowed(service)))}"
        )
    return section


def _allowed(service: str) -> set[str]:
    return _SECTION_KEYS.get(service, {"settings"})


def load_stack_config(path: str | Path) -> StackConfig:
    path = Path(path)
    data = _read_yaml(path, "csr up config") or {}
    if not isinstance(data, dict):
        raise StackConfigError(f"{path}: expected a mapping with reward, generator, trainer")
    unknown = set(data) - {"run_dir", "algorithm", *PREFIXES}
    if unknown:
        raise StackConfigError(
            f"{path}: unknown sections {sorted(unknown, key=str)}; use run_dir, "
            "algorithm, reward, generator, trainer"
        )
    settings = {}
    for service in PREFIXES:
        values = _section(data, service, path).get("settings") or {}
        if not isinstance(values, dict):
            raise StackConfigError(f"{path}: {service}.settings must be a mapping")
        taken = {str(k).upper() for k in values} & _CHOSEN_BY_UP[service]
        if taken:
            raise StackConfigError(
                f"{path}: {service}.settings sets {sorted(taken)}, which "
                "csr up chooses itself; remove them"
            )
        if "algorithm" in data and "ALGORITHM" in {str(k).upper() for k in values}:
            raise StackConfigError(
                f"{path}: {service}.settings sets ALGORITHM beside the "
                "file's algorithm section; keep one of them"
            )
        settings[service] = {
            str(k).upper(): _text(v, f"{path}: {service}.settings.{k}") for k, v in values.items()
        }
    if not isinstance(data.get("run_dir", "run"), str) or not data.get("run_dir", "run"):
        raise StackConfigError(f"{path}: run_dir must be a directory path, not {data['run_dir']!r}")
    run_dir = Path(data.get("run_dir", "run"))
    if not run_dir.is_absolute():
        run_dir = path.parent / run_dir
    run_dir = run_dir.resolve()  # adapter paths in Redis must not depend on the cwd
    return StackConfig(
        path,
        run_dir,
        _count(_section(data, "reward", path), "workers", "reward"),
        _count(_section(data, "generator", path), "replicas", "generator"),
        settings,
        _algorithm(data, path),
    )


def _algorithm(data: dict, path: Path) -> dict | None:
    """The algorithm section (inline, or a file's path relative to the csr up file), checked
    now so that a bad value fails before anything starts."""
    from csr.config import CSRConfig
    from csr.errors import ConfigError

    if "algorithm" not in data:
        return None
    value = data["algorithm"]
    source = path
    if isinstance(value, str):
        source = Path(value) if Path(value).is_absolute() else path.parent / value
        value = _read_yaml(source, f"algorithm file (named in {path})") or {}
    if not isinstance(value, dict):
        raise StackConfigError(
            f"{path}: algorithm must be a mapping of algorithm settings or "
            "the path of a file of them"
        )
    try:
        CSRConfig.from_dict(value)
    except (ConfigError, TypeError) as e:
        raise StackConfigError(f"{source}: algorithm: {e}") from e
    return value


def _text(value, where: str) -> str:
    """A setting's value as its environment variable holds it; only scalars are settings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        raise StackConfigError(f"{where} is empty: give it a value, or remove it")
    if not isinstance(value, (str, int, float)):
        raise StackConfigError(
            f"{where} = {type(value).__name__}: a setting is text, a number or true/false"
        )
    return str(value)


def check_settings(service: str, env: dict[str, str]) -> None:
    """Build the service's settings class from env now, so a bad value fails before start."""
    from services.generator.settings import GeneratorSettings
    from services.reward.settings import RewardSettings
    from services.runtime.entry import unknown_settings
    from services.trainer.settings import TrainerSettings

    kind = {"reward": RewardSettings, "generator": GeneratorSettings, "trainer": TrainerSettings}[
        service
    ]
    strange = unknown_settings(kind, env)
    if strange:
        raise StackConfigError(f"{service}: {strange}")
    try:
        kind(**{k[len(PREFIXES[service]) :].lower(): v for k, v in env.items()})
    except ValidationError as e:
        raise StackConfigError(f"{service}: {e}") from e
