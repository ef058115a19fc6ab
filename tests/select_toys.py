"""Planted tables and contract checks shared by the selection-method tests (not a test module).

Also holds the hand-written feedback factory that ``kmq_iterative`` tests name by string
(``"select_toys:make_feedback"``): pytest puts tests/ on sys.path, so it imports by that name.
"""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.schema import embedding_column
from curate.select.base import NOT_SELECTED

REPO = Path(__file__).resolve().parent.parent
DOLLY = REPO / "sample_data" / "dolly_2k.jsonl"
RAW_ROWS = 60  # every raw-rows test uses the same rows, so embed/quality run once per session

# One stage cache for the raw-rows tests of all selection modules: the MiniLM embedding and the
# quality scores of the same rows are computed once, not once per method.
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="curate-select-toys-"))
atexit.register(shutil.rmtree, SESSION_CACHE, True)


def blobs(sizes, d: int = 8, spread: float = 0.05, seed: int = 0):
    """Well-separated clusters: cluster j around 3 * e_j (j < d) with Gaussian noise.

    Returns:
        (x (n, d) float32, labels (n,) int64).
    """
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(sizes)), sizes)
    centers = 3.0 * np.eye(d)[np.arange(len(sizes)) % d]
    x = centers[labels] + spread * rng.normal(size=(len(labels), d))
    return x.astype(np.float32), labels.astype(np.int64)


def planted_table(x: np.ndarray, quality=None, tokens=None, cluster=None, seed: int = 0) -> pa.Table:
    """Canonical-shaped rows with an ``embedding`` column, ``quality``, ``n_tokens`` and texts."""
    n = len(x)
    rng = np.random.default_rng(seed + 1)
    if quality is None:
        quality = rng.normal(size=n)
    if tokens is None:
        tokens = rng.integers(5, 80, size=n)
    cols = {"id": [f"r{i}" for i in range(n)], "text": [f"row {i}" for i in range(n)],
            "instruction": [f"do {i}" for i in range(n)], "output": ["w " * int(t) for t in tokens],
            "source": ["toy"] * n, "embedding": embedding_column(np.asarray(x, np.float32)),
            "quality": pa.array(np.asarray(quality, np.float64)), "n_tokens": pa.array(np.asarray(tokens, np.int64))}
    if cluster is not None:
        cols["cluster_id"] = pa.array(np.asarray(cluster, np.int64))
    return pa.table(cols)


def check_budgets_and_reasons(stage_factory, table: pa.Table, own_reason: str, ctx_factory=None) -> None:
    """Exact count / fraction / token budgets, and every unselected row has a declared reason.

    Args:
        stage_factory: budget -> stage.
        table: planted rows with ``n_tokens``.
        own_reason: the method's reason code for unselected rows.
        ctx_factory: () -> StageContext (None passes ctx=None).
    """
    n = len(table)
    tokens = table.column("n_tokens").to_numpy()
    for budget, expected in ((37, 37), (0.1, round(0.1 * n)), (n, n), (1, 1)):
        st = stage_factory(budget)
        sel = st.check(st.select(table, ctx_factory() if ctx_factory else None), n)
        assert sel.n_kept == expected, (budget, sel.n_kept)
        dropped = sel.reason[~sel.keep]
        assert all(r in (own_reason, NOT_SELECTED) for r in dropped), set(dropped)
        assert (dropped == own_reason).all()  # the method names its own reason for every row
        assert all(r is None for r in sel.reason[sel.keep])
    limit = int(tokens.sum() // 5)
    st = stage_factory({"tokens": limit})
    sel = st.check(st.select(table, ctx_factory() if ctx_factory else None), n)
    used = int(tokens[sel.keep].sum())
    assert 0 < used <= limit
    # nearly full: within the largest rows' tokens of the limit (each method's own maximality
    # is checked in its test file)
    assert used > limit - 3 * int(tokens.max()), (used, limit)


def dolly_rows(n: int = RAW_ROWS) -> list[dict]:
    """The first ``n`` rows of sample_data/dolly_2k.jsonl (CC BY-SA 3.0, see sample_data/README.md)."""
    rows = []
    with open(DOLLY, encoding="utf-8") as fh:
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) == n:
                break
    return rows


def make_feedback(favour: int = 0, high: float = 4.0, low: float = 1.0, calls: list | None = None):
    """Factory of a hand-written feedback: cluster ``favour`` scores ``high``, the others ``low``."""

    def feedback(selected: pa.Table, cluster_ids: np.ndarray) -> dict[int, float]:
        assert len(selected) == len(cluster_ids)
        if calls is not None:
            calls.append(len(selected))
        return {int(c): (high if c == favour else low) for c in np.unique(cluster_ids)}

    return feedback


def run_recipe(method: str, tmp_path: Path, **stage_overrides):
    """Run ``configs/instruction/<method>.yaml`` on the raw test rows, through its ``extends:``.

    The recipe is copied next to a test ``base.yaml`` (input: the raw rows as JSONL, output in
    ``tmp_path``), so this checks the recipe's own stages whatever the shared base points at.
    ``stage_overrides`` update the method's stage (the last one), e.g. a smaller budget.

    Returns:
        (RunResult, provenance as a pandas DataFrame).
    """
    import pandas as pd
    import yaml

    import curate

    cfg = yaml.safe_load((REPO / "configs" / "instruction" / f"{method}.yaml").read_text())
    assert cfg["extends"] == "base.yaml" and cfg["stages"][-1]["type"] == method
    cfg["stages"][-1].update(stage_overrides)
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in dolly_rows()))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "test-base", "input": {"path": str(pool)},
                                                        "output": {"dir": str(tmp_path / "base-out")}}))
    (tmp_path / f"{method}.yaml").write_text(yaml.safe_dump(cfg))
    res = curate.run(str(tmp_path / f"{method}.yaml"), output_dir=str(tmp_path / "out"), show_progress=False,
                     cache_dir=str(SESSION_CACHE))
    return res, pd.read_parquet(res.output_dir / "provenance.parquet")
