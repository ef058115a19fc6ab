"""``rds`` (RDS+, Ivison et al. 2025): round-robin nearest neighbours of target examples."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import SAMPLE

import curate
from curate.core.errors import ConfigError
from curate.embed.stage import Embed
from curate.engine.config import build_stage
from curate.select.rds import RDS, round_robin
from curate.select.targets import read_targets

MATH = ["apples", "oranges", "sum", "total", "cost", "dollars", "pages", "hours", "minutes", "eggs",
        "half", "twice", "each", "left", "many", "price", "miles", "per", "week", "remaining"]
OFF = ["poem", "castle", "dragon", "wizard", "ocean", "symphony", "violin", "painting", "novel", "garden",
       "forest", "river", "sunset", "history", "empire", "museum", "opera", "ballet", "sculpture", "legend"]
TARGET_ROWS = [{"question": f"If {a} and {b} cost {c} each, what is the total?", "answer": f"The {d} is {i}."}
               for i, (a, b, c, d) in enumerate(zip(MATH[::4], MATH[1::4], MATH[2::4], MATH[3::4]))]


VOCAB = {w: i for i, w in enumerate(MATH + OFF)}


def bow_encode(self, texts, show_progress=False):
    """A deterministic bag-of-words encoder standing in for MiniLM (the same one for pool and targets).

    MATH and OFF words get their own dimensions; other words hash into 16 spare ones.
    """
    out = np.zeros((len(texts), len(VOCAB) + 16), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().replace("?", " ").replace(".", " ").replace(",", " ").split():
            j = VOCAB.get(w, len(VOCAB) + int(hashlib.md5(w.encode()).hexdigest(), 16) % 16)
            out[i, j] += 1.0
    n = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(n, 1e-12)


@pytest.fixture
def fake_embed(monkeypatch):
    import curate.select.rds as rds

    monkeypatch.setattr(Embed, "encode", bow_encode)
    monkeypatch.setattr(rds, "_TARGET_CACHE", {})  # target vectors memoised by a real-MiniLM test


def planted_pool(n_on=30, n_off=70, seed=0):
    """On-target rows share words with every target ("cost each total"); off-target rows share none."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_on):
        rows.append({"id": f"on{i}", "instruction": " ".join(rng.choice(MATH, 6)) + " cost each total", "output": " ".join(rng.choice(MATH, 4))})
    for i in range(n_off):
        rows.append({"id": f"off{i}", "instruction": " ".join(rng.choice(OFF, 6)), "output": " ".join(rng.choice(OFF, 4))})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def test_round_robin_takes_each_lists_next_row_and_skips_duplicates():
    ranks = np.array([[5, 1, 2, 3, 4, 0],
                      [5, 2, 4, 1, 0, 3]])
    order, by, rnd = round_robin(ranks)
    # round 0: list0 takes 5, list1 proposes 5 (taken: adds nothing); round 1: 1, 2; round 2: list0's 2 is
    # taken, list1 takes 4; round 3: 3 (list0), 1 taken; round 4: 4 taken, 0 (list1)
    assert order.tolist() == [5, 1, 2, 4, 3, 0]
    assert by.tolist() == [0, 0, 1, 1, 0, 1]
    assert rnd.tolist() == [0, 1, 1, 2, 3, 4]


def test_planted_off_target_rows_are_never_taken(fake_embed, tmp_path):
    pool = planted_pool()
    for budget in (5, 10, 30, 0.3):
        ds, prov = curate.select(pool, schema="canonical", method="rds", budget=budget, targets=TARGET_ROWS, cache_dir=tmp_path,
                                 return_provenance=True)
        assert all(i.startswith("on") for i in ds["id"]), budget
    assert len(ds) == 30
    p = prov.to_pylist()
    dropped = [r for r in p if r["status"] == "dropped"]
    assert len(dropped) == 70 and {r["reason"] for r in dropped} == {"off_target"}
    assert {r["stage"] for r in dropped} == {"1:rds"}  # 0:embed was added automatically


