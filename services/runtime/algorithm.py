"""The algorithm settings file a deployment may give (CSR_GENERATOR_ALGORITHM,
CSR_TRAINER_ALGORITHM): YAML or JSON read into csr.config.CSRConfig.from_dict."""

from __future__ import annotations

from pathlib import Path

import yaml

from csr.config import CSRConfig
from csr.errors import ConfigError
from services.runtime.bounded import load_yaml


def load_algorithm(path: str) -> CSRConfig:
    """The paper's defaults for an empty path; else the file's settings, checked."""
    if not path:
        return CSRConfig()
    try:
        data = load_yaml(Path(path).read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: nested or expanded too far
        raise RuntimeError(f"cannot read the algorithm settings {path}: {e}") from e
    try:
        return CSRConfig.from_dict(data)
    except (ConfigError, TypeError) as e:
        raise RuntimeError(f"algorithm settings {path}: {e}") from e
