"""CSR: Calibrated Self-Rewarding for vision-language models (Zhou et al., NeurIPS 2024).

The package root is the pure core: configuration, reward formulas, the sentence-level
search, preference selection and the record schema. It imports no grpc, redis, HTTP or
file-system code, and nothing of the project outside `csr` (tests/unit/test_layers.py
checks it), so every service can import it and every test can drive it with fakes.
"""

from csr.config import CSRConfig, DPOSettings, RewardConfig, SearchConfig, SelectionConfig
from csr.errors import (
    ConfigError,
    CSRError,
    ExpansionError,
    RecordError,
    RelevanceError,
    UnsupportedSchemaError,
)
from csr.pairs import PromptOutcome, generate_pairs
from csr.records import SCHEMA_VERSION, PreferenceRecord
from csr.search import Candidate, FinishedPath, Prefix, SearchRequest, SearchResult, run_search
from csr.selection import NoPair, PreferencePair, select_pair

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "CSRConfig",
    "CSRError",
    "Candidate",
    "ConfigError",
    "DPOSettings",
    "ExpansionError",
    "FinishedPath",
    "NoPair",
    "PreferencePair",
    "PreferenceRecord",
    "Prefix",
    "PromptOutcome",
    "RecordError",
    "RelevanceError",
    "RewardConfig",
    "SearchConfig",
    "SearchRequest",
    "SearchResult",
    "SelectionConfig",
    "UnsupportedSchemaError",
    "__version__",
    "generate_pairs",
    "run_search",
    "select_pair",
]
