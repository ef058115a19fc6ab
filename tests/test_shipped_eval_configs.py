"""Every config in configs/eval/ loads and every arm's selection stage builds, before any compute.

The long evaluations run for hours; a typo in an arm's parameters would otherwise surface only when
the queue reaches that arm. Data files are not read here (``$CURATE_DATA`` points nowhere).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from curate.engine.config import build_stage
from curate.eval.arms import CONTROL_METHODS
from curate.eval.config import load_eval_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "eval").glob("*.yaml"))


def test_the_shipped_configs_are_found():
    assert len(CONFIGS) >= 6, CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_eval_config_loads_and_builds_its_arms(path, monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_DATA", "/nonexistent/curate-data")
    monkeypatch.chdir(tmp_path)  # relative outputs land here
    cfg = load_eval_config(path)
    built = 0
    for arm in cfg._declared_arms:
        method = arm.get("method")
        if arm.get("selection") or method in CONTROL_METHODS:
            continue
        params = dict(arm.get("params") or {})
        made = params.get("targets")
        if isinstance(made, str) and made.startswith(cfg.output):  # a file the eval writes with the pool
            Path(made).parent.mkdir(parents=True, exist_ok=True)
            Path(made).write_text('{"instruction": "a query", "output": "its answer"}\n')
        if arm.get("query_targets"):  # the eval passes each target's query records
            params["targets"] = {t: [{"instruction": "a query", "output": "its answer"}] for t in arm["query_targets"]}
        build_stage({"type": method, **params, "budget": cfg.budget}, where=f"{path.name}: arm {arm['name']}")
        built += 1
    assert built >= 1


def test_a_bad_arm_parameter_fails_the_build(monkeypatch):
    """The check above can fail: an unknown parameter of a real method is refused by name."""
    with pytest.raises(Exception, match="no_such_option"):
        build_stage({"type": "learning_percentage", "k": 100, "no_such_option": 1, "budget": 10}, where="arm x")
