"""Results JSON, markdown table and plots of a ``curate eval`` run."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from curate.eval import lengths
from curate.eval.generate import GEN_METRICS, HIGHER_IS_BETTER
from curate.eval.losses import METRICS, SPAN_METRIC
from curate.eval.stats import holm, paired_delta, verdict

log = logging.getLogger(__name__)
ALL_METRICS = METRICS + (SPAN_METRIC,) + GEN_METRICS  # report order


def better_side_p(stat: dict) -> float:
    """One-sided p for "the arm's loss is lower" from a two-sided paired-difference record.

    The intersection-union test of "better on every verdict set" takes the largest of these over the
    sets; a two-sided p would count a significant *worse* set as evidence (half the two-sided p when
    the difference points the better way, one minus half otherwise).

    Args:
        stat: a :func:`~curate.eval.stats.paired_delta` record of a loss (``delta``, ``p``).
    """
    p = float(stat.get("p", 1.0))
    return p / 2 if stat.get("delta", 0.0) < 0 else 1.0 - p / 2


def set_metrics(units: list, set_name: str) -> list[str]:
    """Metrics some unit has for ``set_name`` (losses of every set; ``answer`` and generation scores of some)."""
    return [m for m in ALL_METRICS if any(m in u["losses"].get(set_name, {}) for u in units)]


def _matrix(units: list, arm: str, set_name: str, metric: str) -> np.ndarray:
    # a unit finished before a metric existed (e.g. the answer-line NLL) has NaN for it: dropped as n/a
    rows = [u["losses"][set_name].get(metric, np.full(len(u["losses"][set_name]["full"]), np.nan))
            for u in units if u["arm"] == arm]
    return np.vstack(rows) if rows else np.zeros((0, 0))


def _direction(m: str) -> str:
    return "accuracy; positive = arm more accurate" if m in HIGHER_IS_BETTER else "loss; negative = lower loss"


def compare(cfg, units: list, sets: list, reference: str) -> dict:
    """{arm: {set: {metric: paired_delta}}} against ``reference`` plus verdicts and Holm p-values.

    The headline ``verdict`` is over ``verdict_sets`` (default: every set not out of target); the
    ``out_of_target`` sets (no arm selects toward them, nothing is tuned on them) get a verdict of
    their own, ``verdict_out_of_target``, that the headline never includes.
    """
    oot = list(getattr(cfg, "out_of_target", []) or [])
    vsets = cfg.verdict_sets or [s.name for s in sets if s.name not in oot]
    done = {u["arm"] for u in units}
    arms = [a["name"] for a in cfg.arms if a["name"] != reference and a["name"] in done]
    if reference not in done:
        arms = []
    out = {"reference": reference, "verdict_sets": vsets, "out_of_target": oot, "arms": {}}
    p_iut = {}
    metrics = {s.name: set_metrics(units, s.name) for s in sets}
    for arm in arms:
        per = {}
        for s in sets:
            per[s.name] = {m: paired_delta(_matrix(units, arm, s.name, m), _matrix(units, reference, s.name, m),
                                           n_boot=cfg.n_boot, higher_is_better=m in HIGHER_IS_BETTER)
                           for m in metrics[s.name]}
        full = {k: v["full"] for k, v in per.items()}
        ps = [better_side_p(full[s]) for s in vsets]
        p_iut[arm] = float(max(ps)) if ps else 1.0
        # a metric's verdict is over the verdict sets that carry it: a generation or GSM8K-only metric
        # counts only when its set is listed in verdict_sets ("not evaluated" otherwise)
        verdicts = {m: verdict({k: v[m] for k, v in per.items() if m in v}, [s for s in vsets if m in per[s]],
                               higher_is_better=m in HIGHER_IS_BETTER, reference=reference)
                    for m in ALL_METRICS if any(m in v for v in per.values())}
        out["arms"][arm] = {"sets": per, "verdict": verdicts}
        if oot:
            out["arms"][arm]["verdict_out_of_target"] = {
                m: verdict({k: v[m] for k, v in per.items() if m in v}, [s for s in oot if m in per[s]],
                           higher_is_better=m in HIGHER_IS_BETTER, reference=reference)
                for m in ALL_METRICS if any(m in per[s] for s in oot)}
    for arm, p in holm(p_iut).items():
        out["arms"][arm]["p_iut_holm"] = p
        out["arms"][arm]["p_iut"] = p_iut[arm]
    return out


def _fmt(r: dict) -> str:
    if not r or r.get("n_examples", 0) == 0:
        return "n/a"
    return f"{r['delta']:+.4f} [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"


def _verdict_cell(v: str, r: dict, m: str, over: list) -> str:
    """A verdict, with the MDE (largest over the sets ``over``) when it is "no detectable difference"."""
    if v == "no detectable difference":
        mdes = [r["sets"][s][m].get("mde", float("nan")) for s in over]
        v += f" (MDE ≈ {np.nanmax(mdes):.4f})" if np.isfinite(mdes).any() else ""
    return v


def _split_lines(results: dict) -> list[str]:
    """The scored / query split per eval set (sets with selection queries only)."""
    es = results.get("eval_sets") or {}
    if not any(e["n_queries"] for e in es.values()):
        return []
    lines = ["", "## Scored examples and selection queries (disjoint: checked before any unit ran)", "",
             "| set | style | scored | queries | query source |", "|---|---|---|---|---|"]
    for name, e in es.items():
        src = Path(e["query_path"]).name if e["query_path"] else "-"
        lines.append(f"| {name} | {e['style']} | {e['n_scored']} | {e['n_queries']} | {src} |")
    return lines + ["", "Ids of both per set: `results.json` → `eval_sets`."]


def markdown(cfg, results: dict, sets: list) -> str:
    units = results["units"]
    arms = [a["name"] for a in cfg.arms if any(u["arm"] == a["name"] for u in units)]
    lines = [f"# curate eval: {cfg.name}", "",
             f"Budget {cfg.budget} rows per arm; pool {results['pool_rows']} rows after decontamination "
             f"({results['decontamination']['dropped']} removed: {results['decontamination']['by_rule']}). "
             f"Wall time of this invocation {results['wall_seconds']:.0f} s.", ""]
    if not results.get("complete", True):
        lines += ["**Partial report: some units have not run yet** (rerun the same command to resume).", ""]
    oot = list(getattr(cfg, "out_of_target", []) or [])
    if oot:
        lines += [f"Out-of-target set(s) {', '.join(oot)}: no arm selects toward them and nothing is tuned on them; "
                  "they have their own verdict column, never part of the headline verdict.", ""]
    lines += ["## Arms", "", "| arm | seeds | rows | steps | target tokens (mean) | rows end cut (mean) | train s (mean) | "
              "eval s (mean) | final train loss (mean) |", "|---|---|---|---|---|---|---|---|---|"]
    for a in arms:
        us = [u for u in units if u["arm"] == a]
        cut = [u["rows_end_cut"] for u in us if "rows_end_cut" in u]  # absent in records older than the field
        lines.append(f"| {a} | {len(us)} | {us[0]['rows']} | {us[0]['steps']} | "
                     f"{np.mean([u['tokens']['target'] for u in us]):.0f} | {f'{np.mean(cut):.0f}' if cut else 'n/a'} | "
                     f"{np.mean([u['train_seconds'] for u in us]):.1f} | "
                     f"{np.mean([u['eval_seconds'] for u in us]):.1f} | {np.mean([u['train_losses'][-1] for u in us]):.4f} |")
    lines += ["", "`rows end cut`: training rows whose end-of-turn token `max_length` cut off, so they never "
              "teach the model to stop (long-response arms; compare the `end` losses below)."]
    lines += _split_lines(results) + lengths.markdown(results.get("selection_lengths"))
    few = [f"{a} ({sum(u['arm'] == a for u in units)})" for a in arms if sum(u["arm"] == a for u in units) < 3]
    if few:
        lines += ["", f"Note: arms with fewer than 3 seeds: {', '.join(few)}. The protocol asks for at least 3 per "
                  "arm (5 for random); with 1 seed the CI covers example sampling only, not seed noise."]
    base = results["base"]["losses"]
    cols = [(s, m) for s in sets for m in set_metrics(units + [results["base"]], s.name)]
    lines += ["", "## Mean per-example metrics (losses in nats/token, accuracies 0-1; base = untrained model)", "",
              "| arm | " + " | ".join(f"{s.name} ({s.style}) {m}" for s, m in cols) + " |",
              "|---|" + "---|" * len(cols)]
    lines.append("| base | " + " | ".join(f"{np.nanmean(base[s.name][m]):.4f}" if m in base[s.name] else "n/a"
                                        for s, m in cols) + " |")
    for a in arms:
        cells = []
        for s, m in cols:
            per_seed = np.nanmean(_matrix(units, a, s.name, m), axis=1)
            sd = f" ±{per_seed.std(ddof=1):.4f}" if len(per_seed) > 1 else ""
            cells.append(f"{per_seed.mean():.4f}{sd}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    ref0 = cfg.reference_arm
    if any(u["arm"] == ref0 for u in units):
        notes = []
        for s in sets:
            per_seed = np.nanmean(_matrix(units, ref0, s.name, "full"), axis=1)
            moved = float(np.nanmean(base[s.name]["full"]) - per_seed.mean())
            sd = float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan")
            flag = " **underpowered: moved < 5 seed SDs**" if np.isfinite(sd) and abs(moved) < 5 * sd else ""
            notes.append(f"{s.name}: {moved:+.4f} (seed SD {sd:.4f}){flag}")
        lines += ["", f"Movement of `{ref0}` from base (full loss, base − arm): " + "; ".join(notes)]
    for comp in results["comparisons"]:
        ref = comp["reference"]
        lines += ["", f"## Paired difference to `{ref}` (arm − {ref}; 95% CI, wider of two-level bootstrap and Welch)", ""]
        for m in ALL_METRICS:
            msets = [s for s in sets if any(m in r["sets"][s.name] for r in comp["arms"].values())]
            if not msets:
                continue
            vs = [s for s in comp["verdict_sets"] if any(s == x.name for x in msets)]
            oot = [s for s in comp.get("out_of_target", []) if any(s == x.name for x in msets)]
            lines += [f"**{m}** ({_direction(m)})", "", "| arm | " + " | ".join(s.name for s in msets) + " | verdict (" +
                      (", ".join(vs) or "no verdict set has it") + ") |" +
                      (f" out-of-target verdict ({', '.join(oot)}) |" if oot else ""),
                      "|---|" + "---|" * (len(msets) + 1 + bool(oot))]
            for a, r in comp["arms"].items():
                v = _verdict_cell(r["verdict"].get(m, "not evaluated"), r, m, vs)
                cell = f" {_verdict_cell(r.get('verdict_out_of_target', {}).get(m, 'not evaluated'), r, m, oot)} |" if oot else ""
                lines.append(f"| {a} | " + " | ".join(_fmt(r["sets"][s.name].get(m, {})) for s in msets) + f" | {v} |" + cell)
            lines.append("")
        if comp["arms"]:
            lines.append("Holm-adjusted intersection-union p (full loss, max over verdict sets): " +
                         ", ".join(f"{a} {r['p_iut_holm']:.3g}" for a, r in comp["arms"].items()))
    return "\n".join(lines) + "\n"


def plots(cfg, results: dict, sets: list, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    made = lengths.plot(results.get("selection_lengths"), out / "lengths.png")
    if made:
        files.append(made)
    comp = results["comparisons"][0]
    arms = list(comp["arms"])
    if not arms:
        return files
    fig, axes = plt.subplots(1, len(sets), figsize=(4 * len(sets), 0.6 * len(arms) + 2), squeeze=False)
    for ax, s in zip(axes[0], sets):
        for y, a in enumerate(arms):
            r = comp["arms"][a]["sets"][s.name]["full"]
            if r.get("n_examples", 0):
                ax.errorbar(r["delta"], y, xerr=[[r["delta"] - r["ci"][0]], [r["ci"][1] - r["delta"]]], fmt="o", capsize=3)
        ax.axvline(0, color="grey", lw=1)
        ax.set_yticks(range(len(arms)), arms)
        ax.set_title(f"{s.name} ({s.style})")
        ax.set_xlabel(f"Δ full loss vs {comp['reference']}")
    fig.tight_layout()
    p = out / "deltas.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))
    fig, ax = plt.subplots(figsize=(6, 4))
    for a in [x["name"] for x in cfg.arms]:
        curves = [u["train_losses"] for u in results["units"] if u["arm"] == a]
        if not curves:
            continue
        L = min(len(c) for c in curves)
        ax.plot(np.arange(1, L + 1), np.mean([c[:L] for c in curves], axis=0), label=a)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (response tokens, mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / "loss_vs_step.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(str(p))
    return files


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return f"<{type(o).__name__}>" if not isinstance(o, (str, int, float)) else o


def _mean(v) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else None  # None (JSON null), not a NaN warning


def write_report(cfg, out: Path, results: dict, sets: list) -> dict:
    """Compute comparisons, write results.json, report.md and plots; return the results dict."""
    refs = [cfg.reference_arm, *cfg.compare_also]
    results["comparisons"] = [compare(cfg, results["units"], sets, r) for r in refs]
    md = markdown(cfg, results, sets)
    (out / "report.md").write_text(md)
    results["plots"] = plots(cfg, results, sets, out)
    slim = {k: v for k, v in results.items() if k not in ("units", "base")}
    slim["config"] = cfg.model_dump()
    slim["units"] = [{k: v for k, v in u.items() if k != "losses"} for u in results["units"]]
    slim["base"] = {k: v for k, v in results["base"].items() if k != "losses"}
    slim["base"]["means"] = {s: {m: _mean(v) for m, v in d.items() if m in ALL_METRICS}
                             for s, d in results["base"]["losses"].items()}
    for u, full in zip(slim["units"], results["units"]):
        u["means"] = {s: {m: _mean(v) for m, v in d.items() if m in ALL_METRICS} for s, d in full["losses"].items()}
    slim["decontamination"] = {k: v for k, v in results["decontamination"].items() if k != "dropped_ids"}
    (out / "results.json").write_text(json.dumps(slim, indent=1, default=_json_default))
    results["report_md"] = md
    results["output_dir"] = str(out)
    return results
