"""Planted pools for the selection report / compare tests: rows in known clusters with known vectors.

``planted_embedding`` is a test-only annotator standing in for ``embed`` + ``kmeans``: row
``"topic c: question i"`` gets the vector ``centers[c] + noise(i)`` (d = 8) and ``cluster_id`` c, so a test knows every row's vector and cluster
without loading a model. It goes through the pipeline and the stage cache exactly as ``embed`` does.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.schema import embedding_column
from curate.core.stage import Annotator

N_TOPICS, DIM = 4, 8
_CENTERS = np.random.default_rng(123).normal(size=(N_TOPICS, DIM)) * 5


def planted_topic(instruction: str) -> int:
    """The topic c of ``"topic c: question i"``."""
    return int(re.match(r"topic (\d+):", instruction).group(1))


def planted_vector(instruction: str) -> np.ndarray:
    """(DIM,) float32 vector of a row from its instruction ``"topic c: question i"``."""
    m = re.match(r"topic (\d+): question (\d+)", instruction)
    c, i = int(m.group(1)), int(m.group(2))
    return (_CENTERS[c] + np.random.default_rng(i).normal(size=DIM) * 0.3).astype(np.float32)


@register
class PlantedEmbedding(Annotator):
    """Test stand-in for ``embed``: known vectors from the instruction text (see module docstring)."""

    name = "planted_embedding"

    def __init__(self, *, column: str = "embedding", clusters: bool = True):
        self.column, self.clusters = column, clusters

    def output_columns(self) -> list[str]:
        return [self.column] + (["cluster_id"] if self.clusters else [])

    def annotate(self, table: pa.Table, ctx) -> pa.Table:
        instr = table.column("instruction").to_pylist()
        m = np.stack([planted_vector(s) for s in instr]) if len(table) else np.zeros((0, DIM), np.float32)
        out = {self.column: embedding_column(m)}
        if self.clusters:  # the true topic, standing in for a perfect kmeans
            out["cluster_id"] = pa.array([planted_topic(s) for s in instr], pa.int64())
        return pa.table(out)


def write_pool(path: Path, n: int = 200) -> Path:
    """A JSONL pool of ``n`` rows in N_TOPICS topics (+1 exact duplicate of row 0, + 1 very short row).

    Row i is topic i % N_TOPICS; outputs are long (40+ words) only in topic 0, so a
    ``top_k`` on ``h_words`` picks from topic 0 alone.
    """
    rows = []
    for i in range(n):
        c = i % N_TOPICS
        words = 40 + i % 7 if c == 0 else 12 + i % 5
        rows.append({"id": f"r{i}", "instruction": f"topic {c}: question {i}", "input": "",
                     "output": " ".join(f"w{c}x{j}" for j in range(words))})
    rows.append({**rows[0], "id": "dup0"})
    rows.append({"id": "short", "instruction": "topic 1: question 99999", "input": "", "output": "ok"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@register
class PlantedQuality(Annotator):
    """Test stand-in for ``quality_model``: ``quality`` = (i * 7) % 17 for row ``"topic c: question i"``."""

    name = "planted_quality"

    def output_columns(self) -> list[str]:
        return ["quality"]

    def annotate(self, table: pa.Table, ctx) -> pa.Table:
        return pa.table({"quality": pa.array([planted_quality(s) for s in table.column("instruction").to_pylist()],
                                             pa.float64())})


def planted_quality(instruction: str) -> float:
    return float(int(re.match(r"topic \d+: question (\d+)", instruction).group(1)) * 7 % 17)


@register
class PlantedSAEFeatures(Annotator):
    """Test stand-in for ``sae_features``: row i of topic c has SAE features {c, 4 + i % 3}.

    The pool's features are {0, ..., 6}; topic 0 alone covers {0, 4, 5, 6}.
    """

    name = "planted_sae_features"

    def output_columns(self) -> list[str]:
        return ["sae_latents", "sae_acts"]

    def annotate(self, table: pa.Table, ctx) -> pa.Table:
        ids = [re.match(r"topic (\d+): question (\d+)", s).groups() for s in table.column("instruction").to_pylist()]
        lat = np.array([[int(c), 4 + int(i) % 3] for c, i in ids], dtype=np.int32).reshape(-1, 2)
        return pa.table({"sae_latents": embedding_column(lat), "sae_acts": embedding_column(np.ones(lat.shape, np.float32))})
