"""The run's dataset card (README.md, curate/engine/card.py): Hugging Face format, read back
offline with huggingface_hub, and ``datasets.load_dataset(RUN_DIR)`` loading data/*.parquet."""
from __future__ import annotations

import json
import logging

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, SAMPLE

import curate
from curate.engine.card import file_license, license_id, size_category

HUB_SIZES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
             "10B<n<100B", "100B<n<1T", "n>1T"}


def _minimal(tmp_path, path, name="run", budget=None):
    """configs/minimal.yaml on ``path`` (its random budget set to ``budget`` when given)."""
    recipe = yaml.safe_load((REPO / "configs" / "minimal.yaml").read_text())
    recipe["input"]["path"] = str(path)
    if budget is not None:
        recipe["stages"][-1]["budget"] = budget
    recipe["output"] = {"dir": str(tmp_path / name), "plots": False}
    return curate.run(recipe, show_progress=False)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("card")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATE_CACHE", str(tmp / "cache"))
    res = _minimal(tmp, SAMPLE)
    mp.undo()
    return res


def test_card_reads_back_with_huggingface_hub(sample_run):
    from huggingface_hub import DatasetCard, DatasetCardData

    card = DatasetCard.load(sample_run.output_dir / "README.md")
    data = card.data.to_dict()
    assert isinstance(card.data, DatasetCardData)
    # sample_data/README.md's table: Dolly and planted.jsonl CC BY-SA 3.0, GSM8K and GPTeacher MIT
    assert data["license"] == ["cc-by-sa-3.0", "mit"]
    assert data["size_categories"] == ["1K<n<10K"] and set(data["size_categories"]) <= HUB_SIZES
    assert data["task_categories"] == ["text-generation"]
    assert data["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/*.parquet"}]}]
    # round-trips through the hub's own YAML writer
    again = DatasetCardData(**data).to_dict()
    assert again["license"] == data["license"] and again["configs"] == data["configs"]
    body = card.text
    rep = sample_run.report
    for must in ("## Recipe", "## Funnel", "## Methods", "## Provenance: how to read it", rep["output_hash"],
                 "`random`", "exact_duplicate: 20", "Share-alike"):
        assert must in body, must
    assert "Lee et al. 2022" in body  # exact_dedup's paper
    assert sample_run.report["card_warnings"] == []


def test_load_dataset_on_the_run_dir_loads_the_parquet_shards(sample_run):
    import datasets

    ds = datasets.load_dataset(str(sample_run.output_dir), split="train")
    shards = sorted((sample_run.output_dir / "data").glob("*.parquet"))
    want = [i for p in shards for i in pq.read_table(p)["id"].to_pylist()]
    assert len(ds) == sample_run.counts["n_selected"] == 1000
    assert ds["id"] == want  # the data shards, not provenance.parquet or dataset/


def test_license_from_a_card_header_beside_the_input(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    rows = [{"instruction": f"Explain idea number {i} to a curious child today", "input": "",
             "output": f"Idea {i} is simple once you see it from the right side, really."} for i in range(30)]
    (pool / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pool / "README.md").write_text("---\nlicense: apache-2.0\n---\n# a pool\n")
    res = _minimal(tmp_path, pool, budget=10)
    from huggingface_hub import DatasetCard

    assert DatasetCard.load(res.output_dir / "README.md").data.license == "apache-2.0"
    assert size_category(30) == "n<1K"


def test_unknown_license_is_unknown_with_a_warning(tmp_path, caplog):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"instruction": f"Say something useful about topic {i} please",
                                        "input": "", "output": f"Topic {i} matters because it is topic {i}."}) + "\n"
                            for i in range(30)))
    with caplog.at_level(logging.WARNING, logger="curate.engine.card"):
        res = _minimal(tmp_path, pool, budget=10)
    from huggingface_hub import DatasetCard

    assert DatasetCard.load(res.output_dir / "README.md").data.license == "unknown"
    assert res.report["card_warnings"] and "pool.jsonl" in res.report["card_warnings"][0]
    assert any("licence unknown" in r.getMessage() for r in caplog.records)
    assert "**Licence unknown**" in (res.output_dir / "README.md").read_text()


def test_license_names_map_to_hub_ids(tmp_path):
    assert license_id("CC BY-SA 3.0 (holds Dolly text)") == "cc-by-sa-3.0"
    assert license_id("CC BY-NC 4.0") == "cc-by-nc-4.0"
    assert license_id("MIT") == "mit" and license_id("Apache 2.0") == "apache-2.0"
    assert license_id("Some Custom Terms") == "other" and license_id("") is None
    d = tmp_path / "saved"
    d.mkdir()
    (d / "dataset_info.json").write_text(json.dumps({"license": "cc-by-4.0"}))
    assert file_license(d)["license"] == "cc-by-4.0"  # a datasets.save_to_disk folder


# ---------------------------------------------------------------- the quick start's recipe

def test_quickstart_recipe_curates_and_minimal_keeps_the_bare_pipe():
    """`make quickstart` runs a real curation (section 1 of the issue); the random subset moved to
    configs/minimal.yaml."""
    from curate.engine.config import load_config

    qs = [s["type"] for s in load_config(REPO / "configs" / "quickstart.yaml").stages]
    assert qs == ["exact_dedup", "length_filter", "minhash_dedup", "embed", "kmeans", "semdedup", "quality_model",
                  "car"]
    assert [s["type"] for s in load_config(REPO / "configs" / "minimal.yaml").stages] == \
        ["exact_dedup", "length_filter", "random"]


@pytest.mark.slow
def test_quickstart_end_to_end_on_an_empty_cache(tmp_path, monkeypatch):
    """configs/quickstart.yaml on sample_data with an empty cache (minutes: 3.5 under load average 7):
    1,000 rows picked by CaR, the card, the map with its cluster labels, and the summary printed."""
    import io
    from contextlib import redirect_stdout

    from huggingface_hub import DatasetCard

    from curate.report.run_report import print_summary

    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(REPO)  # input.path: sample_data, as `make quickstart` runs it
    res = curate.run("configs/quickstart.yaml", output_dir=str(tmp_path / "qs"), show_progress=False)
    assert res.counts["n_selected"] == 1000
    steps = {s["label"]: s for s in res.report["stages"]}
    assert steps["7:car"]["rows_out"] == 1000 and steps["5:semdedup"]["dropped"]
    assert DatasetCard.load(res.output_dir / "README.md").data.license == ["cc-by-sa-3.0", "mit"]
    dm = json.loads((res.output_dir / "report.json").read_text())["datamap"]
    assert dm["embeddings"] == "3:embed" and dm["clusters_labelled"] > 10
    out = io.StringIO()
    with redirect_stdout(out):
        print_summary(res.output_dir)
    assert "7:car" in out.getvalue() and "datamap.html" in out.getvalue()
