"""The algorithm settings file a deployment may give (CSR_GENERATOR_ALGORITHM,
CSR_TRAINER_ALGORITHM): YAML or JSON read into csr.config.CSRConfig.from_dict."""

from __future__ import annotations

from pathlib import Path

import yaml

from csr.config import CSRConfig
from csr.errors import ConfigError


def load_algorithm(path: str) -> CSRConfig:
    """The paper's defaults for an empty path; else the file's settings, checked."""
    if not path:
        return CSRConfig()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise RuntimeError(f"cannot read the algorithm settings {path}: {e}") from e
    try:
        return CSRConfig.from_dict(data)
    except (ConfigError, TypeError) as e:
        raise RuntimeError(f"algorithm settings {path}: {e}") from e
