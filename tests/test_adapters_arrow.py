"""The vectorised ingest path gives exactly the per-row path's table and quarantine."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import curate.ingest.fast as aa
from curate.core.errors import InputError
from curate.ingest import read as cio
from curate.ingest.spans import object_spans

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"
REAL_ADAPT = aa.adapt_table

ALPACA = [
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "  padded instruction\t", "input": "ctx\n", "output": "answer  "},
    {"instruction": "Unicode edges\u00a0", "input": "\u2003x", "output": "y\u3000"},
    {"instruction": "", "input": "   ", "output": ""},                     # empty_text
    {"instruction": "No output"},                                          # missing_field
    {"instruction": None, "output": "null instruction"},                   # missing_field
    {"instruction": "Blank output is kept", "input": None, "output": ""},
    {"instruction": "with extras", "output": "o", "source": "orig", "meta": {"a": 1}, "text": "t"},
    {"instruction": "Line\nbreaks \"quoted\" \\ slash", "output": "ok\u0001ctl"},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},            # same content, new id
]


def _both(monkeypatch, fn):
    """(fast result, per-row result) of ``fn()``; asserts the fast path ran."""
    calls = []

    def spy(*a, **k):
        out = REAL_ADAPT(*a, **k)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(aa, "adapt_table", spy)
    fast = fn()
    assert calls == [True], "the vectorised path did not run"
    monkeypatch.setattr(aa, "adapt_table", lambda *a, **k: None)
    slow = fn()
    return fast, slow


def _same(fast, slow):
    assert fast.table.schema == slow.table.schema
    assert fast.table.to_pylist() == slow.table.to_pylist()
    assert fast.quarantine == slow.quarantine
    assert fast.n_rows_seen == slow.n_rows_seen
    # one result type: both paths fill every field, record counts included
    assert (fast.files, fast.warnings, fast.record_counts) == (slow.files, slow.warnings, slow.record_counts)
    assert sum(fast.record_counts.values()) == fast.n_records == fast.n_rows_seen


def test_records_alpaca_same_table_and_quarantine(monkeypatch):
    fast, slow = _both(monkeypatch, lambda: cio.from_records(ALPACA))
    _same(fast, slow)
    reasons = sorted(q["reason"] for q in fast.quarantine)
    assert reasons == ["empty_text", "missing_field", "missing_field"]
    t = fast.table.to_pylist()
    assert t[1]["text"] == "padded instruction\n\nctx\n\nanswer"
    assert "orig_source" in fast.table.column_names and "orig_text" in fast.table.column_names


def test_rows_whose_fields_are_all_blank_or_null_stay_aligned(monkeypatch):
    """Regression: pyarrow 26's join with null_handling="skip" returned fewer rows than it got when
    every part of a row was null, so a blank row next to a real one broke the table (found by
    hypothesis in tests/test_hostile_input.py)."""
    recs = [{"instruction": "", "input": None, "output": ""}, {"instruction": "", "input": None, "output": "0"},
            {"instruction": "q", "input": None, "output": None}, {"instruction": None, "input": "x", "output": "y"}]
    fast, slow = _both(monkeypatch, lambda: cio.from_records(recs))
    _same(fast, slow)
    assert fast.table.column("text").to_pylist() == ["0"]
    assert sorted(q["reason"] for q in fast.quarantine) == ["empty_text", "missing_field", "missing_field"]


@pytest.mark.parametrize("ids", [["a", "b", "a", "c"], [1, 2, 3, 2]])
def test_duplicate_ids_quarantined_like_per_row(monkeypatch, ids):
    recs = [{"id": i, "instruction": f"q{k}", "output": "o"} for k, i in enumerate(ids)]
    fast, slow = _both(monkeypatch, lambda: cio.from_records(recs))
    _same(fast, slow)
    assert [q["reason"] for q in fast.quarantine] == ["duplicate_id"]


def test_id_field_missing(monkeypatch):
    recs = [{"key": "k1", "instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}]
    fast, slow = _both(monkeypatch, lambda: cio.from_records(recs, id_field="key"))
    _same(fast, slow)
    assert fast.quarantine[0]["error"] == "missing id field 'key'" and fast.quarantine[0]["id"] is None


def test_aliases_and_text_format(monkeypatch):
    recs = [{"prompt": "p", "context": "c", "completion": "x"}, {"prompt": "p2", "completion": " "}]
    fast, slow = _both(monkeypatch, lambda: cio.from_records(recs))
    _same(fast, slow)
    texts = [{"text": "plain"}, {"text": "  "}, {"text": None}, {"text": "\u00a0tail"}, {"other": 1}]
    fast, slow = _both(monkeypatch, lambda: cio.from_records(texts, format="text"))
    _same(fast, slow)
    assert sorted(q["reason"] for q in fast.quarantine) == ["empty_text", "missing_field", "missing_field"]


def test_json_and_jsonl_files(monkeypatch, tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text(json.dumps(ALPACA, indent=1, ensure_ascii=False))
    fast, slow = _both(monkeypatch, lambda: cio.read_input(arr))
    _same(fast, slow)
    jl = tmp_path / "b.jsonl"
    jl.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r, ensure_ascii=False) for r in ALPACA[:5]).encode()
                   + b"\n\n   \n" + json.dumps(ALPACA[6]).encode() + b"\r\n")
    fast, slow = _both(monkeypatch, lambda: cio.read_input(jl))
    _same(fast, slow)
    assert [q["line"] for q in fast.quarantine] == [4, 5]
    # the real sample files (Dolly as JSON Lines, GPTeacher as a JSON array)
    for name in ("dolly_2k.jsonl", "gpteacher_roleplay_500.json", "gsm8k_500.jsonl"):
        fast, slow = _both(monkeypatch, lambda name=name: cio.read_input(SAMPLE / name))
        _same(fast, slow)


def test_row_too_large_json_array_bound(monkeypatch, tmp_path):
    """A JSON array bigger than max_row_bytes: the bound proves small rows are fine, or falls back."""
    recs = [{"instruction": f"i{k}", "output": "x" * 50} for k in range(40)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(recs))
    fast, slow = _both(monkeypatch, lambda: cio.read_input(p, max_row_bytes=200))
    _same(fast, slow)
    p.write_text(json.dumps(recs, separators=(",", ":")))  # compact: the file-size bound settles it
    fast, slow = _both(monkeypatch, lambda: cio.read_input(p, max_row_bytes=400))
    _same(fast, slow)
    recs[3]["output"] = "y" * 400  # one row over the limit: the per-row path must decide
    p.write_text(json.dumps(recs))
    assert aa.read_fast([(p, "a.json")], format=None, fields=None, id_field=None, source=None,
                        max_row_bytes=200) is None
    got = cio.read_input(p, max_row_bytes=200)
    assert [q["reason"] for q in got.quarantine] == ["row_too_large"]


MESSAGES = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                  {"role": "assistant", "content": " Hello!\n"}]},
    {"messages": [{"role": "Human", "content": "q1"}, {"role": "GPT", "content": "a1"},
                  {"role": "user", "content": "q2"}, {"role": "bot", "content": "a2"}], "extra": 1},
    {"messages": [{"role": "assistant", "content": "first"}, {"role": "user", "content": "then"}]},  # no reply
    {"messages": [{"role": "system", "content": "only system"}]},                                    # no user
    {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": ""}]},         # empty
    {"messages": [{"role": "user", "content": "x"}, {"content": "no role"}]},                         # role
    {"messages": None},
    {"messages": []},
    {"messages": [{"role": "user", "content": None}, {"role": "tool", "content": "\u00a0t\u00a0"},
                  {"role": "assistant", "content": "ok"}], "extra": 2},
]


def test_messages_same_as_per_row(monkeypatch, tmp_path):
    fast, slow = _both(monkeypatch, lambda: cio.from_records(MESSAGES))
    _same(fast, slow)
    assert sorted(q["reason"] for q in fast.quarantine) == ["empty_text", "empty_text", "missing_field",
                                                            "missing_field", "missing_field", "missing_field"]
    p = tmp_path / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in MESSAGES))
    fast, slow = _both(monkeypatch, lambda: cio.read_input(p))
    _same(fast, slow)


@pytest.mark.parametrize("recs", [
    [{"messages": [{"role": "user", "content": [{"type": "text", "text": "parts"}]},
                   {"role": "assistant", "content": "a"}]}],                                     # content parts
    [{"messages": [{"role": "user", "content": "a"}, None]}],                                    # a null turn
    [{"instruction": "a", "output": 5}],                                    # wrong_type
    [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}],  # sharegpt
    [{"instruction": "a", "output": "b", "x": 1}, {"instruction": "c", "output": "d", "x": "s"}],  # mixed extra
    [{"instruction": "a", "prompt": "b", "output": "c"}],                   # two aliases
    [{"instruction": "a", "output": "b"}, "not a dict"],
])
def test_falls_back_where_it_cannot_match(recs):
    assert aa.records_fast(recs, format=None, id_field=None, source="memory") is None
    try:  # the per-row path takes them: every record kept or quarantined
        got = cio.from_records(recs)
    except InputError as e:  # no record valid: one clear error, as for a file
        assert "no valid rows; 1 quarantined" in str(e) and len(recs) == 1
        return
    assert got.n_records == len(recs) == got.table.num_rows + len(got.quarantine)


def test_lone_surrogate_falls_back_to_per_row_quarantine(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('[{"instruction": "ok", "output": "fine"}, {"instruction": "bad \\ud800", "output": "x"}]')
    got = cio.read_input(p)
    assert got.table.num_rows == 1 and [q["reason"] for q in got.quarantine] == ["invalid_utf8"]
    assert got.table.column("instruction").to_pylist() == ["ok"] and got.quarantine[0]["line"] == 2


def test_object_spans_match_raw_decode_on_tricky_strings():
    recs = [{"instruction": 'has "quotes" and {braces} [brackets]', "output": "ends with backslash \\"},
            {"instruction": "\\\\\"", "output": "}]", "meta": {"nested": [1, {"a": "]"}]}},
            {"instruction": "日本語 \u00e9", "output": "\n\t"}]
    text = "[\n " + ",\n  ".join(json.dumps(r, ensure_ascii=k % 2 == 0) for k, r in enumerate(recs)) + "\n]"
    data = text.encode()
    spans = object_spans(data)
    dec, pos, want = json.JSONDecoder(), text.index("{"), []
    for _ in recs:
        _, end = dec.raw_decode(text, pos)
        want.append(len(text[pos:end].encode()))
        pos = text.find("{", end) if end < len(text) - 2 else end
    assert spans.tolist() == want


TEXTS = [{"text": "plain"}, {"text": "  "}, {"text": None}, {"text": "\u00a0tail "}, {"other": 1}, {"text": "\u2003"}]


@pytest.mark.parametrize("fmt, recs", [("alpaca", ALPACA), ("messages", MESSAGES), ("text", TEXTS)])
def test_column_adapter_gives_the_per_row_adapters_errors_and_text(fmt, recs):
    """Each format's errors are built once and used by both of its adapters: the first failing
    check of a row is exactly the RowError its per-row adapter raises."""
    import numpy as np

    from curate.ingest.formats import RowError
    from curate.ingest.records import record_format

    form = record_format(fmt)
    cols = form.adapt_columns(recs, set().union(*recs), np.ones(len(recs), bool))
    n_bad = 0
    for i, rec in enumerate(recs):
        failing = [c for c in cols.checks if c.mask[i]]
        try:
            canon, _ = form.adapt(rec)
        except RowError as e:
            n_bad += 1
            assert failing, (i, e.message)
            got = failing[0].error_of(i)
            assert (got.reason, got.message) == (e.reason, e.message)
            continue
        assert not failing and cols.text[i].as_py() == canon[4]
    assert 0 < n_bad < len(recs)


def test_sharegpt_has_no_column_adapter():
    import numpy as np

    from curate.ingest.kernels import Fallback
    from curate.ingest.records import record_format

    recs = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}]
    with pytest.raises(Fallback):
        record_format("sharegpt").adapt_columns(recs, {"conversations"}, np.ones(1, bool))


@pytest.mark.parametrize("id_value", ['"\\ud800"', '"a\\udc80b"'])
def test_lone_surrogate_in_the_id_is_quarantined_not_a_crash(tmp_path, id_value):
    # a JSON "\ud800" id decodes to a string Arrow cannot store; it used to raise
    # UnicodeEncodeError while building the table and end the whole run
    p = tmp_path / "s.jsonl"
    p.write_text(f'{{"id": {id_value}, "instruction": "hi", "output": "there"}}\n'
                 '{"id": "fine", "instruction": "ok", "output": "yes"}\n')
    got = cio.read_input(p)
    assert got.table.column("id").to_pylist() == ["fine"]
    assert [(q["reason"], q["line"], q["id"]) for q in got.quarantine] == [("invalid_utf8", 1, None)]
