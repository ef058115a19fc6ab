"""Embedding backends side by side: speed against torch MiniLM in the same run, and quality.

Backends (all from the packaged all-MiniLM-L6-v2): ``torch`` (sentence-transformers, the peer),
``onnx`` (our torch.onnx export run by onnxruntime), ``onnx_int8`` (dynamic int8 quantisation
of every MatMul), ``onnx_int8_mixed`` (int8 but for the MatMuls measured to carry the error,
curate.embed.quantize), ``static`` (Model2Vec-style table distilled from it). Each at the stage's
default ``max_length`` (256 word pieces for the encoders, 512 tokens for static).

Speed (``--units speed``): the same N alpaca_44k rows rendered as the pool's canonical
``text``, every backend timed in alternating rounds in one process, best round kept; ratio =
torch seconds / backend seconds, and backend / onnx fp32. ``max_length`` 128 is timed the same
way for torch and onnx. ``torch_bf16`` (the torch model's weights in bfloat16, for CPUs with
avx512_bf16/AMX) is timed too, with its cosine to torch fp32, but is not a stage backend.
The CPU's int8 dot-product and bf16 flags are recorded: int8 pays only with VNNI.

Sensitivity (``--units sensitivity``): each MatMul of the fp32 export quantised to int8 alone
(``curate.embed.quantize.matmul_sensitivity``), 1 - mean cosine to fp32 on 300 alpaca rows;
the largest ones are what ``int8_mixed`` keeps in fp32.

Quality, tolerances fixed before the runs (docs/embeddings.md):

a. SemDeDup on QQP gold duplicate clusters (seeded subset of whole clusters, ~6,000 questions):
   pairwise F1 and ARI against the gold clusters over an eps grid; tolerance: best F1 within
   0.02 of torch's.
b. The learned scorer on CaR's APE pairs: embedding+heuristics logistic regression fitted on the
   4,064 train rows embedded by the backend (canonical text), C tuned on valid pairs, pairwise
   accuracy on the 254 test pairs; tolerance: within 1.5 points of torch's.
c. k-means (k = floor(sqrt(n/2)), spherical, seed 1234) on N alpaca rows: ARI between the
   backend's partition and torch's; tolerance: at least the ARI between two torch partitions that
   differ only in the k-means seed (1234 vs 4321), i.e. the backend moves the clusters no more
   than re-seeding does.

Embeddings are computed in resumable units (``--units qqp:torch,ape:onnx,...``) cached under
``--cache-dir`` with their wall time, so each unit fits one locked command on a shared machine;
``--units report`` computes the metrics and writes runs/bench/embed_backends/embed_backends.{md,json}
(``--record``: benchmarks/results/).

    python benchmarks/embed_backends.py [DATA_DIR] --units speed,qqp,ape,alpaca,report
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_cache import qqp_subset  # noqa: E402
from results_io import add_record_flag, data_dir, write_results

log = logging.getLogger("embed_backends")
BACKENDS = {"torch": {"backend": "sentence_transformers"}, "onnx": {"backend": "onnx"},
            "onnx_int8": {"backend": "onnx", "precision": "int8"},
            "onnx_int8_mixed": {"backend": "onnx", "precision": "int8_mixed"}, "static": {"backend": "static"}}
SPEED_ONLY = ("torch_bf16",)
EPS = (0.02, 0.05, 0.08, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
TOL_F1, TOL_APE = 0.02, 0.015


def encoder(name: str, max_length: int | None = None):
    if name == "torch_bf16":
        return torch_bf16_encoder(max_length)
    from curate.embed.stage import Embed

    st = Embed(**BACKENDS[name], max_length=max_length, device="cpu", show_progress=False)
    return lambda texts: st.encode(texts)


def torch_bf16_encoder(max_length: int | None = None):
    """The torch MiniLM with bfloat16 weights (its own copy: the stage's cached model stays fp32)."""
    import torch
    from sentence_transformers import SentenceTransformer

    from curate.models.loading import resolve_embedder

    st = SentenceTransformer(resolve_embedder(), device="cpu").to(torch.bfloat16)
    if max_length:
        st.max_seq_length = max_length

    def enc(texts):
        with torch.inference_mode():
            x = st.encode(texts, batch_size=64, convert_to_tensor=True, normalize_embeddings=True)
        return x.float().numpy()
    return enc


def cpu_summary() -> dict:
    """The flags that decide the embed default (int8 dot products) and the LM dtype (bf16)."""
    from curate.embed.quantize import int8_dot_flags
    from curate.models.loading import CPU_BF16_FLAGS, cpu_flags

    f = cpu_flags()
    vec = "avx512f" if "avx512f" in f else "avx2" if "avx2" in f else "no avx2"
    return {"vector": vec, "int8_dot": list(int8_dot_flags()), "bf16": sorted(x for x in CPU_BF16_FLAGS if x in f)}


def run_sensitivity(data: Path, cache: Path, n: int = 300) -> dict:
    from curate.embed.onnx_backend import encode_onnx, ensure_export
    from curate.embed.quantize import INT8_MIXED_FP32, matmul_sensitivity

    loss = matmul_sensitivity(ensure_export(), lambda g, t: encode_onnx(t, graph=g), alpaca_rows(data, n, seed=2))
    out = {"rows": n, "loss": loss, "kept_fp32": list(INT8_MIXED_FP32), "cpu": cpu_summary()}
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "sensitivity.json").write_text(json.dumps(out, indent=2))
    return out


