"""Reliability: the issue-11 failures reproduced as tests (each failed before its fix), cache
integrity, per-key locking with real processes, multiprocessing from stdin / ``python -c``.

Run the slow variants with ``python -m pytest -m slow tests/test_reliability*.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.cache.store import StageStore

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import recipe, write_pool  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _manifest(res) -> dict:
    return json.loads((res.output_dir / "manifest.json").read_text())


def _hashes(res) -> dict:
    out = res.output_dir
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.suffix in (".parquet", ".arrow") or p.name in ("dataset_info.json", "state.json"))}


def test_truncated_cache_entry_is_recomputed(tmp_path, caplog):
    """Reproduces issue 11: truncating the cached ingest ``table.arrow`` and running the same recipe
    again ended in ``ArrowInvalid: Not an Arrow file``. Now the entry is moved aside (not deleted),
    logged with its key, recomputed, and the output is identical."""
    cfg = recipe(tmp_path, write_pool(tmp_path / "pool.jsonl"))
    first = curate.run(cfg, show_progress=False)
    key = _manifest(first)["input"]["key"]
    table = tmp_path / "cache" / key / "table.arrow"
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    planned = curate.plan(cfg)  # plan says so before any run (it used to show the entry as cached)
    assert not planned[0]["cached"] and "bytes, manifest says" in planned[0]["damaged"]
    assert all(r["cached"] and r["damaged"] is None for r in planned[1:])  # the later entries are intact
    second = curate.run({**cfg, "output": {"dir": str(tmp_path / "run2"), "plots": False}}, show_progress=False)
    assert not second.report["input"]["cached"]  # recomputed
    assert second.output_hash == first.output_hash
    assert any(key in r.getMessage() and "damaged" in r.getMessage() for r in caplog.records)
    aside = list((tmp_path / "cache" / ".damaged").glob(f"{key}*"))
    assert len(aside) == 1 and (aside[0] / "table.arrow").stat().st_size == table.stat().st_size // 2


def test_flipped_byte_same_size_is_detected(tmp_path):
    """Reproduces issue 11: a flipped byte of the same size was read silently (no checksum)."""
    cfg = recipe(tmp_path, write_pool(tmp_path / "pool.jsonl"))
    first = curate.run(cfg, show_progress=False)
    sel_key = _manifest(first)["stages"][2]["key"]  # sleepy_select's cached Selection
    path = tmp_path / "cache" / sel_key / "table.arrow"
    blob = bytearray(path.read_bytes())
    # flip a byte inside the keep column's data buffer: still a valid Arrow file, different content
    tab = pa.ipc.open_file(pa.py_buffer(bytes(blob))).read_all()
    assert tab.num_rows > 0
    blob[len(blob) // 2] ^= 0x01
    path.write_bytes(bytes(blob))
    assert path.stat().st_size == len(blob)
    second = curate.run({**cfg, "output": {"dir": str(tmp_path / "run2"), "plots": False}}, show_progress=False)
    steps = {s["type"]: s["cached"] for s in second.report["stages"]}
    assert steps == {"exact_dedup": True, "tagger": True, "sleepy_select": False, "random": True}
    assert second.output_hash == first.output_hash


def test_verify_reports_damage_and_moves_aside(tmp_path):
    store = StageStore(tmp_path / "c")
    store.commit("k1", pa.table({"a": list(range(1000))}))
    store.commit("k2", pa.table({"a": list(range(10))}))
    assert [r["status"] for r in store.verify()] == ["ok", "ok"]
    p = store.path("k1") / "table.arrow"
    b = bytearray(p.read_bytes())
    b[-100] ^= 0xFF
    p.write_bytes(bytes(b))
    report = {r["key"]: r for r in store.verify()}
    assert report["k1"]["status"] == "damaged" and "checksum" in report["k1"]["problem"]
    assert report["k2"]["status"] == "ok"
    assert not store.has("k1") and store.has("k2")
    assert len(list((tmp_path / "c" / ".damaged").iterdir())) == 1


def test_commit_never_removes_a_complete_entry(tmp_path, monkeypatch):
    """Reproduces issue 11: when two runs finished the same key at once, the second commit's
    ``if dest.exists(): shutil.rmtree(dest)`` removed the entry the first had just committed.

    Simulated deterministically: the second committer computed the entry while the first was
    committing it (it never looked before computing) and calls ``commit`` after the first one's
    rename, while the first run reads the entry. ``commit`` decides under the key's lock, from
    the manifest, so nothing outside it (such as ``has``) can make it replace the entry."""
    store = StageStore(tmp_path / "c")
    store.commit("k", pa.table({"a": [1, 2, 3]}))
    first_inode = (store.path("k") / "table.arrow").stat().st_ino
    with pa.memory_map(str(store.path("k") / "table.arrow")) as src:  # the first run reads it
        store.commit("k", pa.table({"a": [9, 9, 9]}))
        assert (store.path("k") / "table.arrow").stat().st_ino == first_inode
        assert store.load_table("k").column("a").to_pylist() == [1, 2, 3]  # the first entry, whole
        assert pa.ipc.open_file(src).read_all().column("a").to_pylist() == [1, 2, 3]


def test_map_shards_recomputes_a_damaged_shard(tmp_path, caplog):
    from curate.core.stage import StageContext

    ctx = StageContext(work_dir=tmp_path / "w", show_progress=False)
    calls = []

    def fn(a, b):
        calls.append(a)
        return {"x": np.arange(a, b, dtype=np.float64)}

    first = ctx.map_shards(25, fn, shard_size=10)["x"]
    assert calls == [0, 10, 20]
    shards = sorted((tmp_path / "w" / "shards").glob("*.npz"))
    shards[1].write_bytes(shards[1].read_bytes()[:40])  # truncated
    b = bytearray(shards[2].read_bytes())
    b[-30] ^= 0x10  # flipped, same size
    shards[2].write_bytes(bytes(b))
    calls.clear()
    again = ctx.map_shards(25, fn, shard_size=10)["x"]
    assert calls == [10, 20] and np.array_equal(first, again)
    assert len(list((tmp_path / "w" / "shards" / "damaged").glob("*.npz"))) == 2


def _damage(shards: list[Path]) -> None:
    """Truncate the first shard; flip one byte of the second (same size)."""
    shards[0].write_bytes(shards[0].read_bytes()[:40])
    b = bytearray(shards[1].read_bytes())
    b[-30] ^= 0x10
    shards[1].write_bytes(bytes(b))


def test_minhash_band_key_shards_recompute_when_damaged(tmp_path, monkeypatch):
    from curate.dedup import minhash_index as mi
    from curate.dedup.minhash import MinHashDedup

    texts = pa.array([f"row {i} " + " ".join(f"w{j}" for j in range(i, i + 12)) for i in range(40)])
    params = MinHashDedup().signature_params()
    k1, v1 = mi.compute_band_keys(texts, params, batch_size=10, work_dir=tmp_path)
    shards = sorted((tmp_path / "shards").glob("*.npz"))
    assert len(shards) == 4 and all(p.with_suffix(".sum.json").exists() for p in shards)
    _damage(shards[1:3])
    real, calls = mi._shard_worker, []
    monkeypatch.setattr(mi, "_shard_worker", lambda a: calls.append(len(a[0])) or real(a))
    k2, v2 = mi.compute_band_keys(texts, params, batch_size=10, work_dir=tmp_path)
    assert calls == [10, 10] and (k1 == k2).all() and (v1 == v2).all()  # only the two damaged shards
    assert len(list((tmp_path / "shards" / "damaged").glob("*.npz"))) == 2


def test_dask_shard_files_are_checked(tmp_path):
    from curate.core.shards import compute_shard, load_shards

    calls = []

    def fn(a, b):
        calls.append(a)
        return {"x": np.arange(a, b, dtype=np.float64)}

    paths = [tmp_path / f"{a}.npz" for a in (0, 10)]
    for a, p in zip((0, 10), paths):
        compute_shard(fn, str(p), a, a + 10)
    compute_shard(fn, str(paths[0]), 0, 10)  # sound: skipped
    assert calls == [0, 10]
    _damage(paths)
    with pytest.raises(RuntimeError, match="damaged after its task finished"):
        load_shards(paths)  # never silently concatenates a damaged shard
    for a, p in zip((0, 10), paths):  # what the rerun's tasks do: recompute what was moved aside
        compute_shard(fn, str(p), a, a + 10)
    assert calls == [0, 10, 0, 10] and np.array_equal(load_shards(paths)["x"], np.arange(20.0))


# ---------------------------------------------------------------- multiprocessing start method

_MINHASH_SNIPPET = """
import numpy as np, pyarrow as pa
from curate.dedup.minhash_index import compute_band_keys, signature_params
texts = pa.array([" ".join(f"w{{(i * 7 + j) % 97}}" for j in range(30)) for i in range(60)])
params = signature_params(num_perm=16, bands=4, rows=4, ngram=2, shingle="word", normalize=True, seed=1, backend="{backend}",
                          ngram_unspaced=None)
