"""HTML reader (``.html``, ``.htm``): one document per file, its main text extracted.

A page becomes one ``text``-format record ``{"text", "url"}`` at line 1: ``text`` is the main
text trafilatura extracts (:mod:`curate.ingest.web.page`), ``url`` the page's
``<link rel="canonical">``, else its ``og:url``, else null. The page has no ``id`` of its own, so
its id is the usual ``<file>:1`` (file relative to the input root). Charset: see
:mod:`curate.ingest.web.charset` (no HTTP header here: BOM, then ``<meta charset>``, else UTF-8).

A page that cannot be used is one quarantine record and the run goes on: ``row_too_large``
(the file is larger than ``max_row_bytes``; it is not read beyond its first bytes),
``empty_text`` (no bytes but whitespace), ``not_html`` (binary content), ``invalid_encoding``,
``extraction_failed``, ``extraction_timeout`` (longer than ``timeout`` seconds),
``no_main_text``.

Pages are extracted by worker processes (:mod:`curate.ingest.web.pool`). A folder of pages is
read one file per call, so to keep every worker busy each call also submits the next few
``.html`` files of the same folder (in the order a folder is read) and the next call takes its
result from there; a window that is not used (another folder, other options, a changed file)
is dropped, so at most a few pages are extracted for nothing.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from curate.ingest.formats import RowError
from curate.ingest.readers.base import FileError, Record, error_line
from curate.ingest.web.page import precheck, raw_of_page
from curate.ingest.web.pool import DEFAULT_TIMEOUT, LOCK, shared_pool

HTML_SUFFIXES = (".html", ".htm")


def _key(p: Path, max_row_bytes: int, timeout: float | None) -> tuple | None:
    try:
        st = p.stat()
    except OSError:
        return None
    return str(p.resolve()), st.st_size, st.st_mtime_ns, max_row_bytes, timeout


class _Prefetch:
    """The window of pages submitted ahead (see the module docstring); used under the pool's LOCK."""

    def __init__(self) -> None:
        self.window: dict[str, tuple] = {}   # resolved path -> (key, ticket or None, outcome or None, raw)
        self.listing: tuple = (None, None, [])  # (folder, its mtime_ns, sorted page names)
        self.pid = os.getpid()

    def _siblings_after(self, p: Path) -> list[Path]:
        folder = p.parent
        try:
            mtime = folder.stat().st_mtime_ns
        except OSError:
            return []
        if self.listing[:2] != (folder, mtime):
            names = sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")
                           and e.name.lower().endswith(HTML_SUFFIXES))
            self.listing = (folder, mtime, names)
        names = self.listing[2]
        try:
            i = names.index(p.name)
        except ValueError:
            return []
        return [folder / n for n in names[i + 1:]]

    def _submit(self, p: Path, key: tuple, max_row_bytes: int, timeout: float | None) -> tuple:
        """(key, ticket, outcome, raw) of one page: read, pre-checked, and submitted if it needs extracting."""
        if key[1] > max_row_bytes:
            with open(p, "rb") as fh:
                head = fh.read(4096)
            msg = f"the page is {key[1]} bytes > max_row_bytes={max_row_bytes}"
            return key, None, ("error", "row_too_large", msg), raw_of_page(head, "row_too_large")
        data = p.read_bytes()
        bad = precheck(data)
        if bad is not None:
            return key, None, ("error", *bad), raw_of_page(data, bad[0])
        return key, shared_pool().submit((data, None, True), timeout), None, raw_of_page(data, "")

    def take(self, p: Path, max_row_bytes: int, timeout: float | None) -> tuple:
        """The (outcome, raw) of page ``p``, submitting the next pages of its folder meanwhile."""
        if self.pid != os.getpid():  # a forked child: the window's tickets belong to the parent's pool
            self.__init__()
        key = _key(p, max_row_bytes, timeout)
        if key is None:
            raise FileError("cannot read (no such file, or no permission)")
        entry = self.window.pop(key[0], None)
        if entry is None or entry[0] != key:  # not read ahead (or changed since): drop the window
            if entry is not None and entry[1] is not None:
                shared_pool().discard(entry[1])
            self.clear()
            try:
                entry = self._submit(p, key, max_row_bytes, timeout)
            except OSError as e:
                raise FileError(f"cannot read ({error_line(e)})") from None
        for q in self._siblings_after(p)[:2 * shared_pool().n_workers]:  # the window: the next few pages
            k = _key(q, max_row_bytes, timeout)
            if k is not None and k[0] not in self.window:
                try:
                    self.window[k[0]] = self._submit(q, k, max_row_bytes, timeout)
                except OSError:  # read again (and reported) when its turn comes
                    continue
        outcome = entry[2] if entry[1] is None else shared_pool().result(entry[1])
        return outcome, entry[3]

    def clear(self) -> None:
        for _, ticket, _, _ in self.window.values():
            if ticket is not None:
                shared_pool().discard(ticket)
        self.window.clear()


_PREFETCH = _Prefetch()


def read_html(p: Path, max_row_bytes: int, *, timeout: float | None = DEFAULT_TIMEOUT) -> Iterator[Record]:
    """The one record of an HTML file (see the module docstring).

    Args:
        p (Path): the file.
        max_row_bytes (int): a larger file is a ``row_too_large`` record, not read.
        timeout (float | None): seconds the extraction of one page may take (default 1, as
            FineWeb); None = no limit.

    Raises:
        FileError: the file cannot be read.
    """
    with LOCK:
        outcome, raw = _PREFETCH.take(p, max_row_bytes, timeout)
    if outcome[0] == "ok":
        yield Record(1, {"text": outcome[1], "url": outcome[2]}, None)
    else:
        yield Record(1, RowError(outcome[1], f"{p.name}: {outcome[2]}"), raw)
