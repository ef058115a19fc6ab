"""Arms of an evaluation: how each (arm, seed) turns the pool into a training selection.

An arm is a dict (from YAML):

* ``method: random`` or any selection stage (``top_k``, ``d4``, ``car``, ``kmq``, ...) with its
  parameters under ``params``; run through :func:`curate.select` at the eval's budget. The seed is
  passed as the stage's ``seed`` when it has one (so random subsets differ per seed); a
  deterministic method gives the same rows for every seed and only the training seed varies.
* ``selection: PATH``: a fixed selection (a curate run's output dir or a data file).
* ``method: length_matched_random`` with ``match: ARM``: random rows stratified to the response-
  length deciles of arm ARM's selections (pooled over its seeds), separating "longer rows" from
  "better rows" (docs/evaluation.md).
* ``method: shuffled_responses``: a random subset whose responses are permuted among its rows, a
  negative control that must be worse than random (docs/evaluation.md, sanity run S3b).

* ``method: mixture`` with ``fractions: {SOURCE: share, ...}``: random rows with the given share per
  source (largest-remainder rounding), e.g. the dose-response series of sanity run S2 (docs/evaluation.md).

``pool_filter: {source: [...]}`` restricts the pool first (oracle / anti arms of the sanity run).

``query_targets: [SET, ...]`` (a targeted method: ``rds``, ``zipfit``): the method's ``targets`` are
the named eval sets' selection queries, one task per set (RDS+'s multi-task round-robin, Ivison et
al. 2025, arXiv 2503.01807); the queries are disjoint from every scored example
(:mod:`curate.eval.queries`).

``selection_only: true``: the arm's rows are built (e.g. as the ``match`` of a length-matched arm)
but it is never trained or reported.

Any budget method also takes ``length_neutral: true`` in ``params``: the budget is split over the
pool's response-length deciles (:mod:`curate.select.length_bins`).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.hashing import stable_hash
from curate.embed.quantize import PRECISION_ENV
from curate.score.rows import row_fields

CONTROL_METHODS = ("length_matched_random", "shuffled_responses", "mixture")


@contextmanager
def pinned_env(name: str, value: str):
    """``os.environ[name] = value`` inside the block (child processes inherit it), restored after."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def selection_hash(table: pa.Table) -> str:
    """Content hash of a selection: ids, prompts and responses in row order."""
    f = row_fields(table)
    return stable_hash([table.column("id").to_pylist(), f.instruction, f.input, f.output], n=24)


def filter_pool(pool: pa.Table, pool_filter: dict | None) -> pa.Table:
    """Rows whose columns take one of the listed values, e.g. ``{source: [gsm8k_train.jsonl]}``."""
    if not pool_filter:
        return pool
    mask = None
    for col, values in pool_filter.items():
        if col not in pool.column_names:
            raise KeyError(f"pool_filter: column {col!r} not in the pool; have {pool.column_names}")
        values = values if isinstance(values, list) else [values]
        m = pc.is_in(pool.column(col), value_set=pa.array(values, pool.column(col).type))
        mask = m if mask is None else pc.and_(mask, m)
    out = pool.filter(mask)
    if len(out) == 0:
        raise ValueError(f"pool_filter={pool_filter!r} keeps no rows")
    return out


def _read_selection(path: str) -> pa.Table:
    from curate.ingest import read as cio

    p = Path(path)
    if (p / "data").is_dir():
        import pyarrow.parquet as pq

        return pa.concat_tables([pq.read_table(f) for f in sorted((p / "data").glob("*.parquet"))])
    return cio.read_input(str(p)).table


def _stage_accepts_seed(method: str) -> bool:
    from curate.core.registry import get_stage

    return "seed" in get_stage(method).param_names()


def _output_lengths(table: pa.Table) -> np.ndarray:
    return np.array([len(o) for o in row_fields(table).output], dtype=np.int64)


def length_matched(pool: pa.Table, reference_lengths: np.ndarray, budget: int, seed: int, bins: int = 10) -> pa.Table:
    """Random rows whose response-length (characters) deciles match ``reference_lengths``'s.

    The pool is binned at the reference's decile edges; each bin gets ``budget`` x the reference's
    share of that bin (largest remainder), drawn uniformly; a short bin is topped up from its
    nearest neighbours so the arm always has ``budget`` rows.
    """
    rng = np.random.default_rng(seed)
    lens = _output_lengths(pool)
    edges = np.unique(np.quantile(reference_lengths, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_bin = np.searchsorted(edges, reference_lengths, side="right")
    pool_bin = np.searchsorted(edges, lens, side="right")
    nb = len(edges) + 1
    quota = np.bincount(ref_bin, minlength=nb) / len(reference_lengths) * budget
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take))[: budget - take.sum()]] += 1
    chosen = []
    avail = {b: list(rng.permutation(np.flatnonzero(pool_bin == b))) for b in range(nb)}
    short = 0
    for b in range(nb):
        got = avail[b][:take[b]]
        avail[b] = avail[b][take[b]:]
        chosen += got
        short += take[b] - len(got)
    for b in np.argsort(-take):  # top up from the bins the reference uses most
        while short and avail[b]:
            chosen.append(avail[b].pop())
            short -= 1
    if short:
        raise ValueError(f"length_matched_random: pool of {len(pool)} rows cannot supply budget={budget}")
    return pool.take(np.sort(np.asarray(chosen, dtype=np.int64)))


