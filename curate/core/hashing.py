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


def table_fingerprint(table: pa.Table) -> str:
    """Content hash of a table (its Parquet bytes from one chunk, so chunking does not matter)."""
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table.combine_chunks(), sink)
    return xxhash.xxh3_128_hexdigest(sink.getvalue().to_pybytes())


def file_checksum(path: str | Path) -> str:
    """xxh3-128 hex digest of a file's bytes (streamed in 4 MiB chunks)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()
