"""Sharded, resumable band-key computation and the persistent MinHash signature index.

The index of a curated dataset lets a later run drop new rows that near-duplicate rows already
curated (``minhash_dedup(against=...)``, the scheduled refresh). It stores only what LSH needs:
the (n, b) uint64 band keys, the row ids, the texts (for the optional exact-Jaccard check) and
the signature parameters, which must match the querying stage's exactly.

On-disk layout of an index directory::

    meta.json        {"format": 1, "params": {...}, "n": ..., "rensa": "0.5.0"}
    band_keys.npy    (n, b) uint64, memory-mapped on load
    valid.npy        (n,) bool, False for rows with no signature
    rows.parquet     columns id (string), text (string)
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.shards import active_executor, map_shards
from curate.dedup.minhash_core import SHINGLE_HASH_VERSION, text_band_keys

log = logging.getLogger(__name__)

FORMAT = 1
SIGNATURE_PARAMS = ("num_perm", "bands", "rows", "ngram", "shingle", "normalize", "seed", "backend", "ngram_unspaced")


def _algo_version(backend: str) -> str:
    # The shingle hashes (token hash + n-gram combination, minhash_core.SHINGLE_HASH_VERSION)
    # feed every signature: an index built with other shingle hashes is not comparable.
    shingles = f"shingle-{SHINGLE_HASH_VERSION}"
    if backend != "rensa":
        return f"numpy-mod-mersenne-1+{shingles}"
    import rensa

    return f"rensa-rminhash-{getattr(rensa.RMinHash, 'ALGORITHM_VERSION', 'unknown')}+{shingles}"


def signature_params(**params: Any) -> dict[str, Any]:
    """The parameters that make two indexes comparable, plus the hash algorithm's version."""
    out = {k: params[k] for k in SIGNATURE_PARAMS}
    out["algorithm"] = _algo_version(params["backend"])
    return out


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def _shard_worker(args: tuple[pa.Array, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    texts, params = args
    return text_band_keys(texts, **params)


class _BandKeys:
    """The shard function of :func:`compute_band_keys`: rows [start, stop) -> {"keys", "valid"}.

    Args:
        texts: Arrow string array (or chunked) holding rows [offset, offset + len(texts)).
        kw: signature parameters (``SIGNATURE_PARAMS`` keys).
        offset: row number of ``texts[0]`` (default 0; :meth:`for_rows` copies hold one shard).
    """

    def __init__(self, texts: pa.Array | pa.ChunkedArray, kw: dict[str, Any], offset: int = 0):
        self.texts = texts
        self.kw = kw
        self.offset = offset

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        keys, valid = _shard_worker((self.texts.slice(start - self.offset, stop - start), self.kw))
        return {"keys": keys, "valid": valid}

    def for_rows(self, start: int, stop: int) -> _BandKeys:
        """The same function holding only rows [start, stop): what a shard task pickles. take
        copies them (a pickled slice may carry its whole parent buffers)."""
        part = self.texts.slice(start - self.offset, stop - start).take(pa.array(np.arange(stop - start)))
        return _BandKeys(part, self.kw, offset=start)


def compute_band_keys(texts: pa.Array | pa.ChunkedArray, params: dict[str, Any], *, batch_size: int = 10_000,
                      num_proc: int = 1, work_dir: Path | None = None,
                      show_progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Band keys for all texts, shard by shard (``curate.core.shards.map_shards``), optionally in
    parallel processes and resumable.

    Memory: one shard's shingles and signatures at a time per process (about
    batch_size * (shingles per text * 8 B + num_perm * 4 B)), plus the (n, b) uint64 result.

    Args:
        texts: (n,) Arrow string array.
        params: signature parameters (``SIGNATURE_PARAMS`` keys, ``algorithm`` ignored).
        batch_size: rows per shard (default 10,000).
        num_proc: processes computing shards, this one included (default 1 = in-process;
            ``curate.core.parallel.ProcessShardExecutor``).
        work_dir: when given, finished shards are saved under ``work_dir/shards`` and reused by a
            re-run after a crash, and an executor installed by ``use_executor`` (one Prefect task
            per shard under a Dask flow) computes them; None (default): a temporary folder,
            removed afterwards.
        show_progress: draw a tqdm bar (default False).

    Returns:
        ((n, b) uint64 keys, (n,) bool valid).
    """
    kw = {k: params[k] for k in SIGNATURE_PARAMS}
    n = len(texts)
    if not n:  # no shard file for nothing
        return np.empty((0, kw["bands"]), dtype=np.uint64), np.empty(0, dtype=bool)
    # an installed executor only with a work dir: its workers may run elsewhere and must see the folder
    executor = active_executor() if work_dir is not None else None
    if executor is None and num_proc > 1:
        from curate.core.parallel import ProcessShardExecutor
        from curate.dedup.lsh import warm_up

        # warm_up: the parent, done with its shards, imports the LSH step's needs meanwhile
        executor = ProcessShardExecutor(num_proc, on_idle=warm_up)
    scratch = nullcontext(work_dir) if work_dir is not None else tempfile.TemporaryDirectory(prefix="curate-minhash-")
    with scratch as wd:
        out = map_shards(Path(wd), n, _BandKeys(texts, kw), shard_size=batch_size, desc="minhash",
                         show_progress=show_progress, executor=executor)
    return out["keys"], out["valid"]


class MinHashIndex:
    """Band keys + ids (+ texts) of a curated dataset, saved to and loaded from a directory.

    Attributes:
        ids: (n,) object array of row ids.
        keys: (n, b) uint64 band keys.
        valid: (n,) bool, rows with a signature.
        texts: Arrow string array of the rows' texts, or None.
        params: signature parameters (see :func:`signature_params`).
    """

    def __init__(self, ids: np.ndarray, keys: np.ndarray, valid: np.ndarray, params: dict[str, Any],
                 texts: pa.Array | None = None):
        self.ids = np.asarray(ids, dtype=object)
        self.keys = keys
        self.valid = valid
        self.params = dict(params)
        self.texts = texts

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, ids, texts, *, num_perm: int = 128, bands: int = 9, rows: int = 13, ngram: int = 5,
              shingle: str = "word", normalize: bool = True, seed: int = 42, backend: str = "rensa",
              ngram_unspaced: int | None = 3, batch_size: int = 10_000, num_proc: int = 1,
              show_progress: bool = False) -> "MinHashIndex":
        """Index texts with the given signature parameters (same meaning as ``minhash_dedup``'s).

        Args:
            ids: (n,) row ids.
            texts: (n,) texts (Arrow array or list of str).
            num_perm, bands, rows, ngram, shingle, normalize, seed, backend, ngram_unspaced:
                signature params; a stage can only query an index built with identical values.
            batch_size, num_proc, show_progress: execution only.
        """
        texts = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
        if isinstance(texts, pa.ChunkedArray):
            texts = texts.cast(pa.large_string()).combine_chunks()  # large: may exceed 2 GiB
        params = signature_params(num_perm=num_perm, bands=bands, rows=rows, ngram=ngram, shingle=shingle,
                                  normalize=normalize, seed=seed, backend=backend, ngram_unspaced=ngram_unspaced)
        keys, valid = compute_band_keys(texts, params, batch_size=batch_size, num_proc=num_proc,
                                        show_progress=show_progress)
        return cls(np.asarray(list(ids), dtype=object), keys, valid, params, texts)

    def save(self, path: str | Path) -> Path:
        """Write the index to ``path`` atomically (temp dir, then rename)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "band_keys.npy", self.keys)
        np.save(tmp / "valid.npy", self.valid)
        cols = {"id": pa.array(self.ids.tolist(), pa.string())}
        if self.texts is not None:
            cols["text"] = self.texts
        pq.write_table(pa.table(cols), tmp / "rows.parquet")
        (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "params": self.params, "n": len(self)}, indent=1))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MinHashIndex":
        """Read an index saved by :meth:`save` (band keys memory-mapped)."""
        path = Path(path)
        meta_p = path / "meta.json"
        if not meta_p.exists():
            raise FileNotFoundError(f"{path} holds no MinHash index (no meta.json)")
        meta = json.loads(meta_p.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"MinHash index {path} has format {meta.get('format')!r}; this curate reads {FORMAT}")
        rows = pq.read_table(path / "rows.parquet")
        texts = rows.column("text").cast(pa.large_string()).combine_chunks() if "text" in rows.column_names else None
        return cls(np.array(rows.column("id").to_pylist(), dtype=object), np.load(path / "band_keys.npy", mmap_mode="r"),
                   np.load(path / "valid.npy"), meta["params"], texts)

    def check_params(self, params: dict[str, Any], where: str = "index") -> None:
        """Raise ValueError naming every signature parameter that differs from ``params``."""
        diff = {k: (self.params.get(k), params.get(k)) for k in set(self.params) | set(params)
                if self.params.get(k) != params.get(k)}
        if diff:
            detail = ", ".join(f"{k}: index={a!r} stage={b!r}" for k, (a, b) in sorted(diff.items()))
            raise ValueError(f"{where} was built with other MinHash parameters ({detail}); "
                             "rebuild it with the stage's parameters or change the stage's")


