"""Checks that make a recipe fail before compute, with a message that says what to change.

``load_config`` already instantiates every stage (unknown types, unknown parameters and
out-of-range values fail there). What needs more than the recipe is checked here:

* before ingest (:func:`check_before_ingest`): an ``against:`` that names no finished run and no
  saved index;
* right after ingest, before the first stage (:func:`check_after_ingest`): a count budget larger
  than the ingested pool, and a stage that reads a column nothing makes (not in the input, not
  made by an earlier annotator, no annotator its ``prerequisites`` add automatically).

The columns come from the stages' own declarations (``Stage.required_columns()`` and
``Annotator.output_columns()``, see :mod:`curate.core.stage`), never from parameter names.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from curate.core.errors import ConfigError
from curate.core.stage import Annotator, Stage


def _where(i: int, stage: Stage) -> str:
    return f"stages[{i}] ({stage.name})"


def check_before_ingest(stages: list[Stage]) -> None:
    """Fail on ``against:`` paths that hold neither a curate run's data nor a saved index."""
    for i, st in enumerate(stages):
        against = getattr(st, "against", None)
        if against is None:
            continue
        p = Path(against)
        if (p / "meta.json").exists() or any((p / "data").glob("*.parquet")):
            continue
        what = "does not exist" if not p.exists() else "holds neither data/*.parquet nor meta.json"
        raise ConfigError(f"stages[{i}].against: {str(against)!r} {what}; give the output dir of a finished curate "
                          f"run (or a saved MinHash index), run that recipe first, or remove `against`")


def check_after_ingest(stages: list[Stage], table: pa.Table) -> None:
    """Fail on budgets larger than the pool and on columns no step makes (see module docstring)."""
    n = table.num_rows
    for i, st in enumerate(stages):
        b = getattr(st, "budget", None)
        if isinstance(b, int) and not isinstance(b, bool) and b > n:
            raise ConfigError(f"stages[{i}].budget: {b} is larger than the pool ({n} rows after ingest); use a count "
                              f"<= {n} or a fraction such as 0.5")
    columns = set(table.column_names)
    known = True  # False once an annotator with undeclared outputs ran: columns unknown from then on
    for i, st in enumerate(stages):
        # a stage's prerequisites (embed, kmeans, quality_model...) run first and may supply its columns
        for step in list(st.prerequisites(sorted(columns))) + [st]:
            if known:
                missing = [c for c in step.required_columns() if c not in columns]
                if missing:
                    raise ConfigError(
                        f"{_where(i, st)}: needs column(s) {missing}, which neither the input nor an earlier stage "
                        f"makes and no annotator adds automatically; add the annotator that makes "
                        f"{missing[0]!r} before this stage or pick a column the input has ({sorted(columns)})")
            if isinstance(step, Annotator):
                made = step.output_columns()
                # every annotator adds a column: an empty list is an annotator (a user's own) that
                # did not declare them, after which nothing can be said about the columns
                columns |= set(made)
                known = known and bool(made)
