"""configs/pretrain/fineweb.yaml end to end on the real web sample: every document accounted for,
planted bad documents dropped by the rule that should drop them, the funnel in documents and
tokens, every rule's value recorded, examples to read, and a what-if from provenance."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import curate
from curate.report.whatif import whatif

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fineweb")
    # the planted documents and the real JSONL documents they copy (the HTML/WARC handbook pages
    # are left out to keep the test short: tests/test_web_ingest.py covers them)
    res = curate.run(ROOT / "configs/pretrain/fineweb.yaml", output_dir=str(out / "run"), show_progress=False,
                     cache_dir=str(out / "cache"),
                     overrides=[f"input.path=[{ROOT / 'sample_web/jsonl'}, {ROOT / 'sample_web/planted'}]"])
    prov = pq.read_table(Path(res.output_dir) / "provenance.parquet").to_pandas().set_index("id")
    return res, prov


def test_every_document_is_accounted_for(run):
    res, prov = run
    c = res.counts
    assert c["n_input"] == c["n_selected"] + c["n_dropped"] + c["n_quarantined"]
    # counted outside curate: lines of the JSONL files + planted HTML pages + WARC records
    import gzip
    lines = sum(1 for f in (ROOT / "sample_web").glob("**/*.jsonl.gz")
                for line in gzip.open(f, "rb").read().splitlines() if line.strip())
    assert c["n_input"] >= lines  # plus the planted HTML pages and WARC records
    assert len(prov) == c["n_input"]


@pytest.mark.parametrize("doc, stage, reason", [
    ("planted-012", "1:url_filter", "domain"),                # url on the shipped blocklist
    ("planted-004", "3:gopher_repetition", "dup_line_frac"),  # one line 30 times
    ("planted-001", "4:gopher_quality", "short_doc"),         # navigation and footer only
    ("planted-015", "7:minhash_dedup", "near_duplicate"),     # exact copy of dclm-0050
    ("planted-020", "7:minhash_dedup", "near_duplicate"),     # 2% of words swapped
])
def test_planted_documents_are_dropped_by_the_rule_that_should(run, doc, stage, reason):
    _, prov = run
    assert (prov.loc[doc, "status"], prov.loc[doc, "stage"], prov.loc[doc, "reason"]) == ("dropped", stage, reason)


def test_unreadable_pages_are_quarantined_with_their_reason(run):
    _, prov = run
    q = prov[prov.status == "quarantined"]
    assert {"invalid_utf8", "no_main_text", "empty_text", "invalid_encoding", "not_html", "extraction_failed",
            "truncated_record"} <= set(q.reason)


def test_every_rule_is_recorded_for_every_document_a_filter_saw(run):
    _, prov = run
    saw = prov["gopher_quality__n_words__pass"].notna()
    assert saw.sum() > 500
    for col in [c for c in prov.columns if c.startswith("gopher_quality__") and c.endswith("__pass")]:
        assert prov.loc[saw, col].notna().all(), col  # no short-circuit: every rule, every document


def test_report_counts_tokens_and_shows_what_was_removed(run):
    res, _ = run
    rep = json.loads((Path(res.output_dir) / "report.json").read_text())
    steps = {s["label"]: s for s in rep["stages"]}
    lid = steps["2:language_id"]
    assert lid["tokens_in"] > lid["tokens_out"] > 0
    assert any(e["reason"] == "wrong_language" for e in lid["examples"])
    c4 = steps["5:c4_quality"]
    assert any(e["reason"] == "rewritten" for e in c4["examples"])  # lines C4 removed from kept pages
    assert "tokens in" in (Path(res.output_dir) / "report.md").read_text()


def test_whatif_answers_a_looser_threshold_from_provenance(run):
    res, prov = run
    got = whatif(res.output_dir, "fineweb_quality.char_duplicates_ratio=0.1")  # the paper's value
    stricter = whatif(res.output_dir, "fineweb_quality.char_duplicates_ratio=0.001")
    assert got["newly_dropped"] == 0 and got["dropped_after"] <= got["dropped_before"]
    assert stricter["newly_kept"] == 0 and stricter["dropped_after"] >= stricter["dropped_before"]
    dup = prov[prov.reason == "char_dup_ratio"]
    # exactly the documents dropped for duplicated-line characters between 0.01 and 0.1 pass now
    between = dup[(dup["fineweb_quality__char_dup_ratio"] <= 0.1)]
    first_fail = between[[c for c in prov.columns if c.startswith("fineweb_quality__") and c.endswith("__pass")
                          and "char_dup" not in c]].all(axis=1)
    assert got["newly_kept"] == int(first_fail.sum())
