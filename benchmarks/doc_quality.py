"""Train the shipped ``doc_quality`` fastText classifier and measure it on DCLM's human labels.

Data (DATA = $CURATE_DATA by default, see docs/data.md):
  * evaluation: DCLM's human-labelled web pages (label 1 = good). ``agreement`` (281 pages, both
    annotators agree) is the TEST set: no agreement page is used for training or for any
    choice. ``majority-only`` (the 218 pages of the majority file that are not agreement pages)
    is the DEV set: the recipe was chosen on it, and its pages (with their labels) are in the
    shipped model's training set, so its AUC is reported from 5-fold cross-fitting (each fold
    scored by a model trained without that fold).
  * training: positives = Dolly-15k contexts (mostly Wikipedia passages, >= 200 chars, CC BY-SA
    3.0) and the good majority-only pages; negatives = the bad majority-only pages, repeated to
    balance the classes (``--recipe``; the data card explains the choice).

Baselines in the same run, on the same pages: document length (characters), SmolLM2
``-ppl_text`` (settings of the shipped perplexity cut-offs, on a seeded sample of ``--ppl-rows``
agreement pages: a loaded 2-core CPU scores a few pages a minute), the ppl bucket, the shipped
``quality_model`` scorer (fitted on instruction data: out of domain), the ``h_stop_words``
heuristic, and random scores. AUC with a 95% percentile-bootstrap interval (2,000 resamples).

Usage:
  nice -n 10 .venv/bin/python benchmarks/doc_quality.py [DATA] [--write-asset --record] > /tmp/dq.log 2>&1 &
Expensive features are cached under ``--cache-dir`` (resumable). Writes
runs/bench/doc_quality/doc_quality.json (``--record``: benchmarks/results/); ``--write-asset``
overwrites the shipped model in curate/assets/ and needs ``--record`` (or ``--force``).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import add_record_flag, data_dir, output_dir

from curate.score.doc_quality import (
    default_model_path,
    meta_path,
    train_doc_quality,
    train_doc_quality_file,
)
from curate.score.heuristics import heuristics_matrix
from curate.score.perplexity_bucket import (
    BUCKETS,
    assign_buckets,
    corpus_hash,
    load_cutoffs,
    reference_perplexities,
)

log = logging.getLogger("benchmarks.doc_quality")
N_BOOT = 2000


def load_dclm(data: Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """{"agreement": (texts, labels), "majority_only": (texts, labels)}; the second excludes the first."""
    def read(name):
        with open(data / "quality" / f"dclm_human_quality_{name}.jsonl") as fh:
            rows = [json.loads(line) for line in fh]
        return [r["text"] for r in rows], np.array([int(r["label"]) for r in rows])

    agr_t, agr_y = read("agreement")
    maj_t, maj_y = read("majority")
    seen = set(agr_t)
    keep = [i for i, t in enumerate(maj_t) if t not in seen]
    return {"agreement": (agr_t, agr_y), "majority_only": ([maj_t[i] for i in keep], maj_y[keep])}


def dolly_contexts(data: Path, min_chars: int = 200) -> list[str]:
    """Distinct Dolly-15k contexts of at least ``min_chars`` characters, in file order."""
    rows = json.loads((data / "instruct" / "dolly_15k.json").read_text())
    return list(dict.fromkeys(t for t in ((r.get("input") or "").strip() for r in rows) if len(t) >= min_chars))


def training_set(pos: list[str], dev_texts: list[str], dev_y: np.ndarray, recipe: str) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels of a recipe.

    ``wiki_vs_web``: Dolly contexts (good) against every dev page as unlabelled web text (bad),
    DCLM's own layout (reference text vs random web pages). ``wiki_plus_labels``: Dolly
    contexts and good dev pages (good) against bad dev pages (bad). Negatives are repeated to
    about as many rows as the positives.
    """
    if recipe == "wiki_vs_web":
        good, bad = list(pos), list(dev_texts)
    elif recipe == "wiki_plus_labels":
        good = list(pos) + [t for t, y in zip(dev_texts, dev_y) if y == 1]
        bad = [t for t, y in zip(dev_texts, dev_y) if y == 0]
    elif recipe == "labels_only":
        good = [t for t, y in zip(dev_texts, dev_y) if y == 1]
        bad = [t for t, y in zip(dev_texts, dev_y) if y == 0]
    else:
        raise ValueError(f"recipe must be wiki_vs_web, wiki_plus_labels or labels_only, got {recipe!r}")
    bad = bad * max(1, round(len(good) / max(len(bad), 1)))
    return good + bad, np.r_[np.ones(len(good), int), np.zeros(len(bad), int)]


def auc(s: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s))


