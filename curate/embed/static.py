"""Static (token-lookup) embeddings distilled from a sentence-transformers model, Model2Vec style.

Model2Vec (Tulkens & van Dongen 2024, "Model2Vec: Fast State-of-the-Art Static Embeddings",
github.com/MinishLab/model2vec) turns a sentence encoder into a table of one vector per
vocabulary token: every token t is run through the encoder alone as ``[CLS] t [SEP]`` and
mean-pooled; the (V, d) table is reduced by PCA (256 components) and each row weighted by
SIF on a Zipf prior over the vocabulary rank r (p_r proportional to 1 / (r + 2), weight
1e-4 / (1e-4 + p_r)), so frequent tokens count less. A text's embedding is the mean of its
tokens' rows (tokenised without special tokens, unknown tokens dropped), L2-normalised.

This module reimplements both halves in numpy/scipy instead of installing ``model2vec``: its
``distill`` extra pins transformers 5.3 (through skeletoken), which conflicts with ours
(issue 12). The one-time distillation runs the packaged MiniLM in torch (~20-60 s on 2 CPU
cores) and caches ``embeddings.npy`` + ``tokenizer.json`` under
``$CURATE_CACHE/models/static/<name>-<weights hash>-pca<d>/``; inference needs only the
``tokenizers`` library, numpy and scipy.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np

from curate.models.loading import DEFAULT_EMBEDDER, model_cache_dir, weights_fingerprint

log = logging.getLogger(__name__)

PCA_DIMS = 256
SIF_COEFFICIENT = 1e-4
STATIC_MAX_LENGTH = 512  # Model2Vec's default token limit


def static_dir(model: str | None = None, revision: str | None = None, pca_dims: int = PCA_DIMS) -> Path:
    """Cache folder of the static table distilled from ``model`` (keyed by its weights' hash)."""
    from curate.models.onnx_runtime import local_model_dir

    src = local_model_dir(model or DEFAULT_EMBEDDER, revision)
    name = Path(str(model or DEFAULT_EMBEDDER)).name.replace("/", "_")
    return model_cache_dir() / "static" / f"{name}-{weights_fingerprint(src)[:16]}-pca{pca_dims}"


def ensure_distilled(model: str | None = None, revision: str | None = None, pca_dims: int = PCA_DIMS,
                     batch_size: int = 512, show_progress: bool = False) -> Path:
    """Distil (once) and return the folder holding ``embeddings.npy``, ``tokenizer.json``, ``static.json``.

    Args:
        model: alias, HF id or local sentence-transformers folder (default all-MiniLM-L6-v2).
        revision: HF revision for hub models (default None).
        pca_dims: PCA components kept (default 256, Model2Vec's default).
        batch_size: tokens per forward pass during distillation (default 512).
        show_progress: tqdm bar over the vocabulary.
    """
    out = static_dir(model, revision, pca_dims)
    if (out / "static.json").is_file():
        return out
    from curate.models.onnx_runtime import local_model_dir

    _distill(local_model_dir(model or DEFAULT_EMBEDDER, revision), out, pca_dims, batch_size, show_progress)
    return out


def token_vectors(st, batch_size: int = 512, show_progress: bool = False) -> np.ndarray:
    """(V, d) float32: the encoder's mean-pooled output for ``[CLS] t [SEP]``, t over the vocabulary."""
    import torch
    from tqdm.auto import tqdm

    tok = st.tokenizer
    V = len(tok)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    enc = st[0].auto_model.eval()
    out = np.zeros((V, enc.config.hidden_size), np.float32)
    with torch.inference_mode():
        for a in tqdm(range(0, V, batch_size), desc="distil", disable=not show_progress, unit="batch"):
            ids = torch.arange(a, min(a + batch_size, V)).unsqueeze(1)
            parts = [ids] if cls is None else [torch.full_like(ids, cls), ids]
            parts += [] if sep is None else [torch.full_like(ids, sep)]
            x = torch.cat(parts, dim=1)
            h = enc(input_ids=x, attention_mask=torch.ones_like(x)).last_hidden_state
            out[a:a + len(ids)] = h.mean(dim=1).numpy()  # no padding: every row has the same length
    return out


def sif_weights(V: int, coefficient: float = SIF_COEFFICIENT) -> np.ndarray:
    """(V,) SIF weights a / (a + p_r) under a Zipf prior p_r proportional to 1 / (r + 2) (Model2Vec)."""
    inv = 1.0 / np.arange(2, V + 2, dtype=np.float64)
    p = inv / inv.sum()
    return (coefficient / (coefficient + p)).astype(np.float32)


def _distill(src: Path, out: Path, pca_dims: int, batch_size: int, show_progress: bool) -> None:
    from sentence_transformers import SentenceTransformer
    from sklearn.decomposition import PCA

    log.info("distilling static embeddings from %s into %s (one time)", src, out)
    st = SentenceTransformer(str(src), device="cpu")
    raw = token_vectors(st, batch_size, show_progress)
    dims = min(pca_dims, raw.shape[1])
    emb = PCA(n_components=dims, svd_solver="full", random_state=0).fit_transform(raw).astype(np.float32)
    emb *= sif_weights(len(emb))[:, None]
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "embeddings.npy", emb)
    st.tokenizer.backend_tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / "static.json").write_text(json.dumps({
        "source": str(src), "weights": weights_fingerprint(src), "vocab": len(emb), "dim": dims,
        "pca_dims": pca_dims, "sif_coefficient": SIF_COEFFICIENT, "unk_token_id": st.tokenizer.unk_token_id,
        "method": "model2vec-style: [CLS] t [SEP] mean pooled, PCA, SIF(Zipf)"}, indent=2))
    if out.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)


