"""curate.models.onnx_runtime"""
from __future__ import annotations

import os
import shutil
from functools import lru_cache
from pathlib import Path

from curate.models.loading import resolve_embedder


def local_model_dir(model: str, revision: str | None) -> Path:
    where = resolve_embedder(model)
    if Path(where).is_dir():
        return Path(where)
    from huggingface_hub import (
        snapshot_download,  # a hub id: its files (offline if cached)
    )

    return Path(snapshot_download(where, revision=revision))


def publish_dir(tmp: Path, out: Path) -> None:
    """Move a finished export folder ``tmp`` to ``out`` in one rename; if another process
    published ``out`` first, keep theirs and drop ``tmp``."""
    if out.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out)


@lru_cache(maxsize=4)
def ort_session(path: str, threads: int | None):
    """A cached CPU onnxruntime session for ``path`` (``threads`` intra-op threads; None = ort's default)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle worker threads sleep instead of spinning: on a shared 2-core machine spinning steals
    # the cores other jobs (and the other worker) need; measured no slower here.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
