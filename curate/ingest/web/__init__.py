"""Web pages in: HTML files and WARC responses -> ``text`` documents (main text extracted).

* :mod:`curate.ingest.web.charset`: bytes -> text (declared charset, stray bytes, guessing).
* :mod:`curate.ingest.web.page`: the checks on bytes and the per-page extraction (trafilatura
  with FineWeb's settings), as plain outcome tuples.
* :mod:`curate.ingest.web.pool`: killable extraction worker processes with a per-page timeout.

The readers are :mod:`curate.ingest.readers.html` and :mod:`curate.ingest.readers.warc`.
"""