@lru_cache(maxsize=2)
def _load(folder: str):
    from tokenizers import Tokenizer

    meta = json.loads((Path(folder) / "static.json").read_text())
    return np.load(Path(folder) / "embeddings.npy"), Tokenizer.from_file(str(Path(folder) / "tokenizer.json")), meta


def encode_static(texts: list[str], model: str | None = None, *, revision: str | None = None,
                  max_length: int | None = None, normalize: bool = True, batch_size: int = 4096,
                  show_progress: bool = False) -> np.ndarray:
    """Embed texts as the mean of their tokens' static vectors.

    Args:
        texts: n strings.
        model: the sentence-transformers model the table is distilled from (default None =
            all-MiniLM-L6-v2); distilled and cached on first use.
        revision: HF revision for hub models (default None).
        max_length: tokens per text, special tokens not counted (default None = 512, Model2Vec's).
        normalize: L2-normalise rows (default True). A text with no known token gets zeros.
        batch_size: texts tokenised per call (default 4096; only bounds memory).
        show_progress: tqdm bar over batches.

    Returns:
        (n, d) float32 array (d = 256 for the default table).
    """
    import scipy.sparse as sp
    from tqdm.auto import tqdm

    folder = ensure_distilled(model, revision, show_progress=show_progress)
    emb, tok, meta = _load(str(folder))
    unk = meta.get("unk_token_id")
    out = np.zeros((len(texts), emb.shape[1]), np.float32)
    tok.no_padding()
    tok.enable_truncation(int(max_length or STATIC_MAX_LENGTH))
    for a in tqdm(range(0, len(texts), batch_size), desc="static embed", disable=not show_progress, unit="batch"):
        encs = tok.encode_batch(list(texts[a:a + batch_size]), add_special_tokens=False)
        ids = [np.asarray(e.ids, np.int64) for e in encs]
        if unk is not None:
            ids = [x[x != unk] for x in ids]
        counts = np.fromiter((len(x) for x in ids), np.int64, len(ids))
        indptr = np.concatenate([[0], np.cumsum(counts)])
        flat = np.concatenate(ids) if len(ids) else np.zeros(0, np.int64)
        # Sum of token rows as a sparse (texts x vocab) count matrix times the table.
        bag = sp.csr_matrix((np.ones(len(flat), np.float32), flat, indptr), shape=(len(ids), emb.shape[0]))
        out[a:a + len(ids)] = (bag @ emb) / np.maximum(counts, 1)[:, None]
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
