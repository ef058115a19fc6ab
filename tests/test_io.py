"""Ingest: readers, format adapters, ids, quarantine and file-level errors (curate.ingest.read)."""
from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.core import schema
from curate.core.errors import InputError
from curate.ingest.formats import render_text
from curate.ingest.read import (
    expand_paths,
    from_records,
    input_fingerprint,
    read_input,
)

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def check_invariant(res) -> None:
    # records counted by the readers (not curate's own kept + quarantined total) must all be
    # accounted for: kept or quarantined
    assert res.record_counts, "a reader did not count its records"
    assert res.n_records == res.table.num_rows + len(res.quarantine)
    assert res.table.column_names[:7] == list(schema.CANONICAL_COLUMNS)
    assert res.table.schema.field("messages").type == schema.MESSAGE_TYPE
    ids = res.table.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    for q in res.quarantine:
        assert set(q) == {"file", "line", "id", "reason", "error", "raw"}
        assert re.fullmatch(r"[a-z0-9_]+", q["reason"]) and len(q["raw"]) <= 500


def rows(res) -> list[dict]:
    return res.table.to_pylist()


# ---------------------------------------------------------------- adapters

def test_render_text_joins_stripped_nonblank_parts():
    assert render_text("  Do X. ", "", " Done.\n") == "Do X.\n\nDone."
    assert render_text("a", "b", "c") == "a\n\nb\n\nc"
    assert render_text(messages=[{"role": "system", "content": "S"}, {"role": "user", "content": " q "},
                                 {"role": "assistant", "content": ""}]) == "S\n\nq"
    assert render_text(" ", None, "\t") == ""


def test_alpaca(tmp_path):
    f = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "Add 2+2.", "input": "", "output": "4", "tag": "math"},
                                           {"instruction": "Say hi", "output": "hi"}])
    res = read_input(f)
    check_invariant(res)
    r0, r1 = rows(res)
    assert (r0["id"], r0["instruction"], r0["input"], r0["output"], r0["messages"]) == ("a.jsonl:1", "Add 2+2.", "", "4", None)
    assert r0["text"] == "Add 2+2.\n\n4" and r0["source"] == "a.jsonl" and r0["tag"] == "math"
    assert r1["input"] is None and r1["tag"] is None and r1["text"] == "Say hi\n\nhi"


def test_alpaca_aliases_and_fields_override(tmp_path):
    gsm = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+1?", "answer": "2"}])
    assert rows(read_input(gsm))[0].items() >= {"instruction": "1+1?", "output": "2", "text": "1+1?\n\n2"}.items()
    dolly = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Sum up", "context": "Long story", "response": "Short"}])
    r = rows(read_input(dolly))[0]
    assert (r["instruction"], r["input"], r["output"]) == ("Sum up", "Long story", "Short")
    odd = write_jsonl(tmp_path / "o.jsonl", [{"q": "Why?", "a": "Because.", "ctx": "c"}])
    with pytest.raises(InputError, match=r"o\.jsonl: cannot detect the format"):
        read_input(odd)
    r = rows(read_input(odd, fields={"instruction": "q", "output": "a", "input": "ctx"}))[0]
    assert (r["instruction"], r["input"], r["output"]) == ("Why?", "c", "Because.")
    assert "q" not in r and "a" not in r  # consumed fields are not duplicated as extras
    with pytest.raises(ValueError, match="fields: unknown key 'question'"):
        read_input(odd, fields={"question": "q"})


def test_sharegpt_dict_style(tmp_path):
    conv = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
            {"from": "human", "value": "Bye"}, {"from": "chatgpt", "value": "Ciao"}]
    f = write_jsonl(tmp_path / "s.jsonl", [{"conversations": conv, "system": "Be nice."}])
    r = rows(read_input(f))[0]
    assert [m["role"] for m in r["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert (r["instruction"], r["output"], r["input"]) == ("Hi", "Hello!", None)
    assert r["text"] == "Be nice.\n\nHi\n\nHello!\n\nBye\n\nCiao"
    assert "system" not in r


def test_sharegpt_string_list_style_lima(tmp_path):
    f = write_jsonl(tmp_path / "lima.jsonl", [{"conversations": ["Q1", "A1", "Q2"], "source": "stackexchange"}])
    res = read_input(f)
    r = rows(res)[0]
    assert r["messages"] == [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
                             {"role": "user", "content": "Q2"}]
    assert (r["instruction"], r["output"]) == ("Q1", "A1")
    assert r["source"] == "lima.jsonl" and r["orig_source"] == "stackexchange"


def test_messages_format_and_content_parts(tmp_path):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "Look"}, {"type": "text", "text": "here"}]},
            {"role": "assistant", "content": "Seen."}]
    f = write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs}, {"messages": [{"role": "user", "content": "only"}]}])
    res = read_input(f)
    check_invariant(res)
    r = rows(res)[0]
    assert (r["instruction"], r["output"], r["text"]) == ("Look\nhere", "Seen.", "Look\nhere\n\nSeen.")
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [(2, "missing_field")]  # no assistant turn