def _reference_files(against: str | Path) -> tuple[str, list[Path]]:
    p = Path(against)
    if (p / "meta.json").exists():
        return "index", [p / n for n in ("meta.json", "band_keys.npy", "valid.npy", "rows.parquet") if (p / n).exists()]
    files = sorted((p / "data").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"against={str(against)!r} is neither a MinHash index (meta.json) "
                                "nor a curate run directory (data/*.parquet)")
    return "run", files


def reference_fingerprint(against: str | Path) -> str:
    """Content hash (xxh3-128 hex) of what ``against`` names: the index files or the run's data shards.

    It enters ``minhash_dedup``'s cache key, so a re-curated reference (same path, other rows)
    is never answered from a cache computed against the old one.

    Raises:
        FileNotFoundError: ``against`` is neither an index nor a run directory.
    """
    import xxhash

    kind, files = _reference_files(against)
    h = xxhash.xxh3_128()
    h.update(kind.encode())
    for f in files:
        h.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def index_for_against(against: str | Path, params: dict[str, Any], **exec_kw: Any) -> MinHashIndex:
    """Resolve ``against``: a saved index directory, or a curate run's output directory.

    For a run directory (one holding ``data/*.parquet`` with ``id`` and ``text``), the index is
    built from those rows once and cached at ``<run>/minhash_index/<params-hash>-<data-hash>/``:
    keyed by the rows' content too, so re-curating the run into the same folder builds a new
    index (and removes the stale ones) instead of silently reusing the old rows.

    Raises:
        FileNotFoundError: neither an index nor a run directory.
        ValueError: a saved index built with other signature parameters.
    """
    p = Path(against)
    if (p / "meta.json").exists():
        idx = MinHashIndex.load(p)
        idx.check_params(params, where=f"against={str(against)!r}")
        return idx
    _, files = _reference_files(p)
    content = reference_fingerprint(p)[:16]
    cache = p / "minhash_index" / f"{params_hash(params)}-{content}"
    for stale in (p / "minhash_index").glob("*"):
        if stale.is_dir() and not stale.name.endswith(f"-{content}"):  # built from rows no longer there
            shutil.rmtree(stale, ignore_errors=True)
    if (cache / "meta.json").exists():
        idx = MinHashIndex.load(cache)
        idx.check_params(params, where=str(cache))
        return idx
    tab = pa.concat_tables([pq.read_table(f, columns=["id", "text"]) for f in files])
    kw = {k: params[k] for k in SIGNATURE_PARAMS}
    idx = MinHashIndex.build(tab.column("id").to_pylist(), tab.column("text"), **kw, **exec_kw)
    idx.save(cache)
    log.info("built MinHash index of %d curated rows at %s", len(idx), cache)
    return idx
