"""Exceptions of the CSR core.

Each names the bad value and, where there is one, the fix. The services map them to
transport errors at their edges (gRPC INVALID_ARGUMENT, HTTP 4xx); the core never does.
"""

from __future__ import annotations


class CSRError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(CSRError, ValueError):
    """An algorithm setting is out of range or inconsistent with another."""


class ExpansionError(CSRError, ValueError):
    """The injected `expand` callable broke its contract (counts, log-probs, types)."""


class RelevanceError(CSRError, ValueError):
    """The injected `relevance` callable broke its contract (counts, non-finite scores)."""


class RecordError(CSRError, ValueError):
    """A preference record is malformed: a missing or ill-typed field."""


class UnsupportedSchemaError(RecordError):
    """A preference record carries a schema version this code cannot read."""