def alpaca_rows(data: Path, n: int, seed: int = 0) -> list[str]:
    """Canonical ``text`` (what the embed stage sees) of a seeded subset of alpaca_44k."""
    from curate.ingest.formats import render_text

    rows = json.loads((data / "instruct" / "alpaca_44k.json").read_text())
    idx = np.sort(np.random.default_rng(seed).choice(len(rows), size=min(n, len(rows)), replace=False))
    return [render_text(rows[i]["instruction"], rows[i].get("input"), rows[i]["output"]) for i in idx]


def ape_texts(data: Path) -> dict[str, tuple[list[str], object]]:
    """Canonical texts of CaR's APE train rows (with labels) and valid/test pairs."""
    from score_common import load_pairs, load_scores

    from curate.ingest.formats import render_text

    def canon(f):
        return [render_text(a, x, o) for a, x, o in zip(f.instruction, f.input, f.output)]

    tr, y = load_scores(data, "train")
    out = {"train": (canon(tr), tr, y)}
    for split in ("valid", "test"):
        p, n = load_pairs(data, split)
        out[f"{split}_pos"], out[f"{split}_neg"] = (canon(p), p, None), (canon(n), n, None)
    return out


def cached_unit(cache: Path, name: str, fn):
    path = cache / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        return z["x"], float(z["seconds"])
    t0 = time.perf_counter()
    x = fn()
    if x is None:
        raise FileNotFoundError(f"{path}: run the embedding unit first")
    secs = time.perf_counter() - t0
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), x=x, seconds=secs)
    path.with_suffix(".tmp.npz").replace(path)
    log.info("%s: %d rows in %.1f s", name, len(x), secs)
    return x, secs


def run_speed(data: Path, n: int, repeats: int, cache: Path) -> dict:
    import torch

    texts = alpaca_rows(data, n, seed=1)
    variants = ([(b, None) for b in (*BACKENDS, *SPEED_ONLY)]
                + [("torch", 128), ("onnx", 128), ("onnx_int8", 128), ("onnx_int8_mixed", 128)])
    fns = {v: encoder(*v) for v in variants}
    for v, fn in fns.items():  # warm-up: loads, exports, distils once, outside the timings
        fn(texts[:8])
    times: dict = {v: [] for v in variants}
    for _ in range(repeats):
        for v, fn in fns.items():
            t0 = time.perf_counter()
            fn(texts)
            times[v].append(time.perf_counter() - t0)
    base, onnx = min(times[("torch", None)]), min(times[("onnx", None)])
    out = {"rows": len(texts), "repeats": repeats, "torch_threads": torch.get_num_threads(), "cpu": cpu_summary(),
           "variants": []}
    ref = {"torch": fns[("torch", None)](texts), "onnx": fns[("onnx", None)](texts)}
    for (b, ml), ts in times.items():
        cos = None
        if ml is None and b in ("torch_bf16", "onnx_int8", "onnx_int8_mixed"):  # how far the cheaper arithmetic moves
            c = (fns[(b, ml)](texts) * ref["torch" if b.startswith("torch") else "onnx"]).sum(1)
            cos = {"mean": float(c.mean()), "min": float(c.min())}
        out["variants"].append({"backend": b, "max_length": ml, "seconds": min(ts), "all_seconds": ts,
                                "rows_per_s": len(texts) / min(ts), "speedup_vs_torch": base / min(ts),
                                "speedup_vs_onnx": onnx / min(ts), "cos_to_fp32": cos})
    # What truncation does: token lengths of the texts, and how far 128 moves the embedding.
    from curate.embed.onnx_backend import _tokenizer, ensure_export

    tok = _tokenizer(str(ensure_export().parent / "tokenizer.json"))
    tok.no_truncation()
    lens = np.array([len(e.ids) for e in tok.encode_batch(texts)])
    a, b = encoder("onnx")(texts), encoder("onnx", 128)(texts)
    cos = (a * b).sum(1)
    out["token_lengths"] = {"median": float(np.median(lens)), "p90": float(np.percentile(lens, 90)),
                            "over_128": float((lens > 128).mean()), "over_256": float((lens > 256).mean())}
    out["cos_128_vs_256"] = {"mean": float(cos.mean()), "min": float(cos.min()),
                             "mean_over_128": float(cos[lens > 128].mean()) if (lens > 128).any() else None}
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "speed.json").write_text(json.dumps(out, indent=2, default=str))
    log.info("speed: %s", json.dumps(out["variants"], default=str))
    return out


