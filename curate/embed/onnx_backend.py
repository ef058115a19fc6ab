"""ONNX Runtime backend for sentence-transformers models: texts -> (n, d) float32.

The packaged all-MiniLM-L6-v2 (or any local/hub sentence-transformers model with a BERT-style
encoder and mean or CLS pooling) is exported once with ``torch.onnx.export`` (TorchScript
exporter, opset 17, dynamic batch and sequence axes) and cached under
``$CURATE_CACHE/models/onnx/<name>-<weights hash>/``; ``precision="int8"`` and ``"int8_mixed"``
add dynamically int8-quantised copies (:mod:`curate.embed.quantize`, which also says what
``precision=None`` runs on this CPU).
Inference needs only onnxruntime and the ``tokenizers`` library: the tokenizer, pooling mode and
sequence limit are saved beside the graph, so later runs never load torch for this backend.

We do not use sentence-transformers' own ``backend="onnx"``: it needs ``optimum-onnx``, whose
pins downgrade transformers and break ``datasets`` in our environment (issue 12).

The pipeline mirrors sentence-transformers' ``encode``: tokenize with truncation at
``max_length`` (default the model's ``max_seq_length``), sort by length into batches (little
padding), run the encoder, mean-pool over the attention mask (or take CLS), L2-normalise, and
restore the input order.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np

from curate.embed.quantize import INT8_PRECISIONS
from curate.models.loading import DEFAULT_EMBEDDER, model_cache_dir, weights_fingerprint
from curate.models.onnx_runtime import (
    local_model_dir,
    ort_session,
    publish_dir,
    usable_cores,
)

log = logging.getLogger(__name__)

ONNX_PRECISIONS = (None, "float32", *INT8_PRECISIONS)
OPSET = 17


def export_dir(model: str | None = None, revision: str | None = None) -> Path:
    """Cache folder of the ONNX export of ``model`` (keyed by the weights' content hash)."""
    src = local_model_dir(model or DEFAULT_EMBEDDER, revision)
    name = Path(str(model or DEFAULT_EMBEDDER)).name.replace("/", "_")
    return model_cache_dir() / "onnx" / f"{name}-{weights_fingerprint(src)[:16]}"


def ensure_export(model: str | None = None, revision: str | None = None, precision: str | None = None) -> Path:
    """Export (once) and return the path of the ``.onnx`` graph for ``model`` at ``precision``.

    Args:
        model: alias, HF id or local sentence-transformers folder (default all-MiniLM-L6-v2).
        revision: HF revision for hub models (default None).
        precision: None/"float32" (the exported graph), or "int8" / "int8_mixed" (dynamic int8
            quantisation of every MatMul / of the weight MatMuls that tolerate it, made on first
            use; :func:`curate.embed.quantize.quantize_graph`). None here is the fp32 graph: the
            stage resolves its own None with :func:`curate.embed.quantize.default_precision`.

    Returns:
        Path to ``model.onnx`` or ``model_<precision>.onnx`` inside :func:`export_dir`.
    """
    if precision not in ONNX_PRECISIONS:
        raise ValueError(f"precision must be one of {ONNX_PRECISIONS} for the onnx backend, got {precision!r}")
    out = export_dir(model, revision)
    fp32 = out / "model.onnx"
    if not (fp32.is_file() and (out / "curate_onnx.json").is_file()):
        _export(local_model_dir(model or DEFAULT_EMBEDDER, revision), out)
    if precision in (None, "float32"):
        return fp32
    q = out / f"model_{precision}.onnx"
    if not q.is_file():
        from curate.embed.quantize import quantize_graph

        tmp = q.with_suffix(f".tmp{os.getpid()}.onnx")
        quantize_graph(fp32, tmp, precision)
        os.replace(tmp, q)  # readers see the whole graph or none
    return q


def _export(src: Path, out: Path) -> None:
    """torch.onnx.export of the encoder of the sentence-transformers model in ``src``."""
    import torch
    from sentence_transformers import SentenceTransformer

    log.info("exporting %s to ONNX under %s (one time)", src, out)
    st = SentenceTransformer(str(src), device="cpu")
    modules = [type(m).__name__ for m in st]
    pooling = st[1] if len(st) > 1 and type(st[1]).__name__ == "Pooling" else None
    mode = getattr(pooling, "pooling_mode", None) if pooling is not None else None
    if mode is None and pooling is not None:  # older sentence-transformers spell it as flags
        mode = "cls" if pooling.pooling_mode_cls_token else "mean" if pooling.pooling_mode_mean_tokens else None
    if mode not in ("mean", "cls") or any(m not in ("Transformer", "Pooling", "Normalize") for m in modules):
        raise NotImplementedError(f"onnx backend supports Transformer + mean/CLS Pooling [+ Normalize] models; "
                                  f"{src} has modules {modules} with pooling {mode!r}")
    encoder = st[0].auto_model.eval()
    if hasattr(encoder, "set_attn_implementation"):
        encoder.set_attn_implementation("eager")  # plain ops trace to a shape-generic graph
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in
                                               st.tokenizer.model_input_names else [])

    class _Encoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, *args):
            return self.m(**dict(zip(names, args))).last_hidden_state

    dummy = tuple(torch.ones(2, 8, dtype=torch.long) for _ in names)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with torch.inference_mode():
        torch.onnx.export(_Encoder(encoder), dummy, str(tmp / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={k: {0: "batch", 1: "seq"} for k in names + ["last_hidden_state"]})
    st.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    normalize = "Normalize" in modules
    meta = {"source": str(src), "weights": weights_fingerprint(src), "inputs": names, "pooling": mode,
            "normalize": normalize, "max_seq_length": int(st.max_seq_length),
            "dim": int(st.get_sentence_embedding_dimension()), "opset": OPSET, "torch": torch.__version__}
    (tmp / "curate_onnx.json").write_text(json.dumps(meta, indent=2))
    publish_dir(tmp, out)


@lru_cache(maxsize=4)
def _tokenizer(path: str):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(path)


def encode_onnx(texts: list[str], model: str | None = None, *, revision: str | None = None,
                max_length: int | None = None, normalize: bool = True, precision: str | None = None,
                batch_size: int = 64, threads: int | None = None, workers: int | None = None,
                show_progress: bool = False, graph: str | Path | None = None) -> np.ndarray:
    """Embed texts with the ONNX export of a sentence-transformers model.

    Args:
        texts: n strings.
        model: alias, HF id or path (default None = all-MiniLM-L6-v2 from its package).
        revision: HF revision for hub models (default None).
        max_length: token limit (default None = the model's ``max_seq_length``, 256 for MiniLM).
        normalize: L2-normalise rows (default True; a model with a Normalize module always is).
        precision: None/"float32", "int8" or "int8_mixed" (:func:`ensure_export`; None is fp32
            here, the stage resolves the CPU's default before calling).
        batch_size: texts per run (default 64).
        threads: onnxruntime intra-op threads per run (default None = cores / workers).
        workers: batches run at once from a thread pool on one session (onnxruntime releases the
            GIL in ``run``); None = one per core. Small batches barely use a second intra-op
            thread, so on few cores several single-threaded runs at once are faster. Each row's
            vector does not depend on it (rows never share a batch differently).
        show_progress: tqdm bar over batches.
        graph: run this ``.onnx`` file instead of ``model`` at ``precision`` (default None); it
            must sit in an export folder (tokenizer and ``curate_onnx.json`` beside it). For
            measurements of other quantisations (:func:`curate.embed.quantize.matmul_sensitivity`).

    Returns:
        (n, d) float32 array.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    graph = Path(graph) if graph is not None else ensure_export(model, revision, precision)
    meta = json.loads((graph.parent / "curate_onnx.json").read_text())
    workers = max(1, int(workers or usable_cores()))
    if threads is None and workers > 1:
        threads = max(1, usable_cores() // workers)
    sess = ort_session(str(graph), threads)
    tok = _tokenizer(str(graph.parent / "tokenizer.json"))
    limit = int(max_length or meta["max_seq_length"])
    out = np.zeros((len(texts), meta["dim"]), np.float32)
    if not texts:
        return out
    tok.no_padding()
    tok.enable_truncation(limit)
    encs = tok.encode_batch(list(texts), add_special_tokens=True)
    lengths = np.fromiter((len(e.ids) for e in encs), np.int64, len(encs))
    order = np.argsort(-lengths, kind="stable")  # longest first, as sentence-transformers does
    pad_id = tok.token_to_id("[PAD]") or 0

    def run_batch(start: int) -> None:
        idx = order[start:start + batch_size]
        L = int(lengths[idx].max())
        ids = np.full((len(idx), L), pad_id, np.int64)
        att = np.zeros((len(idx), L), np.int64)
        typ = np.zeros((len(idx), L), np.int64)
        for j, r in enumerate(idx):
            e = encs[r]
            ids[j, :lengths[r]] = e.ids
            att[j, :lengths[r]] = 1
            typ[j, :lengths[r]] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": att, "token_type_ids": typ}
        hidden = sess.run(None, {k: feeds[k] for k in meta["inputs"]})[0]  # (b, L, d)
        if meta["pooling"] == "cls":
            e = hidden[:, 0]
        else:
            m = att[:, :, None].astype(np.float32)
            e = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        out[idx] = e  # batches write disjoint rows

    starts = range(0, len(order), batch_size)
    bar = tqdm(total=len(order), desc="onnx embed", disable=not show_progress, unit="row", leave=False)
    if workers == 1:
        for start in starts:
            run_batch(start)
            bar.update(min(batch_size, len(order) - start))
    else:
        with ThreadPoolExecutor(workers) as pool:
            for start, _ in zip(starts, pool.map(run_batch, starts)):  # map re-raises a batch's error here
                bar.update(min(batch_size, len(order) - start))
    bar.close()
    if normalize or meta["normalize"]:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
