"""``curate cache ls|gc|verify`` and ``output.drop_columns``: disk kept in bounds without ever
removing an entry a running process holds or the latest run of a recipe needs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import curate
from curate.cache.gc import gc, list_entries, parse_age, parse_size, plan_gc
from curate.cache.store import StageStore
from curate.cli.main import app

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import recipe, write_pool  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _run_two_budgets(tmp_path):
    data = write_pool(tmp_path / "pool.jsonl")
    stages = lambda b: [{"type": "exact_dedup"}, {"type": "tagger"}, {"type": "random", "budget": b}]
    first = _keys(curate.run(recipe(tmp_path, data, stages=stages(30)), show_progress=False))
    second = _keys(curate.run(recipe(tmp_path, data, stages=stages(20)), show_progress=False))  # same output dir
    return StageStore(tmp_path / "cache"), first, second


def _keys(res) -> list[str]:
    m = json.loads((res.output_dir / "manifest.json").read_text())
    return [m["input"]["key"]] + [s["key"] for s in m["stages"]]


def test_ls_shows_sizes_stage_and_recipe(tmp_path):
    store, first, second = _run_two_budgets(tmp_path)
    entries = {e.key: e for e in list_entries(store)}
    assert set(first) | set(second) == {k for k, e in entries.items() if e.kind == "entry"}
    for k in second:
        assert entries[k].recipes and "rel" in entries[k].recipes[0] and entries[k].size > 0
    assert entries[first[-1]].recipes == []  # random(30): no longer the latest run's
    assert not any(e.in_use for e in entries.values())  # the runs are over


def test_gc_keep_last_never_removes_what_the_latest_run_needs(tmp_path):
    store, first, second = _run_two_budgets(tmp_path)
    res = gc(store, keep_last=0)
    assert [e["key"] for e in res["removed"]] == [first[-1]]
    assert all(store.has(k) for k in second)
    again = curate.run(recipe(tmp_path, tmp_path / "pool.jsonl", stages=[{"type": "exact_dedup"}, {"type": "tagger"},
                                                                          {"type": "random", "budget": 20}]),
                       show_progress=False)
    assert not again.did_work  # still up to date: nothing it needs was removed


def test_gc_older_than_and_max_size(tmp_path):
    store = StageStore(tmp_path / "c")
    for i, age_days in enumerate([30, 10, 1]):
        store.commit(f"k{i}", pa.table({"a": list(range(1000 * (i + 1)))}))
        t = time.time() - age_days * 86400
        os.utime(store.path(f"k{i}"), (t, t))
    remove, kept = plan_gc(store, older_than=parse_age("7d"))
    assert sorted(e.key for e in remove) == ["k0", "k1"]
    sizes = {e.key: e.size for e in list_entries(store)}
    res = gc(store, max_size=sizes["k2"] + sizes["k1"])
    assert [e["key"] for e in res["removed"]] == ["k0"]  # least recently used first, until it fits
    assert store.keys() == ["k1", "k2"]


def test_gc_skips_an_entry_a_running_process_holds(tmp_path):
    store = StageStore(tmp_path / "c")
    store.commit("held", pa.table({"a": [1, 2, 3]}))
    store.commit("free", pa.table({"a": [4]}))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom curate.cache.store import StageStore\n"
         f"s = StageStore({str(tmp_path / 'c')!r}); s.hold('held'); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert {e.key: e.in_use for e in list_entries(store)} == {"held": True, "free": False}
        res = gc(store, max_size=0)
        assert [e["key"] for e in res["removed"]] == ["free"]
        assert store.has("held")
    finally:
        holder.kill()
        holder.wait()
    assert [e["key"] for e in gc(store, max_size=0)["removed"]] == ["held"]  # its process has ended


def test_cache_cli_commands(tmp_path):
    store, first, second = _run_two_budgets(tmp_path)
    runner = CliRunner()
    cache = str(tmp_path / "cache")
    out = runner.invoke(app, ["cache", "ls", "--cache-dir", cache])
    assert out.exit_code == 0 and "folders" in out.output and "rel (" in out.output
    out = runner.invoke(app, ["cache", "gc", "--keep-last", "0", "--dry-run", "--cache-dir", cache])
    assert out.exit_code == 0 and "would remove 1 folders" in out.output
    assert len(store.keys()) == len(set(first) | set(second))
    out = runner.invoke(app, ["cache", "gc", "--cache-dir", cache])
    assert out.exit_code == 2 and "give at least one of" in out.output
    out = runner.invoke(app, ["cache", "gc", "--max-size", "lots", "--cache-dir", cache])
    assert out.exit_code == 2 and "--max-size: cannot read 'lots'" in out.output
    p = store.path(second[1]) / "table.arrow"
    b = bytearray(p.read_bytes())
    b[len(b) // 3] ^= 0xFF
    p.write_bytes(bytes(b))
    out = runner.invoke(app, ["cache", "verify", "--cache-dir", cache])
    assert out.exit_code == 1 and "1 damaged" in out.output and "checksum mismatch" in out.output
    assert not store.has(second[1])


def test_parse_size_and_age():
    assert parse_size("20GB") == 20 * 10**9 and parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("512") == 512
    assert parse_age("7d") == 7 * 86400 and parse_age("12h") == 43200 and parse_age("2w") == 14 * 86400
    with pytest.raises(ValueError, match="--older-than"):
        parse_age("7 days")


def test_vector_columns_left_out_by_default_and_located(tmp_path):
    data = write_pool(tmp_path / "pool.jsonl")
    stages = [{"type": "vectorizer"}, {"type": "tagger"}, {"type": "random", "budget": 10}]
    res = curate.run(recipe(tmp_path, data, stages=stages), show_progress=False)
    ds = datasets.load_from_disk(str(res.output_dir / "dataset"))
    assert "embedding" not in ds.column_names and "tag" in ds.column_names
    assert "embedding" not in pq.read_schema(next((res.output_dir / "data").glob("*.parquet"))).names
    where = json.loads((res.output_dir / "manifest.json").read_text())["columns_left_out"]["embedding"]
    assert where["step"] == "0:vectorizer"
    vectors = pa.ipc.open_file(pa.memory_map(where["path"])).read_all().column("embedding")
    assert len(vectors) == res.counts["n_input"] - res.counts["n_quarantined"]  # the vectors of every ingested row
    keep_all = curate.run(recipe(tmp_path, data, out="all", stages=stages, ) | {"output": {"dir": str(tmp_path / "all"),
                          "plots": False, "drop_columns": []}}, show_progress=False)
    assert "embedding" in datasets.load_from_disk(str(keep_all.output_dir / "dataset")).column_names
    drop_tag = curate.run(recipe(tmp_path, data, stages=stages) | {"output": {"dir": str(tmp_path / "t"), "plots": False,
                                                                                  "drop_columns": ["tag"]}},
                          show_progress=False)
    names = datasets.load_from_disk(str(drop_tag.output_dir / "dataset")).column_names
    assert "tag" not in names and "embedding" in names
    # provenance is the same whatever the dataset leaves out
    assert (keep_all.output_dir / "provenance.parquet").read_bytes() == (res.output_dir / "provenance.parquet").read_bytes()


# ---------------------------------------------------------------- table fingerprint (curate.select's key)

def _pool_with_lists() -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(40)],
                     "text": [None if i == 3 else f"Row {i % 25} says hello to the cache." for i in range(40)],
                     "tags": [[f"t{i % 3}", "x"] if i % 4 else None for i in range(40)],
                     "messages": [[{"role": "user", "content": f"q{i}"}] for i in range(40)]})


def test_fingerprint_ignores_chunking_and_list_item_names(tmp_path):
    from curate.core.hashing import table_fingerprint

    t = _pool_with_lists()
    pq.write_table(t, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert back.schema.field("tags").type.value_field.name == "element"  # what Parquet does to lists
    chunked = pa.concat_tables([t.slice(0, 7), t.slice(7, 20), t.slice(27)])
    assert table_fingerprint(t) == table_fingerprint(back) == table_fingerprint(chunked)
    changed = t.set_column(1, "text", pa.array([f"Row {i}" for i in range(40)]))
    assert table_fingerprint(changed) != table_fingerprint(t)
    renamed = t.rename_columns(["id", "body", "tags", "messages"])
    assert table_fingerprint(renamed) != table_fingerprint(t)


def test_in_memory_and_parquet_read_tables_hit_one_cache_entry(tmp_path):
    t = _pool_with_lists()
    pq.write_table(t, tmp_path / "t.parquet")
    cache = tmp_path / "c"
    first = curate.select(t, schema="canonical", method="exact_dedup", cache_dir=cache)
    keys = StageStore(cache).keys()
    second = curate.select(pq.read_table(tmp_path / "t.parquet"), schema="canonical", method="exact_dedup", cache_dir=cache)
    assert StageStore(cache).keys() == keys and len(keys) == 1  # the same key: no second entry
    assert first.data.column("id").to_pylist() == second.data.column("id").to_pylist() and len(first) == 26
