"""Dedup at scale: the out-of-core MinHash phases give the in-memory result, resume after a kill,
honour memory_gb, run every phase on a 2-worker Dask LocalCluster with the local result, and
exact dedup's hash shuffle keeps the first copy as the one-process loop does."""
from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO

from curate.core.stage import StageContext
from curate.dedup import minhash_run
from curate.dedup.exact import ExactDedup, text_hashes
from curate.dedup.lsh import band_edges, connected_components, representatives
from curate.dedup.minhash import MinHashDedup
from curate.dedup.minhash_index import compute_band_keys

if str(REPO) not in sys.path:  # flows/ is imported from the checkout
    sys.path.insert(0, str(REPO))


def words(lo: int, hi: int, tag: str = "w") -> str:
    return " ".join(tag + "".join(chr(97 + (i // 26 ** k) % 26) for k in (2, 1, 0)) for i in range(lo, hi))


def planted(n_groups: int = 40, seed: int = 0) -> pa.Table:
    """Groups of a base text and edited copies (one word changed, a few appended, a truncation),
    shuffled, plus unrelated rows, an empty text and a null; a ``score`` column for keep rules."""
    rng = np.random.default_rng(seed)
    texts = []
    for g in range(n_groups):
        base = words(g * 100, g * 100 + 30 + g % 7)
        texts += [base, base.replace(base.split()[5], "zzz"), base + " " + words(9000 + g * 3, 9002 + g * 3),
                  " ".join(base.split()[:24]), words(50_000 + g * 40, 50_000 + g * 40 + 25)]
    texts += ["", None, "short one", "short one"]
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string()),
                     "score": rng.random(len(texts))})


def ctx(path) -> StageContext:
    return StageContext(work_dir=path / "w", artifact_dir=path / "art", show_progress=False)


def in_memory(table: pa.Table, stage: MinHashDedup) -> tuple[np.ndarray, np.ndarray]:
    """The in-memory algorithm this stage replaced (all band keys, band_edges, one union-find),
    without the exact check: (keep, representative row) per row."""
    keys, valid = compute_band_keys(table.column("text"), stage.signature_params())
    src, dst = band_edges(keys, valid)
    labels = connected_components(len(table), src, dst)
    pr = None if stage.keep == "first" else table.column("score").to_numpy()
    rep = representatives(labels, pr)
    return rep == np.arange(len(table)), rep


def as_lists(sel) -> tuple:
    cluster = sel.extras.get("dup_cluster")  # exact_dedup has none
    return (sel.keep.tolist(), sel.reason.tolist(), sel.extras["dup_of"].tolist(),
            None if cluster is None else cluster.tolist())


@pytest.mark.parametrize("keep", ["first", "highest:score"])
def test_out_of_core_equals_in_memory_algorithm(tmp_path, keep):
    t = planted()
    stage = MinHashDedup(threshold=0.7, check_false_positives=False, keep=keep, batch_size=37)
    sel = stage.select(t, ctx(tmp_path))
    want_keep, rep = in_memory(t, stage)
    assert sel.keep.tolist() == want_keep.tolist()
    assert (~sel.keep).sum() >= 60  # most planted copies found: the test has something to compare
    ids = t.column("id").to_pylist()
    assert sel.extras["dup_of"].tolist() == [None if k else ids[r] for k, r in zip(want_keep, rep)]


def test_band_partitions_and_shard_sizes_do_not_change_the_result(tmp_path, monkeypatch):
    t = planted()
    base = as_lists(MinHashDedup(threshold=0.7).select(t, ctx(tmp_path / "a")))
    plan = MinHashDedup.plan
    monkeypatch.setattr(MinHashDedup, "plan", lambda self, *a: dataclasses.replace(
        plan(self, *a), partitions=5, batch_rows=23, verify_rows=7, chunk_links=5))
    got = MinHashDedup(threshold=0.7).select(t, ctx(tmp_path / "b"))
    assert as_lists(got) == base
    b, _ = MinHashDedup(threshold=0.7).band_shape()
    assert len(list((tmp_path / "b" / "w" / "minhash").glob("bands-b23-k5/*.npz"))) == b * 5


def test_killed_in_the_band_phase_resumes_with_only_the_unfinished_tasks(tmp_path, monkeypatch):
    from curate.dedup import minhash_bands

    t = planted()
    want = as_lists(MinHashDedup(threshold=0.7).select(t, ctx(tmp_path / "ref")))
    real, calls = minhash_bands.band_partition_edges, []

    def killed_at_the_fifth(arg):
        calls.append(arg[0])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(arg)

    monkeypatch.setattr(minhash_run, "band_partition_edges", killed_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        MinHashDedup(threshold=0.7).select(t, ctx(tmp_path))
    calls.clear()
    monkeypatch.setattr(minhash_run, "band_partition_edges", lambda a: calls.append(a[0]) or real(a))
    got = MinHashDedup(threshold=0.7).select(t, ctx(tmp_path))
    b, _ = MinHashDedup(threshold=0.7).band_shape()
    assert calls == list(range(4, b))  # bands 0-3 were finished before the kill
    assert as_lists(got) == want


def test_a_damaged_band_file_recomputes_its_shard(tmp_path):
    t = planted()
    stage = MinHashDedup(threshold=0.7, batch_size=50)
    want = as_lists(stage.select(t, ctx(tmp_path)))
    files = sorted((tmp_path / "w" / "minhash" / "sign-50" / "shards").glob("*.keys.npy"))
    files[1].write_bytes(files[1].read_bytes()[:100])  # truncated after its shard finished
    for p in (tmp_path / "w" / "minhash").glob("bands-*"):  # the later phases must rerun on it
        for f in p.iterdir():
            f.unlink()
    assert as_lists(stage.select(t, ctx(tmp_path))) == want


def test_memory_gb_is_honoured_and_not_in_the_cache_key(tmp_path):
    big = MinHashDedup(memory_gb=64, num_proc=2)  # num_proc fixed: None would follow the machine's cores
    small = MinHashDedup(memory_gb=1.25, num_proc=2)
    assert big.cache_params() == MinHashDedup().cache_params() == small.cache_params()
    p_small, p_big = small.plan(10_000_000, 12 * 10**9), big.plan(10_000_000, 12 * 10**9)
    assert p_small.partitions > p_big.partitions == 1
    assert p_small.phases_gb["bands"] < p_big.phases_gb["bands"] and p_small.memory_gb <= 1.25 < p_big.memory_gb
    with pytest.raises(ValueError, match=r"memory_gb=1.25 is too small for 100,000,000 rows"):
        small.plan(100_000_000, 10**11)
    with pytest.raises(ValueError, match="memory_gb must be None or a number > 0"):
        MinHashDedup(memory_gb=0)
    # the short-document runs of docs/dedup.md (200 words each) and their measured peak RSS, GiB:
    # 1M fineweb 0.746, 1M default (exact check) 1.315, 3M fineweb 0.784, 10M fineweb 1.306; the
    # plan must stay within 30% of each
    for n, text_gib, kw, measured in [(1_000_000, 1.132, {"preset": "fineweb"}, 0.746), (1_000_000, 1.132, {}, 1.315),
                                      (3_000_000, 3.397, {"preset": "fineweb"}, 0.784),
                                      (10_000_000, 11.324, {"preset": "fineweb"}, 1.306)]:
        est = MinHashDedup(num_proc=2, **kw).estimate_resources(n, int(text_gib * 2**30))
        assert measured * 0.7 < est["memory_gb"] < measured * 1.3, (n, kw, est)
        assert est["disk_gb"] > 0.1


def test_exact_dedup_shuffle_keeps_the_first_copy(tmp_path):
    rng = np.random.default_rng(1)
    pool = [f"Text number {i}" for i in range(60)]
    texts = [pool[j] if rng.random() < 0.7 else pool[j].upper() + "  " for j in rng.integers(0, 60, 500)]
    texts[7] = None
    t = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})
    h = text_hashes(texts)
    first = {}
    want = [first.setdefault(x, i) == i for i, x in enumerate(h)]  # the one-process loop
    for batch in (500, 33):
        sel = ExactDedup(batch_size=batch).select(t, ctx(tmp_path / str(batch)))
        assert sel.keep.tolist() == want
        assert [d if d is None else int(d[1:]) for d in sel.extras["dup_of"]] == [
            None if k else first[x] for k, x in zip(want, h)]


