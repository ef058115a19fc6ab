"""Config edge cases fail before compute (no stage runs, nothing is committed to the cache) with
a message that says what to change; the run seed is the default of every stage's ``seed``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import curate
from curate.core.errors import ConfigError
from curate.core.hashing import stage_key
from curate.engine.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from reliability_helpers import read_log, recipe, write_pool  # noqa: E402


@pytest.fixture
def pool(tmp_path):
    return write_pool(tmp_path / "pool.jsonl", n=60)


def _committed(tmp_path) -> list[str]:
    cache = tmp_path / "cache"
    return [p.name for p in cache.iterdir() if (p / "manifest.json").exists()] if cache.exists() else []


@pytest.mark.parametrize("stages, message", [
    ([{"type": "random", "budget": 0}], r"stages\[0\]\.budget: budget must be >= 1 \(a count of rows to keep"),
    ([{"type": "random", "budget": -3}], r"stages\[0\]\.budget: budget must be >= 1"),
    ([{"type": "random", "budget": 1.5}], r"stages\[0\]\.budget: budget as a fraction must be in \(0, 1\], got 1.5; a fraction"),
    ([{"type": "random", "budget": 300.0}], r"for 300.0 rows write the count as an int \(300\)"),
    ([{"type": "random", "budget": 0.0}], r"must be in \(0, 1\]"),
    ([{"type": "random", "budget": "10"}], r"budget must be an int count >= 1 or a float fraction"),
    ([{"type": "randm", "budget": 5}], r"stages\[0\]\.type: unknown stage type 'randm' \(did you mean random"),
    ([{"type": "random", "budgt": 5}], r"stages\[0\]\.budgt: unknown parameter for random \(did you mean 'budget'\?\)"),
    ([{"budget": 5}], r"stages\[0\] must be a mapping with a `type`"),
])
def test_bad_recipe_fails_at_load(tmp_path, pool, stages, message):
    with pytest.raises(ConfigError, match=message):
        curate.run(recipe(tmp_path, pool, stages=stages), show_progress=False)
    assert _committed(tmp_path) == []  # nothing was read or computed


def test_budget_larger_than_pool_fails_before_any_stage(tmp_path, pool):
    log = tmp_path / "log.jsonl"
    stages = [{"type": "tagger"}, {"type": "random", "budget": 5000}]
    import os

    os.environ["CURATE_TEST_LOG"] = str(log)
    try:
        with pytest.raises(ConfigError, match=r"stages\[1\]\.budget: 5000 is larger than the pool \(62 rows after "
                                              r"ingest\); use a count <= 62 or a fraction such as 0.5"):
            curate.run(recipe(tmp_path, pool, stages=stages), show_progress=False)
    finally:
        del os.environ["CURATE_TEST_LOG"]
    assert read_log(log) == []  # the tagger never ran
    assert len(_committed(tmp_path)) == 1  # only the ingest


def test_selector_without_its_annotation_fails_before_compute(tmp_path, pool):
    log = tmp_path / "log.jsonl"
    import os

    os.environ["CURATE_TEST_LOG"] = str(log)
    try:
        with pytest.raises(ConfigError, match=r"stages\[1\] \(top_k\): needs column\(s\) \['my_score'\], which neither the "
                                              r"input nor an earlier stage makes"):
            curate.run(recipe(tmp_path, pool, stages=[{"type": "tagger"}, {"type": "top_k", "score": "my_score",
                                                                           "budget": 10}]), show_progress=False)
    finally:
        del os.environ["CURATE_TEST_LOG"]
    assert read_log(log) == []


def test_selector_whose_column_an_earlier_stage_declares_passes_the_check(tmp_path, pool):
    # top_k reads `tag`, which the tagger declares in output_columns()
    res = curate.run(recipe(tmp_path, pool, stages=[{"type": "tagger"}, {"type": "top_k", "score": "tag", "budget": 10}]),
                     show_progress=False)
    assert res.counts["n_selected"] == 10


def test_against_a_run_that_does_not_exist(tmp_path, pool):
    missing = tmp_path / "no_such_run"
    with pytest.raises(ConfigError, match=r"stages\[0\]\.against: '.*no_such_run' does not exist; give the output dir "
                                          r"of a finished curate run"):
        curate.run(recipe(tmp_path, pool, stages=[{"type": "minhash_dedup", "against": str(missing)}]),
                   show_progress=False)
    assert _committed(tmp_path) == []
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ConfigError, match="holds neither data/\\*.parquet nor meta.json"):
        curate.run(recipe(tmp_path, pool, stages=[{"type": "minhash_dedup", "against": str(tmp_path / "empty_dir")}]),
                   show_progress=False)


def test_output_dir_with_foreign_files_is_refused(tmp_path, pool):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"output.dir: .* holds files curate did not write \(notes.txt\)"):
        curate.run(recipe(tmp_path, pool), show_progress=False)
    assert (out / "notes.txt").read_text() == "mine"


def test_output_dir_that_is_the_working_directory_is_refused(tmp_path, pool, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for bad in (".", str(tmp_path)):
        cfg = recipe(tmp_path, pool)
        cfg["output"]["dir"] = bad
        with pytest.raises(ConfigError, match="is the working directory or holds it; choose a subfolder"):
            curate.run(cfg, show_progress=False)
    assert work.is_dir() and pool.exists()


def test_run_seed_is_the_default_stage_seed_and_enters_the_key(tmp_path, pool):
    base = recipe(tmp_path, pool, stages=[{"type": "random", "budget": 10}, {"type": "random", "budget": 5, "seed": 9}])
    unset = load_config(base).build_stages()
    assert [s.seed for s in unset] == [0, 9]  # no run seed: the class default
    seeded = load_config({**base, "seed": 7}).build_stages()
    assert [s.seed for s in seeded] == [7, 9]  # the run seed fills only the unset one
    assert stage_key("p", seeded[0]) != stage_key("p", unset[0])
    assert stage_key("p", seeded[1]) == stage_key("p", unset[1])
    a = curate.run({**base, "seed": 7}, show_progress=False)
    b = curate.run({**base, "seed": 8, "output": {"dir": str(tmp_path / "run8"), "plots": False}}, show_progress=False)
    assert a.output_hash != b.output_hash
    c = curate.run({**base, "seed": 7, "output": {"dir": str(tmp_path / "run7b"), "plots": False}}, show_progress=False)
    assert c.output_hash == a.output_hash and c.report["stages"][0]["cached"]
