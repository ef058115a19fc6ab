"""Recipes fail at load, before any compute, with the key path and allowed values."""
from __future__ import annotations

import pytest
import yaml

from curate.core.errors import ConfigError
from curate.engine.config import load_config

BASE = {"input": {"path": "x.jsonl"}, "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 10}],
        "output": {"dir": "out"}}


def _with(**kw):
    d = {k: (list(v) if isinstance(v, list) else dict(v)) for k, v in BASE.items()}
    d.update(kw)
    return d


def test_minimal_recipe_loads_and_builds_stages():
    cfg = load_config(BASE)
    assert [s.name for s in cfg.build_stages()] == ["exact_dedup", "random"]
    assert cfg.input.max_row_bytes == 1_000_000 and cfg.seed is None  # run seed unset: stages keep their own


@pytest.mark.parametrize("stages, match", [
    ([{"type": "exact_dedupe"}], r"stages\[0\]\.type: unknown stage type 'exact_dedupe' \(did you mean exact_dedup"),
    ([{"type": "random", "budgt": 10}], r"stages\[0\]\.budgt: unknown parameter for random \(did you mean 'budget'\?\); allowed: budget, seed"),
    ([{"type": "random", "budget": -5}], r"stages\[0\]\.budget: budget must be >= 1"),
    ([{"type": "random", "budget": 1.5}], r"stages\[0\]\.budget: budget as a fraction must be in \(0, 1\]"),
    ([{"type": "exact_dedup"}, {"type": "top_k", "budget": 3}], r"stages\[1\] \(top_k\): .*score"),
    ([{"budget": 3}], r"stages\[0\] must be a mapping with a `type`"),
    ([{"type": "length_filter", "min_chars": 10, "max_chars": 5}], r"stages\[0\]\.min_chars: min_chars \(10\) > max_chars"),
])
def test_stage_errors_name_the_key_path(stages, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_with(stages=stages))


@pytest.mark.parametrize("patch, match", [
    ({"input": {"path": "x", "format": "alpacca"}}, r"input\.format: .*'auto', 'alpaca', 'sharegpt', 'messages' or 'text'"),
    ({"input": {"path": "x", "max_row_bytes": 0}}, r"input\.max_row_bytes: Input should be greater than 0"),
    ({"outptu": {"dir": "x"}}, r"outptu: Extra inputs are not permitted"),
    ({"input": {}}, r"input\.path: Field required"),
])
def test_top_level_errors_name_the_key_path(patch, match):
    with pytest.raises(ConfigError, match=match):
        load_config(_with(**patch))


def test_extends_merges_dicts_and_replaces_lists(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml", "output": {"shard_rows": 7}, "stages": [{"type": "random", "budget": 3, "seed": 9}]}))
    cfg = load_config(tmp_path / "exp.yaml")
    assert cfg.output.dir == "out" and cfg.output.shard_rows == 7 and cfg.input.path == "x.jsonl"
    assert [(s.name, s.budget, s.seed) for s in cfg.build_stages()] == [("random", 3, 9)]


def test_extends_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_output_override():
    assert load_config(BASE, output_dir="elsewhere").output.dir == "elsewhere"


def test_apply_overrides_parses_yaml_values_and_indexes_lists():
    from curate.engine.config import apply_overrides

    data = {"input": {"path": "a.jsonl"}, "stages": [{"type": "embed"}, {"type": "top_k", "budget": 5}]}
    got = apply_overrides(data, ["input.path=b.jsonl", "stages.1.budget={tokens: 500}", "seed=7",
                                 "output.plots=false"])
    assert got == {"input": {"path": "b.jsonl"}, "stages": [{"type": "embed"}, {"type": "top_k", "budget": {"tokens": 500}}],
                   "seed": 7, "output": {"plots": False}}
    assert data["stages"][1]["budget"] == 5  # the caller's dict is not changed
