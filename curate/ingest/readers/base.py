"""What every file reader shares: the record it yields, the file-level error, byte streams.

A reader is ``read(path, max_row_bytes) -> Iterator[Record]``: one :class:`Record` per record of
the file, in file order, and nothing else (formats, ids and quarantine are decided later).
Whole-file problems raise :class:`FileError` (a warning plus one ``unreadable_file`` record, or an
:class:`~curate.core.errors.InputError`, decided by :func:`curate.ingest.read.read_input`).
"""
from __future__ import annotations

import gzip
import io
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa

# Errors a damaged compressed stream raises while being read (gzip: EOFError/BadGzipFile/zlib,
# zstd through pyarrow: ArrowException/OSError).
STREAM_ERRORS = (EOFError, OSError, zlib.error, pa.ArrowException)


class Record(NamedTuple):
    """One record of a file, as read.

    Attributes:
        line: 1-based physical line where it starts (JSON Lines, CSV) or row number (JSON
            arrays, Parquet, datasets).
        value: the parsed row (normally a dict), or a
            :class:`~curate.ingest.formats.RowError` when it cannot be parsed.
        raw: the row's raw text, for its quarantine record if it turns out bad; always given
            (and cut to about :data:`~curate.ingest.quarantine.RAW_CHARS` characters) where
            ``value`` is a RowError; None when the reader keeps none (the parsed row is then
            rendered as JSON).
    """

    line: int
    value: Any
    raw: str | None


class FileError(Exception):
    """A whole file cannot be read as what it claims to be."""


def error_line(e: BaseException) -> str:
    """An exception as one short line (its first line, at most 200 characters, or its type)."""
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


class _ArrowRaw(io.RawIOBase):
    """A pyarrow input stream as a Python raw stream (so it can be buffered and iterated by line)."""

    def __init__(self, stream):
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.stream.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.stream.close()
        super().close()


def open_bytes(p: Path):
    """``p`` as a binary file object, decompressed by suffix (``.gz``, ``.zst``)."""
    name = p.name.lower()
    if name.endswith(".gz"):
        return gzip.open(p, "rb")
    if name.endswith(".zst"):  # Zstandard through pyarrow's codec (no extra dependency)
        return io.BufferedReader(_ArrowRaw(pa.CompressedInputStream(pa.OSFile(str(p)), "zstd")), 1 << 20)
    return open(p, "rb")


def head(p: Path, n: int = 8192) -> bytes:
    """The first ``n`` (decompressed) bytes of ``p``; default 8192.

    Raises:
        FileError: the (compressed) stream cannot be read.
    """
    try:
        with open_bytes(p) as fh:
            return fh.read(n)
    except STREAM_ERRORS as e:  # BadGzipFile is an OSError
        raise FileError(f"cannot read ({error_line(e)})") from None


def check_text_file(head: bytes, what: str) -> None:
    """Raise :class:`FileError` if ``head`` (a file's first bytes) is binary, not ``what`` text.

    A text file may hold a stray NUL on one bad line (that line is quarantined); a binary file
    (or UTF-16 text) is full of them.
    """
    if head.count(b"\0") > max(1, len(head) // 100):
        raise FileError(f"not a {what} file (binary content)")
