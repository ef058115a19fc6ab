"""curate.core.errors"""
from __future__ import annotations


class InputError(ValueError):
    """One-line, user-facing error naming the file (empty input, not what it claims, unknown format)."""


class ConfigError(ValueError):
    """A recipe error, with the key path of the offending value."""


class LedgerError(RuntimeError):
    """Rows were lost or invented: the provenance invariant does not hold (a bug, never input)."""
