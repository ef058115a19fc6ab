"""Hugging Face ``datasets`` inputs: ``save_to_disk`` folders and hub datasets.

A folder holding ``dataset_info.json``, ``state.json`` or ``dataset_dict.json`` is read with
``datasets.load_from_disk``; a hub name (``hf://owner/name`` or a bare ``owner/name`` that is not
a path) with ``datasets.load_dataset`` (needs a reachable hub). ``split`` picks from a
DatasetDict. Rows then come from :func:`curate.ingest.readers.table.iter_table`.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from curate.core.errors import InputError
from curate.ingest.readers.base import FileError, Record
from curate.ingest.readers.table import iter_table

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_hf_dir(p: Path) -> bool:
    """True if ``p`` is a ``datasets.save_to_disk`` folder (it holds one of :data:`HF_MARKERS`)."""
    return p.is_dir() and any((p / m).is_file() for m in HF_MARKERS)


def dataset_table(ds, split: str, name: str) -> pa.Table:
    """The Arrow table of a ``datasets.Dataset``, or of split ``split`` of a ``DatasetDict``.

    Args:
        ds: a ``datasets.Dataset`` or ``datasets.DatasetDict``.
        split (str): the split to take from a DatasetDict.
        name (str): the input's name, for errors.

    Raises:
        InputError: a DatasetDict without ``split``.
    """
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(f"{name}: no split {split!r} (have {sorted(ds)})")
        ds = ds[split]
    if getattr(ds, "_indices", None) is not None:
        ds = ds.flatten_indices()
    return ds.data.table


def read_hf_dir(p: Path, max_row_bytes: int, split: str) -> Iterator[Record]:
    """The rows of a ``save_to_disk`` folder (split ``split`` of a DatasetDict).

    Raises:
        FileError: ``datasets`` cannot load the folder.
        InputError: a DatasetDict without ``split``.
    """
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # datasets raises many types for a damaged dir
        raise FileError(f"not a readable datasets.save_to_disk directory ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    yield from iter_table(dataset_table(ds, split, str(p)), max_row_bytes)


def read_hub(entry: str, max_row_bytes: int, split: str) -> Iterator[Record]:
    """The rows of hub dataset ``entry`` (loaded now, so an unreachable hub fails here).

    Raises:
        InputError: the dataset cannot be loaded (offline, missing, gated) or lacks ``split``.
    """
    import datasets

    name = entry.removeprefix("hf://")
    hint = "" if entry.startswith("hf://") else f" ({entry!r} is not a local path either)"
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, missing, gated: all surface as one line
        msg = str(e).splitlines()[0] if str(e) else ""
        raise InputError(f"hf://{name}: could not load from the Hugging Face hub{hint}; is it reachable? offline runs "
                         f"need a local path - {type(e).__name__}: {msg[:200]}") from None
    return iter_table(dataset_table(ds, split, name), max_row_bytes)
