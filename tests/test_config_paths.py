"""Data paths in recipes, eval configs and target specs: ``$CURATE_DATA``-style variables and ``~``."""
from __future__ import annotations

import json

import pytest

from curate.core.errors import ConfigError
from curate.core.paths import expand_path
from curate.eval.config import load_eval_config
from curate.ingest.read import read_input
from curate.select.targets import validate_targets_spec


def test_expand_path_forms_and_the_unset_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_DATA", str(tmp_path))
    monkeypatch.setenv("HOME", "/home/u")
    assert expand_path("$CURATE_DATA/eval/a.jsonl") == f"{tmp_path}/eval/a.jsonl"
    assert expand_path("${CURATE_DATA}/eval/a.jsonl") == f"{tmp_path}/eval/a.jsonl"
    assert expand_path("~/data/a.jsonl") == "/home/u/data/a.jsonl"
    assert expand_path("data/a.jsonl") == "data/a.jsonl"
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(ConfigError, match=r"input: '\$NOT_SET_HERE/a.jsonl' names the environment variable "
                                          r"\$NOT_SET_HERE, which is not set"):
        expand_path("$NOT_SET_HERE/a.jsonl", "input")
    literal = tmp_path / "price$NOT_SET_HERE.jsonl"  # a file whose own name holds a "$"
    literal.write_text("{}\n")
    assert expand_path(str(literal)) == str(literal)


def _rows(path, n=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"instruction": f"q {i}", "input": "", "output": f"a {i}"}) + "\n"
                            for i in range(n)))
    return path


def test_ingest_and_targets_read_a_variable_path_like_the_expanded_one(tmp_path, monkeypatch):
    f = _rows(tmp_path / "instruct" / "pool.jsonl")
    monkeypatch.setenv("CURATE_DATA", str(tmp_path))
    via_var = read_input("${CURATE_DATA}/instruct/pool.jsonl").table
    direct = read_input(str(f)).table
    assert via_var.equals(direct) and len(via_var) == 3
    validate_targets_spec("$CURATE_DATA/instruct/pool.jsonl")  # exists once expanded: no error
    monkeypatch.delenv("CURATE_DATA")
    with pytest.raises(ConfigError, match=r"\$CURATE_DATA, which is not set"):
        read_input("${CURATE_DATA}/instruct/pool.jsonl")
    with pytest.raises(ValueError, match=r"targets: .*\$CURATE_DATA, which is not set"):
        validate_targets_spec("$CURATE_DATA/instruct/pool.jsonl")


def test_eval_config_expands_data_paths_and_names_the_key_of_an_unset_one(tmp_path, monkeypatch):
    cfg = {"name": "t", "output": str(tmp_path / "out"), "pool": {"paths": ["$CURATE_DATA/instruct/pool.jsonl"]},
           "eval_sets": [{"name": "a", "path": "${CURATE_DATA}/eval/a.jsonl",
                          "queries": {"n": 2, "path": "$CURATE_DATA/instruct/q.jsonl"}}],
           "budget": 2, "arms": [{"name": "random", "method": "random"}],
           "train": {"layers": 1}, "eval": {}}
    monkeypatch.setenv("CURATE_DATA", "/data/curate")
    got = load_eval_config(cfg)
    assert got.pool.paths == ["/data/curate/instruct/pool.jsonl"]
    assert got.eval_sets[0].path == "/data/curate/eval/a.jsonl"
    assert got.eval_sets[0].queries.path == "/data/curate/instruct/q.jsonl"
    # the expanded config is what cache keys see: the same as writing the absolute paths
    text = json.dumps(cfg).replace("${CURATE_DATA}", "/data/curate").replace("$CURATE_DATA", "/data/curate")
    absolute = json.loads(text)
    assert load_eval_config(absolute).model_dump() == got.model_dump()
    monkeypatch.delenv("CURATE_DATA")
    with pytest.raises(ConfigError, match=r"pool\.paths: .*\$CURATE_DATA, which is not set"):
        load_eval_config(cfg)