def test_every_phase_runs_on_a_two_worker_dask_cluster_with_the_local_result(tmp_path):
    """What ``flows.dask_dedup`` and ``curate_flow(dask=True)`` rely on: with a Dask executor
    installed every MinHash and exact-dedup phase is submitted as Dask tasks, and the kept ids,
    reasons, dup_of and clusters equal the local run's."""
    pytest.importorskip("distributed")
    from flows.dask_dedup import dask_executor

    t = planted(25)
    mh = MinHashDedup(threshold=0.7, keep="highest:score", batch_size=40)
    local_mh = as_lists(mh.select(t, ctx(tmp_path / "local")))
    local_ex = as_lists(ExactDedup(batch_size=40).select(t, ctx(tmp_path / "local_ex")))
    with dask_executor(n_workers=2) as ex:
        dask_mh = as_lists(mh.select(t, ctx(tmp_path / "dask")))
        dask_ex = as_lists(ExactDedup(batch_size=40).select(t, ctx(tmp_path / "dask_ex")))
        workers = ex.client.run(lambda: 1)
    assert len(workers) == 2
    assert dask_mh == local_mh and dask_ex == local_ex
    assert sum(r == "near_duplicate" for r in dask_mh[1]) >= 30
    phases = {d for d, _, _ in ex.submitted}
    assert phases == {"minhash", "minhash bands", "minhash candidates", "minhash check", "minhash clusters",
                      "minhash decide", "exact hash", "exact groups"}
    assert sum(d == "minhash" for d, _, _ in ex.submitted) == 4  # one task per signature shard



