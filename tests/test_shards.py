"""The one resumable shard loop (curate.core.shards.map_shards) and its executors.

Resume after a kill, damaged shards, row order whatever order shards finish in, the process-pool
executor against the in-process loop, and MinHash band keys through the same loop (one shard per
executor task, as under a Dask flow, without Prefect)."""
from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pytest

from curate.core.parallel import ProcessShardExecutor
from curate.core.shards import (
    LocalShardExecutor,
    fn_for_rows,
    load_shard,
    map_shards,
    save_shard,
    shard_path,
    use_executor,
)


def squares(start: int, stop: int) -> dict[str, np.ndarray]:
    x = np.arange(start, stop, dtype=np.float64)
    return {"sq": x * x, "ids": np.arange(start, stop)}


class Rows:
    """A picklable shard function over held data, with ``for_rows`` (like MinHash's): each row
    reports the process that computed it and how many rows that copy of the function held."""

    def __init__(self, data: np.ndarray, offset: int = 0):
        self.data, self.offset = data, offset

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        time.sleep(0.02)  # leaves the pool's worker time to take its shards
        x = self.data[start - self.offset:stop - self.offset]
        return {"x": x * 2, "pid": np.full(stop - start, os.getpid()), "held": np.full(stop - start, len(self.data))}

    def for_rows(self, start: int, stop: int) -> Rows:
        return Rows(self.data[start:stop].copy(), offset=start)


class Fails:
    """Raises for the shard starting at ``bad`` (picklable: it also fails in a pool worker)."""

    def __init__(self, bad: int):
        self.bad = bad

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        if start == self.bad:
            raise RuntimeError(f"planted failure of shard {start}")
        return squares(start, stop)


class Recording:
    """Counts calls (in this process only)."""

    def __init__(self, fn=squares):
        self.fn, self.calls = fn, []

    def __call__(self, start: int, stop: int) -> dict[str, np.ndarray]:
        self.calls.append(start)
        return self.fn(start, stop)


def test_resumes_after_a_kill_computing_only_unfinished_shards(tmp_path):
    fn = Recording(Fails(bad=20))
    with pytest.raises(RuntimeError, match="shard 20"):  # the run is killed in the third shard
        map_shards(tmp_path, 45, fn, shard_size=10, show_progress=False)
    assert fn.calls == [0, 10, 20]
    assert sorted(p.name for p in (tmp_path / "shards").glob("*.npz")) == [
        "000000000000-000000000010.npz", "000000000010-000000000020.npz"]
    again = Recording()
    out = map_shards(tmp_path, 45, again, shard_size=10, show_progress=False)
    assert again.calls == [20, 30, 40]
    assert np.array_equal(out["ids"], np.arange(45)) and np.array_equal(out["sq"], np.arange(45.0) ** 2)
    assert all(shard_path(tmp_path, a, min(a + 10, 45)).with_suffix(".sum.json").exists() for a in range(0, 45, 10))
    third = Recording()
    assert np.array_equal(map_shards(tmp_path, 45, third, shard_size=10, show_progress=False)["ids"], out["ids"])
    assert third.calls == []


def test_a_shard_file_from_before_is_used_as_is(tmp_path):
    """A shard present before the run (another executor, an earlier version) is not recomputed."""
    (tmp_path / "shards").mkdir()
    save_shard(tmp_path / "shards" / "000000000010-000000000020.npz", {"sq": np.full(10, -1.0), "ids": np.arange(10, 20)})
    fn = Recording()
    out = map_shards(tmp_path, 25, fn, shard_size=10, show_progress=False)
    assert fn.calls == [0, 20] and (out["sq"][10:20] == -1).all() and np.array_equal(out["ids"], np.arange(25))


def test_a_damaged_shard_is_moved_aside_and_recomputed(tmp_path):
    first = map_shards(tmp_path, 30, squares, shard_size=10, show_progress=False)
    shards = sorted((tmp_path / "shards").glob("*.npz"))
    shards[0].write_bytes(shards[0].read_bytes()[:40])  # truncated
    b = bytearray(shards[2].read_bytes())
    b[-30] ^= 0x10  # one byte flipped, same size
    shards[2].write_bytes(bytes(b))
    fn = Recording()
    again = map_shards(tmp_path, 30, fn, shard_size=10, show_progress=False)
    assert fn.calls == [0, 20]
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert sorted(p.name for p in (tmp_path / "shards" / "damaged").glob("*.npz")) == [shards[0].name, shards[2].name]
    assert load_shard(shards[0]) is not None and load_shard(shards[2]) is not None  # sound again


