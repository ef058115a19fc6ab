"""Target sets for targeted selection (``rds``, ``zipfit``): read, name by task, fingerprint.

A targeted method ranks the pool by its closeness to a few examples of the task you care about
(RDS+'s "query" examples, ZIP-FIT's "target" set). ``targets=`` takes:

* rows: a list of dicts in any format the readers know (alpaca ``instruction``/``input``/``output``,
  ``question``/``answer``, ``messages``, ``text``), one task named ``"target"``;
* a path (file or folder) read with :func:`curate.ingest.read.read_input`, one task named after the file;
* a mapping ``{task_name: rows_or_path}``: several tasks (RDS+'s multi-task round-robin).

Every target row goes through the same adapters as the pool, so its canonical ``text`` (and the
``instruction``/``input``/``output`` fields a template uses) is built exactly as the pool's is.
A target row the readers would quarantine is an error, not a silent skip: target sets are small
and chosen by hand.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa

from curate.core.hashing import stable_hash
from curate.core.paths import expand_path

DEFAULT_TASK = "target"


def _read_one(spec, where: str) -> pa.Table:
    from curate.ingest import read as cio

    _check_spec(spec, where)
    if isinstance(spec, (list, tuple)):
        spec = [dict(r) for r in spec]
    try:
        got = cio.from_records(spec, source="targets")
    except ValueError as e:  # InputError: empty / nothing valid
        raise ValueError(f"{where}: {e}") from None
    if got.quarantine:
        bad = "; ".join(f"row {q.get('line')}: {q.get('reason')} ({q.get('error')})" for q in got.quarantine[:3])
        raise ValueError(f"{where}: {len(got.quarantine)} target row(s) could not be read ({bad})")
    if got.table.num_rows == 0:
        raise ValueError(f"{where}: the target set is empty")
    return got.table


def read_targets(targets, name: str = "targets") -> dict[str, pa.Table]:
    """Read a target specification into ``{task_name: canonical table}`` (insertion order kept).

    Args:
        targets: rows (list of dicts), a path, or ``{task_name: rows_or_path}``.
        name: parameter name used in error messages (default ``"targets"``).

    Returns:
        Ordered mapping task name -> ``pa.Table`` with the canonical columns
        (``id``, ``text``, ``instruction``, ``input``, ``output``, ``messages``, ``source``).

    Raises:
        ValueError: naming ``name`` when the spec is empty, of the wrong type, or has rows the
            readers reject.
    """
    if targets is None:
        raise ValueError(f"{name} is required: target rows, a path, or {{task: rows_or_path}}")
    if isinstance(targets, Mapping):
        if not targets:
            raise ValueError(f"{name} is an empty mapping; give at least one task")
        out = {}
        for task, spec in targets.items():
            if not isinstance(task, str) or not task:
                raise ValueError(f"{name}: task names must be non-empty strings, got {task!r}")
            out[task] = _read_one(spec, f"{name}[{task!r}]")
        return out
    task = Path(expand_path(str(targets), name)).stem if isinstance(targets, (str, Path)) else DEFAULT_TASK
    return {task: _read_one(targets, name)}


def validate_targets_spec(targets, name: str = "targets") -> None:
    """Cheap checks at construction time (types, emptiness, paths exist); reading happens later."""
    if targets is None:
        raise ValueError(f"{name} is required: target rows, a path, or {{task: rows_or_path}}")
    specs = targets.items() if isinstance(targets, Mapping) else [(None, targets)]
    if isinstance(targets, Mapping) and not targets:
        raise ValueError(f"{name} is an empty mapping; give at least one task")
    for task, spec in specs:
        where = name if task is None else f"{name}[{task!r}]"
        if task is not None and (not isinstance(task, str) or not task):
            raise ValueError(f"{name}: task names must be non-empty strings, got {task!r}")
        _check_spec(spec, where)


def _check_spec(spec, where: str) -> None:
    """Raise ValueError (naming ``where``) unless ``spec`` is an existing path, rows, or a table."""
    if isinstance(spec, (str, Path)):
        if not Path(expand_path(str(spec), where)).exists():  # "$CURATE_DATA/..." as in inputs
            raise ValueError(f"{where}: no such file or folder: {str(spec)!r}")
    elif isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError(f"{where}: the target set is empty")
        bad = next((r for r in spec if not isinstance(r, Mapping)), None)
        if bad is not None:
            raise ValueError(f"{where}: target rows must be dicts (records), got {type(bad).__name__}")
    elif not isinstance(spec, pa.Table) and not type(spec).__module__.startswith(("pandas", "datasets")):
        raise ValueError(f"{where}: expected rows (list of dicts), a path, or a table, got {type(spec).__name__}")


def targets_fingerprint(tasks: dict[str, pa.Table]) -> str:
    """Content hash of the target sets (task names and every canonical field), for cache keys.

    A path's *contents* go into the key, so editing a target file re-runs the selection.
    """
    cols = ("text", "instruction", "input", "output")
    return stable_hash({task: {c: t.column(c).to_pylist() for c in cols if c in t.column_names}
                        for task, t in tasks.items()})


_SHA_MEMO: dict = {}


def targets_sha(targets, name: str = "targets") -> str:
    """:func:`targets_fingerprint` of a spec, memoised for paths by (path, size, mtime).

    Stages call it for their cache key (several times per run); a changed file is read again.
    """
    def stamp(spec):
        if isinstance(spec, (str, Path)):
            path = Path(expand_path(str(spec), name))
            st = path.stat()
            return (str(path.resolve()), st.st_size, st.st_mtime_ns)
        return None

    specs = targets.items() if isinstance(targets, Mapping) else [(None, targets)]
    stamps = [stamp(v) for _, v in specs]
    if all(stamps):
        key = tuple(zip([k for k, _ in specs], stamps))
        if key not in _SHA_MEMO:
            _SHA_MEMO[key] = targets_fingerprint(read_targets(targets, name))
        return _SHA_MEMO[key]
    return targets_fingerprint(read_targets(targets, name))


def targets_key(targets) -> dict:
    """The cache-key entries of a target spec: ``targets`` (its description) and ``targets_sha``
    (its content hash, so a target file changed in place reruns the stage)."""
    return {"targets": describe_targets(targets), "targets_sha": targets_sha(targets)}


def describe_targets(targets) -> object:
    """A short JSON-able description of a target spec for logs/ledger params (paths as given)."""
    if isinstance(targets, Mapping):
        return {str(k): describe_targets(v) for k, v in targets.items()}
    if isinstance(targets, (str, Path)):
        return str(targets)
    try:
        return f"{len(targets)} rows"
    except TypeError:
        return type(targets).__name__