def test_text_format_and_text_field(tmp_path):
    f = write_jsonl(tmp_path / "t.jsonl", [{"text": " raw doc \n"}, {"content": "other"}])
    res = read_input(f)
    assert rows(res)[0]["text"] == " raw doc \n" and rows(res)[0]["instruction"] is None
    assert [q["reason"] for q in res.quarantine] == ["missing_field"]
    res2 = read_input(f, text_field="content")
    assert rows(res2)[0]["text"] == "other" and rows(res2)[0]["id"] == "t.jsonl:2"


def test_forced_format_overrides_detection(tmp_path):
    f = write_jsonl(tmp_path / "x.jsonl", [{"instruction": "i", "output": "o", "text": "T"}])
    assert rows(read_input(f))[0]["text"] == "i\n\no"  # auto: alpaca wins over text
    r = rows(read_input(f, format="text"))[0]
    assert (r["text"], r["instruction"], r["orig_instruction"], r["orig_output"]) == ("T", None, "i", "o")
    with pytest.raises(ValueError, match="format must be one of"):
        read_input(f, format="chatml")


# ---------------------------------------------------------------- quarantine

def test_each_quarantine_reason(tmp_path):
    good = {"instruction": "ok", "output": "fine"}
    lines = [
        json.dumps({"id": "a", **good}).encode(),                      # 1 kept
        b'{"id": "b", "instruction": "x", "output": "y"',              # 2 malformed_json
        b'{"id": "c", "instruction": "Caf\xe9", "output": "y"}',        # 3 invalid_utf8
        json.dumps({"id": "d", "instruction": "no output"}).encode(),  # 4 missing_field
        json.dumps({"id": "e", "instruction": [1], "output": "y"}).encode(),  # 5 wrong_type
        json.dumps({"id": "f", "instruction": " ", "output": "\n"}).encode(),  # 6 empty_text
        json.dumps({"id": "g", "instruction": "x" * 300, "output": "y"}).encode(),  # 7 row_too_large
        json.dumps({"id": "a", "instruction": "again", "output": "z"}).encode(),  # 8 duplicate_id
        b"[1, 2]",                                                      # 9 wrong_type (not an object)
        json.dumps({"id": "h", "instruction": "\ud800", "output": "y"}).encode(),  # 10 lone surrogate escape
        json.dumps({"id": "i", **good}).encode(),                      # 11 kept: reading goes on
    ]
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    res = read_input(f, max_row_bytes=200)
    check_invariant(res)
    assert res.table.column("id").to_pylist() == ["a", "i"]
    got = [(q["line"], q["reason"]) for q in res.quarantine]
    assert got == [(2, "malformed_json"), (3, "invalid_utf8"), (4, "missing_field"), (5, "wrong_type"),
                   (6, "empty_text"), (7, "row_too_large"), (8, "duplicate_id"), (9, "wrong_type"), (10, "invalid_utf8")]
    dup = res.quarantine[6]
    assert "bad.jsonl:1" in dup["error"] and "bad.jsonl:8" in dup["error"] and dup["id"] == "a"
    assert res.quarantine[1]["raw"].startswith('{"id": "c", "instruction": "Caf\\xe9"')
    assert all(q["file"] == "bad.jsonl" for q in res.quarantine)


def test_sharegpt_wrong_types(tmp_path):
    f = write_jsonl(tmp_path / "s.jsonl", [{"conversations": "not a list"}, {"conversations": [{"from": "human", "value": 3}]},
                                           {"conversations": ["q", "a"]}, {"conversations": []}])
    res = read_input(f)
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [(1, "wrong_type"), (2, "wrong_type"), (4, "empty_text")]


