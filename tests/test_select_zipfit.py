"""``zipfit`` (ZIP-FIT, Obbad et al. 2024): gzip NCD alignment to target examples."""
from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from conftest import REPO, SAMPLE

import curate
from curate.core.errors import ConfigError
from curate.engine.config import build_stage
from curate.ingest import read as cio
from curate.select.zipfit import ZipFit, compressed_size, ncd_alignment

TARGETS = str(SAMPLE.parent / "sample_targets" / "gsm8k_test_8.jsonl")


def pool_table(n_gsm=40, n_off=120) -> pa.Table:
    """Real rows: GSM8K train questions (on target) and GPTeacher roleplay rows (planted off target)."""
    gsm = cio.read_input(SAMPLE / "gsm8k_500.jsonl").table.slice(0, n_gsm)
    off = cio.read_input(SAMPLE / "gpteacher_roleplay_500.json").table.slice(0, n_off)
    t = pa.concat_tables([gsm, off.cast(gsm.schema)])
    return t.take(np.random.default_rng(0).permutation(t.num_rows))


def _ncd(x: str, y: str, level: int) -> float:
    c = lambda s: len(gzip.compress(s.encode(), compresslevel=level, mtime=0))  # noqa: E731
    return (c(x + y) - min(c(x), c(y))) / max(c(x), c(y))


