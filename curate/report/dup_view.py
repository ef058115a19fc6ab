"""Look inside a finished run: members of duplicate clusters side by side (``curate report --dups``).

Texts of dropped rows are not in the run's ``data/``; they are read from the cached ingest
table (the manifest names its key and the cache folder). A cluster is either a ``dup_cluster``
id (MinHash) or the group of rows sharing a ``dup_of`` representative (exact/semantic dedup).
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from curate.cache.store import StageStore, default_cache_dir


def _texts(run_dir: Path) -> dict[str, str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    store = StageStore(manifest.get("cache_dir") or default_cache_dir())
    key = manifest["input"]["key"]
    if not store.has(key):
        return {}
    t = store.load_table(key).select(["id", "text"])
    return dict(zip(t.column("id").to_pylist(), t.column("text").to_pylist()))


def print_dup_clusters(run_dir: Path, which: str = "top", limit: int = 3, width: int = 100) -> str:
    """Render duplicate clusters of a run.

    Args:
        run_dir: a run's output folder.
        which: ``"top"`` (largest clusters), a representative or member row id, or a dup_cluster id.
        limit: how many clusters with ``top`` (default 3).
        width: characters per member line (default 100).
    """
    from curate.report.dups import dup_clusters_from_provenance, format_dup_cluster

    prov = pq.read_table(run_dir / "provenance.parquet")
    clusters = dup_clusters_from_provenance(prov)  # {cluster id: [kept id, members...]}
    if not clusters:
        return "no duplicates were dropped in this run"
    if which == "top":
        chosen = sorted(clusters.values(), key=len, reverse=True)[:limit]
    else:
        chosen = [m for c, m in clusters.items() if which == str(c) or which in m]
        if not chosen:
            return f"no duplicate cluster contains {which!r}"
    texts = _texts(run_dir)
    status = dict(zip(prov.column("id").to_pylist(), prov.column("status").to_pylist()))
    reason = dict(zip(prov.column("id").to_pylist(), prov.column("reason").to_pylist()))
    out = []
    for members in chosen:
        rows = [{"id": m, "text": texts.get(m, "<text not in cache>"), "status": status.get(m), "reason": reason.get(m)}
                for m in members]
        out.append(format_dup_cluster(rows, kept_id=members[0], width=width))
    return "\n\n".join(out)