def test_kept_rows_spilled_to_the_cache_give_the_same_run(tmp_path, monkeypatch):
    """Selectors' kept rows written batch by batch and memory-mapped (large tables) or filtered in
    memory (small ones): the same output, byte for byte; the spilled rows are a cache entry."""
    import json

    import curate
    from curate.cache.store import StageStore

    rows = [{"id": f"r{i}", "instruction": t or "", "output": "ok"} for i, t in enumerate(planted(12).column("text").to_pylist())]
    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages = [{"type": "exact_dedup"}, {"type": "minhash_dedup", "threshold": 0.7}, {"type": "random", "budget": 20}]

    def run(name: str):
        cfg = {"name": name, "input": {"path": str(data)}, "stages": stages,
               "output": {"dir": str(tmp_path / name), "plots": False}, "cache_dir": str(tmp_path / f"cache_{name}")}
        return curate.run(cfg, show_progress=False)

    memory = run("memory")
    monkeypatch.setenv("CURATE_SPILL_BYTES", "0")
    spilled = run("spilled")
    assert spilled.output_hash == memory.output_hash
    assert (spilled.output_dir / "provenance.parquet").read_bytes() == (memory.output_dir / "provenance.parquet").read_bytes()
    kept = [k for k in StageStore(tmp_path / "cache_spilled").keys() if k.endswith("-kept")]
    assert len(kept) == 3 and not any(k.endswith("-kept") for k in StageStore(tmp_path / "cache_memory").keys())
    assert run("spilled").did_work is False  # the second run loads every step, spilled rows included


def test_curate_plan_prints_the_dedup_estimates_before_any_compute(tmp_path):
    """``curate plan`` sizes each dedup step from the input files (rows counted, nothing ingested)
    and prints its estimated peak memory and disk; a step without an estimate prints none."""
    import json

    from typer.testing import CliRunner

    from curate.cli.main import app
    from curate.dedup.minhash import MinHashDedup

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "instruction": f"question {i} " * 20, "output": "ok"}) + "\n"
                            for i in range(300)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: p\ninput: {{path: {data}}}\ncache_dir: {tmp_path / 'cache'}\n"
                      "stages:\n  - {type: exact_dedup}\n  - {type: minhash_dedup, memory_gb: 4}\n"
                      "  - {type: random, budget: 10}\n")
    out = CliRunner().invoke(app, ["plan", str(recipe), "-o", str(tmp_path / "out")])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    est = [i for i, line in enumerate(lines) if "est. peak memory" in line]
    assert [lines[i - 1].split()[-2] for i in est] == ["0:exact_dedup", "1:minhash_dedup"]
    assert "for 300 rows (input files)" in lines[est[1]]
    want = MinHashDedup(memory_gb=4).estimate_resources(300, int(data.stat().st_size * 0.9))
    assert f"{want['memory_gb']:.2f} GiB" in lines[est[1]]
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing computed
