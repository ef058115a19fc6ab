"""Per-row annotation cache: a refresh that adds 1% new rows embeds and scores only those rows.

The stage cache (``curate.cache.store``) keys a whole step by its input's fingerprint, so one new row
reruns the step over every row. Row-local annotators (a row's output depends on that row alone:
embeddings, LM scores, heuristics, the learned quality score) can do better: :class:`RowCached`
wraps one, looks each row up by

    row key = xxh3-128 of the row's relevant text (``ROW_TEXT_COLUMNS`` plus any column the
              stage names in ``text_column`` / ``template``)

in a store keyed by the annotator's name, version and ``cache_params()``, annotates only the
rows it misses (one call of the wrapped stage on the sub-table, so its own sharding, progress
and resume still apply) and writes them back. Set-level annotators (``kmeans``) are never
wrapped: their output for a row depends on the other rows.

Layout: ``<cache_dir>/rowcache/<stage>-<params-hash>/part-*.arrow`` (column ``_row_key`` plus
the stage's output columns). Parts are written atomically (temp file, rename).

Caveat: a cached value is the one computed when the row was first seen. Batched models pad
a batch to its longest text, so the same row embedded in another batch can differ in the last
float bits; the selection it feeds is the same in practice, but the output hash of a run that
reuses cached rows is not guaranteed to equal a cold run's when embeddings are in the output.
"""
from __future__ import annotations

import json
import logging
import os
import string
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.stage import Annotator, StageContext

log = logging.getLogger(__name__)

ROW_TEXT_COLUMNS = ("text", "instruction", "input", "output", "messages")
KEY = "_row_key"


def relevant_columns(stage, columns: list[str]) -> list[str]:
    """Columns whose values a row-local ``stage`` may read (those present in ``columns``)."""
    want = list(ROW_TEXT_COLUMNS)
    tc = getattr(stage, "text_column", None)
    if isinstance(tc, str):
        want.append(tc)
    tpl = getattr(stage, "template", None)
    if isinstance(tpl, str) and "{" in tpl:
        want += [f for _, f, _, _ in string.Formatter().parse(tpl) if f]
    seen: list[str] = []
    for c in want:
        if c in columns and c not in seen:
            seen.append(c)
    return seen


def row_keys(table: pa.Table, columns: list[str]) -> np.ndarray:
    """(n,) object array of 32-hex-digit row keys over ``columns`` (nulls and types included)."""
    import xxhash

    cols = [table.column(c).to_pylist() for c in columns]
    out = np.empty(len(table), dtype=object)
    for i in range(len(table)):
        blob = json.dumps([c[i] for c in cols], ensure_ascii=False, default=str, separators=(",", ":"))
        out[i] = xxhash.xxh3_128_hexdigest(blob.encode())
    return out


class RowCache:
    """On-disk {row key -> output columns} store of one annotator configuration.

    Args:
        root: the stage cache root (the store's ``root``); entries go under ``root/rowcache``.
        stage: the annotator whose outputs are cached (its name, version and ``cache_params()``
            choose the folder).
    """

    def __init__(self, root: str | Path, stage):
        from curate.core.hashing import stable_hash

        tag = stable_hash({"name": stage.name, "version": stage.version, "params": stage.cache_params()}, n=16)
        self.dir = Path(root) / "rowcache" / f"{stage.name}-{tag}"

    def load(self) -> pa.Table | None:
        """Every cached row (the last write of a key wins), or None when empty."""
        parts = sorted(self.dir.glob("part-*.arrow")) if self.dir.is_dir() else []
        tables = []
        for p in parts:
            with pa.memory_map(str(p)) as src:
                tables.append(pa.ipc.open_file(src).read_all())
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]

    def add(self, keys: np.ndarray, out: pa.Table) -> None:
        """Append rows (``keys[i]`` -> ``out`` row i), one atomic part file."""
        if len(keys) == 0:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _, first = np.unique(keys.astype(str), return_index=True)
        first = np.sort(first)
        t = out.take(pa.array(first)).append_column(KEY, pa.array(keys[first].tolist(), pa.string()))
        name = f"part-{uuid.uuid4().hex}.arrow"
        tmp = self.dir / f".{name}.tmp"
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, t.schema) as w:
            w.write_table(t)
        os.replace(tmp, self.dir / name)


class RowCached(Annotator):
    """Wrap a row-local annotator so only rows not seen before are annotated.

    Same ``name``, ``version``, ``cache_params()`` and output as the wrapped stage, so the stage
    cache key and the output table are unchanged; only the work done differs.

    Args:
        stage: the annotator (its class must be tagged ``row_local``).
        root: the stage cache root (``StageStore.root``).

    Attributes:
        n_hits_, n_computed_: rows served from the cache / annotated by the last ``annotate``.
    """

    def __init__(self, stage: Annotator, root: str | Path):
        if not stage.row_local:
            raise ValueError(f"stage {stage.name!r} is not row-local (its class is not tagged row_local); "
                             "RowCached wraps only annotators whose output for a row depends on that row alone")
        self.stage = stage
        self.root = root
        self.name = stage.name
        self.version = stage.version

    def get_params(self) -> dict:
        return self.stage.get_params()

    def cache_params(self) -> dict:
        return self.stage.cache_params()

    def prerequisites(self, columns):
        return self.stage.prerequisites(columns)

    def output_columns(self) -> list[str]:
        fn = getattr(self.stage, "output_columns", None)
        return list(fn()) if callable(fn) else []

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        cache = RowCache(self.root, self.stage)
        keys = row_keys(table, relevant_columns(self.stage, table.column_names))
        cached = cache.load()
        pos = {}
        if cached is not None:
            pos = {k: i for i, k in enumerate(cached.column(KEY).to_pylist())}  # later parts win
        hit_at = np.fromiter((pos.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        miss = np.flatnonzero(hit_at < 0)
        self.n_hits_, self.n_computed_ = int(len(keys) - len(miss)), int(len(miss))
        log.info("%s: %d rows from the row cache, %d to compute", self.name, self.n_hits_, self.n_computed_)
        if len(miss) == 0:
            return cached.drop_columns([KEY]).take(pa.array(hit_at))
        new = self.stage.annotate(table.take(pa.array(miss)), ctx)
        if len(new) != len(miss):
            raise RuntimeError(f"{self.name}: annotator returned {len(new)} rows for {len(miss)}")
        cache.add(keys[miss], new)
        if len(miss) == len(keys):
            return new
        hits = cached.drop_columns([KEY]).select(new.column_names)
        both = pa.concat_tables([hits.cast(new.schema), new])
        # rows that hit point into the cached table, the rest into `new` after it
        where = hit_at.copy()
        where[miss] = len(hits) + np.arange(len(miss))
        return both.take(pa.array(where))
