"""Prefect artifacts of curate's flow runs: what a Prefect user looks for in the UI's Artifacts tab.

Every ``curate`` flow run publishes, under stable keys so the UI's artifact history shows a
recipe's runs over time:

* ``curate-<recipe>`` (markdown): the funnel (rows in and out per step, top drop reasons,
  quarantine count), the output folder and hash, links to report.md, datamap.html and the
  dataset card (:func:`curate.report.run_report.funnel_markdown`);
* ``curate-<recipe>-stages`` (table): one row per step (rows in/out, drops by reason, cached,
  seconds).

``curate/refresh`` adds the version and its changelog summary to the markdown (a no-op run
publishes a one-line markdown saying so); ``curate/evaluate`` publishes ``curate-eval-<config>``
(markdown) and ``curate-eval-<config>-verdicts`` (table: reference, arm, metric, verdict, p).

Keys are lowercase letters, digits and dashes (Prefect's rule), made from the recipe's name.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from curate.report.run_report import funnel_markdown, stage_rows


def artifact_key(*parts: str) -> str:
    """``curate-<parts>`` as a valid Prefect artifact key (``"My Recipe_v2"`` -> ``curate-my-recipe-v2``)."""
    slug = "-".join(re.sub(r"[^a-z0-9]+", "-", str(p).lower()).strip("-") for p in parts if p)
    return f"curate-{slug}" if slug else "curate"


def _report(output_dir: str | Path) -> dict:
    return json.loads((Path(output_dir) / "report.json").read_text())


def publish_run(recipe: str, output_dir: str | Path, extra_markdown: str = "") -> dict[str, str]:
    """Publish a finished run's markdown and stages-table artifacts; returns {kind: key}.

    Args:
        recipe: the recipe's name (the key's suffix).
        output_dir: the run's output folder (its report.json is read).
        extra_markdown: markdown placed after the title (e.g. a refresh's version and changelog).
    """
    rep = _report(output_dir)
    key = artifact_key(recipe)
    md = funnel_markdown(rep, output_dir)
    if extra_markdown:
        head, _, rest = md.partition("\n\n")
        md = f"{head}\n\n{extra_markdown.strip()}\n\n{rest}"
    c = rep["counts"]
    create_markdown_artifact(key=key, markdown=md,
                             description=f"{recipe}: {c['n_input']:,} rows -> {c['n_selected']:,} selected")
    create_table_artifact(key=f"{key}-stages", table=stage_rows(rep), description=f"{recipe}: rows per step")
    return {"markdown": key, "table": f"{key}-stages"}


def changelog_markdown(out: dict) -> str:
    """A refresh version's line and its changelog summary (from ``refresh_task``'s result)."""
    ch = out.get("changelog") or {}
    lines = [(f"**Version:** {out['version']} (previous: {ch.get('previous') or 'none, first version'}) · "
             f"{out['message']}"), "",
             f"**Changelog:** +{out.get('added', 0):,} added, -{out.get('removed', 0):,} removed"]
    why = ch.get("why_counts") or {}
    for kind in ("added", "removed"):
        if why.get(kind):
            lines.append(f"- {kind}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(why[kind].items())))
    if ch.get("pool"):
        p = ch["pool"]
        lines.append(f"- pool: {p['rows_before']:,} -> {p['rows']:,} rows ({p['new_rows']:,} new, "
                     f"{p['gone_rows']:,} gone from the source)")
    if out.get("path"):
        lines.append(f"- full changelog: [changelog.md]({(Path(out['path']) / 'changelog.md').resolve().as_uri()})")
    return "\n".join(lines)


def publish_refresh(recipe: str, out: dict) -> dict[str, str]:
    """Publish a refresh flow run: the version, its changelog summary and its funnel (or the no-op)."""
    if out.get("noop"):
        key = artifact_key(recipe)
        create_markdown_artifact(key=key, markdown=f"# curate: {recipe}\n\n**No-op:** {out['message']}\n",
                                 description=f"{recipe}: unchanged, latest {out['version']}")
        return {"markdown": key}
    return publish_run(recipe, out["path"], changelog_markdown(out))


def verdict_rows(comparisons: list[dict]) -> list[dict]:
    """One row per (reference, arm, metric): the verdict and the arm's Holm-adjusted p-value."""
    rows = []
    for c in comparisons:
        for arm, r in c.get("arms", {}).items():
            for metric, verdict in (r.get("verdict") or {}).items():
                rows.append({"reference": c["reference"], "arm": arm, "metric": metric, "verdict": verdict,
                             "p_holm": None if r.get("p_iut_holm") is None else round(float(r["p_iut_holm"]), 4)})
    return rows


def publish_eval(config_name: str, summary: dict) -> dict[str, str]:
    """Publish an evaluation flow run: its verdict table and a markdown pointing at the report."""
    key = artifact_key("eval", config_name)
    rows = summary.get("table") or []
    out = Path(summary.get("output") or ".").resolve()
    md = [f"# curate eval: {config_name}", "",
          f"**{summary.get('units', 0)}** (arm, seed) units reported; complete: **{summary.get('complete')}**", ""]
    if rows:
        md += ["| reference | arm | metric | verdict | p (Holm) |", "|---|---|---|---|---|"]
        md += [f"| {r['reference']} | {r['arm']} | {r['metric']} | {r['verdict']} | {r['p_holm']} |" for r in rows]
    report = out / "report.md"
    md += ["", f"**Report:** [{report}]({report.as_uri()})" if report.exists() else f"**Output:** `{out}`"]
    create_markdown_artifact(key=key, markdown="\n".join(md) + "\n", description=f"eval {config_name}")
    create_table_artifact(key=f"{key}-verdicts", table=rows or [{"verdict": "no comparison yet"}],
                          description=f"eval {config_name}: verdicts against the reference arm")
    return {"markdown": key, "table": f"{key}-verdicts"}
