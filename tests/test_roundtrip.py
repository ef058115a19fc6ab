"""Round trip: ``curate.select(data)`` gives back the user's rows in the user's schema.

Rows are real (sample_data/: Dolly, GSM8K, GPTeacher, see sample_data/README.md) poured into
the shapes users bring: alpaca, ShareGPT ``conversations`` of ``{from, value}``, OpenAI
``messages``, LIMA-style ``conversations`` as a list of strings, and plain ``text``; each with
a user ``source`` and a nested ``extra`` dict. Every test checks features/columns, deep
equality of every output row with the input row at its index, the kept count, and that
``return_indices`` reproduces the output.
"""
from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import curate
from curate.core.errors import InputError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data"
N = 60


def _real_pairs(n: int = N) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the sample data: Dolly, then GSM8K, then GPTeacher rows."""
    out = []
    with open(SAMPLE / "dolly_2k.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            out.append((r["instruction"] + ("\n" + r["input"] if r.get("input") else ""), r["output"]))
            if len(out) == n // 3:
                break
    with open(SAMPLE / "gsm8k_500.jsonl", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            out.append((r["question"], r["answer"]))
            if len(out) == 2 * n // 3:
                break
    for r in json.loads((SAMPLE / "gpteacher_roleplay_500.json").read_text(encoding="utf-8"))[:n - len(out)]:
        out.append((r["instruction"], r["response"] if "response" in r else r["output"]))
    return out


def shaped(shape: str, n: int = N) -> list[dict]:
    """``n`` real rows in one user shape, each with ``source`` and a nested ``extra``."""
    rows = []
    for i, (p, a) in enumerate(_real_pairs(n)):
        if shape == "alpaca":
            body = {"instruction": p, "input": "", "output": a}
        elif shape == "sharegpt":
            body = {"conversations": [{"from": "human", "value": p}, {"from": "gpt", "value": a}]}
        elif shape == "messages":
            body = {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
        elif shape == "lima":
            body = {"conversations": [p, a]}
        else:
            body = {"text": p + "\n\n" + a}
        rows.append({**body, "source": ["dolly", "gsm8k", "gpteacher"][3 * i // n],
                     "extra": {"k": i, "tags": ["t", str(i % 3)], "score": i / 7}})
    return rows


SHAPES = ("alpaca", "sharegpt", "messages", "lima", "text")
KINDS = ("dataset", "arrow", "pandas", "list")


def as_kind(rows: list[dict], kind: str):
    if kind == "list":
        return rows
    ds = datasets.Dataset.from_list(rows)
    if kind == "dataset":
        return ds
    if kind == "arrow":
        return ds.data.table
    df = ds.to_pandas()
    df.index = pd.Index([f"u{i}" for i in range(len(df))], name="user_index")  # a non-default index survives
    return df


def rows_of(obj, kind: str) -> list[dict]:
    if kind == "dataset":
        return obj.to_list()
    if kind == "arrow":
        return obj.to_pylist()
    if kind == "pandas":
        return obj.to_dict("records")
    return obj


def check_round_trip(data, kind: str, out, idx: np.ndarray, budget: int) -> None:
    assert type(out) is type(data)
    assert len(out) == budget == len(idx)
    assert np.all(np.diff(idx) > 0), "kept rows come back in input order"
    if kind == "dataset":
        assert out.features == data.features
        assert data.select(idx).to_list() == out.to_list()
    elif kind == "arrow":
        assert out.schema == data.schema
        assert data.take(pa.array(idx)).equals(out)
    elif kind == "pandas":
        assert list(out.columns) == list(data.columns) and (out.dtypes == data.dtypes).all()
        assert list(out.index) == [data.index[i] for i in idx] and out.index.name == "user_index"
    inp = rows_of(data, kind)
    for j, i in enumerate(idx.tolist()):
        assert rows_of(out, kind)[j] == inp[i]  # deep equality, nested values included


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_select_returns_the_input_rows_in_the_input_schema(shape, kind):
    data = as_kind(shaped(shape), kind)
    out, idx = curate.select(data, method="random", budget=17, seed=3, return_indices=True)
    check_round_trip(data, kind, out, idx, 17)
    if kind == "list":
        assert all(any(o is r for r in data) for o in out)  # the user's own dicts, not copies


@pytest.mark.parametrize("kind", KINDS)
def test_a_dedup_keeps_the_first_of_each_planted_duplicate_in_the_users_schema(kind):
    rows = shaped("sharegpt", 30)
    rows = rows + [json.loads(json.dumps(rows[i])) for i in (3, 8, 20)]  # exact copies at the end
    data = as_kind(rows, kind)
    out, idx, prov = curate.select(data, method="exact_dedup", return_indices=True, return_provenance=True)
    assert idx.tolist() == list(range(30))  # the copies (positions 30-32) are the dropped rows
    check_round_trip(data, kind, out, idx, 30)
    dropped = prov.filter(pa.compute.equal(prov.column("status"), "dropped")).column("id").to_pylist()
    assert sorted(dropped) == ["30", "31", "32"]  # in-memory ids are the rows' 0-based positions


def test_user_ids_name_the_rows_and_scores_are_opt_in():
    rows = [{**r, "uid": f"user-{i:03d}"} for i, r in enumerate(shaped("alpaca"))]
    ds = datasets.Dataset.from_list(rows)
    out, idx, prov = curate.select(ds, method="top_k", budget=5, score="h_words", id_field="uid",
                                   return_indices=True, return_provenance=True)
    assert out.column_names == ds.column_names  # no score column unless asked
    sel = prov.filter(pa.compute.equal(prov.column("status"), "selected"))
    assert sorted(sel.column("id").to_pylist()) == sorted(out["uid"])
    words = dict(zip(prov.column("id").to_pylist(), prov.column("h_words").to_pylist()))
    assert sorted(words[u] for u in out["uid"]) == sorted(words.values())[-5:]  # the top 5, named by the user's ids
    assert [rows[i]["uid"] for i in idx] == out["uid"]
    scored = curate.select(ds, method="top_k", budget=5, score="h_words", id_field="uid", with_scores=True)
    assert scored.column_names[:len(ds.column_names)] == ds.column_names
    assert "h_words" in scored.column_names and "embedding" not in scored.column_names
    assert scored.select_columns(ds.column_names).to_list() == out.to_list()
    named = curate.select(ds, method="top_k", budget=5, score="h_words", id_field="uid", with_scores=["h_words"])
    assert named.column_names == ds.column_names + ["h_words"]


def test_a_score_named_like_a_user_column_does_not_overwrite_it():
    rows = [{**r, "h_words": "mine"} for r in shaped("text", 20)]
    out = curate.select(rows, method="top_k", budget=4, score="h_chars", with_scores=["h_chars", "h_words"])
    assert all(r["h_words"] == "mine" and isinstance(r["curate_h_words"], float) for r in out)
    assert all("h_words" in r and "curate_h_words" not in r for r in rows)  # the input dicts are untouched


def test_chat_template_reads_the_output_as_it_read_the_input():
    from curate.models.tokenizers import load_tokenizer

    tok = load_tokenizer("SmolLM2-135M-Instruct")
    ds = datasets.Dataset.from_list(shaped("messages"))
    out, idx = curate.select(ds, method="random", budget=9, seed=0, return_indices=True)
    fmt = lambda r: tok.apply_chat_template(r["messages"], tokenize=False)  # noqa: E731
    assert [fmt(r) for r in out] == [fmt(ds[int(i)]) for i in idx]


def test_quarantined_rows_keep_positions_aligned():
    rows = shaped("alpaca", 20)
    rows[4] = {"instruction": "", "output": ""}  # empty text: quarantined
    rows[9] = {"nothing": 1, "source": "x", "extra": {"k": -1, "tags": [], "score": 0.0}}  # no usable field
    out, idx, prov = curate.select(rows, method="random", budget=1.0, return_indices=True, return_provenance=True)
    assert 4 not in idx and 9 not in idx and len(idx) == 18
    assert [rows[i] for i in idx] == out
    assert sorted(prov.filter(pa.compute.equal(prov.column("status"), "quarantined"))
                  .column("id").to_pylist()) == ["4", "9"]


def test_paths_give_the_records_as_read(tmp_path):
    """A JSONL file (parsed records) and a Parquet file (its own Arrow types) in one input."""
    sharegpt = shaped("sharegpt", 24)
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as fh:
        for r in sharegpt:
            fh.write(json.dumps(r) + "\n")
    table = pa.Table.from_pylist(shaped("alpaca", 24)).cast(
        pa.schema([("instruction", pa.large_string()), ("input", pa.string()), ("output", pa.string()),
                   ("source", pa.string()), ("extra", pa.struct([("k", pa.int16()), ("tags", pa.list_(pa.string())),
                                                                 ("score", pa.float32())]))]))
    pq.write_table(table, tmp_path / "b.parquet")
    out, prov = curate.select(str(tmp_path), method="random", budget=20, seed=1, return_provenance=True)
    assert isinstance(out, datasets.Dataset) and len(out) == 20
    kept = prov.filter(pa.compute.equal(prov.column("status"), "selected")).column("id").to_pylist()
    by_id = {f"a.jsonl:{i + 1}": r for i, r in enumerate(sharegpt)}
    by_id.update({f"b.parquet:{i + 1}": r for i, r in enumerate(table.to_pylist())})
    got = out.to_list()
    for rid, row in zip(kept, got):  # provenance's selected rows align with the output, in input order
        want = by_id[rid]
        assert {k: v for k, v in row.items() if k in want} == want
        assert all(row[k] is None for k in row if k not in want)  # the other file's columns are null
    alone = curate.select(str(tmp_path / "b.parquet"), method="random", budget=5, seed=1)
    assert alone.features == datasets.Dataset(table).features  # a Parquet file alone keeps its Arrow types
    assert out.features["extra"]["k"] == datasets.Value("int64")  # mixed with JSON: merged as Arrow promotes
    with pytest.raises(ValueError, match="return_indices is for in-memory data"):
        curate.select(str(tmp_path), method="random", budget=3, return_indices=True)


def test_canonical_view_on_request_and_a_datasetdict_is_refused():
    ds = datasets.Dataset.from_list(shaped("lima", 12))
    canon = curate.select(ds, method="random", budget=4, seed=0, schema="canonical")
    assert {"id", "text", "messages", "orig_source"} <= set(canon.column_names)
    assert "embedding" not in curate.select(ds, method="kcenter", budget=4, seed=0, schema="canonical").column_names
    with pytest.raises(InputError, match="takes one split"):
        curate.select(datasets.DatasetDict({"train": ds, "test": ds}), method="random", budget=2)
    rows = shaped("lima", 12)
    c, idx = curate.select(rows, method="random", budget=4, seed=0, schema="canonical", return_indices=True)
    assert sorted(c["id"], key=int) == [str(i) for i in idx]  # canonical ids of in-memory rows are their positions
    arrow = curate.select(ds, method="random", budget=4, seed=0, output="arrow")
    assert isinstance(arrow, pa.Table) and arrow.column_names == ds.column_names


def test_recipe_original_schema_writes_the_input_records(tmp_path):
    """``output.schema: original`` on the sample data: the kept records as read, in input order,
    aligned with provenance's selected rows; ``scores: true`` adds the stages' columns."""
    from curate.engine.config import load_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""
input: {{path: {SAMPLE}, max_row_bytes: 20000}}
stages:
  - {{type: exact_dedup}}
  - {{type: heuristics}}
  - {{type: random, budget: 300, seed: 0}}
output: {{dir: {tmp_path / 'out'}, schema: original, plots: false}}
""")
    res = curate.run(str(recipe), show_progress=False, cache_dir=str(tmp_path / "cache"))
    ds = datasets.load_from_disk(str(res.output_dir / "dataset"))
    prov = pq.read_table(res.output_dir / "provenance.parquet")
    kept = prov.filter(pa.compute.equal(prov.column("status"), "selected")).column("id").to_pylist()
    assert len(ds) == len(kept) == 300
    raw = {}
    for f in ("dolly_2k.jsonl", "gsm8k_500.jsonl"):
        with open(SAMPLE / f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.strip():
                    raw[f"{f}:{n}"] = json.loads(line)
    for n, r in enumerate(json.loads((SAMPLE / "gpteacher_roleplay_500.json").read_text(encoding="utf-8")), 1):
        raw[f"gpteacher_roleplay_500.json:{n}"] = r
    checked = 0
    for rid, row in zip(kept, ds.to_list()):
        if rid in raw:
            assert {k: v for k, v in row.items() if k in raw[rid]} == raw[rid]
            checked += 1
    assert checked > 250 and "h_words" not in ds.column_names and "text" not in ds.column_names
    assert json.loads((res.output_dir / "manifest.json").read_text())["schema"] == "original"
    cfg = load_config(str(recipe))
    assert cfg.output.schema_ == "original"
    res2 = curate.run(str(recipe), show_progress=False, cache_dir=str(tmp_path / "cache"),
                      overrides=["output.scores=true"])
    ds2 = datasets.load_from_disk(str(res2.output_dir / "dataset"))
    assert "h_words" in ds2.column_names and ds2.select_columns(ds.column_names).to_list() == ds.to_list()


@pytest.mark.parametrize("shape", SHAPES)
def test_a_jsonl_file_of_each_shape_comes_back_as_its_records(shape, tmp_path):
    rows = shaped(shape, 30)
    path = tmp_path / f"{shape}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out, prov = curate.select(str(path), method="random", budget=11, seed=2, return_provenance=True)
    kept = prov.filter(pa.compute.equal(prov.column("status"), "selected")).column("id").to_pylist()
    idx = [int(k.rsplit(":", 1)[1]) - 1 for k in kept]
    assert len(out) == 11 and idx == sorted(idx)
    assert out.to_list() == datasets.Dataset.from_list(rows).select(idx).to_list()
    assert out.features == datasets.load_dataset("json", data_files=str(path), split="train").features
