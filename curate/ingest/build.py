"""Building the canonical table: canonical columns first, then the original extra columns.

:class:`TableBuilder` collects the per-row path's rows; :func:`unique_column_name` and
:func:`storable_type` are the rules for extra columns both paths share;
:func:`canonical_passthrough` reorders a table that is already canonical.
"""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc

from curate.core import schema
from curate.core.errors import InputError
from curate.ingest.formats import Canon


class TableBuilder:
    """Collect canonical rows plus extra columns, then build one ``pa.Table`` at the end.

    Columns are Python lists until :meth:`build`, which calls ``pa.array`` once per column.
    Extra (original) columns keep their first-seen order; a key that collides with a canonical
    column name without being consumed (e.g. LIMA's ``source``) is kept as ``orig_<key>``; an
    empty key or one with control characters or unpaired surrogates becomes
    ``orig_<JSON-escaped key>`` (:func:`unique_column_name`); names are
    made unique with ``_2``, ``_3``... A column whose values mix types across rows (or hold
    empty objects, which Parquet cannot store) is stored as strings: strings unchanged, other
    values JSON-encoded.
    """

    def __init__(self) -> None:
        self.cols: dict[str, list] = {name: [] for name in schema.CANONICAL_COLUMNS}
        self.extras: list[dict] = []
        self.extra_names: dict[str, None] = {}
        self._names: dict[str, str] = {}  # record key -> column name (unique, printable)

    def _column_name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = unique_column_name(key, set(self._names.values()))
        return name

    def __len__(self) -> int:
        return len(self.cols[schema.ID])

    def add(self, row_id: str, canon: Canon, source: str, extras: dict | None) -> None:
        """Append one row.

        Args:
            row_id (str): the row's id.
            canon (Canon): (instruction, input, output, messages, text).
            source (str): the ``source`` column's value.
            extras (dict | None): record key -> value of the extra (not consumed) fields.
        """
        ins, inp, out, msgs, text = canon
        c = self.cols
        c[schema.ID].append(row_id)
        c[schema.TEXT].append(text)
        c[schema.INSTRUCTION].append(ins)
        c[schema.INPUT].append(inp)
        c[schema.OUTPUT].append(out)
        c[schema.MESSAGES].append(msgs)
        c[schema.SOURCE].append(source)
        if extras:
            extras = {self._column_name(k): v for k, v in extras.items()}
            for k in extras:
                if k not in self.extra_names:
                    self.extra_names[k] = None
        self.extras.append(extras)

    def build(self) -> pa.Table:
        """The rows added so far as one table (one ``pa.array`` call per column)."""
        arrays = [pa.array(self.cols[f.name], type=f.type) for f in schema.CANONICAL_SCHEMA]
        names = list(schema.CANONICAL_COLUMNS)
        for k in self.extra_names:
            arrays.append(_extra_array([e.get(k) if e else None for e in self.extras]))
            names.append(k)
        return pa.Table.from_arrays(arrays, names=names)


def _unwritable_name(name: str) -> bool:
    """True for a name Arrow, Parquet or ``datasets`` cannot round-trip: empty, control
    characters, or unpaired surrogates (not encodable as UTF-8)."""
    return not name or any(ord(ch) < 32 or ch == "\x7f" or 0xD800 <= ord(ch) <= 0xDFFF for ch in name)


def unique_column_name(key: str, taken: set[str]) -> str:
    """A record key as an extra column name, unique among ``taken`` and the canonical columns.

    Canonical names get ``orig_``; a name Arrow/Parquet/datasets cannot round-trip (see
    :func:`_unwritable_name`) becomes ``orig_<JSON-escaped key>``; clashes get ``_2``, ``_3``...
    """
    name = f"orig_{key}" if key in schema.CANONICAL_COLUMNS else key
    if _unwritable_name(name):
        name = "orig_" + json.dumps(name)[1:-1]
    taken = taken | set(schema.CANONICAL_COLUMNS)
    base, k = name, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def storable_type(t: pa.DataType) -> bool:
    """False if ``t`` holds, anywhere, a struct without fields (Parquet cannot write those) or
    a field whose name cannot round-trip (:func:`_unwritable_name`)."""
    if pa.types.is_struct(t):
        return t.num_fields > 0 and all(not _unwritable_name(t.field(i).name) and storable_type(t.field(i).type)
                                        for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return storable_type(t.value_type)
    if pa.types.is_map(t):
        return storable_type(t.key_type) and storable_type(t.item_type)
    return True


def _extra_array(values: list) -> pa.Array:
    try:
        arr = pa.array(values)
        if storable_type(arr.type):
            return arr
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeEncodeError, OverflowError,
            RecursionError):
        pass
    for ascii_only in (False, True):  # True also escapes unpaired surrogates
        try:
            return pa.array(
                [v if v is None or (isinstance(v, str) and not ascii_only)
                 else json.dumps(v, ensure_ascii=ascii_only, default=str) for v in values],
                type=pa.string(),
            )
        except UnicodeEncodeError:
            continue
    raise AssertionError("unreachable: ASCII JSON always encodes")


def canonical_passthrough(data: pa.Table, source: str) -> pa.Table:
    """A table that already has ``id`` and ``text`` columns, as a canonical table.

    Canonical columns come first (missing ones null, ``source`` filled with ``source``), ids
    become strings, the other columns follow unchanged.

    Args:
        data (pa.Table): n rows with at least ``id`` and ``text``.
        source (str): the ``source`` column's value where ``data`` has none, and the name in errors.

    Raises:
        InputError: no rows, null or duplicate ids, or a canonical column of an incompatible type.
    """
    n = data.num_rows
    if n == 0:
        raise InputError(f"{source}: input is empty")
    ids = data.column(schema.ID)
    if ids.null_count or not pa.types.is_string(ids.type):
        ids = pa.chunked_array([pa.array([None if v is None else str(v) for v in ids.to_pylist()], pa.string())])
    if ids.null_count:
        raise InputError(f"{source}: the id column has {ids.null_count} nulls")
    if pc.count_distinct(ids).as_py() != n:
        raise InputError(f"{source}: the id column has duplicates")
    cols, names = [], []
    for f in schema.CANONICAL_SCHEMA:
        if f.name == schema.ID:
            col = ids
        elif f.name in data.column_names:
            col = data.column(f.name)
            if col.type != f.type:
                try:
                    col = col.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                    raise InputError(f"{source}: column {f.name!r} is {col.type}, expected {f.type} ({e})") from None
        elif f.name == schema.SOURCE:
            col = pa.array([source] * n, pa.string())
        else:
            col = pa.nulls(n, f.type)
        cols.append(col)
        names.append(f.name)
    rest = [c for c in data.column_names if c not in schema.CANONICAL_COLUMNS]
    return pa.Table.from_arrays(cols + [data.column(c) for c in rest], names=names + rest)
