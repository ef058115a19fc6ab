"""Budgets: how many rows a selection method keeps.

A budget is either a count (``int >= 1``) or a fraction of the input (``float`` in (0, 1]).
``budget: 1000`` keeps 1000 rows; ``budget: 0.25`` keeps a quarter (rounded to nearest).
A budget of 0 is refused (it would silently produce an empty dataset); a count larger than the
ingested pool is refused before any stage runs (:mod:`curate.engine.preflight`); a count larger than
what is left after earlier stages keeps everything left.
"""
from __future__ import annotations

from numbers import Integral, Real


def validate_budget(budget, name: str = "budget") -> None:
    """Raise ValueError naming ``name`` unless ``budget`` is an int >= 1 or a float in (0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, Real):
        raise ValueError(f"{name} must be an int count >= 1 or a float fraction in (0, 1], got {budget!r}")
    if isinstance(budget, Integral):
        if budget < 1:
            raise ValueError(f"{name} must be >= 1 (a count of rows to keep; for a share of the pool use a "
                             f"fraction such as 0.1), got {budget!r}")
    elif not 0.0 < float(budget) <= 1.0:
        hint = f"; for {budget!r} rows write the count as an int ({int(budget)})" if float(budget) > 1 and \
            float(budget).is_integer() else "; a fraction must be in (0, 1], e.g. 0.25 keeps a quarter"
        raise ValueError(f"{name} as a fraction must be in (0, 1], got {budget!r}{hint}")


def resolve_budget(budget, n_rows: int) -> int:
    """Number of rows to keep out of ``n_rows``.

    Args:
        budget: int count (capped at n_rows) or float fraction in (0, 1].
        n_rows: rows available.

    Returns:
        int in [0, n_rows].
    """
    validate_budget(budget)
    if isinstance(budget, Integral):
        return min(int(budget), n_rows)
    return min(n_rows, int(round(float(budget) * n_rows)))
