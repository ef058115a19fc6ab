"""Cache keys survive the package restructure: a cache filled before it is hit after it.

``tests/data/stage_keys_before_restructure.json`` was written by the code before the move to the
layered package (commit 46cf456), by chaining ``stage_key`` from a fixed parent key over every
stage (prerequisites included) of every shipped recipe, plus one instance per stage type built
from a small spec. A stage's key hashes its name, version and cache parameters; anything that
changes one of them for an unchanged recipe changes the key and silently empties users' caches.
A deliberate output change bumps a stage's ``version`` (and may add a parameter): it is listed in
``DELIBERATE`` with the reason, and the test checks that nothing else changed (the recorded key
is reproduced with the old version and without the new parameter).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.core.hashing import stage_key
from curate.embed.stage import CAR_TEMPLATE
from curate.engine.config import build_stage, load_config

# stage type -> (recorded version, current version, parameters added since, why)
DELIBERATE = {
    "length_filter": ("1", "2", (), "words are text units: a CJK character is one word (issue 28)"),
    "minhash_dedup": ("2", "3", ("ngram_unspaced", "preset"),
                      "NFKD folding; CJK characters are words, 3-grams (issue 28); FineWeb preset (issue 24)"),
    "heuristics": ("1", "2", (), "text units; mean word length and stop words NaN for CJK (issue 28)"),
    "quality_model": ("1", "2", (), "its heuristic features changed for CJK rows (issue 28)"),
}

# recorded recipe -> (the file that holds that recipe now, why)
MOVED = {"configs/quickstart.yaml": ("configs/minimal.yaml",
                                     "the quick start now curates for real; its old recipe is the bare pipe (issue 27)")}

# recorded recipe -> (stage name -> the parameters the recorded recipe gave it, why the recipe changed)
EDITED = {f"configs/instruction/{name}.yaml": ({"embed": {"template": CAR_TEMPLATE}},
                                               "one embedding pass: the recipes embed the canonical text the shipped "
                                               "scorer reads, not CaR's string (issue 31)")
          for name in ("base", "car", "cherry_ifd", "kcenter", "kmq", "kmq_iterative", "longest", "random",
                       "top_k_quality")}

RECORDED = json.loads((Path(__file__).parent / "data" / "stage_keys_before_restructure.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def recorded_cpu(monkeypatch):
    """The keys were recorded on a CPU without int8 dot products (VNNI). On one with them, embed's
    default precision is int8 (issue 33): other vectors, deliberately under another key."""
    import curate.models.loading
    from curate.embed.quantize import INT8_DOT_FLAGS

    flags = curate.models.loading.cpu_flags() - set(INT8_DOT_FLAGS)
    monkeypatch.setattr(curate.models.loading, "cpu_flags", lambda: flags)


def as_recorded(stage, monkeypatch):
    """``stage`` as the recorded code saw it: old version, without parameters added since."""
    if stage.name in DELIBERATE:
        old, new, added, _ = DELIBERATE[stage.name]
        if type(stage).version != old:  # (already set back for an earlier step of this recipe)
            assert type(stage).version == new, f"{stage.name}: version {type(stage).version}, DELIBERATE says {new}"
            monkeypatch.setattr(type(stage), "version", old)
        params = {k: v for k, v in stage.cache_params().items() if k not in added}
        monkeypatch.setattr(stage, "cache_params", lambda: params)
    return stage


@pytest.mark.parametrize("recipe", sorted(RECORDED["recipes"]))
def test_recipe_stage_keys_unchanged(recipe, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name paths relative to the repository root
    key, got = "parent-0000", []
    edits = EDITED.get(recipe, ({}, ""))[0]
    for stage in load_config(MOVED.get(recipe, (recipe,))[0]).build_stages():
        for step in stage.prerequisites([]) + [stage]:
            for attr, value in (edits.get(step.name, {}) if step is stage else {}).items():  # the listed stage
                setattr(step, attr, value)
            key = stage_key(key, as_recorded(step, monkeypatch))
            got.append([step.name, key])
    assert got == RECORDED["recipes"][recipe]


@pytest.mark.parametrize("name", sorted(RECORDED["defaults"]))
def test_stage_type_key_unchanged(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    rec = RECORDED["defaults"][name]
    stage = as_recorded(build_stage({"type": name, **rec["spec"]}), monkeypatch)
    assert json.loads(json.dumps(stage.cache_params(), default=str)) == rec["params"]
    assert stage_key("parent-0000", stage) == rec["key"]
