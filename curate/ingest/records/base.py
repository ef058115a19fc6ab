"""What a record format provides: a per-row adapter and, where it has one, a vectorised one.

The per-row adapter (:meth:`RecordFormat.adapt`) is the reference: it raises a
:class:`~curate.ingest.formats.RowError` for a bad row. The vectorised adapter
(:meth:`RecordFormat.adapt_columns`) gives the same values for whole columns, and the same
errors as :class:`Check` masks in the per-row adapter's order, built from the same error
functions; where it cannot be exact it raises :class:`~curate.ingest.kernels.Fallback`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curate.ingest.formats import Canon, RowError, missing_field_error
from curate.ingest.kernels import Fallback


@dataclass
class Check:
    """The rows failing one check of a vectorised adapter.

    Attributes:
        mask: (n,) bool, True where the row fails.
        error: the error of every failing row, or row index -> error where the message names
            a part of the row (e.g. a turn).
    """

    mask: np.ndarray
    error: RowError | dict[int, RowError]

    def error_of(self, row: int) -> RowError:
        """The error of failing row ``row``."""
        return self.error[row] if isinstance(self.error, dict) else self.error


@dataclass
class Columns:
    """What a vectorised adapter gives for n records.

    Attributes:
        text: (n,) string, the canonical text (meaningful for rows that pass every check).
        canon: canonical column name -> (n,) array; canonical columns left out are null.
        checks: in the per-row adapter's order; a row's error is its first failing check.
        consumed: record keys that became canonical fields (the rest are extra columns).
        strings: record key -> its (n,) string column, for the JSON array size bound
            (:func:`curate.ingest.spans.check_spans`).
    """

    text: pa.Array
    canon: dict[str, pa.Array]
    checks: list[Check]
    consumed: set[str]
    strings: dict[str, pa.Array]


class RecordFormat:
    """One record format (``alpaca``, ``sharegpt``, ``messages``, ``text``).

    Args:
        fields (dict[str, str]): validated name overrides
            (:func:`curate.ingest.formats.check_fields`).
    """

    name = ""

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields

    def adapt(self, rec: dict) -> tuple[Canon, set[str | None]]:
        """One row as ``((instruction, input, output, messages, text), consumed_keys)``.

        ``consumed_keys`` are the record keys that became canonical fields (None may be in it).

        Raises:
            RowError: the row cannot be used.
        """
        raise NotImplementedError

    def adapt_columns(self, records: list[dict], keys: set[str], ok: np.ndarray) -> Columns:
        """:meth:`adapt` over n rows at once.

        Args:
            records (list[dict]): n parsed rows (all dicts).
            keys (set[str]): every key of any row.
            ok (np.ndarray): (n,) bool, False for rows already quarantined (their text may be
                left unrendered).

        Raises:
            Fallback: this format, or this input, has no exact vectorised adapter.
        """
        raise Fallback(f"format {self.name!r}")


def require_str(rec: dict, keys: tuple[str, ...], required: bool) -> tuple[str | None, str | None]:
    """The first non-null value among ``keys`` (a field's aliases) and its key.

    Args:
        rec (dict): the parsed row.
        keys (tuple[str, ...]): aliases, tried in order.
        required (bool): a row with none of them is ``missing_field``.

    Returns:
        (key, value); for an absent optional field (None, None), or (key, None) when the key is
        present with null (it is still consumed, not an extra column).

    Raises:
        RowError: missing required field, or a value that is not a string (``wrong_type``).
    """
    key, val = _first_value(rec, keys)
    if key is None:
        if required:
            raise missing_field_error(keys)
        return next((k for k in keys if k in rec), None), None
    if not isinstance(val, str):
        raise RowError("wrong_type", f"field {key!r} must be a string, got {type(val).__name__}")
    return key, val


def _first_value(rec: dict, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if k in rec and rec[k] is not None:
            return k, rec[k]
    return None, None
