"""`curate compare`: overlap matrices and coverage/quality of several runs' selections."""
from __future__ import annotations

import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from _planted import N_TOPICS, planted_quality, write_pool
from typer.testing import CliRunner

import curate
from curate.cli.main import app
from curate.report.compare import compare, load_run


def _run(tmp_path, name: str, method: dict, quality: bool = False, sae: bool = False):
    pool = tmp_path / "pool.jsonl"
    if not pool.exists():
        write_pool(pool)
    stages = [{"type": "exact_dedup"}, {"type": "planted_embedding"}]
    if quality:
        stages.append({"type": "planted_quality"})
    if sae:
        stages.append({"type": "planted_sae_features"})
    stages.append(method)
    cfg = {"name": name, "input": {"path": str(pool)}, "stages": stages,
           "output": {"dir": str(tmp_path / name), "plots": False}}
    return curate.run(cfg, show_progress=False).output_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATE_CACHE", str(tmp / "cache"))
    out = {"rand0": _run(tmp, "rand0", {"type": "random", "budget": 40, "seed": 0}),
           "rand1": _run(tmp, "rand1", {"type": "random", "budget": 40, "seed": 1}),
           "topq": _run(tmp, "topq", {"type": "top_k", "score": "quality", "budget": 40}, quality=True),
           "long": _run(tmp, "long", {"type": "top_k", "score": "h_words", "budget": 40}, sae=True)}
    mp.undo()
    return out


def _selected(path) -> set:
    p = pq.read_table(path / "provenance.parquet")
    return {i for i, s in zip(p.column("id").to_pylist(), p.column("status").to_pylist()) if s == "selected"}


def test_overlap_matrices_match_set_arithmetic(runs, tmp_path):
    names = ["rand0", "rand1", "topq", "long"]
    res = compare([runs[n] for n in names], tmp_path / "cmp")
    sets = [_selected(runs[n]) for n in names]
    for a in range(4):
        for b in range(4):
            inter = len(sets[a] & sets[b])
            assert res["overlap"]["intersection"][a][b] == inter
            assert res["overlap"]["jaccard"][a][b] == pytest.approx(inter / len(sets[a] | sets[b]))
            assert res["overlap"]["shared_of_row"][a][b] == pytest.approx(inter / 40)
    assert [r["selected"] for r in res["runs"]] == [40] * 4
    # "pool" is what the selection chose from: the rows exact_dedup kept, not everything ingested
    prov = pq.read_table(runs["rand0"] / "provenance.parquet").to_pylist()
    ingested = sum(p["status"] != "quarantined" for p in prov)
    deduped = sum(p["status"] != "quarantined" and p["stage"] != "0:exact_dedup" for p in prov)
    assert deduped < ingested  # the planted pool has exact duplicates
    assert (res["runs"][0]["ingested_rows"], res["runs"][0]["pool_rows"]) == (ingested, deduped)
    assert "| rand0 | %d | %d | 40 |" % (ingested, deduped) in (tmp_path / "cmp" / "compare.md").read_text()
    assert len(sets[0] & sets[1]) < 40  # two seeds really differ, so the matrix is not trivially 1
    for f in ("compare.md", "compare.json", "overlap.png"):
        assert (tmp_path / "cmp" / f).stat().st_size > 100
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["overlap"] == res["overlap"]


def test_coverage_and_quality_use_one_ruler_across_runs(runs):
    res = compare([runs["rand0"], runs["topq"], runs["long"]])
    assert res["cluster_source"] == "rand0" and res["score_sources"] == {"quality": "topq"}
    by = {r["name"]: r for r in res["runs"]}
    # top_k on h_words keeps topic 0's long rows only: 1 of 4 clusters
    assert by["long"]["cluster_coverage"] == {"clusters": N_TOPICS, "covered": 1, "coverage": 0.25,
                                              "selected_without_cluster": 0}
    data = pq.read_table(runs["rand0"] / "data")
    topics = {int(s.split(":")[0].split()[1]) for s in data.column("instruction").to_pylist()}
    assert by["rand0"]["cluster_coverage"]["covered"] == len(topics)
    # the random run has no quality column: its mean comes from the topq run's ledger, by id
    q = [planted_quality(s) for s in data.column("instruction").to_pylist()]
    assert by["rand0"]["quality_mean"] == pytest.approx(np.mean(q)) and by["rand0"]["quality_n"] == 40
    assert by["topq"]["quality_mean"] > by["rand0"]["quality_mean"]
    words = [len(s.split()) for s in data.column("output").to_pylist()]
    assert by["rand0"]["words_mean"] == pytest.approx(np.mean(words)) and by["rand0"]["length_field"] == "output"


def test_sae_column_is_skipped_with_a_note_when_unavailable(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "curate.select.sae", None)  # import fails as on a branch without it
    res = compare([runs["rand0"], runs["rand1"]])
    assert any(n.startswith("SAE feature coverage: skipped") for n in res["notes"])
    assert all("sae_feature_coverage" not in r for r in res["runs"])


def test_sae_coverage_from_the_run_that_computed_features(runs):
    # the real curate.select.sae coverage API on the planted features
    res = compare([runs["rand0"], runs["long"]])
    by = {r["name"]: r for r in res["runs"]}
    # features {c, 4 + i % 3}: topic 0's rows cover {0, 4, 5, 6} of the pool's 7
    assert by["long"]["sae_feature_coverage"] == pytest.approx(4 / 7)
    ids = [int(i[1:]) for i in _selected(runs["rand0"])]
    expect = {i % N_TOPICS for i in ids} | {4 + i % 3 for i in ids}
    assert by["rand0"]["sae_feature_coverage"] == pytest.approx(len(expect) / 7)
    assert any("features from run long step 2:planted_sae_features" in n for n in res["notes"])


def test_same_name_twice_stays_apart(runs):
    res = compare([runs["rand0"], runs["rand0"]])
    assert [r["name"] for r in res["runs"]] == ["rand0", "rand0#2"]
    assert res["overlap"]["jaccard"] == [[1.0, 1.0], [1.0, 1.0]]


def test_cli_prints_and_writes(runs, tmp_path):
    r = CliRunner().invoke(app, ["compare", str(runs["rand0"]), str(runs["long"]), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "## Jaccard" in r.output and "| long |" in r.output
    assert (tmp_path / "o" / "overlap.png").exists()
    bad = CliRunner().invoke(app, ["compare", str(tmp_path)])
    assert bad.exit_code == 2 and "no provenance.parquet" in bad.output


def test_load_run_reads_name_and_pool(runs):
    r = load_run(runs["topq"])
    assert r.name == "topq" and len(r.selected) == 40 and len(r.pool) == 202  # every readable row, the dropped duplicate too