def semdedup_groups(x: np.ndarray, eps_list, seed: int = 1234):
    from curate.cluster.faiss_utils import default_k
    from curate.cluster.kmeans import KMeans
    from curate.dedup.semantic import resolve_representatives, semdedup_scores

    cid, dist = KMeans(k=default_k(len(x)), seed=seed).fit_predict(x)
    m, match, order = semdedup_scores(x, cid, dist)
    return {e: resolve_representatives(m <= 1 - e, match, order) for e in eps_list}


def ape_accuracy(X: dict[str, np.ndarray], ape: dict) -> dict:
    from score_common import pairwise_accuracy

    from curate.score.quality_model import (
        QualityModel,
        compute_features,
        default_model_path,
    )

    H = {k: compute_features(ape[k][1], ("heuristics",)) for k in ape}
    feats = {k: np.concatenate([X[k].astype(np.float64), H[k]], axis=1) for k in ape}
    y = ape["train"][2]
    grid = []
    for C in C_GRID:
        m = QualityModel(features=("embedding", "heuristics"), C=C).fit(feats["train"], y)
        grid.append((pairwise_accuracy(m.decision(feats["valid_pos"]), m.decision(feats["valid_neg"])), C))
    va, C = max(grid)
    m = QualityModel(features=("embedding", "heuristics"), C=C).fit(feats["train"], y)
    te = pairwise_accuracy(m.decision(feats["test_pos"]), m.decision(feats["test_neg"]))
    # the shipped scorer (fitted on onnx fp32 vectors) reading this backend's vectors unchanged,
    # as a recipe's quality_model stage does with the pool's embedding column
    shipped = QualityModel.load(default_model_path())
    ship = (pairwise_accuracy(shipped.decision(feats["test_pos"]), shipped.decision(feats["test_neg"]))
            if X["train"].shape[1] == len(shipped.coef_) - H["train"].shape[1] else None)
    return {"C": C, "valid_acc": va, "test_acc": te, "shipped_test_acc": ship}