def test_budget_is_exact_and_reasons_cover_every_unselected_row(fake_embed, tmp_path):
    pool = planted_pool()
    for budget, k in ((1, 1), (17, 17), (100, 100), (0.5, 50)):
        ds, prov = curate.select(pool, schema="canonical", method="rds", budget=budget, targets=TARGET_ROWS, cache_dir=tmp_path,
                                 return_provenance=True)
        assert len(ds) == k
        st = prov.column("status").to_pylist()
        assert st.count("selected") == k and st.count("dropped") == 100 - k
        assert all(r == "off_target" for r, s in zip(prov.column("reason").to_pylist(), st) if s == "dropped")


def test_token_budget_never_exceeds(fake_embed, tmp_path):
    from curate.ingest import read as cio

    t = cio.from_records(planted_pool()).table
    emb = Embed(show_progress=False)
    from curate.core.schema import embedding_column

    tokens = np.arange(1, 101)
    t = t.append_column("embedding", embedding_column(emb.encode(t.column("text").to_pylist())))
    t = t.append_column("n_tokens", pa.array(tokens, pa.int64()))
    stage = RDS(budget={"tokens": 300}, targets=TARGET_ROWS)
    sel = stage.select(t, None)
    assert 0 < tokens[sel.keep].sum() <= 300
    # the prefix of the pick order that fits, no more: one more pick would overflow
    full = stage.pick(t, None, 100).order
    k = sel.n_kept
    assert set(np.flatnonzero(sel.keep)) == set(full[:k]) and tokens[full[:k + 1]].sum() > 300


def test_deterministic_and_nested(fake_embed, tmp_path):
    pool = planted_pool(seed=3)
    a = curate.select(pool, schema="canonical", method="rds", budget=12, targets=TARGET_ROWS, cache_dir=tmp_path / "a")["id"]
    b = curate.select(pool, schema="canonical", method="rds", budget=12, targets=TARGET_ROWS, cache_dir=tmp_path / "b")["id"]
    c = curate.select(pool, schema="canonical", method="rds", budget=20, targets=TARGET_ROWS, cache_dir=tmp_path / "a")["id"]
    assert a == b and set(a) <= set(c)


def test_extras_land_in_the_ledger(fake_embed, tmp_path):
    ds, prov = curate.select(planted_pool(), schema="canonical", method="rds", budget=10, targets=TARGET_ROWS, cache_dir=tmp_path,
                             return_provenance=True)
    cols = prov.column_names
    assert {"target_sim", "task", "rds_score"} <= set(cols)
    p = prov.to_pylist()
    sel = [r["target_sim"] for r in p if r["status"] == "selected"]
    off = [r["target_sim"] for r in p if r["id"].startswith("off")]
    assert min(sel) > max(off) and {r["task"] for r in p} == {"target"}


def test_several_tasks_share_the_budget_round_robin(fake_embed, tmp_path):
    # task A targets math words, task B targets the "off" vocabulary: rrmax alternates tasks
    task_b = [{"instruction": " ".join(OFF[i:i + 5]), "output": " ".join(OFF[i + 5:i + 8])} for i in range(0, 10, 3)]
    ds, prov = curate.select(planted_pool(), schema="canonical", method="rds", budget=20, targets={"math": TARGET_ROWS, "arts": task_b},
                             cache_dir=tmp_path, return_provenance=True)
    ids = ds["id"]
    assert sum(i.startswith("on") for i in ids) == 10 and sum(i.startswith("off") for i in ids) == 10
    p = {r["id"]: r["task"] for r in prov.to_pylist()}
    assert all(p[i] == ("math" if i.startswith("on") else "arts") for i in ids)


