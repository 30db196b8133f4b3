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
needs no edit. Ports, addresses and the Redis URL are `csr up`'s to choose and are not read
from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

PREFIXES = {"reward": "CSR_REWARD_", "generator": "CSR_GENERATOR_", "trainer": "CSR_TRAINER_"}
_CHOSEN_BY_UP = {
    "reward": {"HOST", "GRPC_PORT", "HTTP_PORT"},
    "generator": {
        "REDIS_URL",
        "REWARD_TARGET",
        "ADMIN_HOST",
        "ADMIN_PORT",
        "HTTP_PORT",
        "CONSUMER",
        "PROGRESS",
    },
    "trainer": {"REDIS_URL", "GENERATOR_ADMIN", "HTTP_HOST", "HTTP_PORT"},
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


def load_stack_config(path: str | Path) -> StackConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise StackConfigError(f"cannot read the csr up config {path}: {e}") from e
    if not isinstance(data, dict):
        raise StackConfigError(f"{path}: expected a mapping with reward, generator, trainer")
    unknown = set(data) - {"run_dir", "algorithm", *PREFIXES}
    if unknown:
        raise StackConfigError(
            f"{path}: unknown sections {sorted(unknown)}; use run_dir, "
            "algorithm, reward, generator, trainer"
        )
    settings = {}
    for service in PREFIXES:
        section = data.get(service) or {}
        values = section.get("settings") or {}
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
        settings[service] = {str(k).upper(): _text(v) for k, v in values.items()}
    run_dir = Path(data.get("run_dir", "run"))
    if not run_dir.is_absolute():
        run_dir = path.parent / run_dir
    run_dir = run_dir.resolve()  # adapter paths in Redis must not depend on the cwd
    return StackConfig(
        path,
        run_dir,
        _count(data.get("reward") or {}, "workers", "reward"),
        _count(data.get("generator") or {}, "replicas", "generator"),
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
        try:
            value = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise StackConfigError(f"{path}: cannot read the algorithm file {source}: {e}") from e
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


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
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
