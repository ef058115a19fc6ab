"""Shared fixtures: every test gets its own stage cache; helpers to build canonical toy tables."""
from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

# Before any test module imports huggingface_hub: the models come from installed packages.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # `--no-progress` in an in-process CLI test sets TQDM_DISABLE for good: put it back
    tqdm_before = os.environ.get("TQDM_DISABLE")
    yield
    if tqdm_before is None:
        os.environ.pop("TQDM_DISABLE", None)
    else:
        os.environ["TQDM_DISABLE"] = tqdm_before


@pytest.fixture
def ctx(tmp_path):
    from curate.core.stage import StageContext

    return StageContext(work_dir=tmp_path / "work", artifact_dir=tmp_path / "art", show_progress=False)


def toy_table(texts: list[str], **extra) -> pa.Table:
    """Canonical-shaped table with ids r0.. and the given texts (plus extra columns)."""
    cols = {"id": [f"r{i}" for i in range(len(texts))], "text": texts, "source": ["toy"] * len(texts)}
    cols.update(extra)
    return pa.table(cols)