k1, v1 = compute_band_keys(texts, params, batch_size=10, num_proc=1)
k2, v2 = compute_band_keys(texts, params, batch_size=10, num_proc=2)
assert np.array_equal(k1, k2) and np.array_equal(v1, v2)
print("OK", k2.shape)
"""


def _run_py(args, stdin=None, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=240,
                          cwd=cwd, env=env)


@pytest.fixture(scope="module")
def backend():
    return "rensa"


def test_num_proc_from_stdin(tmp_path, backend):
    """Reproduces issue 11: ``num_proc: 2`` from a script on standard input (``python - <<EOF``)
    died with BrokenProcessPool (spawn re-ran ``<stdin>`` as the main module)."""
    r = _run_py(["-"], stdin=_MINHASH_SNIPPET.format(backend=backend), cwd=tmp_path)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_num_proc_from_python_c_and_unguarded_script(tmp_path, backend):
    """``python -c`` (no main file, like a notebook kernel) and a script without an
    ``if __name__ == "__main__"`` guard (spawn used to re-run it in each worker)."""
    r = _run_py(["-c", _MINHASH_SNIPPET.format(backend=backend)], cwd=tmp_path)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    script = tmp_path / "unguarded.py"
    script.write_text(_MINHASH_SNIPPET.format(backend=backend))
    r = _run_py([str(script)], cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count("OK") == 1, r.stderr[-3000:]


# ---------------------------------------------------------------- ledger and provenance

def test_ledger_catches_a_row_lost_between_reading_and_adapting(tmp_path, monkeypatch):
    """Reproduces issue 11: ``Ledger.check`` compared n_input = len(ids) + len(quarantine) with a
    sum of the same things, so a row lost between reading and adapting passed. Now the readers
    count records independently (lines here) and the run fails loudly."""
    from curate.ingest.build import TableBuilder

    real_add = TableBuilder.add

    def lossy_add(self, row_id, *a, **k):
        if row_id == "row-0007":
            return  # a bug that loses a row silently
        return real_add(self, row_id, *a, **k)

    monkeypatch.setattr(TableBuilder, "add", lossy_add)
    with pytest.raises(Exception, match="invariant"):
        curate.run(recipe(tmp_path, write_pool(tmp_path / "pool.jsonl")), show_progress=False)


def test_counts_match_counts_made_outside_curate(tmp_path):
    data = write_pool(tmp_path / "pool.jsonl")
    n_lines = sum(1 for l in data.read_bytes().splitlines() if l.strip())  # counted here, not by curate
    res = curate.run(recipe(tmp_path, data), show_progress=False)
    c = res.counts
    assert c["n_input"] == n_lines == c["n_selected"] + c["n_dropped"] + c["n_quarantined"]
    assert pq.read_table(res.output_dir / "provenance.parquet").num_rows == n_lines


def test_provenance_ids_unique_when_quarantined_row_reuses_a_kept_id(tmp_path):
    """Reproduces issue 11: a quarantined row carrying an id that a kept row also uses gave two
    provenance rows with that id."""
    data = tmp_path / "pool.jsonl"
    rows = [{"id": "a", "instruction": 5, "output": "bad: instruction is a number"},
            {"id": "a", "instruction": "Say hello politely please.", "input": "", "output": "Hello, nice to meet you."},
            {"id": "b", "instruction": "Name three colours of the sea.", "input": "", "output": "Blue, green and grey."},
            {"id": "b", "instruction": None, "output": "missing instruction"}]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    res = curate.run({"input": {"path": str(data)}, "stages": [{"type": "exact_dedup"}],
                      "output": {"dir": str(tmp_path / "run"), "plots": False}, "cache_dir": str(tmp_path / "c")},
                     show_progress=False)
    prov = pq.read_table(res.output_dir / "provenance.parquet").to_pylist()
    ids = [r["id"] for r in prov]
    assert len(ids) == len(set(ids)) == 4
    kept = {r["id"]: r["status"] for r in prov}
    assert kept["a"] == "selected" and kept["b"] == "selected"


# ---------------------------------------------------------------- reward_model "pair" template

class _FakeTok:
    pad_token, eos_token, pad_token_id = "<pad>", "<pad>", 0

    def __init__(self):
        self.calls = []

    def __call__(self, texts, pairs=None, **kw):
        import torch

        self.calls.append((list(texts), None if pairs is None else list(pairs)))
        return {"input_ids": torch.tensor([[len(t) + (len(p) if pairs else 0)] for t, p in
                                           zip(texts, pairs or [""] * len(texts))], dtype=torch.float32)}


class _FakeModel:
    class config:
        pad_token_id = 0

    def parameters(self):
        import torch

        yield torch.zeros(1)

    def __call__(self, input_ids):
        from types import SimpleNamespace

        return SimpleNamespace(logits=input_ids.float())


def test_reward_pair_template_with_mixed_rows(tmp_path, monkeypatch):
    """Reproduces issue 11: the "pair" template scored prompts without responses (first row plain)
    or raised IndexError (first row structured) when a batch mixed structured and plain rows."""
    from curate.core.stage import StageContext
    from curate.score.reward import RewardModel

    table = pa.table({"id": ["s1", "p1", "s2", "p2"],
                      "text": ["x", "plain text one", "y", "plain two"],
                      "instruction": ["Q1?", None, "Question two?", None],
                      "input": ["", None, "", None],
                      "output": ["Answer one.", None, "A2.", None]})
    tok = _FakeTok()
    stage = RewardModel(model="fake", template="pair", batch_size=8, show_progress=False)
    monkeypatch.setattr(RewardModel, "_load", lambda self: (_FakeModel(), tok))
    out = stage.annotate(table, StageContext(work_dir=tmp_path / "w", show_progress=False))
    scores = out.column("reward").to_pylist()
    # the fake score is len(prompt) + len(response): responses must be in
    assert scores == [len("Q1?") + len("Answer one."), len("plain text one"), len("Question two?") + len("A2."),
                      len("plain two")]
    for texts, pairs in tok.calls:
        assert pairs is None or len(pairs) == len(texts)


def test_row_error_validation_survives_python_O():
    """Validation by ``assert`` vanished under ``python -O``; now it raises ValueError."""
    r = _run_py(["-O", "-c", "from curate.ingest.formats import RowError\n"
                 "try:\n    RowError('no_such_reason', 'x')\nexcept ValueError as e:\n    print('raised', e)"])
    assert "raised" in r.stdout, r.stdout + r.stderr


def test_entry_from_store_format_1_is_still_used_and_a_broken_one_recomputed(tmp_path):
    """Entries committed by curate before checksums (no ``checksums`` in the manifest) load if
    their table opens; one that does not is moved aside like any damaged entry."""
    store = StageStore(tmp_path / "c")
    for key in ("old_ok", "old_bad"):
        store.commit(key, pa.table({"a": [1, 2]}))
        m = store.manifest(key)
        for k in ("checksums", "store_format", "curate_version"):
            m.pop(k)
        (store.path(key) / "manifest.json").write_text(json.dumps(m))
    (store.path("old_bad") / "table.arrow").write_bytes(b"garbage")
    assert store.fetch("old_ok").column("a").to_pylist() == [1, 2]
    assert store.fetch("old_bad") is None and not store.has("old_bad")
    assert len(list((tmp_path / "c" / ".damaged").iterdir())) == 1


def test_shard_without_checksum_is_used_if_it_loads(tmp_path):
    """Shards written before checksums (or by hand) are used when they load; a truncated one is recomputed."""
    from curate.core.stage import StageContext

    shards = tmp_path / "w" / "shards"
    shards.mkdir(parents=True)
    np.savez(shards / "000000000000-000000000010.npz", x=np.full(10, 7.0))
    np.savez(shards / "000000000010-000000000020.npz", x=np.full(10, 7.0))
    p = shards / "000000000010-000000000020.npz"
    p.write_bytes(p.read_bytes()[:50])
    calls = []

    def fn(a, b):
        calls.append(a)
        return {"x": np.arange(a, b, dtype=np.float64)}

    x = StageContext(work_dir=tmp_path / "w", show_progress=False).map_shards(20, fn, shard_size=10)["x"]
    assert calls == [10] and (x[:10] == 7).all() and np.array_equal(x[10:], np.arange(10, 20))