def mixture(pool: pa.Table, fractions: dict, budget: int, seed: int, column: str = "source") -> pa.Table:
    """Random rows with share ``fractions[v]`` of rows whose ``column`` is v (shares sum to 1)."""
    if not fractions or abs(sum(fractions.values()) - 1.0) > 1e-6 or min(fractions.values()) < 0:
        raise ValueError(f"mixture: fractions={fractions!r} must be non-negative shares summing to 1")
    rng = np.random.default_rng(seed)
    keys = sorted(fractions)
    quota = np.array([fractions[k] for k in keys]) * budget
    take = np.floor(quota).astype(int)
    take[np.argsort(-(quota - take))[: budget - take.sum()]] += 1
    col = np.asarray(pool.column(column).to_pylist(), dtype=object)
    idx = []
    for k, t in zip(keys, take):
        cand = np.flatnonzero(col == k)
        if t > len(cand):
            raise ValueError(f"mixture: {t} rows of {column}={k!r} wanted, the pool has {len(cand)}")
        idx.append(rng.choice(cand, size=t, replace=False))
    return pool.take(np.sort(np.concatenate(idx)))


def shuffled_responses(pool: pa.Table, budget: int, seed: int) -> pa.Table:
    """A random subset of ``budget`` rows with responses permuted among them (no row keeps its own)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(pool), size=budget, replace=False))
    sub = pool.take(idx)
    out = sub.column("output").to_pylist()
    # row base[i] gets the response of row base[i-1]: a random cyclic derangement (no row keeps its own)
    order = np.empty(budget, dtype=np.int64)
    base = rng.permutation(budget)
    order[base] = base[np.roll(np.arange(budget), 1)]
    new_out = [out[j] for j in order]
    i = sub.column_names.index("output")
    sub = sub.set_column(i, "output", pa.array(new_out, pa.string()))
    if "text" in sub.column_names:
        f = row_fields(sub)
        from curate.score.rows import car_string

        j = sub.column_names.index("text")
        sub = sub.set_column(j, "text", pa.array([car_string(a, x, o) for a, x, o in zip(f.instruction, f.input, new_out)]))
    return sub.drop_columns([c for c in ("messages",) if c in sub.column_names])


def make_selection(arm: dict, pool: pa.Table, budget: int, seed: int, *, cache_dir: str | None = None,
                   matched: dict | None = None, queries: dict | None = None) -> pa.Table:
    """The rows arm ``arm`` trains on for ``seed``.

    Args:
        arm: arm spec (see module docstring).
        pool: decontaminated pool.
        budget: rows per arm.
        seed: seed index.
        cache_dir: stage cache for :func:`curate.select` (feature columns reused across arms).
        matched: for ``length_matched_random``: {arm name: list of its selections}.
        queries: for ``query_targets``: {eval set name: list of query records}.
    """
    if arm.get("selection"):
        tab = _read_selection(arm["selection"])
        if len(tab) != budget:
            raise ValueError(f"arm {arm['name']!r}: selection {arm['selection']} has {len(tab)} rows, budget is {budget}")
        return tab
    method = arm.get("method")
    src = filter_pool(pool, arm.get("pool_filter"))
    if budget > len(src):
        raise ValueError(f"arm {arm['name']!r}: budget={budget} exceeds its pool of {len(src)} rows")
    if method == "mixture":
        return mixture(src, arm.get("fractions") or {}, budget, seed)
    if method == "shuffled_responses":
        return shuffled_responses(src, budget, seed)
    if method == "length_matched_random":
        ref = (matched or {}).get(arm.get("match"))
        if not ref:
            raise ValueError(f"arm {arm['name']!r}: match={arm.get('match')!r} must name an earlier arm")
        lens = np.concatenate([_output_lengths(t) for t in ref])
        return length_matched(src, lens, budget, seed)
    import curate

    params = dict(arm.get("params") or {})
    if arm.get("query_targets"):
        missing = [t for t in arm["query_targets"] if t not in (queries or {})]
        if missing:
            raise ValueError(f"arm {arm['name']!r}: query_targets {missing} have no queries")
        # records, not paths: the stage's cache key then follows the queries' content, not the output folder
        params["targets"] = {t: queries[t] for t in arm["query_targets"]}
    if _stage_accepts_seed(method) and "seed" not in params:
        params["seed"] = seed
    # the canonical view: the trainer reads curate's columns, whatever the pool's own layout; MiniLM
    # in fp32 whatever the CPU, so the rows (and the unit key) are the same on every host
    with pinned_env(PRECISION_ENV, "float32"):
        tab = curate.select(src, method=method, budget=budget, cache_dir=cache_dir, schema="canonical",
                            output="arrow", **params)
    if len(tab) != budget:
        raise ValueError(f"arm {arm['name']!r}: method {method!r} returned {len(tab)} rows, budget is {budget}")
    return tab


def describe(arm: dict) -> str:
    """Short human label of an arm spec."""
    bits = {k: v for k, v in arm.items() if k not in ("name", "seeds")}
    return json.dumps(bits, sort_keys=True, default=str)