def test_sizes_and_ncd_match_plain_gzip_on_real_text():
    t = pool_table(5, 5)
    xs = t.column("text").to_pylist()
    ys = cio.read_input(TARGETS).table.column("text").to_pylist()[:3]
    for level in (6, 9):
        for x in xs[:4]:
            assert compressed_size(x.encode(), level) == len(gzip.compress(x.encode(), compresslevel=level, mtime=0))
        align, ncd = ncd_alignment(xs, ys, level)
        want = np.array([[_ncd(x, y, level) for y in ys] for x in xs])
        np.testing.assert_allclose(ncd, want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(align, (1 - want).mean(axis=1))


def test_identical_text_is_close_and_level_zero_is_refused():
    x = cio.read_input(TARGETS).table.column("text").to_pylist()[0]
    assert _ncd(x, x, 6) < 0.2 and _ncd(x, x, 0) > 0.9  # why level 0 is useless
    with pytest.raises(ValueError, match="level must be an int in 6..9"):
        ZipFit(budget=3, targets=TARGETS, level=0)
    with pytest.raises(ConfigError, match="level"):
        build_stage({"type": "zipfit", "budget": 3, "targets": TARGETS, "level": 5})


GREEK = ["λόγος", "θάλασσα", "ουρανός", "βιβλίο", "μουσική", "ποίημα", "δάσος", "ποτάμι", "ιστορία", "κάστρο"]


def test_planted_off_target_rows_are_never_taken(tmp_path):
    """Planted off-target rows (Greek prose, no byte n-gram in common with the English math targets)
    are never taken at budgets up to 100 of the 160 real rows; real off-topic rows (GPTeacher
    roleplay) are not taken at budgets up to half the GSM8K rows."""
    rng = np.random.default_rng(0)
    planted = [{"id": f"planted{i}", "instruction": " ".join(rng.choice(GREEK, 12)), "output": " ".join(rng.choice(GREEK, 30))}
               for i in range(20)]
    pool = pa.concat_tables([pool_table(), cio.from_records(planted).table])
    for budget in (5, 20, 40, 100):
        ds, prov = curate.select(pool, schema="canonical", method="zipfit", budget=budget, targets=TARGETS, cache_dir=tmp_path,
                                 return_provenance=True, num_proc=1)
        assert not any(i.startswith("planted") for i in ds["id"]), budget
        if budget <= 20:
            assert all(i.startswith("gsm8k") for i in ds["id"]), budget
    dropped = [r for r in prov.to_pylist() if r["status"] == "dropped"]
    assert len(dropped) == 80 and {r["reason"] for r in dropped} == {"off_target"}


def test_real_off_topic_rows_rank_below_gsm8k_mostly():
    # at a budget equal to the 40 GSM8K rows, ZIP-FIT takes 37 of them here (3 roleplay rows win):
    # NCD is a coarse signal, so the check is "mostly", as the sanity check states it
    sel = ZipFit(budget=40, targets=TARGETS, num_proc=1).select(pool_table(), None)
    ids = np.array(pool_table().column("id").to_pylist())[sel.keep]
    assert np.mean([i.startswith("gsm8k") for i in ids]) >= 0.85


def test_exact_budgets_reasons_extras_and_determinism(tmp_path):
    pool = pool_table(20, 30)
    for budget, k in ((1, 1), (13, 13), (50, 50), (0.1, 5)):
        ds, prov = curate.select(pool, schema="canonical", method="zipfit", budget=budget, targets=TARGETS, cache_dir=tmp_path / str(k),
                                 return_provenance=True, num_proc=1)
        assert len(ds) == k
        st = prov.column("status").to_pylist()
        assert st.count("dropped") == 50 - k
        assert all(r == "off_target" for r, s in zip(prov.column("reason").to_pylist(), st) if s == "dropped")
    p = prov.to_pylist()
    assert all(r["target_sim"] == r["zipfit_score"] and r["task"] == "gsm8k_test_8" for r in p)
    again = curate.select(pool, schema="canonical", method="zipfit", budget=13, targets=TARGETS, num_proc=1)["id"]
    bigger = curate.select(pool, schema="canonical", method="zipfit", budget=20, targets=TARGETS, num_proc=1)["id"]
    assert again == curate.select(pool, schema="canonical", method="zipfit", budget=13, targets=TARGETS, cache_dir=tmp_path / "13",
                                  num_proc=1)["id"]
    assert set(again) <= set(bigger)


def test_token_budget_never_exceeds():
    t = pool_table(20, 30)
    tokens = np.full(50, 100)
    t = t.append_column("n_tokens", pa.array(tokens, pa.int64()))
    sel = ZipFit(budget={"tokens": 950}, targets=TARGETS, num_proc=1).select(t, None)
    assert sel.n_kept == 9


def test_several_tasks_are_pooled_and_named(tmp_path):
    pool = pool_table(20, 30)
    role = [{k: r[k] for k in ("instruction", "input", "output")}
            for r in cio.read_input(SAMPLE / "gpteacher_roleplay_500.json").table.slice(400, 5).to_pylist()]
    ds, prov = curate.select(pool, schema="canonical", method="zipfit", budget=10, targets={"math": TARGETS, "roleplay": role},
                             return_provenance=True, num_proc=1)
    task = {r["id"]: r["task"] for r in prov.to_pylist()}
    assert {task[i] for i in task if i.startswith("gsm8k")} == {"math"}
    role_share = np.mean([task[i] == "roleplay" for i in task if i.startswith("gpteacher")])
    assert role_share >= 0.8, role_share  # NCD is coarse: a few roleplay rows align better with math


def test_multiprocess_equals_single_process_and_works_from_python_c():
    t = pool_table(10, 10)
    xs = t.column("text").to_pylist()
    ys = cio.read_input(TARGETS).table.column("text").to_pylist()
    a1, _ = ncd_alignment(xs, ys, 6, num_proc=1, chunk_size=4)
    a2, _ = ncd_alignment(xs, ys, 6, num_proc=2, chunk_size=4)
    np.testing.assert_array_equal(a1, a2)
    code = ("import curate; ds = curate.select('sample_data/gsm8k_500.jsonl', method='zipfit', budget=3, "
            "targets='sample_targets/gsm8k_test_8.jsonl', num_proc=2); print(len(ds))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("3")
    out = subprocess.run([sys.executable, "-"], input=code, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_tiny_pool_and_errors():
    t = pool_table(1, 0)
    assert ZipFit(budget=1, targets=TARGETS, num_proc=1).select(t, None).n_kept == 1
    with pytest.raises(ValueError, match="num_proc"):
        ZipFit(budget=1, targets=TARGETS, num_proc=0)
    with pytest.raises(ValueError, match="template"):
        ZipFit(budget=1, targets=TARGETS, template="no fields")


def test_raw_rows_and_the_shipped_recipe(tmp_path, monkeypatch):
    import pyarrow.parquet as pq
    from test_select_rds import recipe_from, write_sample_pool

    rows = [{"instruction": r["instruction"], "output": r["output"]} for r in pool_table(10, 20).to_pylist()]
    targets = [{"question": "A farmer has 12 cows and buys 5 more. How many cows?", "answer": "12 + 5 = 17\n#### 17"}]
    assert len(curate.select(rows, schema="canonical", method="zipfit", budget=10, targets=targets, num_proc=1)) == 10
    monkeypatch.chdir(REPO)  # the recipe's targets path is relative to the repository root
    res = curate.run(recipe_from("zipfit", write_sample_pool(tmp_path), tmp_path / "out", 10), show_progress=False)
    assert res.counts["n_selected"] == 10 and res.counts["n_dropped"] == 80
    p = pq.read_table(res.output_dir / "provenance.parquet").to_pylist()
    assert all(r["id"].startswith("gsm8k") for r in p if r["status"] == "selected")