class OutOfOrder:
    """An executor that finishes the shards in reverse order, every other one only on disk."""

    def __init__(self):
        self.todo = []

    def run(self, fn, todo, desc="shards"):
        self.todo = list(todo)
        for i, s in enumerate(reversed(todo)):
            result = fn(s.start, s.stop)
            save_shard(s.path, result)
            yield s, (result if i % 2 else None)


def test_output_is_in_row_order_whatever_order_shards_finish(tmp_path):
    ex = OutOfOrder()
    (tmp_path / "shards").mkdir()
    save_shard(shard_path(tmp_path, 10, 20), squares(10, 20))  # finished before: not the executor's
    out = map_shards(tmp_path, 57, squares, shard_size=10, show_progress=False, executor=ex)
    assert [(s.start, s.stop) for s in ex.todo] == [(0, 10), (20, 30), (30, 40), (40, 50), (50, 57)]
    assert all(s.path == shard_path(tmp_path, s.start, s.stop) for s in ex.todo)
    assert np.array_equal(out["ids"], np.arange(57)) and np.array_equal(out["sq"], np.arange(57.0) ** 2)


def test_output_equals_the_concatenation_of_the_shards(tmp_path):
    """Each arriving shard is copied into the output; dtypes promote as np.concatenate does
    (a later shard with longer strings or floats), names and row shapes are the first shard's."""

    def fn(a, b):
        label = np.array([("x" * (1 + a // 10))] * (b - a))  # '<U1', '<U2', ... grows by shard
        vals = np.arange(a, b) if a < 20 else np.arange(a, b) + 0.5  # int64, then float64
        return {"label": label, "vals": vals, "pair": np.stack([np.arange(a, b)] * 2, axis=1)}

    parts = [fn(a, min(a + 10, 35)) for a in range(0, 35, 10)]
    out = map_shards(tmp_path / "a", 35, fn, shard_size=10, show_progress=False, executor=OutOfOrder())
    for k in parts[0]:
        want = np.concatenate([p[k] for p in parts])
        assert out[k].dtype == want.dtype and np.array_equal(out[k], want), k
    assert map_shards(tmp_path / "b", 0, lambda a, b: {"e": np.zeros((0, 3))}, show_progress=False)["e"].shape == (0, 3)
    assert map_shards(tmp_path / "c", 5, lambda a, b: {}, show_progress=False) == {}


@pytest.mark.parametrize("bad", [np.zeros(3), np.zeros((10, 2)), np.float64(1.0)])
def test_a_shard_of_the_wrong_shape_is_an_error(tmp_path, bad):
    def fn(a, b):
        return {"x": np.zeros((b - a, 3)) if a == 0 else bad}

    with pytest.raises(ValueError, match=r"shard rows \[10, 20\): 'x' has shape"):
        map_shards(tmp_path, 20, fn, shard_size=10, show_progress=False)


def test_process_pool_executor_gives_the_in_process_arrays(tmp_path):
    data = np.random.default_rng(0).normal(size=230)
    local = map_shards(tmp_path / "local", 230, Rows(data), shard_size=20, show_progress=False)
    assert (local["pid"] == os.getpid()).all() and (local["held"] == 230).all()
    idle = []
    out = map_shards(tmp_path / "pool", 230, Rows(data), shard_size=20, show_progress=False,
                     executor=ProcessShardExecutor(2, on_idle=lambda: idle.append(1)))
    assert np.array_equal(out["x"], local["x"])
    by_worker = out["pid"] != os.getpid()
    assert by_worker.any() and (~by_worker).any()  # the parent computes shards next to its worker
    assert (out["held"][by_worker] == 20).all()  # a worker got only its shard's rows (for_rows)
    assert (out["held"][~by_worker] == 230).all()
    assert len(idle) <= 1  # at most once, when the parent has nothing left but waiting
    assert len(list((tmp_path / "pool" / "shards").glob("*.npz"))) == 12


def test_process_pool_worker_error_is_raised_and_the_rerun_resumes(tmp_path):
    # shard 0 is the first one given to the worker; the parent computes from the back meanwhile
    with pytest.raises(RuntimeError, match="planted failure of shard 0"):
        map_shards(tmp_path, 60, Fails(bad=0), shard_size=10, show_progress=False, executor=ProcessShardExecutor(2))
    left = {p.name for p in (tmp_path / "shards").glob("*.npz")}
    assert "000000000000-000000000010.npz" not in left and "000000000050-000000000060.npz" in left
    fn = Recording()
    out = map_shards(tmp_path, 60, fn, shard_size=10, show_progress=False, executor=ProcessShardExecutor(1))
    assert 0 in fn.calls and len(fn.calls) == 6 - len(left)
    assert np.array_equal(out["ids"], np.arange(60))


def test_fn_for_rows_falls_back_to_fn():
    r = Rows(np.arange(10.0))
    assert fn_for_rows(squares, 0, 5) is squares
    part = fn_for_rows(r, 4, 7)
    assert part.offset == 4 and np.array_equal(part(4, 7)["x"], r(4, 7)["x"])


def test_bad_shard_size_is_named(tmp_path):
    with pytest.raises(ValueError, match="shard_size=0"):
        map_shards(tmp_path, 10, squares, shard_size=0)
    with pytest.raises(ValueError, match="num_proc=0"):
        ProcessShardExecutor(0)


# ---------------------------------------------------------------- MinHash band keys

def _texts(n: int) -> pa.Array:
    return pa.array([f"row {i} " + " ".join(f"w{(i * 7 + j) % 97}" for j in range(14)) for i in range(n)])


class Tasks(LocalShardExecutor):
    """Records each shard as a task would get it: the function shipped (fn_for_rows) and its rows."""

    def __init__(self):
        self.tasks = []

    def run(self, fn, todo, desc="shards"):
        for s in todo:
            part = fn_for_rows(fn, s.start, s.stop)
            self.tasks.append((s.start, s.stop, len(part.texts), desc))
            result = part(s.start, s.stop)
            save_shard(s.path, result)
            yield s, result


def test_minhash_band_keys_one_executor_task_per_shard(tmp_path):
    """What ``curate_flow(dask=True)`` relies on: with a work dir, the installed executor gets
    every MinHash shard as one task carrying only that shard's texts; keys are the local ones."""
    from curate.dedup.minhash import MinHashDedup
    from curate.dedup.minhash_index import compute_band_keys

    texts, params = _texts(30), MinHashDedup().signature_params()
    k0, v0 = compute_band_keys(texts, params, batch_size=8)
    ex = Tasks()
    with use_executor(ex):
        k1, v1 = compute_band_keys(texts, params, batch_size=8, work_dir=tmp_path)
        assert ex.tasks == [(0, 8, 8, "minhash"), (8, 16, 8, "minhash"), (16, 24, 8, "minhash"), (24, 30, 6, "minhash")]
        compute_band_keys(texts, params, batch_size=8)  # no work dir: workers could not see a temp folder
    assert len(ex.tasks) == 4
    assert np.array_equal(k0, k1) and np.array_equal(v0, v1) and k1.dtype == np.uint64 and v1.dtype == bool
    assert len(list((tmp_path / "shards").glob("*.npz"))) == 4


def test_minhash_band_keys_resume_after_a_kill(tmp_path, monkeypatch):
    from curate.dedup import minhash_index as mi
    from curate.dedup.minhash import MinHashDedup

    texts, params = _texts(40), MinHashDedup().signature_params()
    want = mi.compute_band_keys(texts, params, batch_size=10, num_proc=2)
    real, calls = mi._shard_worker, []

    def killed_in_third(args):
        calls.append(len(args[0]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is stopped in its third shard
        return real(args)

    monkeypatch.setattr(mi, "_shard_worker", killed_in_third)
    with pytest.raises(KeyboardInterrupt):
        mi.compute_band_keys(texts, params, batch_size=10, work_dir=tmp_path)
    assert len(list((tmp_path / "shards").glob("*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(mi, "_shard_worker", lambda a: calls.append(len(a[0])) or real(a))
    got = mi.compute_band_keys(texts, params, batch_size=10, work_dir=tmp_path)
    assert calls == [10, 10]  # only the two unfinished shards
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_minhash_no_rows(tmp_path):
    from curate.dedup.minhash import MinHashDedup
    from curate.dedup.minhash_index import compute_band_keys

    params = MinHashDedup().signature_params()
    keys, valid = compute_band_keys(pa.array([], pa.string()), params, work_dir=tmp_path)
    assert keys.shape == (0, params["bands"]) and keys.dtype == np.uint64 and valid.shape == (0,)
    assert not (tmp_path / "shards").exists()
