"""Trust fixes (issue "the first hour of a user"): process pools from scripts on standard input,
model files keyed by content, one cache key for a table in memory and read from Parquet, and
``seed`` on selection methods with nothing random.

Each test here failed before its fix (how is said in its docstring).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SAMPLE

import curate
from curate.core.errors import ConfigError
from curate.engine.config import build_stage

TARGETS = str(REPO / "sample_targets" / "gsm8k_test_8.jsonl")

# ---------------------------------------------------------------- process pools from stdin

# Every stage that starts worker processes, run from a script on standard input (`python - < x.py`)
# with 2 processes and enough rows for more than one chunk/shard, so a pool really starts.
POOLED_FROM_STDIN = {
    "exact_dedup": """
import curate, json
rows = [json.loads(l) for l in open({dolly!r})][:400]
ds = curate.select(rows, method="exact_dedup", num_proc=2, batch_size=100)
print("OK", len(ds))
""",
    "minhash_dedup": """
import curate, json
rows = [json.loads(l) for l in open({dolly!r})][:400]
ds = curate.select(rows, method="minhash_dedup", threshold=0.8, num_proc=2, batch_size=100)
print("OK", len(ds))
""",
    "zipfit": """
import curate, json
rows = [json.loads(l) for l in open({dolly!r})][:1100]
ds = curate.select(rows, method="zipfit", budget=50, targets={targets!r}, num_proc=2, show_progress=False)
print("OK", len(ds))
""",
    # ingest of web pages: trafilatura runs in killable worker processes
    "html_ingest": """
