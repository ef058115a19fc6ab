"""The ledger: one row per input row with its final status, the stage and reason that decided it.

Invariant (checked by ``Ledger.check`` and tested everywhere)::

    n_input == n_selected + n_dropped + n_quarantined

``n_input`` is the number of records the readers counted where they read them (non-blank lines,
JSON array items, Parquet/CSV rows; see ``Ingested.n_records``), not a sum of the other three,
so a row lost anywhere between reading and writing breaks it. Provenance ids are unique: a
quarantined row whose own id is missing or also used by another row is named by its place
(``file:line``; suffixed ``#2``, ``#3``... in the unlikely case that is taken too).

Columns of ``provenance.parquet``: ``id``, ``status`` (selected / dropped / quarantined),
``stage`` (the stage's position and type, e.g. ``1:exact_dedup``; ``ingest`` for quarantine),
``reason``, ``dup_of``, ``dup_cluster`` and ``cluster_id`` when a stage gave them, ``source``,
and every numeric score column an annotator computed for the row (null for rows dropped before
that annotator ran).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.core.errors import LedgerError
from curate.core.schema import DROPPED, QUARANTINED, SELECTED
from curate.core.stage import Selection


class Ledger:
    """Tracks every ingested row through the stages.

    Args:
        ids: (n,) ids of the ingested (readable) rows, in ingest order.
        quarantine: records of rows that could not be read (``file``, ``line``, ``reason``, ...).
        sources: (n,) source of each row, or None.
        n_input: records counted independently at read time (default None: len(ids) +
            len(quarantine), for in-memory inputs that were not read from files).
    """

    def __init__(self, ids: list[str], quarantine: list[dict] | None = None, sources: list | None = None,
                 n_input: int | None = None):
        self.ids = np.array(ids, dtype=object)
        self.index = {i: k for k, i in enumerate(ids)}
        n = len(ids)
        self.status = np.full(n, SELECTED, dtype=object)
        self.stage = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)
        self.extras: dict[str, np.ndarray] = {"dup_of": np.full(n, None, dtype=object)}
        self.sources = np.array(sources if sources is not None else [None] * n, dtype=object)
        self.quarantine = list(quarantine or [])
        self.n_input = len(ids) + len(self.quarantine) if n_input is None else int(n_input)
        if len(self.index) != n:
            raise LedgerError(f"provenance: {n - len(self.index)} ingested ids are not unique")

    def positions(self, ids) -> np.ndarray:
        return np.fromiter((self.index[i] for i in ids), dtype=np.int64, count=len(ids))

    def record_selection(self, stage_label: str, row_ids, selection: Selection) -> None:
        """Mark rows a Selector dropped; copy its extras (dup_of, cluster ids) for all its rows."""
        pos = self.positions(row_ids)
        dropped = pos[~selection.keep]
        self.status[dropped] = DROPPED
        self.stage[dropped] = stage_label
        self.reason[dropped] = selection.reason[~selection.keep]
        for name, values in selection.extras.items():
            self._column(name, values)[pos] = values

    def record_scores(self, row_ids, columns: pa.Table) -> None:
        """Copy numeric scalar columns an Annotator added (scores, cluster ids) into the ledger."""
        pos = self.positions(row_ids)
        for name in columns.column_names:
            col = columns.column(name)
            t = col.type
            if pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t):
                values = col.to_numpy(zero_copy_only=False)
                self._column(name, values)[pos] = values

    def _column(self, name: str, like: np.ndarray) -> np.ndarray:
        if name not in self.extras:
            like = np.asarray(like)
            if like.dtype.kind == "f":
                self.extras[name] = np.full(len(self.ids), np.nan, dtype=np.float64)
            else:
                self.extras[name] = np.full(len(self.ids), None, dtype=object)
        return self.extras[name]

    @property
    def counts(self) -> dict[str, int]:
        return {
            "n_input": self.n_input,
            "n_selected": int((self.status == SELECTED).sum()),
            "n_dropped": int((self.status == DROPPED).sum()),
            "n_quarantined": len(self.quarantine),
        }

    def check(self) -> None:
        """Raise :class:`LedgerError` unless every counted input row has exactly one final status."""
        # an unknown status also breaks the count below: checked first, so the message names it
        bad = ~np.isin(self.status.astype(str), [SELECTED, DROPPED]) if len(self.status) else np.zeros(0, bool)
        if bad.any():
            raise LedgerError(f"provenance: {int(bad.sum())} rows have an unknown status")
        c = self.counts
        if c["n_input"] != c["n_selected"] + c["n_dropped"] + c["n_quarantined"]:
            raise LedgerError(f"provenance invariant broken: {c} (n_input was counted where the rows were read)")
        missing = (self.status == DROPPED) & np.array([r is None for r in self.reason], dtype=bool)
        if missing.any():
            raise LedgerError(f"{int(missing.sum())} dropped rows have no reason")

    def check_output(self, ids) -> None:
        """Raise :class:`LedgerError` unless ``ids`` are exactly the selected rows' ids, in ingest order.

        Called on the final table before anything is written or returned, so a stage that loses,
        duplicates or reorders rows behind the ledger's back cannot produce a dataset that its
        provenance does not describe.

        Args:
            ids: (m,) the output rows' ids in output order: an Arrow (chunked) array, compared a
                block of 65,536 at a time so a large output is not copied to Python at once,
                or any sequence.
        """
        want = self.ids[self.status == SELECTED]
        if len(ids) != len(want):
            raise LedgerError(f"provenance: the output has {len(ids)} rows, the ledger selected {len(want)}")
        block = 65_536
        for lo in range(0, len(want), block):
            part = ids[lo:lo + block]
            got = np.asarray(part.to_pylist() if hasattr(part, "to_pylist") else list(part), dtype=object)
            bad = np.flatnonzero(got != want[lo:lo + block])
            if len(bad):
                i = int(bad[0])
                raise LedgerError(f"provenance: output row {lo + i} is {got[i]!r}, the ledger's selected row there "
                                  f"is {want[lo + i]!r}")

    def _quarantine_ids(self) -> list[str]:
        """Unique provenance ids for quarantined rows (see module docstring)."""
        taken = set(self.index)
        out = []
        for r in self.quarantine:
            own = r.get("id")
            place = r.get("file") if r.get("line") is None else f"{r.get('file')}:{r.get('line')}"
            cand = str(own) if own is not None and r.get("reason") != "duplicate_id" else str(place)
            if cand in taken:
                cand = str(place)
            base, k = cand, 1
            while cand in taken:
                k += 1
                cand = f"{base}#{k}"
            taken.add(cand)
            out.append(cand)
        return out

    def to_table(self) -> pa.Table:
        """The provenance table: readable rows in ingest order, then quarantined rows."""
        self.check()
        q = self.quarantine
        nq = len(q)
        qids = self._quarantine_ids()
        cols = {
            "id": list(self.ids) + qids,
            "status": list(self.status) + [QUARANTINED] * nq,
            "stage": list(self.stage) + ["ingest"] * nq,
            "reason": list(self.reason) + [r.get("reason") for r in q],
            "source": list(self.sources) + [r.get("file") for r in q],
        }
        arrays = {k: pa.array(v, pa.string()) for k, v in cols.items()}
        for name, values in self.extras.items():
            if values.dtype == object:
                vals = [None if v is None else v for v in values.tolist()] + [None] * nq
                arr = pa.array(vals)
                if pa.types.is_null(arr.type):
                    arr = arr.cast(pa.string())
            else:
                arr = pa.array(np.concatenate([values, np.full(nq, np.nan)]), from_pandas=True)
            arrays[name] = arr
        return pa.table(arrays)
