"""Writers for a run's output directory (DESIGN.md's public contract).

``<out>/`` holds ``dataset/`` (``datasets.load_from_disk``), ``data/part-*.parquet`` (the same
rows), ``provenance.parquet``, ``quarantine.jsonl`` (if any row was quarantined),
``report.md`` + ``report.json`` (+ ``plots/``), and ``manifest.json`` (resolved config, input
and stage keys, package versions, seed, output hash), written last.

``output_hash`` is the sha256 of the data shards and provenance file bytes; each is written
from a single-chunk table so the same content always gives the same bytes, whether it was
computed now or read back from the cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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


def write_run(cfg, ing, table: pa.Table, ledger, records, final_key: str, seconds: float,
              show_progress: bool = True) -> RunResult:
    """Write every output of a run (skipped when the folder already holds this exact result)."""
    from curate.report import build_report, write_report

    out = Path(cfg.output.dir)
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

    out.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # written last: its absence marks an incomplete output
    for stale in ("data", "dataset", "plots"):
        shutil.rmtree(out / stale, ignore_errors=True)
    (out / "data").mkdir()
    shard_rows = cfg.output.shard_rows
    shards = []
    for n, start in enumerate(range(0, max(len(table), 1), shard_rows)):
        path = out / "data" / f"part-{n:05d}.parquet"
        _write_parquet(table.slice(start, shard_rows), path)
        shards.append(path)
    provenance = ledger.to_table()
    _write_parquet(provenance, out / "provenance.parquet")
    qpath = out / "quarantine.jsonl"
    qpath.unlink(missing_ok=True)
    if ing.quarantine:
        with open(qpath, "w") as f:
            for r in ing.quarantine:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    if cfg.output.save_dataset:
        import datasets

        if not show_progress:
            datasets.disable_progress_bars()
        datasets.Dataset(table.combine_chunks()).save_to_disk(str(out / "dataset"))
    output_hash = _hash_files(shards + [out / "provenance.parquet"])
    report = build_report(cfg, ing, ledger, records, provenance, seconds)
    report["output_hash"] = output_hash
    write_report(report, out, provenance, plots=cfg.output.plots)
    manifest = {
        "curate_version": package_versions().get("curate"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": config_dump,
        "seed": cfg.seed,
        "input": {"key": ing.key, "files": ing.files},
        "stages": [{"label": r.label, "type": r.type, "key": r.key, "params": r.params, "auto": r.auto} for r in records],
        "final_key": final_key,
        "output_hash": output_hash,
        "counts": ledger.counts,
        "packages": package_versions(),
        "cache_dir": str(Path(cfg.cache_dir).resolve()) if cfg.cache_dir else None,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
    return RunResult(out, ledger.counts, output_hash, True, report)