import curate
ds = curate.select({html!r}, method="random", budget=3, seed=0)
print("OK", len(ds))
""",
}


def _html_pool(tmp_path: Path) -> Path:
    src = sorted((REPO / "sample_web" / "html" / "debian-handbook" / "en-US").glob("*.html"))[:6]
    dst = tmp_path / "pages"
    dst.mkdir()
    for p in src:
        shutil.copy(p, dst / p.name)
    return dst


@pytest.mark.parametrize("stage", sorted(POOLED_FROM_STDIN))
def test_each_pooled_stage_runs_from_a_script_on_stdin(stage, tmp_path):
    """Before the fix, ``zipfit`` built its own spawn pool and died with ``BrokenProcessPool``
    here (seen: ``concurrent.futures.process.BrokenProcessPool`` from ``<stdin>``); every pool
    now comes from ``curate.core.parallel.process_pool``."""
    script = POOLED_FROM_STDIN[stage].format(dolly=str(SAMPLE / "dolly_2k.jsonl"), targets=TARGETS,
                                             html=str(_html_pool(tmp_path)))
    env = {**os.environ, "PYTHONPATH": str(REPO), "CURATE_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-"], check=False, input=script, capture_output=True, text=True, timeout=600,
                       cwd=tmp_path, env=env)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    assert "BrokenProcessPool" not in r.stderr


POOL_BUILDERS = re.compile(r"ProcessPoolExecutor\(|multiprocessing\.Pool\(|mp\.Pool\(|get_context\(|set_start_method\(")


def test_process_pools_are_built_in_one_place():
    """Every process pool under curate/ comes from curate/core/parallel.py (whose spawn workers
    do not re-run ``__main__``). Before the fix zipfit.py built ``ProcessPoolExecutor(...,
    mp_context=mp.get_context("spawn"))`` itself."""
    offenders = []
    for path in sorted((REPO / "curate").rglob("*.py")):
        if path.relative_to(REPO).as_posix() == "curate/core/parallel.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if POOL_BUILDERS.search(line) and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, "build process pools with curate.core.parallel.process_pool / mp_context:\n" + \
        "\n".join(offenders)


# ---------------------------------------------------------------- model files keyed by content

def _same_size_and_mtime(path: Path, new_bytes: bytes) -> None:
    """Put other bytes of the same length at ``path`` and give it back its mtime (as ``cp -p``,
    ``rsync -a`` or ``tar x`` can)."""
    st = path.stat()
    assert len(new_bytes) == st.st_size
    path.write_bytes(new_bytes)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_weights_fingerprint_sees_a_replaced_file_with_the_same_size_and_mtime(tmp_path):
    """Before the fix the digest was memoised on (path, size, mtime) and came back stale here."""
    from curate.models.loading import weights_fingerprint

    f = tmp_path / "model.safetensors"
    f.write_bytes(b"a" * 4096)
    before = weights_fingerprint(f)
    _same_size_and_mtime(f, b"b" * 4096)
    assert weights_fingerprint(f) != before
    assert weights_fingerprint(f) == weights_fingerprint(f)  # still memoised while nothing changes


def _scorer(path: Path, intercept: float, embedder: str = "all-MiniLM-L6-v2", features=("heuristics",)) -> Path:
    """A scorer file in the format QualityModel.load reads, written uncompressed so that another
    intercept gives a file of exactly the same size."""
    import json

    from curate.score.heuristics import HEURISTIC_COLUMNS
    from curate.score.quality_model import LEGACY_EMBED_PARAMS

    d = len(HEURISTIC_COLUMNS)
    spec = {"format": "curate.quality_model/1", "features": list(features), "C": 1.0, "embedder": embedder,
            "proxy_lm": "SmolLM2-135M-Instruct", "kind": "logistic", "embedding_text": "text",
            "embed_params": LEGACY_EMBED_PARAMS, "heuristic_columns": list(HEURISTIC_COLUMNS), "info": {}}
    with open(path, "wb") as fh:
        np.savez(fh, mean=np.zeros(d), scale=np.ones(d), coef=np.full(d, 0.1), intercept=np.float64(intercept),
                 spec=np.array(json.dumps(spec)))
    return path


ROWS = [{"instruction": f"Explain topic {i} in detail", "input": "", "output": f"Topic {i} is about this. " * (i + 1)}
        for i in range(10)]


def test_quality_model_file_replaced_at_the_same_path_is_scored_again(tmp_path):
    """``quality_model(model_path=P)``: P replaced by another scorer (same size, mtime kept) must
    not be answered from the cache. Before the fix the second call returned the first scorer's
    scores (the stale memoised digest made the same cache key)."""
    p = _scorer(tmp_path / "scorer.npz", 0.0)
    cache = str(tmp_path / "cache")
    first = curate.select(ROWS, schema="canonical", method="quality_model", model_path=str(p), cache_dir=cache)["quality"]
    _same_size_and_mtime(p, _scorer(tmp_path / "other.npz", 5.0).read_bytes())
    second = curate.select(ROWS, schema="canonical", method="quality_model", model_path=str(p), cache_dir=cache)["quality"]
    np.testing.assert_allclose(np.array(second) - np.array(first), 5.0)


def test_quality_model_key_follows_the_weights_of_a_scorer_embedder_given_by_path(tmp_path):
    """A scorer whose embedder is a local folder: other weights in that folder change the stage's
    cache key. Before the fix only the scorer file was hashed (the embedder by its path string),
    so the key stayed the same and stale scores were reused."""
    from curate.score.stages import QualityModelStage

    emb = tmp_path / "my-embedder"
    emb.mkdir()
    (emb / "config.json").write_text("{}")
    (emb / "model.safetensors").write_bytes(b"1" * 64)
    stage = QualityModelStage(model_path=str(_scorer(tmp_path / "s.npz", 0.0, str(emb), ("embedding", "heuristics"))))
    before = stage.cache_params()
    (emb / "model.safetensors").write_bytes(b"2" * 65)
    after = stage.cache_params()
    assert after["resolved"]["embedder_weights"] != before["resolved"]["embedder_weights"]
    # shipped aliases stay keyed by name: the default scorer's key is unchanged by this fix
    assert set(QualityModelStage().cache_params()["resolved"]) == {"scorer"}


def test_a_loaded_embedder_is_reloaded_when_its_weights_change_at_the_same_path(tmp_path, monkeypatch):
    """The per-process model cache is keyed by the weights' content: other weights at the same
    path load again (the stage's new cache key must not be filled by the old model). Before the
    fix ``load_sentence_transformer`` was an ``lru_cache`` on the path and returned the old model."""
    import types

    from curate.models import loading

    loads = []
    fake = types.ModuleType("sentence_transformers")  # the real import takes seconds; only the loader is tested
    fake.SentenceTransformer = lambda path, device=None: loads.append(Path(path, "model.safetensors").read_bytes()) \
        or object()
    monkeypatch.setitem(sys.modules, "sentence_transformers", fake)
    emb = tmp_path / "my-embedder"
    emb.mkdir()
    (emb / "config.json").write_text("{}")
    (emb / "model.safetensors").write_bytes(b"1" * 64)
    first = loading.load_sentence_transformer(str(emb), device="cpu")
    assert loading.load_sentence_transformer(str(emb), device="cpu") is first  # still cached
    _same_size_and_mtime(emb / "model.safetensors", b"2" * 64)
    assert loading.load_sentence_transformer(str(emb), device="cpu") is not first
    assert loads == [b"1" * 64, b"2" * 64]


# ---------------------------------------------------------------- table fingerprint

def _cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))


def test_select_on_a_table_and_on_it_read_back_from_parquet_hits_one_cache_entry(tmp_path):
    """Parquet names list items ``element``, Arrow ``item``: a table with ``id``/``text`` (passed
    through as is) and a list column, selected in memory and again after a Parquet round trip.
    Before the fix (``table_fingerprint`` hashed the Parquet bytes, schema included) the second
    call made a second cache entry (seen: 1 entry, then 2)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.core.hashing import table_fingerprint

    t = pa.table({"id": [f"r{i}" for i in range(20)], "text": [f"Question {i % 15} about things?" for i in range(20)],
                  "tags": [[f"t{i}", "x"] for i in range(20)],
                  "turns": [[{"role": "user", "content": f"hi {i}"}] for i in range(20)]})
    pq.write_table(t, tmp_path / "t.parquet")
    back = pq.read_table(tmp_path / "t.parquet")
    assert str(back.schema.field("tags").type) == "list<element: string>" != str(t.schema.field("tags").type)
    assert table_fingerprint(back) == table_fingerprint(t)
    cache = tmp_path / "cache"
    first = curate.select(t, schema="canonical", method="exact_dedup", cache_dir=str(cache))
    entries = _cache_entries(cache)
    again = curate.select(back, schema="canonical", method="exact_dedup", cache_dir=str(cache))
    assert _cache_entries(cache) == entries and len(entries) == 1
    assert again["id"] == first["id"] and len(first) == 15
    # and the fingerprint still sees content: one changed value is another key
    changed = t.set_column(2, "tags", pa.array([["t0", "y"]] + t["tags"].to_pylist()[1:]))
    assert table_fingerprint(changed) != table_fingerprint(t)


# ---------------------------------------------------------------- seed on deterministic methods

DETERMINISTIC = {"longest": {}, "top_k": {"score": "quality"}, "rds": {"targets": TARGETS},
                 "zipfit": {"targets": TARGETS}}


@pytest.mark.parametrize("method", sorted(DETERMINISTIC))
def test_seed_is_accepted_and_unused_by_methods_with_nothing_random(method, caplog):
    """Before the fix ``build_stage({..., "seed": 0})`` raised ``ConfigError: ...seed: unknown
    parameter`` for these methods, so a loop over methods with the same arguments failed."""
    spec = {"type": method, "budget": 5, **DETERMINISTIC[method]}
    with caplog.at_level("INFO", logger="curate.engine.config"):
        seeded = build_stage({**spec, "seed": 0})
    plain = build_stage(spec)
    assert seeded.get_params() == plain.get_params() and "seed" not in seeded.get_params()
    assert seeded.cache_params() == plain.cache_params()  # not part of the cache key
    assert any("seed=0 unused" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match=r"seed: seed must be an int, got 'x'"):
        build_stage({**spec, "seed": "x"})


def test_a_loop_over_methods_with_the_same_arguments_runs():
    rows = [{"instruction": f"Question {i}?", "input": "", "output": "word " * (i + 5)} for i in range(30)]
    got = {m: curate.select(rows, schema="canonical", method=m, budget=5, seed=0)["id"] for m in ("random", "longest")}
    assert got["longest"] == curate.select(rows, schema="canonical", method="longest", budget=5)["id"]
    assert got["random"] == curate.select(rows, schema="canonical", method="random", budget=5, seed=0)["id"]
    assert got["random"] != curate.select(rows, schema="canonical", method="random", budget=5, seed=1)["id"]  # seed still used there
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_stage({"type": "exact_dedup", "seed": 0})  # not a selection method: still refused


def test_reward_model_given_by_path_is_keyed_by_its_weights(tmp_path):
    """Before the fix a reward model given by path was keyed by the path string: other weights
    put there (same size and mtime) reused the old scores."""
    d = tmp_path / "rm"
    d.mkdir()
    (d / "config.json").write_text('{"a": 1}')
    (d / "model.safetensors").write_bytes(b"a" * 2048)
    stage = build_stage({"type": "reward_model", "model": str(d)})
    before = stage.cache_params()
    _same_size_and_mtime(d / "model.safetensors", b"b" * 2048)
    after = build_stage({"type": "reward_model", "model": str(d)}).cache_params()
    assert after != before and after["resolved"]["weights"] != before["resolved"]["weights"]
    hub = build_stage({"type": "reward_model", "model": "org/some-reward-model"}).cache_params()
    assert "resolved" not in hub  # a hub id: keyed by name, unchanged


def test_doc_quality_model_replaced_at_the_same_path_is_loaded_again(tmp_path, monkeypatch):
    """Before the fix the per-process model cache was keyed on (path, size, mtime)."""
    from curate.score import doc_quality as dq

    loads = []
    monkeypatch.setattr(dq, "DocQualityModel", lambda path: loads.append(Path(path).read_bytes()) or len(loads))
    dq._cached_model.cache_clear()
    f = tmp_path / "m.ftz"
    f.write_bytes(b"x" * 512)
    assert dq.load_model(f) == dq.load_model(f) == 1  # one load while nothing changes
    _same_size_and_mtime(f, b"y" * 512)
    assert dq.load_model(f) == 2 and loads == [b"x" * 512, b"y" * 512]
    dq._cached_model.cache_clear()
