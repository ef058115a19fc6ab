"""Recipes fail at load, before any compute, with the key path and allowed values."""
from __future__ import annotations

import pytest
import yaml

from curate.core.errors import ConfigError
from curate.core.stage import Annotator
from curate.engine.config import load_config
from curate.engine.preflight import check_after_ingest

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


def _ingested(n: int = 6):
    """A table with the canonical columns, as ingest leaves it (no annotations yet)."""
    import pyarrow as pa

    from curate.core.schema import CANONICAL_SCHEMA

    return pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"row {i} text" for i in range(n)],
                     "instruction": [f"do {i}" for i in range(n)], "input": [""] * n,
                     "output": [f"done {i}" for i in range(n)], "messages": [None] * n, "source": ["toy"] * n},
                    schema=CANONICAL_SCHEMA)


@pytest.mark.parametrize("stages, match", [
    ([{"type": "length_filter", "column": "body"}], r"stages\[0\] \(length_filter\): needs column\(s\) \['body'\]"),
    ([{"type": "exact_dedup"}, {"type": "exact_dedup", "column": "body"}], r"stages\[1\] \(exact_dedup\): .*\['body'\]"),
    ([{"type": "minhash_dedup", "keep": "highest:votes"}], r"stages\[0\] \(minhash_dedup\): needs column\(s\) \['votes'\]"),
    ([{"type": "embed", "template": "{instruction} {context}"}], r"stages\[0\] \(embed\): needs column\(s\) \['context'\]"),
    ([{"type": "kmq", "budget": 3, "score": None, "cluster_column": "topic"}], r"\(kmq\): needs column\(s\) \['topic'\]"),
    ([{"type": "score_filter", "column": "ifd_gt1", "max": 0}], r"\(score_filter\): needs column\(s\) \['ifd_gt1'\]"),
])
def test_preflight_names_a_column_that_nothing_makes(stages, match):
    built = load_config(_with(stages=stages)).build_stages()
    with pytest.raises(ConfigError, match=match + ".*add the annotator that makes"):
        check_after_ingest(built, _ingested())


@pytest.mark.parametrize("stages", [
    [{"type": "semdedup", "eps": 0.1}, {"type": "d4", "budget": 0.5}],  # embed + kmeans come first automatically
    [{"type": "top_k", "score": "quality", "budget": 3}],  # quality_model produces it
    [{"type": "score_filter", "column": "h_words", "min": 3}, {"type": "cherry_ifd", "budget": 2}],
    [{"type": "sae_greedy", "budget": 3}, {"type": "random", "budget": {"tokens": 50}}],
    [{"type": "embed", "column": "vec"}, {"type": "kcenter", "budget": 3, "embedding_column": "vec"}],
    [{"type": "kmeans"}, {"type": "kmq", "budget": 3, "score": None, "cluster_column": "cluster_id"}],
    [{"type": "reward_model", "model": "some/reward-model"}, {"type": "top_k", "score": "reward", "budget": 3}],
])
def test_preflight_passes_columns_an_earlier_stage_or_a_prerequisite_makes(stages):
    check_after_ingest(load_config(_with(stages=stages)).build_stages(), _ingested())


def test_preflight_stops_checking_after_an_annotator_that_declares_no_columns():
    from curate.select.basic import TopK

    class Undeclared(Annotator):  # a user's own annotator: what it adds is unknown
        name = "undeclared"

    check_after_ingest([Undeclared(), TopK(score="whatever_it_adds", budget=3)], _ingested())
    with pytest.raises(ConfigError, match=r"needs column\(s\) \['whatever_it_adds'\]"):
        check_after_ingest([TopK(score="whatever_it_adds", budget=3)], _ingested())
