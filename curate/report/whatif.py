"""``curate report RUN --whatif STAGE.PARAM=VALUE``: a threshold changed, answered from provenance.

Rule filters (``gopher_repetition``, ``gopher_quality``, ``fineweb_quality``) record every rule's
value for every document they saw (``<stage>__<rule>`` columns in provenance.parquet), so a
looser or stricter threshold is decided again without reading or recomputing any text: the
stage is rebuilt with the run's parameters plus the change, its ``decide(values)`` gives each
rule's pass flags, and the documents whose fate at that step changes are counted.

What it cannot know: documents that would now pass this step never reached the later steps,
so whether those would keep them is unknown (the answer says how many there are, and the
``curate run --set stages.K.PARAM=VALUE`` that computes it: earlier steps come from the cache).
Stages without recorded rule values (line-level rewriting, dedup, selection methods) are refused
with that explanation.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from curate.core.registry import get_stage


def parse_change(spec: str) -> tuple[str, str, object]:
    """``"gopher_quality.max_avg_word_length=12"`` -> (stage, param, value parsed as YAML).

    The stage is a step label (``"3:gopher_quality"``), a step index (``"3"``) or a stage type
    that occurs once in the run.
    """
    if "=" not in spec or "." not in spec.split("=", 1)[0]:
        raise ValueError(f"--whatif {spec!r}: write STAGE.PARAM=VALUE, e.g. gopher_quality.min_stop_words=1")
    target, value = spec.split("=", 1)
    stage, param = target.rsplit(".", 1)
    return stage, param, yaml.safe_load(value)


def find_step(steps: list[dict], stage: str) -> tuple[int, dict]:
    """The run's step a ``--whatif`` names (see :func:`parse_change`)."""
    for i, s in enumerate(steps):
        if stage in (s["label"], str(i)):
            return i, s
    hits = [(i, s) for i, s in enumerate(steps) if s["type"] == stage]
    if len(hits) != 1:
        names = ", ".join(s["label"] for s in steps)
        raise ValueError(f"--whatif: stage {stage!r} names {len(hits)} steps of this run; use a label ({names})")
    return hits[0]


def whatif(run_dir: str | Path, spec: str) -> dict:
    """Decide one step of a finished run again with one parameter changed.

    Args:
        run_dir: a run's output folder (manifest.json, provenance.parquet).
        spec: ``STAGE.PARAM=VALUE`` (:func:`parse_change`).

    Returns:
        {"step", "param", "old", "new", "reached", "dropped_before", "dropped_after",
        "newly_kept", "newly_dropped", "newly_kept_ids" (first 20), "newly_dropped_ids" (first 20),
        "by_reason_before", "by_reason_after", "rerun"}.
    """
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stage_name, param, value = parse_change(spec)
    index, step = find_step(manifest["stages"], stage_name)
    cls = get_stage(step["type"])
    if not hasattr(cls, "decide"):
        raise ValueError(f"--whatif: {step['label']} ({step['type']}) does not record its rules' values, so a "
                         f"changed {param} needs the text: rerun with "
                         f"`curate run CONFIG --set stages.{index}.{param}={value}` (earlier steps are cached)")
    if param not in cls.param_names():
        raise ValueError(f"--whatif: {step['type']} has no parameter {param!r}; it has {cls.param_names()}")
    params = dict(step["params"])
    old = params.get(param)
    new_stage = cls(**{**params, param: value})
    prov = pq.read_table(run_dir / "provenance.parquet")
    prefix = f"{step['type']}__"
    rules = [c[len(prefix):] for c in prov.column_names if c.startswith(prefix) and not c.endswith("__pass")]
    if not rules:
        raise ValueError(f"--whatif: provenance has no {prefix}* columns (was the run made before rules were recorded?)")
    status = np.array(prov.column("status").to_pylist(), dtype=object)
    stage_col = np.array(prov.column("stage").to_pylist(), dtype=object)
    # the documents this step saw: every one of them has its rule values (or NaN) and pass flags
    reached = ~np.array([v is None for v in prov.column(f"{prefix}{rules[0]}__pass").to_pylist()], dtype=bool)
    values = {r: prov.column(f"{prefix}{r}").to_numpy(zero_copy_only=False).astype(np.float64)[reached] for r in rules}
    passed, _ = new_stage.decide(values)
    keep_new = np.all(np.stack([passed[r] for r in rules]), axis=0)
    dropped_here = (status[reached] == "dropped") & (stage_col[reached] == step["label"])
    # rows dropped although every rule passed under the run's own thresholds were dropped for a
    # reason no rule covers (e.g. an empty page): they stay dropped
    old_passed, _ = cls(**params).decide(values)
    keep_old = np.all(np.stack([old_passed[r] for r in rules]), axis=0)
    keep_new &= ~(dropped_here & keep_old)
    ids = np.array(prov.column("id").to_pylist(), dtype=object)[reached]
    newly_kept = dropped_here & keep_new
    newly_dropped = ~dropped_here & ~keep_new
    return {
        "step": step["label"], "param": param, "old": old, "new": value,
        "reached": int(reached.sum()), "dropped_before": int(dropped_here.sum()),
        "dropped_after": int((~keep_new).sum()),
        "newly_kept": int(newly_kept.sum()), "newly_dropped": int(newly_dropped.sum()),
        "newly_kept_ids": ids[newly_kept][:20].tolist(), "newly_dropped_ids": ids[newly_dropped][:20].tolist(),
        "rerun": f"curate run CONFIG --set stages.{index}.{param}={value}",
    }


def render(res: dict) -> str:
    """The what-if answer as a few lines of text."""
    lines = [f"{res['step']}: {res['param']} {res['old']!r} -> {res['new']!r}",
             f"  documents that reached the step: {res['reached']}",
             f"  dropped by it: {res['dropped_before']} -> {res['dropped_after']} "
             f"({res['newly_kept']} would now pass, {res['newly_dropped']} would now be dropped)"]
    if res["newly_kept_ids"]:
        lines.append(f"  would now pass (first {len(res['newly_kept_ids'])}): {', '.join(map(str, res['newly_kept_ids']))}")
    if res["newly_dropped_ids"]:
        lines.append(f"  would now be dropped (first {len(res['newly_dropped_ids'])}): "
                     f"{', '.join(map(str, res['newly_dropped_ids']))}")
    if res["newly_kept"]:
        lines.append(f"  later steps never saw the {res['newly_kept']} newly passing documents; their fate there: "
                     f"`{res['rerun']}` (earlier steps come from the cache)")
    return "\n".join(lines)