def test_length_neutral_rds_keeps_its_round_robin_order_within_each_length_bin(fake_embed, tmp_path):
    """RDS+ multi-task with ``length_neutral``: each pool length quartile gets its share of the budget,
    filled in RDS+'s own (round-robin) order restricted to the quartile."""
    from curate.select.length_bins import assign_bins, bin_quotas, fill_bins, length_edges, response_chars

    rng = np.random.default_rng(9)
    rows = [{**r, "output": r["output"] + " pad" * int(rng.integers(0, 40))} for r in planted_pool()]
    task_b = [{"instruction": " ".join(OFF[i:i + 5]), "output": " ".join(OFF[i + 5:i + 8])} for i in range(0, 10, 3)]
    targets = {"math": TARGET_ROWS, "arts": task_b}
    ds = curate.select(rows, schema="canonical", method="rds", budget=20, targets=targets, length_neutral=True, length_bins=4,
                       cache_dir=tmp_path)
    table = pa.Table.from_pylist([{"id": r["id"], "instruction": r["instruction"], "output": r["output"]} for r in rows])
    chars = response_chars(table)
    b = assign_bins(chars, length_edges(chars, 4))
    q = bin_quotas(np.bincount(b), 20)
    pos = {i: k for k, i in enumerate(table.column("id").to_pylist())}
    # RDS+'s full pick order (canonical text = instruction, blank line, output: the same words as here);
    # the length-neutral picks are its first rows of every bin
    plain = RDS(budget=len(rows), targets=targets).pick(_with_embedding(table), None, len(rows)).order
    expect, got = fill_bins(plain, b, q)
    assert (got == q).all() and sorted(pos[i] for i in ds["id"]) == sorted(expect.tolist())
    assert np.bincount(b[[pos[i] for i in ds["id"]]], minlength=len(q)).tolist() == q.tolist()


def _with_embedding(table):
    from curate.core.schema import embedding_column

    x = bow_encode(None, [f"{a} {o}" for a, o in zip(table.column("instruction").to_pylist(),
                                                      table.column("output").to_pylist())])
    return table.append_column("embedding", embedding_column(x))


def test_targets_from_a_path_and_the_cache_key_follows_its_contents(fake_embed, tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in TARGET_ROWS) + "\n")
    s1 = RDS(budget=5, targets=str(path))
    k1 = s1.cache_params()["targets_sha"]
    assert read_targets(str(path))["t"].num_rows == len(TARGET_ROWS)
    path.write_text(json.dumps(TARGET_ROWS[0]) + "\n")
    assert RDS(budget=5, targets=str(path)).cache_params()["targets_sha"] != k1
    ds = curate.select(planted_pool(), schema="canonical", method="rds", budget=5, targets=str(path), cache_dir=tmp_path)
    assert all(i.startswith("on") for i in ds["id"])


def test_pool_and_target_embedders_must_agree(fake_embed):
    from curate.core.schema import embedding_column
    from curate.ingest import read as cio

    t = cio.from_records(planted_pool()).table
    t = t.append_column("embedding", embedding_column(np.ones((100, 5), np.float32)))
    with pytest.raises(ValueError, match="5-d vectors"):
        RDS(budget=3, targets=TARGET_ROWS).select(t, None)


def test_defaults_and_errors_name_the_parameter():
    assert RDS(budget=3, targets=TARGET_ROWS, backend="lm_pooling").method_prerequisites([])[0].backend == "lm_pooling"
    assert RDS(budget=3, targets=TARGET_ROWS, backend="lm_pooling").column_ == "embedding_lm"
    assert RDS(budget=3, targets=TARGET_ROWS).method_prerequisites(["embedding"]) == []
    # by default the same encoder as a default `embed` stage, so the targets match a recipe's column
    assert RDS(budget=3, targets=TARGET_ROWS).method_prerequisites([])[0].backend == Embed(show_progress=False).backend
    # both MiniLM backends read (or make) the `embedding` column a default `embed` stage makes
    assert RDS(budget=3, targets=TARGET_ROWS, backend="onnx").column_ == "embedding"
    assert RDS(budget=3, targets=TARGET_ROWS, backend="onnx").method_prerequisites(["embedding"]) == []
    with pytest.raises(ConfigError, match="targets"):
        build_stage({"type": "rds", "budget": 3})
    with pytest.raises(ValueError, match="mode"):
        RDS(budget=3, targets=TARGET_ROWS, mode="mean")
    with pytest.raises(ValueError, match="backend"):
        RDS(budget=3, targets=TARGET_ROWS, backend="tfidf")
    with pytest.raises(ValueError, match="targets.*no such file"):
        RDS(budget=3, targets="/nonexistent/t.jsonl")
    with pytest.raises(ValueError, match="targets.*empty"):
        RDS(budget=3, targets=[])
    with pytest.raises(ValueError, match=r"targets\['x'\].*no valid rows"):
        read_targets({"x": [{"instruction": "   ", "output": " "}]})
    with pytest.raises(ValueError, match=r"targets\['x'\].*1 target row\(s\) could not be read"):
        read_targets({"x": [{"instruction": "   ", "output": " "}, {"instruction": "a", "output": "b"}]})


