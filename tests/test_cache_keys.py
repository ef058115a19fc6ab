"""Cache keys survive the package restructure: a cache filled before it is hit after it.

``tests/data/stage_keys_before_restructure.json`` was written by the code before the move to the
layered package (commit 46cf456), by chaining ``stage_key`` from a fixed parent key over every
stage (prerequisites included) of every shipped recipe, plus one instance per stage type built
from a small spec. A stage's key hashes its name, version and cache parameters; anything that
changes one of them for an unchanged recipe changes the key and silently empties users' caches.
A deliberate change (a new ``version``) updates the file in the same commit, with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.core.hashing import stage_key
from curate.engine.config import build_stage, load_config

RECORDED = json.loads((Path(__file__).parent / "data" / "stage_keys_before_restructure.json").read_text())
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted(RECORDED["recipes"]))
def test_recipe_stage_keys_unchanged(recipe, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name paths relative to the repository root
    key, got = "parent-0000", []
    for stage in load_config(recipe).build_stages():
        for step in stage.prerequisites([]) + [stage]:
            key = stage_key(key, step)
            got.append([step.name, key])
    assert got == RECORDED["recipes"][recipe]


@pytest.mark.parametrize("name", sorted(RECORDED["defaults"]))
def test_stage_type_key_unchanged(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    rec = RECORDED["defaults"][name]
    stage = build_stage({"type": name, **rec["spec"]})
    assert json.loads(json.dumps(stage.cache_params(), default=str)) == rec["params"]
    assert stage_key("parent-0000", stage) == rec["key"]
