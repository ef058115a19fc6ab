"""Prefix-cache block inputs of a whole pool, kept in one memory-mapped file and built resumably.

The LoRA trainer's prefix cache (:func:`curate.train.forward.prefix_states`) holds, for every
training row, the input of the lowest adapted block: L_i x d float32 values per row, about 0.25 MB
for an Alpaca row on SmolLM2-135M. For 1,000 rows that fits in memory; for the tens of thousands
of rows that learning percentage trains on it does not (44k Alpaca rows: ~11 GB). A
:class:`PrefixStore` keeps the same arrays in one float32 file on disk (the page cache serves the
rows a batch reads), is filled shard by shard (a killed build resumes at the first unfinished
shard) and is indexable by row like the list the trainer builds, so ``fit(states=store)`` trains
exactly as with the in-memory cache.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class PrefixStore(Sequence):
    """Per-row (L_i, d) float32 arrays read from one memory-mapped file.

    Args:
        path: the data file (float32, rows concatenated along the token axis).
        lengths: (n,) tokens per row.
        dim: hidden size d.
    """

    def __init__(self, path: str | Path, lengths: np.ndarray, dim: int):
        self.path = Path(path)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.dim = int(dim)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self._mm = None

    def _map(self, mode: str = "r"):
        shape = (int(self.offsets[-1]), self.dim)
        return np.memmap(self.path, dtype=np.float32, mode=mode, shape=shape)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i):
        if self._mm is None:
            self._mm = self._map("r")
        return np.array(self._mm[self.offsets[i]:self.offsets[i + 1]])


def build_prefix_store(folder: str | Path, lm, ids: list, start: int, pad_id: int, *, batch_size: int = 8,
                       shard_rows: int = 512, show_progress: bool = False) -> PrefixStore:
    """Compute (or finish computing) the block-``start`` inputs of ``ids`` into ``folder``.

    Args:
        folder: scratch folder (``prefix.f32`` and ``prefix.json`` with the finished shards).
        lm: the base causal LM (no adapter needed: blocks below ``start`` are never adapted).
        ids: n token-id arrays (an :class:`~curate.train.encode.Encoded`'s ``ids``).
        start: the lowest adapted block (``trainer.layers_[0]``).
        pad_id: pad token id.
        batch_size: rows per forward pass (default 8).
        shard_rows: rows per resumable shard (default 512).
        show_progress: draw a bar per shard.

    Returns:
        a :class:`PrefixStore` over the finished file.
    """
    from curate.train.forward import prefix_states

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(x) for x in ids], dtype=np.int64)
    dim = int(lm.config.hidden_size)
    store = PrefixStore(folder / "prefix.f32", lengths, dim)
    meta_path = folder / "prefix.json"
    key = {"rows": len(ids), "tokens": int(lengths.sum()), "dim": dim, "start": int(start), "shard_rows": shard_rows}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if meta.get("key") != key or not store.path.exists():  # another pool or a fresh build
        meta = {"key": key, "done": []}
        store._map("w+").flush()
        meta_path.write_text(json.dumps(meta))
    done = set(meta["done"])
    todo = [s for s in range(0, len(ids), shard_rows) if s not in done]
    if todo:
        log.info("prefix store: %d of %d shards to compute (%d rows, %d tokens)", len(todo),
                 -(-len(ids) // shard_rows), len(ids), int(lengths.sum()))
    for s in todo:
        rows = prefix_states(lm, ids[s:s + shard_rows], start, pad_id, batch_size, show_progress,
                             desc=f"prefix {s // shard_rows + 1}")
        mm = store._map("r+")
        for j, h in enumerate(rows):
            i = s + j
            mm[store.offsets[i]:store.offsets[i + 1]] = h
        mm.flush()
        del mm
        meta["done"].append(s)
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(meta_path)  # the shard counts as done only once its values are flushed
    return store


def save_flat_states(path: str | Path, states: list) -> None:
    """Write per-row (L_i, d) float32 states as one ``.npy`` of their concatenation, atomically.

    The file appears only once complete (temporary name in the same folder, then ``os.replace``), so
    a killed write leaves no half file that :func:`load_flat_states` would take for a cache.

    Args:
        path: the ``.npy`` file to write; its folder is created.
        states: n arrays of shape (L_i, d).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # dot name: not taken for a finished file
    np.save(tmp, np.concatenate(states) if states else np.zeros((0, 0), np.float32))
    os.replace(tmp, path)


def finished_flat_states(folder: str | Path) -> list[Path]:
    """The ``.npy`` files :func:`save_flat_states` finished in ``folder`` (not a write in flight's temporary)."""
    return [p for p in Path(folder).glob("*.npy") if not p.name.startswith(".")]


def load_flat_states(path: str | Path, lengths) -> list | None:
    """Per-row states written by :func:`save_flat_states`, as memory-mapped slices, or None.

    Args:
        path: the ``.npy`` file.
        lengths: (n,) tokens per row, in the order they were written.

    Returns:
        n (L_i, d) read-only arrays, or None when the file is absent, damaged (warned) or holds a
        different number of token states than ``lengths`` sum to (warned): the caller computes them again.
    """
    path = Path(path)
    if not path.exists():
        return None
    offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))])
    try:
        flat = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        log.warning("%s is damaged (%s: %s); computing its prefix states again", path, type(e).__name__, e)
        return None
    if flat.shape[0] != offsets[-1]:
        log.warning("%s holds %d token states, these rows need %d; computing them again",
                    path, flat.shape[0], offsets[-1])
        return None
    return [flat[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
