"""The result of ingest (:class:`Ingested`, from both paths) and the record count it is checked against."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa

from curate.core.errors import LedgerError


@dataclass
class Ingested:
    """The result of ingest.

    Attributes:
        table: canonical columns first (``schema.CANONICAL_SCHEMA``), then the original extra
            columns (null where a file lacks them).
        quarantine: one dict per bad row: file, line, id, reason, error, raw.
        files: files read, in order.
        warnings: file-level problems that did not stop the run.
        record_counts: {file: records read} counted where they were read, independently of
            the outcome (any reader, including a vectorised one, must fill it and check it with
            ``check_file_count``); ``n_records`` is the ledger's ``n_input``.
    """

    table: pa.Table
    quarantine: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    record_counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_records(self) -> int:
        """Records counted where they were read (non-blank lines, JSON array items, Parquet/CSV
        rows, one per unreadable file), independently of what was kept or quarantined: the
        ``n_input`` the provenance invariant is checked against."""
        return sum(self.record_counts.values()) if self.record_counts else self.table.num_rows + len(self.quarantine)

    @property
    def n_rows_seen(self) -> int:
        """Rows kept plus rows quarantined (equals :attr:`n_records` when nothing was lost)."""
        return self.table.num_rows + len(self.quarantine)


class Counted:
    """Iterator wrapper counting the records a reader yields (the independent ingest count).

    Args:
        records (Iterator): a reader's records; ``n`` is how many were taken so far.
    """

    def __init__(self, records: Iterator):
        self.it, self.n = iter(records), 0

    def __iter__(self) -> Counted:
        return self

    def __next__(self):
        item = next(self.it)
        self.n += 1
        return item


def check_file_count(name: str, counted: int, kept: int, quarantined: int) -> None:
    """Raise :class:`~curate.core.errors.LedgerError` unless every record read was kept or quarantined.

    Args:
        name (str): the input's name, for the error.
        counted (int): records counted where they were read.
        kept (int): rows in the table from this input.
        quarantined (int): quarantine records from this input.
    """
    if counted != kept + quarantined:
        raise LedgerError(f"{name}: provenance invariant broken at ingest: {counted} records read, but "
                          f"{kept} kept + {quarantined} quarantined = {kept + quarantined}")