def test_malformed_json_array_keeps_rows_before_the_error(tmp_path):
    f = tmp_path / "arr.json"
    f.write_text('[{"instruction": "a", "output": "b"},\n {"instruction": "c", "output": "d"},\n {"instruction": "e", "outp')
    res = read_input(f)
    check_invariant(res)
    assert res.table.column("id").to_pylist() == ["arr.json:1", "arr.json:2"]
    (q,) = res.quarantine
    assert q["reason"] == "malformed_json" and q["line"] == 3 and "line 3" in q["error"]
    assert any("malformed JSON array" in w for w in res.warnings)


def test_invalid_utf8_inside_json_array_is_per_row(tmp_path):
    f = tmp_path / "arr.json"
    f.write_bytes(b'[{"instruction": "Caf\xe9", "output": "b"}, {"instruction": "c", "output": "d"}]')
    res = read_input(f)
    assert res.table.column("id").to_pylist() == ["arr.json:2"]
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [(1, "invalid_utf8")]


# ---------------------------------------------------------------- ids

def test_id_rules(tmp_path):
    f = write_jsonl(tmp_path / "i.jsonl", [{"id": 7, "uid": "u1", "instruction": "a", "output": "b"},
                                           {"id": None, "uid": "u2", "instruction": "c", "output": "d"}])
    assert rows(read_input(f))[0]["id"] == "7" and rows(read_input(f))[1]["id"] == "i.jsonl:2"
    r = rows(read_input(f, id_field="uid"))
    assert [x["id"] for x in r] == ["u1", "u2"] and r[0]["orig_id"] == 7 and "uid" not in r[0]
    with pytest.raises(InputError, match="no valid rows; 2 quarantined"):
        read_input(f, id_field="missing")


def test_line_ids_count_physical_lines_and_dirs_use_relative_names(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('\n{"text": "x"}\n\n{"text": "y"}\n')
    write_jsonl(tmp_path / "a.jsonl", [{"text": "z"}])
    (tmp_path / "notes.txt").write_text("ignored")
    res = read_input(tmp_path)
    assert res.table.column("id").to_pylist() == ["a.jsonl:1", "sub/b.jsonl:2", "sub/b.jsonl:4"]
    assert [Path(f).name for f in res.files] == ["a.jsonl", "b.jsonl"]


def test_duplicate_id_across_files_names_both_places(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"id": "x", "text": "one"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "y", "text": "two"}, {"id": "x", "text": "three"}])
    res = read_input([tmp_path / "a.jsonl", tmp_path / "b.jsonl"])
    (q,) = res.quarantine
    assert q["reason"] == "duplicate_id" and "a.jsonl:1" in q["error"] and "b.jsonl:2" in q["error"]


# ---------------------------------------------------------------- file types

ROWS = [{"instruction": "i1", "input": "", "output": "o1", "n": 1}, {"instruction": "i2", "input": "c", "output": "o2", "n": 2}]


def _expect_two(res, name):
    check_invariant(res)
    assert res.table.column("id").to_pylist() == [f"{name}:1", f"{name}:2"]
    assert res.table.column("text").to_pylist() == ["i1\n\no1", "i2\n\nc\n\no2"]


def test_file_types(tmp_path):
    _expect_two(read_input(write_jsonl(tmp_path / "r.jsonl", ROWS)), "r.jsonl")
    (tmp_path / "r.json").write_text(json.dumps(ROWS, indent=2))
    _expect_two(read_input(tmp_path / "r.json"), "r.json")
    (tmp_path / "w.json").write_text(json.dumps({"data": ROWS}))
    _expect_two(read_input(tmp_path / "w.json"), "w.json")
    write_jsonl(tmp_path / "l.json", ROWS)  # JSON Lines content in a .json file
    _expect_two(read_input(tmp_path / "l.json"), "l.json")
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "r.parquet")
    res = read_input(tmp_path / "r.parquet")
    _expect_two(res, "r.parquet")
    assert res.table.column("n").to_pylist() == [1, 2]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as fh:
        fh.write("".join(json.dumps(r) + "\n" for r in ROWS))
    _expect_two(read_input(tmp_path / "r.jsonl.gz"), "r.jsonl.gz")


