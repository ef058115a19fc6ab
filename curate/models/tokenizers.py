"""curate.models.tokenizers"""
from __future__ import annotations

import logging
from functools import lru_cache

log = logging.getLogger(__name__)


@lru_cache(maxsize=4)
def load_tokenizer(model: str):
    """A tokenizer for ``model`` (alias, HF id, folder or ``.gguf`` path), cached on disk.

    Args:
        model: as in :func:`curate.models.loading.resolve_proxy_lm`.

    Returns:
        a ``transformers`` tokenizer.
    """
    from transformers import AutoTokenizer

    from curate.cache.store import default_cache_dir
    from curate.core.hashing import stable_hash
    from curate.models.loading import resolve_proxy_lm

    where, gguf_file = resolve_proxy_lm(model)
    if gguf_file is None:
        return AutoTokenizer.from_pretrained(where)
    # parsing a GGUF's vocabulary is slow; keep a converted copy keyed by the file's identity
    from pathlib import Path

    src = Path(where) / gguf_file
    st = src.stat()
    saved = default_cache_dir() / "tokenizers" / stable_hash([str(src), st.st_size, st.st_mtime_ns])
    if (saved / "tokenizer_config.json").is_file():
        try:
            return AutoTokenizer.from_pretrained(str(saved))
        except Exception as e:  # a damaged copy: rebuild it from the GGUF
            log.warning("token_count: cached tokenizer at %s unreadable (%s); rebuilding", saved, e)
    tok = AutoTokenizer.from_pretrained(where, gguf_file=gguf_file)
    tmp = saved.with_name(saved.name + ".tmp")
    tok.save_pretrained(str(tmp))
    if not saved.exists():
        tmp.rename(saved)
    return tok
