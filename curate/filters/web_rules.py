"""Shared plumbing of the web rule filters (Gopher, C4, FineWeb, URL): every rule recorded.

A rule filter computes, for every document it sees, one value per rule and whether the rule
passes, with no short-circuit: a document dropped by its first rule still has every later
rule's value, so "what if I loosen this threshold" is answered from provenance alone. The
Selection's extras get ``<stage name>__<rule>`` (float64; NaN where the rule does not apply) and
``<stage name>__<rule>__pass`` (bool) for every rule; a dropped document's reason is the
reason code of its first failing rule in the stage's documented order (datatrove's order).

Text rewrites (C4's line removal, PII replacement) go to ``Selection.rewrite`` (new values of
existing columns, one per input row; values of dropped rows are ignored) via
:func:`attach_rewrite`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from curate.core.stage import Selection, StageContext

SHARD_ROWS = 4096  # rows per resumable shard: a few seconds of pure-Python rules on web pages


@dataclass(frozen=True)
class Rule:
    """One rule of a rule filter.

    Attributes:
        name: value column suffix (``<stage>__<name>``).
        reason: reason code when the rule fails; a two-sided rule (min and max) gives the
            reason of its low side here and of its high side in ``reason_high``.
        reason_high: reason code when the value is above the upper bound (two-sided rules), or None.
    """

    name: str
    reason: str
    reason_high: str | None = None


def rule_selection(stage: str, rules: Sequence[Rule], values: dict[str, np.ndarray],
                   passed: dict[str, np.ndarray], high: dict[str, np.ndarray] | None = None,
                   pre_reason: np.ndarray | None = None, extras: dict[str, np.ndarray] | None = None) -> Selection:
    """Build a Selection from every rule's values and pass flags.

    Args:
        stage: the stage's registered name (column prefix).
        rules: the rules in the stage's order; the first failing one names the reason.
        values: {rule name: (n,) float64 values}.
        passed: {rule name: (n,) bool, True where the rule passes}.
        high: {rule name: (n,) bool, True where a two-sided rule failed on its high side}.
        pre_reason: (n,) object array of a reason that wins over every rule (e.g. ``"empty"``),
            None where there is none; default None.
        extras: further per-row columns to record (e.g. counts of removed lines).

    Returns:
        Selection: keep = no pre-reason and every rule passes; extras hold every rule's value
        and pass column.
    """
    n = len(next(iter(values.values()))) if values else (0 if pre_reason is None else len(pre_reason))
    reason = np.full(n, None, dtype=object) if pre_reason is None else np.asarray(pre_reason, dtype=object).copy()
    unset = np.array([r is None for r in reason], dtype=bool)
    for rule in rules:  # in order: a row's reason is its first failing rule
        fail = unset & ~np.asarray(passed[rule.name], dtype=bool)
        codes = np.full(n, rule.reason, dtype=object)
        if rule.reason_high is not None and high is not None and rule.name in high:
            codes[np.asarray(high[rule.name], dtype=bool)] = rule.reason_high
        reason[fail] = codes[fail]
        unset &= ~fail
    out: dict[str, np.ndarray] = {}
    for rule in rules:
        out[f"{stage}__{rule.name}"] = np.asarray(values[rule.name], dtype=np.float64)
        out[f"{stage}__{rule.name}__pass"] = np.asarray(passed[rule.name], dtype=bool)
    out.update(extras or {})
    return Selection(keep=np.array([r is None for r in reason], dtype=bool), reason=reason, extras=out)


def reason_codes(rules: Sequence[Rule]) -> list[str]:
    """Every reason code the rules can give, in rule order."""
    codes: list[str] = []
    for r in rules:
        codes += [r.reason] + ([r.reason_high] if r.reason_high else [])
    return codes


def attach_rewrite(selection: Selection, column: str, new_values: np.ndarray) -> Selection:
    """Record new values of ``column`` for every row on ``selection.rewrite``.

    Works before and after ``Selection`` gains its ``rewrite`` field: the mapping is read with
    ``getattr`` and set as an attribute.

    Args:
        selection: the stage's Selection.
        column: an existing column of the input table (e.g. ``"text"``).
        new_values: (n,) object array of str, one per input row (dropped rows' values ignored).

    Returns:
        The same Selection, with ``rewrite[column] = new_values``.
    """
    new_values = np.asarray(new_values, dtype=object)
    if new_values.shape != (len(selection.keep),):
        raise ValueError(f"rewrite of {column!r} has shape {new_values.shape}, expected ({len(selection.keep)},)")
    rewrite = dict(getattr(selection, "rewrite", None) or {})
    rewrite[column] = new_values
    selection.rewrite = rewrite
    return selection


def column_texts(table: pa.Table, column: str) -> list[str]:
    """The column's values as a list of str (None read as "")."""
    return ["" if t is None else t for t in table.column(column).to_pylist()]


def optional_column(table: pa.Table, column: str | None) -> list[Any] | None:
    """The column's values when ``column`` is set and present in ``table``, else None."""
    if column is None or column not in table.column_names:
        return None
    return table.column(column).to_pylist()


def map_rule_values(ctx: StageContext, rows: list[Any], fn: Callable[[list[Any]], dict[str, np.ndarray]],
                    desc: str) -> dict[str, np.ndarray]:
    """Compute per-row numeric arrays shard by shard (resumable; ``StageContext.map_shards``).

    Args:
        ctx: the stage's context.
        rows: one item per input row (a text, or a tuple of a row's fields).
        fn: maps a list of rows to {name: (len(rows),) numeric array}; must be picklable (a
            module-level function or a stage's bound method) when an executor sends it away.
        desc: progress label.

    Returns:
        {name: (n,) array} over all rows.
    """

    def shard(start: int, stop: int) -> dict[str, np.ndarray]:
        return fn(rows[start:stop])

    def for_rows(start: int, stop: int):
        part = rows[start:stop]  # a task sent to another process carries only its own rows

        def shard_fn(a: int, b: int) -> dict[str, np.ndarray]:
            return fn(part[a - start:b - start])

        return shard_fn

    shard.for_rows = for_rows
    return ctx.map_shards(len(rows), shard, shard_size=SHARD_ROWS, desc=desc)


def check_fraction(pname: str, value: Any, *, allow_none: bool = True, upper: float | None = 1.0) -> None:
    """Raise ValueError naming ``pname`` unless ``value`` is a number in [0, upper] (or None)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0 or (
            upper is not None and value > upper):
        rng = f"[0, {upper}]" if upper is not None else ">= 0"
        raise ValueError(f"{pname} must be a number in {rng}{' or null' if allow_none else ''}, got {value!r}")


def check_count(pname: str, value: Any, *, allow_none: bool = True, minimum: int = 0) -> None:
    """Raise ValueError naming ``pname`` unless ``value`` is an int >= minimum (or None)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{pname} must be an int >= {minimum}{' or null' if allow_none else ''}, got {value!r}")


def check_bool(pname: str, value: Any) -> None:
    """Raise ValueError naming ``pname`` unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{pname} must be true or false, got {value!r}")
