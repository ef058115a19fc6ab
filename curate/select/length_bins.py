"""Response-length bins for ``length_neutral`` selection (every :class:`~curate.select.base.BudgetSelector`).

Why: on the alpaca 1k evaluation (docs/evaluation.md) the methods that pick long responses win on
long-answer references (GPT-4) and lose on short ones, and random rows matched to their lengths
reproduce most of it (Zhao et al. 2024, "Long Is More for Alignment", arXiv 2402.04833, show the
length effect alone). A length-neutral selection keeps the pool's response-length distribution, so
whatever a method still gains is not the length prior.

How: the pool's response lengths (characters, or with ``length_unit: tokens`` the training
model's tokens: characters do not equalise tokens when a method prefers code or lists, which
tokenise denser) are cut at their quantiles into ``bins`` bins
(deciles by default; tied quantiles merge bins), the budget is split over the bins in the pool's
proportions by largest remainder (exact total), and the method picks within every bin
(:meth:`~curate.select.base.BudgetSelector.select`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa

from curate.core.stage import StageContext
from curate.score.rows import row_fields

LENGTH_BIN_QUOTA = "length_bin_quota"
LENGTH_BIN_QUOTA_MEANING = ("length_neutral: the method ranks it within the budget, but its response-length "
                            "bin's share of the budget is already filled")


def response_texts(table: pa.Table) -> list[str]:
    """Every row's response text.

    The response is ``output`` where the row has one, else the *last* assistant message of
    ``messages``, else (a plain-text row) the whole ``text``. Instruction/input/output are read with
    :func:`curate.score.rows.row_fields`, as the eval's length-matched control does.

    Args:
        table: canonical table (``output``, ``messages``, ``text`` columns as present).
    """
    f = row_fields(table)
    outs = table.column("output").to_pylist() if "output" in table.column_names else [None] * len(table)
    msgs = table.column("messages").to_pylist() if "messages" in table.column_names else [None] * len(table)
    out = []
    for i in range(len(table)):
        last = None
        if outs[i] is None and msgs[i]:
            last = next((m.get("content") or "" for m in reversed(msgs[i]) if m.get("role") == "assistant"), None)
        out.append(last if last is not None else f.output[i] if f.structured[i] else f.text[i])
    return out


def response_chars(table: pa.Table) -> np.ndarray:
    """(n,) int64 response length in characters of every row (:func:`response_texts`)."""
    return np.array([len(t) for t in response_texts(table)], dtype=np.int64)


def response_tokens(table: pa.Table, tokenizer: str) -> np.ndarray:
    """(n,) int64 response length in ``tokenizer``'s tokens (no special tokens) of every row.

    Args:
        table: canonical table, as for :func:`response_texts`.
        tokenizer: tokenizer source (alias, HF id, folder or GGUF path; the proxy LM by default in
            the selectors), ideally the one of the model that will train on the selection.
    """
    from curate.score.tokens import count_tokens

    return count_tokens(response_texts(table), tokenizer)


def length_edges(lengths: np.ndarray, bins: int) -> np.ndarray:
    """Interior bin edges: the pool's ``1/bins ... (bins-1)/bins`` quantiles, duplicates merged.

    Args:
        lengths: (n,) response lengths of the pool.
        bins: number of quantile bins wanted (10 = deciles).

    Returns:
        (b-1,) sorted unique edges; a row of length L is in bin ``searchsorted(edges, L, "right")``,
        so a row equal to an edge goes to the upper bin. Fewer than ``bins`` bins when quantiles tie
        (e.g. many rows of the same length).
    """
    if len(lengths) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(np.asarray(lengths, dtype=np.float64), np.linspace(0, 1, bins + 1)[1:-1]))


def assign_bins(lengths: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(n,) int64 bin index of every length (see :func:`length_edges`)."""
    return np.searchsorted(edges, np.asarray(lengths, dtype=np.float64), side="right").astype(np.int64)


def bin_quotas(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` rows over bins in proportion to ``counts`` (largest remainder, exact total).

    Ties between equal remainders go to the lower bin. A quota never exceeds its bin's count
    (k <= counts.sum() gives k * c / n <= c, and rounding up stays <= c).

    Args:
        counts: (b,) rows per bin in the pool.
        k: rows to split, ``0 <= k <= counts.sum()``.

    Returns:
        (b,) int64 quotas summing to ``k``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be between 0 and the {n} rows of the bins")
    if n == 0:
        return np.zeros(len(counts), np.int64)
    share = counts * (k / n)
    take = np.floor(share).astype(np.int64)
    rest = k - int(take.sum())
    take[np.argsort(-(share - take), kind="stable")[:rest]] += 1
    return take


def fill_bins(order: np.ndarray, bin_of: np.ndarray, quota: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first ``quota[b]`` rows of bin b in ``order``, for every bin, kept in ``order``'s order.

    Args:
        order: (m,) int64 row indices, a method's pick order.
        bin_of: (n,) bin index of every row.
        quota: (b,) rows wanted per bin.

    Returns:
        ``(chosen, got)``: (<= quota.sum(),) rows in pick order, and (b,) rows found per bin
        (``got < quota`` where ``order`` holds too few rows of a bin).
    """
    order = np.asarray(order, dtype=np.int64)
    b = bin_of[order]
    keep = np.zeros(len(order), bool)
    got = np.zeros(len(quota), np.int64)
    for j, q in enumerate(quota):
        pos = np.flatnonzero(b == j)[:q]
        keep[pos] = True
        got[j] = len(pos)
    return order[keep], got


def bin_context(ctx: StageContext | None, j: int) -> StageContext | None:
    """``ctx`` with scratch and artifact folders of bin ``j`` (a method resuming from its scratch
    folder must not find another bin's state)."""
    if ctx is None:
        return None
    art = None if ctx.artifact_dir is None else ctx.artifact_dir / f"length_bin{j}"
    return dataclasses.replace(ctx, work_dir=ctx.work_dir / f"length_bin{j}", artifact_dir=art)


def scatter_rows(n: int, parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """One (n,) ledger column from per-bin pieces.

    Args:
        n: rows of the pool.
        parts: ``(rows, values)`` per bin the method ran on: (m,) row indices and (m,) values.

    Returns:
        (n,) array; rows of bins the method did not run on (quota 0) get a missing value: NaN
        (the column becomes float) for numbers, None (object) otherwise.
    """
    covered = sum(len(r) for r, _ in parts)
    dtype = np.result_type(*[v.dtype for _, v in parts])
    if covered < n:
        dtype = np.dtype(np.float64) if dtype.kind in "biuf" else np.dtype(object)
    out = np.full(n, np.nan if dtype.kind == "f" else None, dtype=dtype) if covered < n else np.empty(n, dtype=dtype)
    for rows, v in parts:
        out[rows] = v
    return out
