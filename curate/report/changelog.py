"""The changelog of a refresh version: which rows entered and left the selection, and why.

Built from the two versions' ``provenance.parquet`` files (one row per input row with its
status, the stage and the reason that decided it), so it needs no extra bookkeeping:

* **added** (selected now, not before): ``new_row`` (not in the previous pool) or
  ``newly_selected`` (in the previous pool but not selected, e.g. freed budget).
* **removed** (selected before, not now): ``source_removed`` (gone from the source),
  ``displaced_by_budget`` (dropped by a budget selector: better or luckier rows took its place;
  ``detail`` keeps the selector's own reason), or the reason of the stage that dropped it
  (``duplicate_of_curated``, ``near_duplicate``, ``too_short``, ...).
* **new rows**: how the rows new to the pool ended (selected, or dropped with which reason).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

MAX_LISTED = 200  # rows listed one by one in changelog.md (the JSON lists all)


def _prov(path: Path) -> dict[str, dict]:
    cols = ["id", "status", "stage", "reason", "dup_of"]
    t = pq.read_table(path / "provenance.parquet")
    have = [c for c in cols if c in t.column_names]
    rows = t.select(have).to_pylist()
    return {r["id"]: r for r in rows}


def _budget_stage_labels(records) -> set[str]:
    from curate.core.registry import get_stage

    out = set()
    for r in records:
        try:
            cls = get_stage(r.type)
        except KeyError:
            continue
        if isinstance(cls, type) and cls.budgeted:
            out.add(r.label)
    return out


def build_changelog(prev_dir: Path | None, new_dir: Path, version: str, previous: str | None, records) -> dict:
    """Compare a new version's provenance with the previous version's.

    Args:
        prev_dir: the previous version's folder, or None for the first version.
        new_dir: the new version's folder (its provenance.parquet is written).
        version, previous: their names.
        records: the new run's StepRecords (to tell budget selectors from filters).

    Returns:
        A JSON-able dict: ``n_added``, ``n_removed``, ``added`` / ``removed`` lists of
        {id, why, stage, detail, dup_of}, ``why_counts``, ``new_rows`` outcome counts.
    """
    new = _prov(new_dir)
    old = _prov(prev_dir) if prev_dir is not None else {}
    budget = _budget_stage_labels(records)
    sel_new = {i for i, r in new.items() if r["status"] == "selected"}
    sel_old = {i for i, r in old.items() if r["status"] == "selected"}
    added = [{"id": i, "why": "new_row" if i not in old else "newly_selected",
              "before": None if i not in old else old[i].get("reason")}
             for i in new if i in sel_new - sel_old]
    removed = []
    for i in (r for r in old if r in sel_old - sel_new):
        r = new.get(i)
        if r is None:
            removed.append({"id": i, "why": "source_removed", "stage": None, "detail": None, "dup_of": None})
            continue
        why = "displaced_by_budget" if r.get("stage") in budget else (r.get("reason") or r["status"])
        removed.append({"id": i, "why": why, "stage": r.get("stage"), "detail": r.get("reason"),
                        "dup_of": r.get("dup_of")})
    new_ids = [i for i in new if i not in old]
    outcome = Counter("selected" if new[i]["status"] == "selected" else f"{new[i]['status']}:{new[i].get('reason')}"
                      for i in new_ids)
    return {
        "version": version, "previous": previous,
        "n_selected_before": len(sel_old), "n_selected": len(sel_new),
        "n_added": len(added), "n_removed": len(removed),
        "pool": {"rows_before": len(old), "rows": len(new), "new_rows": len(new_ids),
                 "gone_rows": sum(1 for i in old if i not in new)},
        "why_counts": {"added": dict(Counter(a["why"] for a in added)),
                       "removed": dict(Counter(r["why"] for r in removed))},
        "new_rows": dict(sorted(outcome.items())),
        "added": added, "removed": removed,
    }


def render_markdown(ch: dict) -> str:
    """changelog.md: the counts, then the rows (up to ``MAX_LISTED`` of each list)."""
    prev = ch["previous"] or "nothing (first version)"
    lines = [f"# {ch['version']} (previous: {prev})", "",
             f"Selected: {ch['n_selected_before']} -> {ch['n_selected']} rows "
             f"(+{ch['n_added']} added, -{ch['n_removed']} removed).",
             f"Pool: {ch['pool']['rows_before']} -> {ch['pool']['rows']} rows "
             f"({ch['pool']['new_rows']} new, {ch['pool']['gone_rows']} gone from the source).", ""]
    if ch["new_rows"]:
        lines += ["## What happened to the new rows", "", "| outcome | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in ch["new_rows"].items()] + [""]
    for kind in ("added", "removed"):
        counts = ch["why_counts"][kind]
        if not counts:
            continue
        lines += [f"## {kind.capitalize()} ({ch['n_' + kind]})", "", "| why | rows |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(counts.items())] + [""]
        for r in ch[kind][:MAX_LISTED]:
            extra = "".join(f", {k} {r[k]}" for k in ("stage", "detail", "dup_of", "before") if r.get(k))
            lines.append(f"- `{r['id']}`: {r['why']}{extra}")
        if len(ch[kind]) > MAX_LISTED:
            lines.append(f"- ... {len(ch[kind]) - MAX_LISTED} more in changelog.json")
        lines.append("")
    if ch.get("row_cache"):
        lines += ["## Row cache", "", "| step | rows from cache | rows computed |", "|---|---|---|"]
        lines += [f"| {k} | {v['cached']} | {v['computed']} |" for k, v in ch["row_cache"].items()] + [""]
    return "\n".join(lines)


def write_changelog(ch: dict, out: Path) -> None:
    (out / "changelog.json").write_text(json.dumps(ch, indent=1, default=str))
    (out / "changelog.md").write_text(render_markdown(ch))