def test_csv_and_tsv(tmp_path):
    (tmp_path / "r.csv").write_text('instruction,input,output\ni1,,o1\n"i2",c,"o2"\n"multi\nline",,o3\nx,y,z,extra\n')
    res = read_input(tmp_path / "r.csv")
    check_invariant(res)
    assert res.table.column("id").to_pylist() == ["r.csv:2", "r.csv:3", "r.csv:4"]
    assert res.table.column("instruction").to_pylist() == ["i1", "i2", "multi\nline"]
    assert [(q["line"], q["reason"]) for q in res.quarantine] == [(6, "malformed_row")]
    (tmp_path / "r.tsv").write_text("question\tanswer\nq1\ta1\n")
    assert rows(read_input(tmp_path / "r.tsv"))[0]["text"] == "q1\n\na1"


def test_save_to_disk_dir(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list(ROWS)
    ds.save_to_disk(str(tmp_path / "ds"))
    res = read_input(tmp_path / "ds")
    _expect_two(res, "ds")
    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    assert read_input(tmp_path / "dd", split="test").table.num_rows == 1
    with pytest.raises(InputError, match=r"no split 'dev'"):
        read_input(tmp_path / "dd", split="dev")


def test_hub_unreachable_is_one_line_input_error(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputError) as e:
        read_input("hf://owner/name")
    assert str(e.value).startswith("hf://owner/name: could not load from the Hugging Face hub") and "\n" not in str(e.value)
    with pytest.raises(InputError, match="not a local path either"):
        read_input("owner/name")


# ---------------------------------------------------------------- file-level errors

def test_empty_input_errors_and_warnings(tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(InputError, match=r"^e\.jsonl: file is empty$"):
        read_input(tmp_path / "e.jsonl")
    (tmp_path / "blank.json").write_text("  \n")
    with pytest.raises(InputError, match="all 2 files are empty"):
        read_input(tmp_path)
    write_jsonl(tmp_path / "ok.jsonl", [{"text": "x"}])
    res = read_input(tmp_path)
    assert res.table.num_rows == 1 and sorted(res.warnings) == ["blank.json: file is empty", "e.jsonl: file is empty"]
    with pytest.raises(InputError, match="no such file or directory"):
        read_input(tmp_path / "missing.jsonl")


def test_lying_suffix(tmp_path):
    (tmp_path / "fake.parquet").write_text('{"text": "I am JSON"}\n')
    with pytest.raises(InputError) as e:
        read_input(tmp_path / "fake.parquet")
    assert str(e.value).startswith("fake.parquet: not a Parquet file") and "\n" not in str(e.value)
    (tmp_path / "bin.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(InputError, match=r"^bin\.json: not a JSON file"):
        read_input(tmp_path / "bin.json")
    write_jsonl(tmp_path / "ok.jsonl", [{"text": "x"}])
    res = read_input(tmp_path)
    check_invariant(res)
    assert res.table.num_rows == 1
    assert sorted(q["file"] for q in res.quarantine if q["reason"] == "unreadable_file") == ["bin.json", "fake.parquet"]
    assert len(res.warnings) == 2 and res.n_rows_seen == 3


def test_nothing_valid_is_an_error(tmp_path):
    (tmp_path / "junk.jsonl").write_text("not json\nstill not\n")
    with pytest.raises(InputError, match=r"^junk\.jsonl: no valid rows; 2 quarantined \(2 malformed_json\)"):
        read_input(tmp_path / "junk.jsonl")


# ---------------------------------------------------------------- paths, fingerprint, in-memory

def test_expand_paths_and_fingerprint(tmp_path):
    d = tmp_path / "d"
    (d / "z").mkdir(parents=True)
    write_jsonl(d / "b.jsonl", [{"text": "b"}])
    write_jsonl(d / "z" / "a.json", [{"text": "a"}])
    (d / "skip.txt").write_text("x")
    assert [p.relative_to(d).as_posix() for p in expand_paths(d)] == ["b.jsonl", "z/a.json"]
    assert [p.name for p in expand_paths(str(d / "**" / "*.json"))] == ["a.json"]
    with pytest.raises(InputError, match="no supported files match"):
        expand_paths(str(d / "*.parquet"))
    fp = input_fingerprint(d)
    assert fp == input_fingerprint(d) and re.fullmatch(r"[0-9a-f]{16}", fp)
    assert input_fingerprint([d / "z" / "a.json", d / "b.jsonl"]) == input_fingerprint([d / "b.jsonl", d / "z" / "a.json"])
    write_jsonl(d / "b.jsonl", [{"text": "c"}])  # same size, different bytes
    assert input_fingerprint(d) != fp


def test_from_records_variants():
    import datasets
    import pandas as pd

    res = from_records([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"}])
    assert res.table.column("id").to_pylist() == ["0", "1"] and res.files == ["memory"]  # 0-based row positions
    t = pa.Table.from_pylist(ROWS)
    for data in (t, pd.DataFrame(ROWS), datasets.Dataset.from_list(ROWS).select([0, 1])):
        r = from_records(data, source="mem")
        check_invariant(r)
        assert r.table.column("text").to_pylist() == ["i1\n\no1", "i2\n\nc\n\no2"]
    again = from_records(res.table)  # canonical tables pass through
    assert again.table.equals(res.table)
    with pytest.raises(InputError, match="memory: input is empty"):
        from_records([])


def test_from_records_rows_without_ids_beside_rows_with_ids_keep_every_row():
    # a bare position id ("1") would collide with another row's own id 1 and quarantine a row that is no duplicate
    mixed = [{"id": 1, "instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},
             {"instruction": "e", "output": "f"}]
    for data in (mixed, pa.Table.from_pylist(mixed)):
        r = from_records(data)
        assert r.table.column("id").to_pylist() == ["1", "memory:1", "memory:2"] and r.quarantine == []
    # a real repeat is still quarantined, and rows that all lack ids keep their bare positions
    r = from_records(mixed + [{"id": 1, "instruction": "g", "output": "h"}])
    assert [q["reason"] for q in r.quarantine] == ["duplicate_id"] and r.table.num_rows == 3
    assert from_records(mixed[1:]).table.column("id").to_pylist() == ["0", "1"]


# ---------------------------------------------------------------- sample_data (what its README promises)

def test_sample_data_counts_match_readme():
    res = read_input(SAMPLE)
    check_invariant(res)
    assert [Path(f).name for f in res.files] == ["dolly_2k.jsonl", "gpteacher_roleplay_500.json", "gsm8k_500.jsonl", "planted.jsonl"]
    assert (res.table.num_rows, len(res.quarantine), res.n_rows_seen) == (3022, 6, 3028)
    assert Counter(q["reason"] for q in res.quarantine) == Counter(
        ["malformed_json", "invalid_utf8", "missing_field", "empty_text", "wrong_type", "duplicate_id"])
    assert Counter(res.table.column("source").to_pylist()) == {"dolly_2k.jsonl": 2000, "gpteacher_roleplay_500.json": 500,
                                                               "gsm8k_500.jsonl": 500, "planted.jsonl": 22}
    strict = read_input(SAMPLE, max_row_bytes=20000)
    assert (strict.table.num_rows, len(strict.quarantine)) == (3021, 7)
    assert [q["line"] for q in strict.quarantine] == [21, 22, 23, 24, 25, 26, 27]
    norm = Counter(re.sub(r"\s+", " ", t.lower()).strip() for t in res.table.column("text").to_pylist())
    assert sorted(norm.values(), reverse=True)[:21] == [2] * 20 + [1]  # exactly the 20 planted duplicates


def test_json_object_forms(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}))
    r = rows(read_input(tmp_path / "one.json"))
    assert len(r) == 1 and r[0]["id"] == "one.json:1" and r[0]["text"] == "q\n\na"
    (tmp_path / "strs.json").write_text(json.dumps(["just", "strings"]))
    with pytest.raises(InputError, match=r"no valid rows; 2 quarantined \(2 wrong_type\)"):
        read_input(tmp_path / "strs.json")


def test_mixed_type_extra_columns_become_strings(tmp_path):
    f = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "meta": 1}, {"text": "b", "meta": "two"},
                                           {"text": "c", "meta": {"k": [1]}}, {"text": "d"}])
    res = read_input(f)
    assert res.table.schema.field("meta").type == pa.string()
    assert res.table.column("meta").to_pylist() == ["1", "two", '{"k": [1]}', None]


def test_from_records_passes_id_text_tables_through():
    t = pa.table({"id": [1, 2], "text": ["a", "b"], "source": ["s", "s"], "score": [0.5, 0.1]})
    res = from_records(t)
    assert res.table.column_names == list(schema.CANONICAL_COLUMNS) + ["score"]
    assert res.table.column("id").to_pylist() == ["1", "2"] and res.table.column("source").to_pylist() == ["s", "s"]
    assert res.table.column("instruction").null_count == 2 and res.quarantine == []
    assert from_records(t.drop(["source"]), source="mine").table.column("source").to_pylist() == ["mine", "mine"]
    with pytest.raises(InputError, match="id column has duplicates"):
        from_records(pa.table({"id": ["x", "x"], "text": ["a", "b"]}))


# ---------------------------------------------------------------- readers and record formats, one module each

def _write_as(path: Path, rows: list[dict]) -> Path:
    """``rows`` written in the format ``path``'s suffix names."""
    name = path.name
    if name.endswith((".csv", ".tsv")):
        sep = "\t" if name.endswith(".tsv") else ","
        cols = list(rows[0])
        path.write_text(sep.join(cols) + "\n" + "".join(sep.join(r[c] for c in cols) + "\n" for r in rows))
        return path
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    body = (json.dumps(rows) if ".json." in name + "." else "".join(json.dumps(r) + "\n" for r in rows)).encode()
    if name.endswith(".gz"):
        body = gzip.compress(body)
    elif name.endswith(".zst"):
        buf = pa.BufferOutputStream()
        with pa.CompressedOutputStream(buf, "zstd") as f:
            f.write(body)
        body = buf.getvalue().to_pybytes()
    path.write_bytes(body)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".parquet", ".csv", ".tsv", ".jsonl.gz", ".ndjson.gz",
                                    ".json.gz", ".jsonl.zst", ".ndjson.zst", ".json.zst"])
