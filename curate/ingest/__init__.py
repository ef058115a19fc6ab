"""Ingest: files and records into the canonical table, bad rows into quarantine.

Entry points: :mod:`curate.ingest.read` (``read_input``, ``from_records``, ``expand_paths``,
``input_fingerprint``), returning one :class:`curate.ingest.result.Ingested` from either path.

* ``readers/``: one small module per FILE format (``jsonl``, ``json_array``, ``delimited`` for
  CSV/TSV, ``parquet``, ``hf`` for ``save_to_disk`` folders and the hub), picked by suffix in
  ``readers/__init__.py``; each yields ``Record(line, value, raw)`` and nothing else.
* ``formats.py``: what the RECORD formats share (names, aliases, ``REASONS``, ``RowError``,
  detection, ``render_text``); ``records/``: one class per record format (``alpaca``,
  ``sharegpt``, ``messages``, ``text``) with its per-row adapter and, where it has one, its
  vectorised column adapter, both raising the same errors.
* ``collect.py`` (per-row path) and ``fast.py`` (vectorised path, with ``kernels.py`` and
  ``spans.py``) turn records into the table; ``ids.py``, ``quarantine.py`` and ``build.py``
  hold the id rules, quarantine records and table building both paths share.
"""
