"""Versioned refresh through the library (no Prefect server): versions, changelog, no-op, rollback,
row cache, and `against:` keyed by the reference's content."""
from __future__ import annotations

import json
import os

import pytest

import curate
from curate.ops.refresh import run_refresh
from curate.ops.versions import RefreshError, latest, list_versions, rollback


def _word(k: int) -> str:
    out = ""
    for _ in range(4):
        k, r = divmod(k, 26)
        out += chr(97 + r)
    return out


def _rows(prefix: str, start: int, n: int, words: int = 12) -> list[dict]:
    # distinct letter-only vocabulary per row (minhash folds digits) so only planted copies match
    off = sum(map(ord, prefix)) * 100_000
    return [{"id": f"{prefix}{i}", "instruction": f"Describe {_word(off + i)} please",
             "output": " ".join(_word(off + i * 997 + j * 31) for j in range(words + i % 5))}
            for i in range(start, start + n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def recipe(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "a.jsonl", _rows("a", 0, 40))
    return {"refresh": {"source": str(src), "versions_dir": str(tmp_path / "versions")},
            "input": {"path": "unused"},
            "stages": [{"type": "minhash_dedup", "against": "{previous}", "threshold": 0.7},
                       {"type": "exact_dedup"},
                       {"type": "heuristics", "columns": ["h_words"]},
                       {"type": "top_k", "score": "h_words", "budget": 20}],
            "output": {"plots": False, "save_dataset": False}, "cache_dir": str(tmp_path / "cache")}


def test_versions_changelog_noop_and_rollback(recipe, tmp_path):
    src, vdir = tmp_path / "src", tmp_path / "versions"
    r1 = run_refresh(recipe, show_progress=False)
    assert (r1.version, r1.noop, latest(vdir)) == ("v0001", False, "v0001")
    assert r1.counts["n_selected"] == 20 and r1.changelog["n_added"] == 20
    assert r1.changelog["row_cache"]["2:heuristics"] == {"cached": 0, "computed": 40}

    sel1 = set(r1.changelog and [a["id"] for a in r1.changelog["added"]])
    # new rows: 3 long fresh rows (they displace 3 of the shortest selected), one copy of a
    # selected row under a new id, and an edited copy of another selected row
    fresh = _rows("b", 100, 3, words=60)
    top = sorted(sel1)[:2]
    base = {r["id"]: r for r in _rows("a", 0, 40)}
    copy = dict(base[top[0]], id="b-copy")
    near = dict(base[top[1]], id="b-near", output=base[top[1]]["output"] + " extra")
    _write(src / "b.jsonl", fresh + [copy, near])
    r2 = run_refresh(recipe, show_progress=False)
    ch = r2.changelog
    assert (r2.version, r2.noop, latest(vdir)) == ("v0002", False, "v0002")
    assert ch["pool"]["new_rows"] == 5 and ch["new_rows"] == {"dropped:duplicate_of_curated": 2, "selected": 3}
    assert ch["why_counts"] == {"added": {"new_row": 3}, "removed": {"displaced_by_budget": 3}}
    assert {a["id"] for a in ch["added"]} == {"b100", "b101", "b102"}
    dups = json.loads((vdir / "v0002" / "changelog.json").read_text())
    assert dups["n_removed"] == 3 and all(r["detail"] == "below_top_k" for r in dups["removed"])
    # only the 5 new rows were scored; the 40 old ones came from the row cache
    assert ch["row_cache"]["2:heuristics"] == {"cached": 40, "computed": 3}
    assert "displaced_by_budget" in (vdir / "v0002" / "changelog.md").read_text()

    r3 = run_refresh(recipe, show_progress=False)
    assert r3.noop and r3.version == "v0002" and "no-op" in r3.message
    assert [v["version"] for v in list_versions(vdir)] == ["v0001", "v0002"]

    assert rollback(vdir, "v0001") == "v0002" and latest(vdir) == "v0001"
    assert os.readlink(vdir / "latest") == "v0001"
    with pytest.raises(RefreshError, match="v0009"):
        rollback(vdir, "v0009")


def test_removed_source_rows_and_crashed_version(recipe, tmp_path):
    src, vdir = tmp_path / "src", tmp_path / "versions"
    run_refresh(recipe, show_progress=False)
    (vdir / "v0002").mkdir()  # a crashed run left an incomplete folder: it is redone in place
    _write(src / "a.jsonl", _rows("a", 0, 30))
    r2 = run_refresh(recipe, show_progress=False)
    assert r2.version == "v0002" and (vdir / "v0002" / "refresh.json").is_file()
    assert r2.changelog["pool"]["gone_rows"] == 10
    assert r2.changelog["why_counts"]["removed"].get("source_removed", 0) >= 1


def test_bad_refresh_block(recipe):
    recipe["refresh"]["sources"] = "x"
    with pytest.raises(RefreshError, match="refresh.sources"):
        run_refresh(recipe, show_progress=False)


def test_against_follows_a_recurated_reference(tmp_path):
    """A stage deduplicating against a run dir reruns when that run is re-curated in place."""
    pool = tmp_path / "pool.jsonl"
    _write(pool, _rows("p", 0, 10))
    ref_src = tmp_path / "ref.jsonl"
    ref_dir = tmp_path / "ref_run"
    base = {"output": {"plots": False, "save_dataset": False}, "cache_dir": str(tmp_path / "cache")}
    ref = lambda rows: [dict(r, id="ref-" + r["id"]) for r in rows]  # noqa: E731 (same texts, other ids)
    _write(ref_src, ref(_rows("p", 0, 3)))  # the reference curated copies of p0..p2
    curate.run({**base, "input": {"path": str(ref_src)}, "output": {**base["output"], "dir": str(ref_dir)}},
               show_progress=False)
    recipe = {**base, "input": {"path": str(pool)}, "output": {**base["output"], "dir": str(tmp_path / "out")},
              "stages": [{"type": "minhash_dedup", "against": str(ref_dir)}]}
    r1 = curate.run(recipe, show_progress=False)
    assert r1.counts["n_dropped"] == 3
    _write(ref_src, ref(_rows("q", 0, 2) + _rows("p", 5, 5)))  # re-curated: now p5..p9 (+2 unrelated)
    curate.run({**base, "input": {"path": str(ref_src)}, "output": {**base["output"], "dir": str(ref_dir)}},
               show_progress=False)
    r2 = curate.run(recipe, show_progress=False)
    assert not r2.report["stages"][0]["cached"]  # same path, new content: not served from the cache
    prov = r2.provenance().to_pylist()
    assert sorted(r["id"] for r in prov if r["reason"] == "duplicate_of_curated") == [f"p{i}" for i in range(5, 10)]
    assert len(list((ref_dir / "minhash_index").iterdir())) == 1  # the stale index was removed


def test_row_cache_computes_only_unseen_rows_and_matches_direct(tmp_path):
    import pyarrow as pa

    from curate.cache.rowcache import RowCached
    from curate.core.stage import StageContext
    from curate.score.stages import Heuristics

    rows = _rows("c", 0, 12)
    table = pa.table({"id": [r["id"] for r in rows], "instruction": [r["instruction"] for r in rows],
                      "output": [r["output"] for r in rows], "text": [r["output"] for r in rows]})
    ctx = StageContext(work_dir=tmp_path / "w", show_progress=False)
    stage = Heuristics(columns=["h_words", "h_chars"])
    direct = stage.annotate(table, ctx)
    first = RowCached(stage, tmp_path / "cache")
    assert first.annotate(table.slice(0, 8), ctx).equals(direct.slice(0, 8))
    assert (first.n_hits_, first.n_computed_) == (0, 8)
    shuffled = table.take(pa.array([11, 3, 9, 0, 10, 5, 1, 2, 4, 6, 7, 8]))
    second = RowCached(stage, tmp_path / "cache")
    out = second.annotate(shuffled, ctx)
    assert (second.n_hits_, second.n_computed_) == (8, 4)
    assert out.equals(direct.take(pa.array([11, 3, 9, 0, 10, 5, 1, 2, 4, 6, 7, 8])))
    # other parameters are another cache; a changed text is another row
    other = RowCached(Heuristics(columns=["h_words"]), tmp_path / "cache")
    other.annotate(table, ctx)
    assert other.n_hits_ == 0
    edited = table.set_column(2, "output", pa.array(["changed words here"] + table.column("output").to_pylist()[1:]))
    third = RowCached(stage, tmp_path / "cache")
    third.annotate(edited, ctx)
    assert (third.n_hits_, third.n_computed_) == (11, 1)
    with pytest.raises(ValueError, match="kmeans"):
        from curate.cluster.kmeans import KMeans

        RowCached(KMeans(), tmp_path / "cache")


def test_refresh_assigns_new_rows_to_previous_centroids(tmp_path):
    import numpy as np
    import pyarrow as pa

    from curate.cache.store import StageStore
    from curate.cluster.kmeans import KMeans
    from curate.core.schema import embedding_column
    from curate.engine.provenance import Ledger
    from curate.ops.refresh import RefreshRunner, _save_state

    rng = np.random.default_rng(0)
    centres = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5]], dtype=np.float32)
    x = np.concatenate([c + rng.normal(scale=0.3, size=(10, 3)) for c in centres]).astype(np.float32)

    def tab(m):
        return pa.table({"id": [f"r{i}" for i in range(len(m))], "embedding": embedding_column(m)})

    store = StageStore(tmp_path / "cache")
    v1 = tmp_path / "v0001"
    t1 = tab(x)
    out1, _, rec1 = RefreshRunner(store, show_progress=False).run_stages(
        [KMeans(k=3, seed=1)], t1, "in1", Ledger(t1.column("id").to_pylist()))
    _save_state(store, rec1, v1)
    assert (v1 / "state" / "0_kmeans" / "centroids.npy").is_file()
    new = np.concatenate([x, centres + 0.01]).astype(np.float32)  # 3 new rows, one at each centre
    t2 = tab(new)
    out2, _, rec2 = RefreshRunner(store, show_progress=False, previous=v1).run_stages(
        [KMeans(k=3, seed=1)], t2, "in2", Ledger(t2.column("id").to_pylist()))
    assert "assign_to_centroids" in rec2[0].params  # assigned, not refitted
    c1, c2 = out1.column("cluster_id").to_numpy(), out2.column("cluster_id").to_numpy()
    assert np.array_equal(c2[:30], c1)  # old rows keep their clusters
    assert c2[30:].tolist() == [c1[0], c1[10], c1[20]]
    _, _, rec3 = RefreshRunner(store, show_progress=False, previous=v1).run_stages(
        [KMeans(k=2, seed=1)], t2, "in2", Ledger(t2.column("id").to_pylist()))
    assert "assign_to_centroids" not in rec3[0].params  # other parameters: refitted
