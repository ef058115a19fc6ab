"""FineWeb's rule stages against DCLM's human quality labels (web pages, label 1 = good).

For each rule, each stage and FineWeb's whole rule set (gopher_repetition -> gopher_quality ->
c4_quality with its rewrite -> fineweb_quality, FineWeb's thresholds) applied alone to every
page: how many pages it keeps, precision (share of kept pages humans call good; compare with the
pool's share) and recall (share of good pages kept). Each rule's value is also scored as a
ranking (ROC AUC), its orientation fixed beforehand by the rule so that higher = keep: a "max"
rule's value is negated, a "min" rule's taken as is, the mean word length scored by closeness to
the middle of its 3-10 range, the word count as is (its lower bound is the one that binds).

Reference point (datatrove 0.10.1's FineWeb rules, measured by this project): 170 of the 281
agreement pages kept, 75.3% of them good (pool 54.1%), 84.2% of good pages kept; on the majority
file 300 of 499, 70.7% good, 77.9% of good kept. With ``--dt-python`` datatrove's chain is rerun
(through ``web_rules_parity.py --datatrove-side``) and its figures reported beside curate's.

Usage: python benchmarks/web_rules_vs_humans.py [--data "$CURATE_DATA"] [--dt-python PY] [--out DIR] [--record]

Writes ``<out>/web_rules_vs_humans.{md,json}``; ``--record`` also writes
``benchmarks/results/web_rules_vs_humans.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import data_dir

from curate.core.stage import StageContext
from curate.filters.c4 import C4Quality
from curate.filters.fineweb import FineWebQuality
from curate.filters.gopher import GopherQuality, GopherRepetition

#: rule -> orientation of its value as a keep score: "max" (negate), "min" (as is), "mid" (3-10 centre)
ORIENT = {"gopher_quality__n_words": "min", "gopher_quality__avg_word_length": "mid",
          "gopher_quality__alpha_words_ratio": "min", "gopher_quality__stop_words": "min",
          "c4_quality__sentences": "min", "fineweb_quality__line_punct_ratio": "min"}


def auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """ROC AUC of ``score`` for ``label`` (rows with NaN score left out; ties share ranks)."""
    from sklearn.metrics import roc_auc_score

    ok = np.isfinite(score)
    if ok.sum() < 2 or len(set(label[ok])) < 2:
        return None
    return float(roc_auc_score(label[ok], score[ok]))


def keep_score(col: str, v: np.ndarray) -> np.ndarray:
    kind = ORIENT.get(col, "max")
    v = v.astype(np.float64)
    if kind == "min":
        return v
    if kind == "mid":
        return -np.abs(v - 6.5)
    return -v


def pr(keep: np.ndarray, y: np.ndarray) -> dict:
    k = int(keep.sum())
    good_kept = int((keep & (y == 1)).sum())
    return {"kept": k, "precision": good_kept / k if k else None, "recall": good_kept / int((y == 1).sum())}


def evaluate(texts: list[str], y: np.ndarray, work: Path) -> dict:
    """Per-rule, per-stage and whole-rule-set figures on one labelled set (``work``: scratch folder)."""
    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    stages = [GopherRepetition(), GopherQuality(), C4Quality(), FineWebQuality()]
    out: dict = {"pool": {"pages": len(y), "good_share": float(y.mean())}, "stages": {}, "rules": {}}
    for st in stages:
        sel = st.select(table, StageContext(work_dir=work / f"{st.name}_{time.time_ns()}", show_progress=False))
        out["stages"][st.name] = pr(sel.keep, y)
        for col, v in sel.extras.items():
            if col.endswith("__pass") or f"{col}__pass" not in sel.extras:
                continue
            r = pr(sel.extras[f"{col}__pass"], y)
            r["auc"] = auc(keep_score(col, np.asarray(v)), y)
            r["orientation"] = ORIENT.get(col, "max")
            out["rules"][col] = r
    # FineWeb's chain: each stage sees what the previous kept, C4's rewrite applied
    alive = np.arange(len(texts))
    cur = np.array(texts, dtype=object)
    for st in stages:
        sub = pa.table({"id": [str(i) for i in alive], "text": list(cur[alive])})
        sel = st.select(sub, StageContext(work_dir=work / f"chain_{st.name}_{time.time_ns()}", show_progress=False))
        rw = getattr(sel, "rewrite", None) or {}
        if "text" in rw:
            cur[alive[sel.keep]] = rw["text"][sel.keep]
        alive = alive[sel.keep]
    keep = np.zeros(len(texts), dtype=bool)
    keep[alive] = True
    out["fineweb_rule_set"] = pr(keep, y)
    out["fineweb_rule_set_keep"] = keep.tolist()
    return out


def datatrove_chain(texts: list[str], dt_python: str, work: Path) -> np.ndarray:
    """datatrove 0.10.1's FineWeb chain keep flags (run in its own venv by web_rules_parity.py)."""
    work.mkdir(parents=True, exist_ok=True)
    inp, outp = work / "dt_in.jsonl", work / "dt_out.jsonl"
    with open(inp, "w") as f:
        f.writelines(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))
    script = Path(__file__).resolve().parent / "web_rules_parity.py"
    subprocess.run([dt_python, str(script), "--datatrove-side", str(inp), str(outp)], check=True)
    with open(outp) as f:
        recs = {r["id"]: r for r in map(json.loads, f)}
    return np.array([recs[str(i)]["chain"]["keep"] for i in range(len(texts))], dtype=bool)