def report(data: Path, cache: Path, n_alpaca: int) -> None:
    from semdedup_quality import pairwise_prf
    from sklearn.metrics import adjusted_rand_score

    from curate.cluster.faiss_utils import default_k
    from curate.cluster.kmeans import KMeans

    texts, gold = qqp_subset(data)
    ape = ape_texts(data)
    res: dict = {"machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "cpu": cpu_summary(),
                 "backends": {}}
    sens = cache / "sensitivity.json"
    res["sensitivity"] = json.loads(sens.read_text()) if sens.exists() else None
    speed = json.loads((cache / "speed.json").read_text()) if (cache / "speed.json").exists() else None
    res["speed"] = speed
    torch_km = None
    for b in BACKENDS:
        r: dict = {}
        xq, tq = cached_unit(cache, f"qqp-{b}", lambda: None)
        g = semdedup_groups(xq, EPS)
        r["qqp"] = {"seconds": tq, "rows": len(xq), "by_eps": []}
        for e in EPS:
            p, rc, f = pairwise_prf(gold, g[e])
            r["qqp"]["by_eps"].append({"eps": e, "precision": p, "recall": rc, "f1": f,
                                       "ari": adjusted_rand_score(gold, g[e])})
        r["qqp"]["best_f1"] = max(x["f1"] for x in r["qqp"]["by_eps"])
        g2 = semdedup_groups(xq, EPS, seed=4321)  # the metric's own noise: another k-means seed
        r["qqp"]["best_f1_seed4321"] = max(pairwise_prf(gold, g2[e])[2] for e in EPS)
        X, secs = {}, 0.0
        src = b
        if b == "torch" and not all((cache / f"ape-{k}-torch.npz").exists() for k in ape):
            src = "onnx"  # see the note printed below: onnx fp32 reproduces torch to float rounding
            res["ape_torch_proxy"] = True
        for k in ape:
            X[k], s = cached_unit(cache, f"ape-{k}-{src}", lambda: None)
            secs += s
        r["ape"] = {**ape_accuracy(X, ape), "seconds": secs, "rows": sum(len(v) for v in X.values())}
        xa, ta = cached_unit(cache, f"alpaca-{b}", lambda: None)
        k = default_k(len(xa))
        part = KMeans(k=k, seed=1234).fit_predict(xa)[0]
        if b == "torch":
            torch_km = part
            r["alpaca"] = {"k": k, "rows": len(xa), "seconds": ta,
                           "ari_torch_seed_noise": adjusted_rand_score(part, KMeans(k=k, seed=4321).fit_predict(xa)[0])}
        else:
            r["alpaca"] = {"k": k, "rows": len(xa), "seconds": ta, "ari_vs_torch": adjusted_rand_score(torch_km, part)}
        res["backends"][b] = r
    t = res["backends"]["torch"]
    for b, r in res["backends"].items():
        r["within_tolerance"] = {
            "qqp_f1": r["qqp"]["best_f1"] >= t["qqp"]["best_f1"] - TOL_F1,
            "ape_acc": r["ape"]["test_acc"] >= t["ape"]["test_acc"] - TOL_APE,
            "alpaca_ari": b == "torch" or r["alpaca"]["ari_vs_torch"] >= t["alpaca"]["ari_torch_seed_noise"]}
    write_results("embed_backends", res, markdown(res), default=str)


