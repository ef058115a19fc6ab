"""OpenVINO's CPU runtime against onnxruntime on the shipped MiniLM ONNX export (same run).

Issue 12 needs ~1.45x more embedding speed than the fp32 ONNX default gives on a 2-core AVX2
CPU. OpenVINO reads the same ``.onnx`` file, so the weights and the vectors stay the same; the
question is only whether its kernels are faster here. Variants, each on the same texts, the same
tokenisation (the export's ``tokenizer.json``, longest first, mean pooling, L2 norm):

- ``ort``: :func:`curate.embed.onnx_backend.encode_onnx` at the stage defaults (batch 1, one
  single-threaded run per core) -- the peer;
- ``ov_latency``: one OpenVINO infer request at a time, 2 threads, ``PERFORMANCE_HINT=LATENCY``;
- ``ov_2streams``: two streams, one request per worker thread (batch 1), the ORT default's shape;
- ``ov_2streams_b4``: the same with batches of 4 (longest first, so little padding);
- ``torch``: sentence-transformers MiniLM at the ``embed`` stage's torch defaults (batch 64), for
  the machine's onnx-vs-torch ratio in the same run.

All at f32 inference precision (``INFERENCE_PRECISION_HINT=f32``; OpenVINO would pick bf16 on a
CPU that has it). Alternating rounds, best round kept; ratio = ort seconds / variant seconds;
agreement = cosine of each row's vector to ort's.

    pip install -c constraints.txt openvino   # not a curate dependency
    python benchmarks/embed_openvino.py [DATA_DIR] [--rows 400]

Writes runs/bench/embed_openvino/embed_openvino.{json,md} (``--record``: benchmarks/results/).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from alpaca_full import cpu_info  # noqa: E402
from results_io import add_record_flag, data_dir, write_results

F32 = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 2}
VARIANTS = {"ov_latency": ({**F32, "PERFORMANCE_HINT": "LATENCY"}, 1, 1),
            "ov_2streams": ({**F32, "NUM_STREAMS": 2}, 2, 1),
            "ov_2streams_b4": ({**F32, "NUM_STREAMS": 2}, 2, 4)}  # (config, workers, batch)


def ov_encode(compiled, encs: list, meta: dict, workers: int, batch: int) -> np.ndarray:
    """Mean-pooled, L2-normalised vectors of pre-tokenised rows through an OpenVINO compiled model."""
    out = np.zeros((len(encs), meta["dim"]), np.float32)
    order = np.argsort([-len(e.ids) for e in encs], kind="stable")
    starts = list(range(0, len(order), batch))

    def worker(w: int) -> None:
        req = compiled.create_infer_request()  # one request per thread: requests are not thread-safe
        for start in starts[w::workers]:
            idx = order[start:start + batch]
            L = max(len(encs[r].ids) for r in idx)
            ids = np.zeros((len(idx), L), np.int64)
            att, typ = np.zeros_like(ids), np.zeros_like(ids)
            for j, r in enumerate(idx):
                n = len(encs[r].ids)
                ids[j, :n], att[j, :n], typ[j, :n] = encs[r].ids, 1, encs[r].type_ids
            feeds = {"input_ids": ids, "attention_mask": att, "token_type_ids": typ}
            hidden = next(iter(req.infer({k: feeds[k] for k in meta["inputs"]}).values()))
            m = att[:, :, None].astype(np.float32)
            out[idx] = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="?", type=Path, default=data_dir())
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=2)
    add_record_flag(ap)
    a = ap.parse_args()
    import openvino as ov

    import curate.embed.onnx_backend as ob
    from curate.ingest.formats import render_text

    graph = ob.ensure_export()
    meta = json.loads((graph.parent / "curate_onnx.json").read_text())
    rows = json.loads((a.data / "instruct" / "alpaca_44k.json").read_text())
    idx = np.random.default_rng(1).permutation(len(rows))  # the rows of embed_onnx_variants.py
    texts = [t for t in (render_text(rows[i]["instruction"], rows[i].get("input"), rows[i]["output"])
                         for i in idx[:4 * a.rows]) if len(t) <= 1500][:a.rows]
    tok = ob._tokenizer(str(graph.parent / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(meta["max_seq_length"])
    encs = tok.encode_batch(texts, add_special_tokens=True)
    core = ov.Core()
    model = core.read_model(str(graph))
    compiled = {k: core.compile_model(model, "CPU", cfg) for k, (cfg, _, _) in VARIANTS.items()}
    from curate.embed.stage import Embed

    st = Embed(backend="sentence_transformers", show_progress=False)
    runs = {"ort": lambda: ob.encode_onnx(texts, batch_size=1)}
    for k, (_, w, b) in VARIANTS.items():
        runs[k] = lambda k=k, w=w, b=b: ov_encode(compiled[k], encs, meta, w, b)
    runs["torch"] = lambda: st.encode(texts)
    for f in runs.values():  # warm-up outside the timings (session and kernel creation)
        f()
    times: dict[str, list[float]] = {k: [] for k in runs}
    vecs = {}
    for _ in range(a.repeats):
        for k, f in runs.items():
            t0 = time.perf_counter()
            vecs[k] = f()
            times[k].append(time.perf_counter() - t0)
    res = {"cpu": cpu_info(), "rows": len(texts), "repeats": a.repeats, "openvino": ov.__version__, "variants": {}}
    for k in runs:
        cos = (vecs[k] * vecs["ort"]).sum(1)
        res["variants"][k] = {"seconds": min(times[k]), "all_seconds": times[k],
                              "speedup_vs_ort": min(times["ort"]) / min(times[k]),
                              "cos_vs_ort_min": float(cos.min()), "max_abs_diff": float(np.abs(vecs[k] - vecs["ort"]).max())}
    md = ["# OpenVINO vs onnxruntime on the MiniLM ONNX export (same run)", "",
          f"CPU: {res['cpu']}, 2 cores; OpenVINO {res['openvino']}, f32. {res['rows']} alpaca_44k rows (canonical "
          f"text, <= 1,500 chars), best of {res['repeats']} alternating rounds.", "",
          "| variant | seconds | speed-up vs ort | cos to ort (min) | max abs diff |", "|---|---|---|---|---|"]
    for k, r in res["variants"].items():
        md.append(f"| {k} | {r['seconds']:.2f} | {r['speedup_vs_ort']:.2f}x | {r['cos_vs_ort_min']:.6f} | {r['max_abs_diff']:.1e} |")
    write_results("embed_openvino", res, "\n".join(md))


if __name__ == "__main__":
    main()