def auc_ci(s: np.ndarray, y: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """AUC and its 95% percentile-bootstrap interval (resampling pages with replacement).

    A NaN score (a heuristic that means nothing for a page, e.g. stop words of a page in
    Japanese) ranks the page last.
    """
    s, y = np.asarray(s, float), np.asarray(y)
    if np.isnan(s).any():
        s = np.where(np.isnan(s), np.nanmin(s) - 1.0, s)
    rng = np.random.default_rng(seed)
    boots = []
    while len(boots) < n_boot:
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            boots.append(auc(s[idx], y[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return auc(s, y), float(lo), float(hi)


def cross_fit(pos: list[str], texts: list[str], y: np.ndarray, recipe: str, work: Path, k: int = 5) -> np.ndarray:
    """Out-of-fold P(good) for ``texts``: fold i scored by a model trained without fold i."""
    from sklearn.model_selection import StratifiedKFold

    out = np.full(len(texts), np.nan)
    for i, (tr, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=0).split(texts, y)):
        tt, ty = training_set(pos, [texts[j] for j in tr], y[tr], recipe)
        m = train_doc_quality(tt, ty, work / f"fold{i}.ftz")
        out[te] = m.predict_proba([texts[j] for j in te])
    return out


def ppl_sample(n_total: int, n: int, seed: int = 0) -> np.ndarray:
    """Sorted seeded sample of ``n`` row indices (all rows when n >= n_total)."""
    return np.arange(n_total) if n >= n_total else np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def page_ppl(texts: list[str], cache: Path, settings: dict | None = None) -> np.ndarray:
    """SmolLM2 ``ppl_text`` with the shipped cut-offs' settings (or ``settings``), cached and resumable."""
    s = settings or load_cutoffs()["perplexity"]
    work = cache / f"ppl_{corpus_hash(texts)[:16]}-{s['model']}-L{s['max_length']}-{s['dtype']}"
    return reference_perplexities(texts, work, model=s["model"], max_length=s["max_length"], dtype=s["dtype"],
                                  shard_rows=8)[0]


def quality_scores(texts: list[str], cache: Path) -> np.ndarray:
    """The shipped ``quality_model`` scorer on plain-text rows (MiniLM: cached)."""
    from curate.score.quality_model import QualityModel
    from curate.score.quality_model import default_model_path as qm_path
    from curate.score.rows import RowFields

    path = cache / f"quality_{corpus_hash(texts)[:16]}.npy"
    if path.exists():
        return np.load(path)
    n = len(texts)
    q = QualityModel.load(qm_path()).score(RowFields([""] * n, [""] * n, [""] * n, list(texts), np.zeros(n, bool)))
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, q)
    return q


# Planted probes stored with the model (tests check the shipped file still scores them the same).
PROBES = [
    ("The mitochondrion is an organelle found in the cells of most eukaryotes. It generates most of the chemical "
     "energy needed to power the cell's biochemical reactions, stored in adenosine triphosphate (ATP)."),
    ("Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make glucose "
     "and release oxygen. It takes place mainly in the chloroplasts of leaf cells."),
    ("To repot a plant, water it a day before, loosen the root ball gently, and set it in a pot one size larger "
     "with fresh soil. Keep it out of direct sun for a week while the roots recover."),
    "Home | About | Contact | Login | Register | Cart (0) | Checkout | Privacy Policy | Terms of Use | Sitemap",
    "BUY CHEAP VIAGRA ONLINE!!! best price click here click here free shipping casino bonus win $$$ now now now",
    "Posted by admin on March 3, 2012 | 0 comments | Tags: news, stuff, misc | Leave a reply | Share on Facebook",
]


def write_labels(texts: list[str], labels: np.ndarray, path: Path) -> Path:
    """A ``text, label`` JSONL file (the training command's input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"text": t, "label": int(y)}, ensure_ascii=False) + "\n" for t, y in zip(texts, labels))
    return path


def fmt(r: tuple[float, float, float]) -> str:
    return f"{r[0]:.3f} [{r[1]:.3f}, {r[2]:.3f}]"


def ppl_section(ta: list[str], ya: np.ndarray, scores: dict[str, np.ndarray], n: int, cache: Path) -> dict:
    """SmolLM2 perplexity and its CCNet bucket on a seeded sample of ``n`` test pages, with the
    other scores' AUC on the same pages."""
    idx = ppl_sample(len(ta), n)
    ppl = page_ppl([ta[i] for i in idx], cache)
    bucket = assign_buckets(ppl, load_cutoffs()["cutoffs"]).astype(float)
    ys = ya[idx]
    auc_s = {"-ppl_text (SmolLM2)": auc_ci(-ppl, ys), "-ppl_bucket_id": auc_ci(-bucket, ys)}
    auc_s.update({k: auc_ci(v[idx], ys) for k, v in scores.items()})
    counts = {b: {"good": int(((bucket == i) & (ys == 1)).sum()), "bad": int(((bucket == i) & (ys == 0)).sum())}
              for i, b in enumerate(BUCKETS)}
    return {"n": len(idx), "good": int(ys.sum()), "auc": auc_s, "buckets": counts,
            "ppl_median_good": float(np.median(ppl[ys == 1])), "ppl_median_bad": float(np.median(ppl[ys == 0])),
            "ppl": ppl.tolist(), "labels": ys.tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir(), help="default: $CURATE_DATA (docs/data.md)")
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/curate_doc_quality"))
    ap.add_argument("--recipe", default="wiki_plus_labels")
    ap.add_argument("--ppl-rows", type=int, default=128, help="agreement pages scored by SmolLM2 (seeded sample)")
    ap.add_argument("--write-asset", action="store_true",
                    help="overwrite the shipped model in curate/assets/ (else the cache); needs --record or --force")
    ap.add_argument("--force", action="store_true", help="with --write-asset: overwrite it without --record")
    add_record_flag(ap)
    ap.add_argument("--no-quality", action="store_true", help="skip the quality_model baseline (MiniLM)")
    args = ap.parse_args()
    if args.write_asset and not (args.record or args.force):
        ap.error(f"--write-asset would overwrite the shipped model {default_model_path()}; "
                 "add --record (or --force) to do that on purpose")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    t0 = time.time()
    cache = args.cache_dir
    d = load_dclm(args.data)
    (ta, ya), (td, yd) = d["agreement"], d["majority_only"]
    pos = dolly_contexts(args.data)

    # 1. the shipped model: the recipe on Dolly contexts + every majority-only page (no agreement page)
    texts, labels = training_set(pos, td, yd, args.recipe)
    labels_file = write_labels(texts, labels, cache / f"train_{args.recipe}.jsonl")
    probe_file = write_labels(PROBES, np.zeros(len(PROBES)), cache / "probes.jsonl")
    out = default_model_path() if args.write_asset else cache / "doc_quality_fasttext.ftz"
    t1 = time.time()
    model = train_doc_quality_file(labels_file, out, probe=probe_file)
    train_s = time.time() - t1
    meta = json.loads(meta_path(out).read_text())
    meta["info"].update({"recipe": args.recipe, "positives": f"{len(pos)} Dolly-15k contexts (>= 200 chars, distinct) "
                         f"+ {int(yd.sum())} good DCLM majority-only pages",
                         "negatives": f"{int((yd == 0).sum())} bad DCLM majority-only pages, repeated "
                         f"x{int((labels == 0).sum() // max((yd == 0).sum(), 1))}",
                         "held_out": "all 281 DCLM agreement pages", "train_seconds": round(train_s, 1),
                         "labels_xxh3_128": corpus_hash([f"{y}\t{t}" for t, y in zip(texts, labels)])})
    meta_path(out).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")

    # 2. the training command reproduces the model: same file -> same predictions
    again = train_doc_quality_file(labels_file, cache / "repro.ftz", probe=probe_file)
    allt = ta + td
    p_ship, p_again = model.predict_proba(allt), again.predict_proba(allt)
    repro = {"max_abs_diff": float(np.abs(p_ship - p_again).max()),
             "same_bytes": out.read_bytes() == (cache / "repro.ftz").read_bytes()}

    # 3. scores on the TEST pages (agreement) and the DEV pages (majority-only)
    rng = np.random.default_rng(0)
    scores_t = {"doc_quality (shipped)": p_ship[:len(ta)],
                "length (chars)": np.array([len(t) for t in ta], float),
                "h_stop_words": heuristics_matrix(ta, ("h_stop_words",))[:, 0],
                "random": rng.random(len(ta))}
    scores_d = {f"doc_quality (5-fold cross-fit, {args.recipe})": cross_fit(pos, td, yd, args.recipe, cache / "cf"),
                "length (chars)": np.array([len(t) for t in td], float),
                "h_stop_words": heuristics_matrix(td, ("h_stop_words",))[:, 0],
                "random": rng.random(len(td))}
    if not args.no_quality:
        scores_t["quality_model (shipped, instruction data)"] = quality_scores(ta, cache)
        scores_d["quality_model (shipped, instruction data)"] = quality_scores(td, cache)
    res = {"test_agreement": {k: auc_ci(v, ya) for k, v in scores_t.items()},
           "dev_majority_only": {k: auc_ci(v, yd) for k, v in scores_d.items()}}

    # 4. other recipes trained on the same dev pages, evaluated once on the test pages (ablation)
    ablation = {}
    for recipe in ("wiki_plus_labels", "wiki_vs_web", "labels_only"):
        tt, ty = training_set(pos, td, yd, recipe)
        m = train_doc_quality(tt, ty, cache / f"ablation_{recipe}.ftz")
        ablation[recipe] = auc_ci(m.predict_proba(ta), ya)

    report = {"results": res, "ablation_test": ablation, "ppl_sample": None, "reproduction": repro, "model": {"path": out.name, "bytes": out.stat().st_size, **meta},
              "seconds": round(time.time() - t0, 1)}
    if args.ppl_rows:
        report["ppl_sample"] = ppl_section(ta, ya, scores_t, args.ppl_rows, cache)
    (output_dir(args) / "doc_quality.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    print(json.dumps({k: report[k] for k in ("results", "ablation_test", "ppl_sample", "reproduction")}, indent=1))


if __name__ == "__main__":
    main()