def markdown(res: dict) -> str:
    md = ["# Embedding backends vs torch MiniLM (same run)", ""]
    sp = res.get("speed")
    if sp:
        cpu = sp.get("cpu", res.get("cpu", {}))
        md += [f"Speed: {sp['rows']} alpaca_44k rows (canonical `text`), best of {sp['repeats']} alternating rounds, "
               f"CPU ({cpu.get('vector')}; int8 dot products: {', '.join(cpu.get('int8_dot', [])) or 'none'}; "
               f"bf16: {', '.join(cpu.get('bf16', [])) or 'none'}), torch threads {sp['torch_threads']}.", "",
               "| backend | max_length | seconds | rows/s | speed-up vs torch (256) | vs onnx fp32 (256) | cosine to fp32 mean / min |",
               "|---|---|---|---|---|---|---|"]
        for v in sp["variants"]:
            c = v.get("cos_to_fp32")
            md.append(f"| {v['backend']} | {v['max_length'] or 'default'} | {v['seconds']:.2f} | {v['rows_per_s']:.1f} | "
                      f"{v['speedup_vs_torch']:.2f}x | {v.get('speedup_vs_onnx', float('nan')):.2f}x | "
                      + (f"{c['mean']:.4f} / {c['min']:.4f} |" if c else "|"))
        tl, c = sp["token_lengths"], sp["cos_128_vs_256"]
        md += ["", f"Token lengths (MiniLM word pieces): median {tl['median']:.0f}, p90 {tl['p90']:.0f}; "
               f"{100 * tl['over_128']:.1f}% of rows exceed 128, {100 * tl['over_256']:.1f}% exceed 256. "
               f"Cosine between max_length 128 and 256 embeddings (onnx): mean {c['mean']:.4f}, min {c['min']:.4f}"
               + (f", mean over rows longer than 128: {c['mean_over_128']:.4f}." if c['mean_over_128'] else "."), ""]
    md += ["Quality (tolerances fixed before the runs: QQP best F1 within 0.02 of torch; APE test accuracy within "
           "1.5 points; k-means ARI vs torch at least torch's own seed-to-seed ARI):", "",
           "| backend | QQP best F1 (k-means seed 1234 / 4321) | QQP F1 @eps 0.1 / 0.25 / 0.35 | APE test acc (C) | "
           "shipped scorer APE test acc | alpaca k-means ARI vs torch | embed seconds qqp / ape / alpaca | within tolerance |",
           "|---|---|---|---|---|---|---|---|"]
    for b, r in res["backends"].items():
        f01 = " / ".join(f"{x['f1']:.3f}" for x in r["qqp"]["by_eps"] if x["eps"] in (0.1, 0.25, 0.35))
        ari = (f"{r['alpaca']['ari_vs_torch']:.3f}" if "ari_vs_torch" in r["alpaca"]
               else f"(seed noise: {r['alpaca']['ari_torch_seed_noise']:.3f})")
        ok = "all" if all(r["within_tolerance"].values()) else \
            "no: " + ", ".join(k for k, v in r["within_tolerance"].items() if not v)
        ship = r["ape"].get("shipped_test_acc")
        md.append(f"| {b} | {r['qqp']['best_f1']:.3f} / {r['qqp']['best_f1_seed4321']:.3f} | {f01} | {100 * r['ape']['test_acc']:.1f}% ({r['ape']['C']}) | "
                  f"{'-' if ship is None else f'{100 * ship:.1f}%'} | {ari} | {r['qqp']['seconds']:.0f} / {r['ape']['seconds']:.0f} / {r['alpaca']['seconds']:.0f} | {ok} |")
    if res.get("ape_torch_proxy"):
        md += ["", "APE for torch: not embedded separately in this run (shared-machine time); the onnx fp32 "
               "embeddings stand in for it, since they reproduce torch's to float rounding (QQP F1 identical at "
               "every eps, k-means ARI 1.0 above)."]
    sens = res.get("sensitivity")
    if sens:
        top = sorted(sens["loss"].items(), key=lambda kv: -kv[1])
        md += ["", f"Sensitivity: each MatMul quantised to int8 alone, 1 - mean cosine to fp32 on {sens['rows']} alpaca "
               f"rows (x 1e4), largest first; sum over all {len(top)}: {1e4 * sum(v for _, v in top):.1f}. "
               "int8_mixed keeps the marked ones in fp32.", "", "| MatMul | loss x 1e4 | int8_mixed |", "|---|---|---|"]
        md += [f"| {k.replace('/m/encoder/', '')} | {1e4 * v:.2f} | {'fp32' if k in sens['kept_fp32'] else 'int8'} |"
               for k, v in top[:12]]
    any_b = next(iter(res["backends"].values()))
    md += ["", f"QQP: {any_b['qqp']['rows']} questions; APE: {any_b['ape']['rows']} rows embedded; alpaca k-means: "
           f"{any_b['alpaca']['rows']} rows, k = {any_b['alpaca']['k']}.", ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir())
    ap.add_argument("--cache-dir", type=Path, default=Path("/tmp/curate-embed-backends"))
    ap.add_argument("--units", default="speed,qqp,ape,alpaca,report",
                    help="comma list of speed, sensitivity, report, or DATASET[:BACKEND] with DATASET in qqp/ape/alpaca")
    ap.add_argument("--n-speed", type=int, default=400)
    ap.add_argument("--n-alpaca", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=2)
    add_record_flag(ap)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for unit in a.units.split(","):
        ds, _, only = unit.partition(":")
        if ds == "speed":
            run_speed(a.data, a.n_speed, a.repeats, a.cache_dir)
        elif ds == "sensitivity":
            run_sensitivity(a.data, a.cache_dir)
        elif ds == "report":
            report(a.data, a.cache_dir, a.n_alpaca)
        elif ds in ("qqp", "ape", "alpaca"):
            for b in ([only] if only else list(BACKENDS)):
                enc = encoder(b)
                if ds == "qqp":
                    texts = qqp_subset(a.data)[0]
                    cached_unit(a.cache_dir, f"qqp-{b}", lambda: enc(texts))
                elif ds == "alpaca":
                    texts = alpaca_rows(a.data, a.n_alpaca)
                    cached_unit(a.cache_dir, f"alpaca-{b}", lambda: enc(texts))
                else:
                    for k, (texts, _, _) in ape_texts(a.data).items():
                        cached_unit(a.cache_dir, f"ape-{k}-{b}", lambda: enc(texts))
        else:
            raise SystemExit(f"unknown unit {unit!r}")


if __name__ == "__main__":
    main()
