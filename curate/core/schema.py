"""Column names, the canonical record schema, and helpers for array columns.

Every reader produces a ``pa.Table`` with the canonical columns below (structured fields are
null where a format has none); original extra columns are kept after them.

Row ids: taken from an id field when the input has one (``input.id_field``, or a column named
``id``), otherwise ``<file>:<line>`` (JSONL/CSV: 1-based line; JSON arrays and Parquet: 1-based
row; in-memory data: the 0-based row index). Ids are unique across one run; a repeated id is
quarantined with both places named.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

ID = "id"
TEXT = "text"
INSTRUCTION = "instruction"
INPUT = "input"
OUTPUT = "output"
MESSAGES = "messages"
SOURCE = "source"

MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))

CANONICAL_SCHEMA = pa.schema(
    [
        (ID, pa.string()),
        (TEXT, pa.string()),
        (INSTRUCTION, pa.string()),
        (INPUT, pa.string()),
        (OUTPUT, pa.string()),
        (MESSAGES, MESSAGE_TYPE),
        (SOURCE, pa.string()),
    ]
)
CANONICAL_COLUMNS = tuple(CANONICAL_SCHEMA.names)

# Provenance statuses and columns (see curate/engine/provenance.py).
SELECTED = "selected"
DROPPED = "dropped"
QUARANTINED = "quarantined"
DUP_OF = "dup_of"
CLUSTER_ID = "cluster_id"


def is_vector_type(t: pa.DataType) -> bool:
    """True for a list of numbers per row (an embedding, a gradient feature): the columns left
    out of outputs unless asked for."""
    return (pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t)) and \
        (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))


def embedding_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """Wrap an (n, d) float array as a fixed-size-list Arrow column without a Python list.

    Args:
        matrix: (n, d) float32 or float16 array.

    Returns:
        ``pa.FixedSizeListArray`` of length n with list size d.
    """
    matrix = np.ascontiguousarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"embedding matrix must be 2-D (n, d), got shape {matrix.shape}")
    _, d = matrix.shape
    values = pa.array(matrix.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(values, d)


def embedding_matrix(table: pa.Table, column: str, dtype=np.float32) -> np.ndarray:
    """Read a fixed-size-list column back as an (n, d) array (zero-copy where possible).

    Args:
        table: table holding ``column``.
        column: name of a fixed-size-list<float> column (e.g. written by ``embed``).
        dtype: dtype of the returned array (default float32).

    Returns:
        (n, d) array.
    """
    if column not in table.column_names:
        raise KeyError(f"column {column!r} not in table; have {table.column_names}")
    col = table.column(column).combine_chunks()
    if not pa.types.is_fixed_size_list(col.type):
        raise TypeError(f"column {column!r} is {col.type}, expected a fixed-size list (an embedding)")
    d = col.type.list_size
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, d).astype(dtype, copy=False)


TOKENS_COLUMN = "n_tokens"


CENTROID_DISTANCE = "centroid_distance"


def score_column(table: pa.Table, column: str, stage: str) -> np.ndarray:
    if column not in table.column_names:
        raise KeyError(f"{stage}: score column {column!r} not in table; have {table.column_names} "
                       "(add the stage that computes it earlier in `stages`)")
    return table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