def test_tiny_pools(fake_embed):
    from curate.ingest import read as cio

    t = cio.from_records(planted_pool(1, 0)).table
    ds = curate.select(t, schema="canonical", method="rds", budget=1, targets=TARGET_ROWS)
    assert len(ds) == 1


def test_real_minilm_on_sample_data_prefers_gsm8k(tmp_path):
    """Real MiniLM: 150 Dolly + 30 GSM8K train rows, targets = 8 GSM8K test questions (shipped)."""
    from curate.ingest import read as cio

    dolly = cio.read_input(SAMPLE / "dolly_2k.jsonl").table.slice(0, 150)
    gsm = cio.read_input(SAMPLE / "gsm8k_500.jsonl").table.slice(0, 30)
    pool = pa.concat_tables([dolly, gsm])
    ds = curate.select(pool, schema="canonical", method="rds", budget=30, targets=str(SAMPLE.parent / "sample_targets" / "gsm8k_test_8.jsonl"),
                       cache_dir=tmp_path)
    frac = np.mean([i.startswith("gsm8k") for i in ds["id"]])
    assert frac >= 0.9, frac


def recipe_from(name: str, pool_path, out, budget: int) -> dict:
    """The shipped recipe's stages (configs/instruction/<name>.yaml) on a small pool, budget overridden."""
    import yaml
    from conftest import REPO

    stages = yaml.safe_load((REPO / "configs" / "instruction" / f"{name}.yaml").read_text())["stages"]
    assert [s["type"] for s in stages[:2]] == ["exact_dedup", "minhash_dedup"]
    stages[-1] = {**stages[-1], "budget": budget}
    return {"name": name, "input": {"path": str(pool_path)}, "stages": stages, "output": {"dir": str(out)}}


def write_sample_pool(tmp_path) -> "Path":
    from curate.ingest import read as cio

    rows = []
    for f, n in (("gsm8k_500.jsonl", 30), ("gpteacher_roleplay_500.json", 60)):
        t = cio.read_input(SAMPLE / f).table.slice(0, n)
        rows += [{"id": i, "instruction": a, "input": b or "", "output": c} for i, a, b, c in zip(
            t.column("id").to_pylist(), t.column("instruction").to_pylist(), t.column("input").to_pylist(),
            t.column("output").to_pylist())]
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_shipped_recipe_runs(fake_embed, tmp_path, monkeypatch):  # after the real-MiniLM test on purpose
    from conftest import REPO

    monkeypatch.chdir(REPO)  # the recipe's targets path is relative to the repository root
    res = curate.run(recipe_from("rds", write_sample_pool(tmp_path), tmp_path / "out", 10), show_progress=False)
    assert res.counts["n_selected"] == 10 and res.counts["n_dropped"] == 80
    import pyarrow.parquet as pq

    p = pq.read_table(res.output_dir / "provenance.parquet").to_pylist()
    assert {r["reason"] for r in p if r["stage"] and r["stage"].endswith("rds")} == {"off_target"}


def test_shipped_recipes_validate_against_the_base():
    from conftest import REPO

    from curate.engine.config import load_config

    base = REPO / "configs" / "instruction" / "base.yaml"
    if not base.exists():
        pytest.skip("configs/instruction/base.yaml comes from the report branch")
    for name in ("rds", "zipfit", "sae_greedy"):
        cfg = load_config(REPO / "configs" / "instruction" / f"{name}.yaml")
        assert [s.name for s in cfg.build_stages()][-1] == name
