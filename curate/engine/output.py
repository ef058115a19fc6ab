"""Writers for a run's output directory (the public output contract, docs/architecture.md).

``<out>/`` holds ``dataset/`` (``datasets.load_from_disk``), ``data/part-*.parquet`` (the same
rows), ``README.md`` (the dataset card, :mod:`curate.engine.card`: ``datasets.load_dataset(out)``
loads ``data/`` through it), ``provenance.parquet``, ``quarantine.jsonl`` (if any row was
quarantined), ``report.md`` + ``report.json`` (+ ``plots/`` and ``datamap.html``), and
``manifest.json`` (resolved config, input and stage keys, package versions, seed, output hash),
written last. The whole folder is written
under a temporary name and renamed into place (see :func:`write_run`).

``output.drop_columns`` (default None: every vector column, e.g. ``embedding``) are left out of
``dataset/`` and ``data/``; ``manifest.json``/``report.json`` (``columns_left_out``) say which
cache entry holds them.

``output_hash`` is the sha256 of the data shards and provenance file bytes; each is written
from a single-chunk table so the same content always gives the same bytes, whether it was
computed now or read back from the cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.hashing import stable_hash
from curate.core.schema import is_vector_type

log = logging.getLogger(__name__)

TRACKED_PACKAGES = ("curate", "pyarrow", "numpy", "datasets", "torch", "transformers", "sentence-transformers",
                    "faiss-cpu", "rensa", "datasketch", "peft", "scikit-learn", "prefect")


@dataclass
class RunResult:
    """What ``curate.run`` returns.

    Attributes:
        output_dir: the run's output folder.
        counts: n_input / n_selected / n_dropped / n_quarantined.
        output_hash: hash of the data shards + provenance.
        did_work: False when every step was cached and the output was already up to date.
        report: the report.json content.
    """

    output_dir: Path
    counts: dict
    output_hash: str
    did_work: bool
    report: dict

    def dataset(self):
        import datasets

        return datasets.load_from_disk(str(self.output_dir / "dataset"))

    def provenance(self) -> pa.Table:
        return pq.read_table(self.output_dir / "provenance.parquet")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table.combine_chunks(), path, row_group_size=65536)


def _hash_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:32]


_OUR_NAMES = {"data", "dataset", "provenance.parquet", "quarantine.jsonl", "report.md", "report.json", "plots",
              "manifest.json", "minhash_index", "README.md", "datamap.html"}


def dropped_columns(cfg, table: pa.Table) -> list[str]:
    """Columns left out of ``dataset/`` and ``data/``: ``output.drop_columns``, or by default
    (None) every vector column (a list of numbers per row, e.g. ``embedding``)."""
    spec = cfg.output.drop_columns
    if spec is None:
        return [f.name for f in table.schema if is_vector_type(f.type)]
    return [c for c in spec if c in table.column_names]


def _vector_locations(dropped: list[str], records, store) -> dict:
    """Where each left-out column lives: the cache entry of the step that added it."""
    out = {}
    for col in dropped:
        rec = next((r for r in reversed(records) if col in (r.columns_added or [])), None)
        if rec is not None:
            path = store.path(rec.key) / "table.arrow" if store is not None else None
            out[col] = {"step": rec.label, "cache_key": rec.key, "path": str(path) if path else None}
        else:
            out[col] = {"step": "input", "cache_key": None, "path": None}
    return out


def _check_output_dir(out: Path) -> None:
    from curate.core.errors import ConfigError

    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir: {out} is a file; choose a folder")
    here, target = Path.cwd().resolve(), out.resolve()
    if target == here or target in here.parents:
        raise ConfigError(f"output.dir: {str(out)!r} is the working directory or holds it; choose a subfolder "
                          f"such as runs/<name> (curate replaces the whole output dir)")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUR_NAMES)
        if foreign:
            raise ConfigError(f"output.dir: {out} holds files curate did not write ({', '.join(foreign[:5])}); "
                              f"choose a new or empty folder (curate replaces the whole output dir)")


def output_lock(store, out: str | Path) -> contextlib.AbstractContextManager[bool]:
    """The lock writers of the output folder ``out`` take turns on (held by :func:`write_run`).

    It lives in ``store``'s lock folder under a name hashed from the resolved path, so every
    process writing ``out`` through the same cache waits for the others, whichever entry point
    (``curate run``, a refresh version, the flow's write task) it came from. Re-entrant in one
    thread: a caller may hold it around :func:`write_run` to finish the folder under the same turn.

    Args:
        store: the run's ``curate.cache.store.StageStore``.
        out: the output folder (relative paths resolve against the working directory).

    Returns:
        A context manager holding the lock exclusively (blocks until it is free).
    """
    return store.lock(f"output-{stable_hash(str(Path(out).resolve()), 16)}")


def write_run(cfg, ing, table: pa.Table, ledger, records, final_key: str, seconds: float,
              show_progress: bool = True, store=None) -> RunResult:
    """Write every output of a run (skipped when the folder already holds this exact result).

    Everything is written into a temporary sibling folder, ``manifest.json`` last, which then
    replaces ``output.dir`` by rename: a killed run leaves the previous output (or nothing),
    never a folder that looks complete and is not. Concurrent runs writing the same folder take
    turns (:func:`output_lock`, taken when ``store`` is given).
    """
    out = Path(cfg.output.dir)
    if not out.name:  # "." or "/": resolve so the folder has a name (then refused by _check_output_dir)
        out = out.resolve()
    with output_lock(store, out) if store is not None else contextlib.nullcontext():
        return _write_run_locked(cfg, ing, table, ledger, records, final_key, seconds, show_progress, store, out)


def _write_run_locked(cfg, ing, table, ledger, records, final_key, seconds, show_progress, store, out) -> RunResult:
    from curate.engine.card import write_card
    from curate.report.run_report import build_report, write_report

    config_dump = cfg.model_dump(mode="json")
    manifest_path = out / "manifest.json"
    all_cached = ing.cached and all(r.cached for r in records)
    if manifest_path.exists() and all_cached:
        old = json.loads(manifest_path.read_text())
        if old.get("final_key") == final_key and old.get("config") == config_dump and (out / "dataset").is_dir():
            log.info("output %s is up to date (final key %s): nothing to do", out, final_key)
            report = json.loads((out / "report.json").read_text())
            report["stages"] = [asdict(r) for r in records]  # this run's steps: all cache hits
            return RunResult(out, report["counts"], old["output_hash"], False, report)

    _check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        drop = dropped_columns(cfg, table) if cfg.output.schema_ == "canonical" else \
            [f.name for f in table.schema if is_vector_type(f.type) and f.name not in ing.table.column_names]
        vectors = _vector_locations(drop, records, store)
        if drop:
            log.info("left out of the dataset: %s (kept in the cache: %s)", drop,
                     {c: v["path"] for c, v in vectors.items()})
        data = table.drop_columns(drop) if drop else table
        if cfg.output.schema_ == "original":
            data = original_rows(cfg, ing, data, show_progress)
        (tmp / "data").mkdir()
        shard_rows = cfg.output.shard_rows
        shards = []
        for n, start in enumerate(range(0, max(len(data), 1), shard_rows)):
            path = tmp / "data" / f"part-{n:05d}.parquet"
            _write_parquet(data.slice(start, shard_rows), path)
            shards.append(path)
        provenance = ledger.to_table()
        _write_parquet(provenance, tmp / "provenance.parquet")
        if ing.quarantine:
            with open(tmp / "quarantine.jsonl", "w") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in ing.quarantine)
        output_hash = _hash_files(shards + [tmp / "provenance.parquet"])
        if cfg.output.save_dataset:
            import datasets

            if not show_progress:
                datasets.disable_progress_bars()
            # a fingerprint from the content (not a random one, not the shard layout), so dataset/ is
            # byte-identical across runs, num_proc and shard sizes
            fp = stable_hash({"final_key": final_key, "dropped": drop,
                              "provenance": _hash_files([tmp / "provenance.parquet"])}, 16)
            datasets.Dataset(data.combine_chunks(), fingerprint=fp).save_to_disk(str(tmp / "dataset"))
        report = build_report(cfg, ing, ledger, records, provenance, seconds)
        report["output_hash"] = output_hash
        report["columns_left_out"] = vectors
        report["card_warnings"] = write_card(tmp / "README.md", cfg, report, provenance, ing.files)
        write_report(report, tmp, provenance, plots=cfg.output.plots,
                     store_root=str(store.root) if store is not None else None,
                     texts=ing.table.column("text") if "text" in ing.table.column_names else None)
        manifest = {
            "curate_version": package_versions().get("curate"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": config_dump,
            "seed": cfg.seed,
            "input": {"key": ing.key, "files": ing.files},
            "stages": [{"label": r.label, "type": r.type, "key": r.key, "params": r.params, "auto": r.auto}
                       for r in records],
            "final_key": final_key,
            "schema": cfg.output.schema_,
            "output_hash": output_hash,
            "counts": ledger.counts,
            "columns_left_out": vectors,
            "packages": package_versions(),
            "cache_dir": str(Path(cfg.cache_dir).resolve()) if cfg.cache_dir else None,
        }
        with open(tmp / "manifest.json", "w") as f:  # last: its presence marks a complete output
            f.write(json.dumps(manifest, indent=1, default=str))
            f.flush()
            os.fsync(f.fileno())
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RunResult(out, ledger.counts, output_hash, True, report)


def original_rows(cfg, ing, table: pa.Table, show_progress: bool = False) -> pa.Table:
    """``output.schema: original``: the kept input records as they were read, in input order.

    Args:
        cfg: the run's config (``input`` says how the files were read).
        ing: the run's ingest step (its table's columns are the input's, not the stages').
        table: the final canonical table (the kept rows; vector columns already left out).
        show_progress: a bar over the files read again.

    Returns:
        The records (``curate.ingest.original.read_original``), plus, with ``output.scores``,
        the columns the stages added (a name the input already has gets ``curate_``).
    """
    from curate.ingest.original import columns_by_id, read_original, with_columns
    from curate.ingest.read import expand_with_names

    inp = cfg.input
    rows, ids = read_original(expand_with_names(inp.path), table.column("id").to_pylist(), id_field=inp.id_field,
                              max_row_bytes=inp.max_row_bytes, split=inp.split, extract_timeout=inp.extract_timeout,
                              show_progress=show_progress)
    if not cfg.output.scores:
        return rows
    added = [c for c in table.column_names if c not in ing.table.column_names]
    return with_columns(rows, "arrow", columns_by_id(table, added, ids))


def _replace_dir(tmp: Path, out: Path) -> None:
    """Put ``tmp`` at ``out`` by rename; an existing ``out`` is renamed away first, then removed."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