def _f(x) -> str:
    return "—" if x is None else f"{100 * x:.1f}%"


def markdown(res: dict) -> str:
    lines = ["# FineWeb's rules vs DCLM human quality labels", ""]
    for name, r in res.items():
        p = r["pool"]
        lines += [f"## {name}: {p['pages']} pages, {_f(p['good_share'])} good", "",
                  "| filter | kept | precision (good among kept) | recall (good kept) |", "|---|---|---|---|"]
        fw = r["fineweb_rule_set"]
        lines.append(f"| **FineWeb rule set (curate)** | {fw['kept']} | {_f(fw['precision'])} | {_f(fw['recall'])} |")
        if "datatrove_rule_set" in r:
            d = r["datatrove_rule_set"]
            lines.append(f"| FineWeb rule set (datatrove 0.10.1) | {d['kept']} | {_f(d['precision'])} | "
                         f"{_f(d['recall'])} |")
            lines.append(f"| (pages where curate and datatrove disagree) | {r['chain_disagreements']} | | |")
        for s, v in r["stages"].items():
            lines.append(f"| stage {s} | {v['kept']} | {_f(v['precision'])} | {_f(v['recall'])} |")
        lines += ["", "| rule (alone) | kept | precision | recall | AUC of value (higher = keep) |",
                  "|---|---|---|---|---|"]
        for c, v in r["rules"].items():
            a = "—" if v["auc"] is None else f"{v['auc']:.3f}"
            lines.append(f"| {c} | {v['kept']} | {_f(v['precision'])} | {_f(v['recall'])} | {a} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--dt-python", default=None, help="python of a venv with datatrove==0.10.1 (optional)")
    ap.add_argument("--out", type=Path, default=Path("runs/web_rules_vs_humans"))
    ap.add_argument("--record", action="store_true", help="also write benchmarks/results/web_rules_vs_humans.{md,json}")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    res = {}
    for name in ("agreement", "majority"):
        with open(args.data / "quality" / f"dclm_human_quality_{name}.jsonl") as f:
            rows = [json.loads(line) for line in f]
        texts = [r["text"] for r in rows]
        y = np.array([r["label"] for r in rows])
        with tempfile.TemporaryDirectory(prefix="web_rules_vs_humans_") as tmp:
            r = evaluate(texts, y, Path(tmp))
        if args.dt_python:
            dk = datatrove_chain(texts, args.dt_python, args.out / name)
            r["datatrove_rule_set"] = pr(dk, y)
            r["chain_disagreements"] = int((dk != np.array(r["fineweb_rule_set_keep"])).sum())
        r.pop("fineweb_rule_set_keep")
        res[name] = r
    md = markdown(res)
    (args.out / "web_rules_vs_humans.json").write_text(json.dumps(res, indent=1))
    (args.out / "web_rules_vs_humans.md").write_text(md)
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_io import RESULTS, write_results
        write_results("web_rules_vs_humans", res, md, out=RESULTS, indent=1)
    else:
        print(md)


if __name__ == "__main__":
    main()
