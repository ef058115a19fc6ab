"""The ledger's and the engine's guards: each one fires on the fault it names, on a real engine run.

Every input row must end selected, dropped with a stage and a reason, or quarantined; these
tests plant the faults a buggy stage or reader could cause and check the run stops with an
error naming it instead of writing a dataset its provenance does not describe.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.core.errors import LedgerError
from curate.core.schema import DROPPED, SELECTED
from curate.core.stage import Annotator, Selection, Selector
from curate.engine.execute import execute_table
from curate.engine.provenance import Ledger
from curate.ingest import read as cio

ROWS = [{"id": f"r{i}", "instruction": f"question {i} " + "word " * i, "output": f"answer {i}"} for i in range(8)]


class Short(Selector):
    """Drops rows of fewer than 5 words (declared reason ``too_short``)."""

    name = "guard_toy_short"
    reasons = {"too_short": "fewer than 5 words"}

    def select(self, table, ctx):
        words = np.array([len(t.split()) for t in table.column("text").to_pylist()])
        return Selection.keep_mask(words >= 5, "too_short")


class WrongLength(Short):
    def select(self, table, ctx):
        sel = super().select(table, ctx)
        return Selection(keep=sel.keep[:-1], reason=sel.reason[:-1])


class UndeclaredReason(Short):
    def select(self, table, ctx):
        sel = super().select(table, ctx)
        return Selection.keep_mask(sel.keep, "too_long")


class DropsAnotherRow(Annotator):
    """An annotator that changes the row count (it may only add columns)."""

    name = "guard_toy_annotator"

    def output_columns(self):
        return ["n_chars"]

    def annotate(self, table, ctx):
        return pa.table({"n_chars": [len(t) for t in table.column("text").to_pylist()][1:]})


def _run(stages, tmp_path, runner_factory=None):
    data = cio.from_records(ROWS)
    kw = {"runner_factory": runner_factory} if runner_factory else {}
    return execute_table(data, stages, cache_dir=tmp_path / "cache", **kw)


def test_a_good_stage_runs_and_the_ledger_matches_the_output(tmp_path):
    ex = _run([Short()], tmp_path)
    prov = ex.ledger.to_table().to_pylist()
    assert [r["id"] for r in prov if r["status"] == SELECTED] == ex.table.column("id").to_pylist() == \
        [f"r{i}" for i in range(1, 8)]  # r0 has 4 words
    assert {(r["stage"], r["reason"]) for r in prov if r["status"] == DROPPED} == {("0:guard_toy_short", "too_short")}


def test_a_selection_of_the_wrong_length_stops_the_run(tmp_path):
    with pytest.raises(ValueError, match="selection covers 7 rows, input has 8"):
        _run([WrongLength()], tmp_path)


def test_an_undeclared_reason_stops_the_run(tmp_path):
    with pytest.raises(ValueError, match=r"undeclared reason codes \['too_long'\]"):
        _run([UndeclaredReason()], tmp_path)


def test_an_annotator_changing_the_row_count_stops_the_run(tmp_path):
    with pytest.raises(RuntimeError, match="annotator returned 7 rows for 8"):
        _run([DropsAnotherRow()], tmp_path)


def test_output_rows_that_differ_from_the_ledger_stop_the_run(tmp_path):
    """A runner that loses a kept row after the ledger recorded the selection (the write-time check)."""
    from curate.engine.pipeline import Runner

    class LosesAKeptRow(Runner):
        def apply(self, stage, table, parent_key, label):
            table, rec, result = super().apply(stage, table, parent_key, label)
            return table.slice(1), rec, result

    with pytest.raises(LedgerError, match="the output has 6 rows, the ledger selected 7"):
        _run([Short()], tmp_path, LosesAKeptRow)

    class Reorders(Runner):
        def apply(self, stage, table, parent_key, label):
            table, rec, result = super().apply(stage, table, parent_key, label)
            return table.take(pa.array(np.arange(len(table))[::-1])), rec, result

    with pytest.raises(LedgerError, match="output row 0 is 'r7', the ledger's selected row there is 'r1'"):
        _run([Short()], tmp_path / "b", Reorders)


def test_ledger_rejects_duplicate_ids_unknown_status_and_reasonless_drops():
    with pytest.raises(LedgerError, match="1 ingested ids are not unique"):
        Ledger(["a", "b", "a"])
    led = Ledger(["a", "b", "c"])
    led.status[1] = "maybe"
    with pytest.raises(LedgerError, match="1 rows have an unknown status"):
        led.check()
    led = Ledger(["a", "b", "c"])
    led.status[2] = DROPPED  # dropped, but no stage gave a reason
    with pytest.raises(LedgerError, match="1 dropped rows have no reason"):
        led.check()
    led = Ledger(["a", "b"], n_input=3)  # the readers counted a record that never arrived
    with pytest.raises(LedgerError, match="provenance invariant broken"):
        led.check()
