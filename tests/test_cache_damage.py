"""Cache damage beyond ``table.arrow``: artifacts, manifests, foreign folders, large entries, a kill mid-commit.

Each test damages a committed entry the way a disk, a user or a killed process can, and checks
the store notices (moved aside to ``.damaged/``, never deleted blindly), recomputes, and that
what the rerun returns is the undamaged result.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import curate
from curate.cache.gc import gc, list_entries
from curate.cache.store import StageStore


def _commit_with_artifact(store: StageStore, key: str, centroids: np.ndarray) -> None:
    art = store.work_dir(key) / "artifacts"
    art.mkdir(parents=True)
    np.save(art / "centroids.npy", centroids)
    (art / "quarantine.jsonl").write_text('{"line": 3, "reason": "malformed_json"}\n')
    store.commit(key, pa.table({"cluster_id": [0, 1, 1]}))


def _compute_calls(store: StageStore, key: str, centroids: np.ndarray) -> list:
    calls = []

    def compute():
        calls.append(1)
        art = store.work_dir(key) / "artifacts"
        art.mkdir(parents=True, exist_ok=True)
        np.save(art / "centroids.npy", centroids)
        (art / "quarantine.jsonl").write_text('{"line": 3, "reason": "malformed_json"}\n')
        return pa.table({"cluster_id": [0, 1, 1]})

    table, cached = store.get_or_compute(key, compute)
    assert table.column("cluster_id").to_pylist() == [0, 1, 1]
    return calls


@pytest.mark.parametrize("damage, problem", [
    ("delete_centroids", "artifacts/centroids.npy is missing"),
    ("flip_centroids", "artifacts/centroids.npy checksum mismatch"),
    ("truncate_quarantine", "artifacts/quarantine.jsonl has"),
    ("garbage_manifest", "unreadable manifest"),
])
def test_a_damaged_artifact_or_manifest_is_moved_aside_and_recomputed(tmp_path, caplog, damage, problem):
    store = StageStore(tmp_path / "c")
    c = np.arange(6, dtype=np.float32).reshape(3, 2)
    _commit_with_artifact(store, "k", c)
    art = store.artifacts("k")
    if damage == "delete_centroids":
        (art / "centroids.npy").unlink()
    elif damage == "flip_centroids":  # same size, other bytes
        b = bytearray((art / "centroids.npy").read_bytes())
        b[-1] ^= 0x40
        (art / "centroids.npy").write_bytes(bytes(b))
    elif damage == "truncate_quarantine":
        (art / "quarantine.jsonl").write_text('{"line": 3')
    else:
        (store.path("k") / "manifest.json").write_text('{"key": "k", "rows"')
    assert problem in store.check("k")
    assert _compute_calls(store, "k", c) == [1]  # recomputed, not read damaged
    np.testing.assert_array_equal(np.load(store.artifacts("k") / "centroids.npy"), c)
    assert store.check("k") is None
    aside = list((tmp_path / "c" / ".damaged").iterdir())
    assert len(aside) == 1 and aside[0].name.startswith("k-")
    assert any("damaged" in r.getMessage() and problem.split()[0] in r.getMessage() for r in caplog.records)


def test_an_entry_over_verify_max_bytes_is_size_checked_on_load_and_checksummed_by_verify(tmp_path):
    """Above ``verify_max_bytes`` a load checks sizes only (the documented trade-off: a same-size
    byte flip is read); ``verify`` (``curate cache verify``) checksums every entry and finds it."""
    store = StageStore(tmp_path / "c", verify_max_bytes=100)
    store.commit("big", pa.table({"x": np.arange(1000, dtype=np.int64)}))
    p = store.path("big") / "table.arrow"
    b = bytearray(p.read_bytes())
    i = b.index((500).to_bytes(8, "little"))  # the value 500 inside the data buffer
    b[i] ^= 0x01
    p.write_bytes(bytes(b))
    assert store.check("big") is None  # sizes only: not detected on load
    assert store.fetch("big").column("x")[500].as_py() == 501
    report = store.verify()
    assert report == [{"key": "big", "status": "damaged",
                       "problem": "table.arrow checksum mismatch (content changed after commit)"}]
    assert not store.has("big")
    # the same entry under the default bound is checksummed on every load
    small = StageStore(tmp_path / "d")
    small.commit("big", pa.table({"x": np.arange(1000, dtype=np.int64)}))
    (small.path("big") / "table.arrow").write_bytes(bytes(b))
    assert small.fetch("big") is None


def test_a_folder_without_a_manifest_is_not_an_entry_and_is_kept_aside_on_commit(tmp_path):
    store = StageStore(tmp_path / "c")
    foreign = store.path("k")
    foreign.mkdir(parents=True)
    (foreign / "table.arrow").write_bytes(b"someone else's file")
    assert not store.has("k") and store.keys() == []
    assert _compute_calls(store, "k", np.zeros((3, 2), np.float32)) == [1]
    aside = list((tmp_path / "c" / ".damaged").iterdir())
    assert len(aside) == 1 and (aside[0] / "table.arrow").read_bytes() == b"someone else's file"


def test_sigkill_inside_commit_leaves_a_temp_folder_the_rerun_ignores_and_gc_removes(tmp_path):
    """A process killed after writing ``tmp-<key>-<uuid>/`` and before the rename: the key does
    not exist, a rerun computes and commits it, and ``gc`` removes the leftover."""
    root = tmp_path / "c"
    code = textwrap.dedent(f"""
        import os, signal
        import pyarrow as pa
        from curate.cache.store import StageStore
        real_rename = os.rename
        def killed(src, dst):
            if os.path.basename(str(src)).startswith("tmp-"):
                os.kill(os.getpid(), signal.SIGKILL)
            return real_rename(src, dst)
        os.rename = killed
        StageStore({str(root)!r}).commit("k", pa.table({{"a": [1, 2, 3]}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftovers = [p.name for p in root.glob("tmp-k-*")]
    assert len(leftovers) == 1 and (root / leftovers[0] / "manifest.json").is_file()  # complete, not renamed
    store = StageStore(root)
    assert not store.has("k") and store.keys() == []
    table, cached = store.get_or_compute("k", lambda: pa.table({"a": [1, 2, 3]}))
    assert not cached and table.column("a").to_pylist() == [1, 2, 3]
    store.release()
    assert [e.kind for e in list_entries(store) if e.name.startswith("tmp-")] == ["tmp"]
    out = gc(store, older_than=10 ** 9)  # removes nothing by age; temporary leftovers always go
    assert [e["name"] for e in out["removed"]] == leftovers
    assert list(root.glob("tmp-*")) == [] and store.has("k")


def test_a_damaged_ingest_quarantine_artifact_is_recomputed_in_a_real_run(tmp_path):
    """End to end: the ingest entry's quarantine record is damaged between two runs of one recipe;
    the second run re-reads the input and reports the same quarantine and output."""
    pool = tmp_path / "pool.jsonl"
    rows = [json.dumps({"instruction": f"question {i}", "output": f"answer {i}"}) for i in range(20)]
    pool.write_text("\n".join(rows[:10] + ["{not json"] + rows[10:]) + "\n")
    cfg = {"input": {"path": str(pool)}, "stages": [{"type": "exact_dedup"}],
           "output": {"dir": str(tmp_path / "run"), "plots": False}, "cache_dir": str(tmp_path / "cache")}
    first = curate.run(cfg, show_progress=False)
    key = json.loads((first.output_dir / "manifest.json").read_text())["input"]["key"]
    arts = [p for p in (tmp_path / "cache" / key / "artifacts").rglob("*") if p.is_file()]
    assert arts, "the ingest entry stores its quarantine as an artifact"
    for p in arts:
        p.write_bytes(p.read_bytes()[:-1] + b"X")  # same size, other content
    second = curate.run({**cfg, "output": {"dir": str(tmp_path / "run2"), "plots": False}}, show_progress=False)
    assert not second.report["input"]["cached"]
    assert second.output_hash == first.output_hash and second.counts == first.counts
    assert second.counts["n_quarantined"] == 1
    assert (second.output_dir / "quarantine.jsonl").read_text() == (first.output_dir / "quarantine.jsonl").read_text()
