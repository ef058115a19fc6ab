"""curate.core.hashing"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import xxhash

from curate.core.stage import Stage

CHUNK_BYTES = 1 << 22


def stable_hash(obj: Any, n: int = 20) -> str:
    """sha256 of canonical JSON of ``obj`` (sorted keys), first ``n`` hex chars."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def stage_key(parent_key: str, stage: Stage) -> str:
    """Key of ``stage`` applied to the output ``parent_key``: parent, name, version, params."""
    return stable_hash({"parent": parent_key, "name": stage.name, "version": stage.version,
                        "params": stage.cache_params()})


FINGERPRINT_ROWS = 65536  # rows per block hashed: bounded memory, and blocks independent of the input's chunks


def canonical_type(t: pa.DataType) -> str:
    """A type's text with every list item named ``item``, recursively.

    Parquet names list items ``element`` and Arrow ``item``, so a table and the same table
    read back from Parquet differ only there; they must hash alike.
    """
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        size = f"[{t.list_size}]" if pa.types.is_fixed_size_list(t) else ""
        kind = "large_list" if pa.types.is_large_list(t) else "fixed_size_list" if size else "list"
        return f"{kind}<item: {canonical_type(t.value_type)}>{size}"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{t.field(i).name}: {canonical_type(t.field(i).type)}"
                                     for i in range(t.num_fields)) + ">"
    if pa.types.is_map(t):
        return f"map<{canonical_type(t.key_type)}, {canonical_type(t.item_type)}>"
    return str(t)


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a table: xxh3-128 of its canonical schema and Arrow IPC buffers.

    Independent of how the table is chunked and of Arrow's list item names (an in-memory table
    and the same table read from Parquet hash alike); schema metadata is left out. Hashed in
    blocks of :data:`FINGERPRINT_ROWS` rows, each serialised as one IPC record batch (Arrow's own
    buffers, no per-string Python work; the IPC writer writes a sliced array's buffers
    zero-based, so a block cut from a larger chunk hashes as the same rows built alone, tested):
    ~0.02 s for 64k rows of 1 KB where writing Parquet took 0.16 s. Values under null slots are
    part of the bytes, so two equal tables built differently may hash apart (a cache miss, never
    a wrong hit).

    Args:
        table: any Arrow table.

    Returns:
        32 hex characters.
    """
    h = xxhash.xxh3_128()
    schema = [(f.name, canonical_type(f.type)) for f in table.schema]
    h.update(json.dumps({"format": "ipc-1", "rows": table.num_rows, "schema": schema}).encode())
    for lo in range(0, table.num_rows, FINGERPRINT_ROWS):
        block = table.slice(lo, FINGERPRINT_ROWS)
        batch = pa.RecordBatch.from_arrays([c.combine_chunks() for c in block.columns], names=block.column_names)
        h.update(batch.serialize())
    return h.hexdigest()


def file_checksum(path: str | Path) -> str:
    """xxh3-128 hex digest of a file's bytes (streamed in 4 MiB chunks)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()