def test_each_suffix_has_a_reader_yielding_numbered_records(tmp_path, suffix):
    from curate.ingest.readers import READERS, SUPPORTED_SUFFIXES, read_records

    assert set(READERS) == set(SUPPORTED_SUFFIXES) and suffix in READERS
    rows = [{"instruction": "i1", "output": "o1"}, {"instruction": "i2", "output": "o2"}]
    got = list(read_records(_write_as(tmp_path / f"r{suffix}", rows), 1000, "train"))
    first = 2 if suffix in (".csv", ".tsv") else 1  # CSV lines count the header
    assert [(r.line, r.value) for r in got] == [(first, rows[0]), (first + 1, rows[1])]
    assert all(r.raw is None or json.loads(r.raw) == r.value for r in got)


def test_unsupported_suffix_names_the_supported_ones(tmp_path):
    from curate.ingest.readers import read_records

    with pytest.raises(InputError, match=r"unsupported file type '\.txt' \(supported: \.jsonl, \.ndjson, \.json,"):
        read_records(tmp_path / "a.txt", 1000, "train")


def test_readers_give_line_and_raw_text_of_bad_rows(tmp_path):
    from curate.ingest.formats import RowError
    from curate.ingest.readers.jsonl import read_jsonl
    from curate.ingest.readers.table import iter_table

    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"text": "ok"}\n\n{broken\n' + b'{"text": "' + b"x" * 50 + b'"}\n')
    got = list(read_jsonl(p, 40))
    assert [r.line for r in got] == [1, 3, 4]  # physical lines: the blank line 2 is no record
    assert got[0].value == {"text": "ok"} and got[0].raw == '{"text": "ok"}'
    assert isinstance(got[1].value, RowError) and got[1].value.reason == "malformed_json" and got[1].raw == "{broken"
    assert got[2].value.reason == "row_too_large" and got[2].raw.startswith('{"text": "xxx')
    big = list(iter_table(pa.table({"text": ["short", "y" * 30]}), 10))
    assert big[0].value == {"text": "short"} and big[0].raw is None
    assert big[1].value.reason == "row_too_large" and json.loads(big[1].raw) == {"text": "y" * 30}


def test_record_format_registry():
    from curate.ingest.formats import FORMATS
    from curate.ingest.records import RECORD_FORMATS, record_format

    assert set(RECORD_FORMATS) == set(FORMATS) - {"auto"}
    assert record_format("alpaca", {"instruction": "q"}).adapt({"q": "a", "output": "b"})[0][4] == "a\n\nb"
    with pytest.raises(ValueError, match="format must be one of .* got 'xml'"):
        record_format("xml")
    with pytest.raises(ValueError, match="fields: unknown key 'bogus'"):
        record_format("text", {"bogus": "x"})
