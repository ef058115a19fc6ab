"""The `curate` command: run, plan, report, errors as one line with exit code 2."""
from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from curate.cli.main import app

runner = CliRunner()


def _recipe(tmp_path, **over):
    data = tmp_path / "pool.jsonl"
    data.write_text("\n".join(json.dumps({"instruction": f"Explain idea {i % 6} in detail.", "output": f"Idea {i % 6} is explained here."})
                              for i in range(24)) + "\n")
    r = {"input": {"path": str(data)}, "stages": [{"type": "exact_dedup"}, {"type": "random", "budget": 3}],
         "output": {"dir": str(tmp_path / "out")}, "cache_dir": str(tmp_path / "cache"), **over}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(r))
    return path


def test_run_plan_report_roundtrip(tmp_path):
    cfg = _recipe(tmp_path)
    res = runner.invoke(app, ["plan", str(cfg)])
    assert res.exit_code == 0 and "0/3 steps cached" in res.output
    res = runner.invoke(app, ["run", str(cfg), "--no-progress", "--no-verbose"])
    assert res.exit_code == 0, res.output
    assert "24 in -> 3 selected, 21 dropped, 0 quarantined" in res.output
    res = runner.invoke(app, ["plan", str(cfg)])
    assert "3/3 steps cached" in res.output
    res = runner.invoke(app, ["run", str(cfg), "--no-progress", "--no-verbose"])
    assert "up to date: no work done" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "out")])
    assert "exact_duplicate: 18" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "out"), "--dups", "pool.jsonl:1"])
    assert res.exit_code == 0, res.output
    assert "Idea 0 is explained here." in res.output and "pool.jsonl:7" in res.output


def test_output_override(tmp_path):
    cfg = _recipe(tmp_path)
    res = runner.invoke(app, ["run", str(cfg), "--output", str(tmp_path / "other"), "--no-progress", "--no-verbose"])
    assert res.exit_code == 0 and (tmp_path / "other" / "manifest.json").exists()


def test_bad_config_is_one_line_exit_2(tmp_path):
    cfg = _recipe(tmp_path, stages=[{"type": "random", "budget": -1}])
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2
    assert res.output.strip() == "error: stages[0].budget: budget must be >= 1 (a count of rows to keep; for a share of the pool use a fraction such as 0.1), got -1"


def test_empty_input_is_one_line_exit_2(tmp_path):
    cfg = _recipe(tmp_path)
    (tmp_path / "pool.jsonl").write_text("")
    res = runner.invoke(app, ["run", str(cfg)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "pool.jsonl" in lines[-1] and "empty" in lines[-1]


def test_stages_lists_basic_types():
    res = runner.invoke(app, ["stages"])
    for name in ("exact_dedup", "length_filter", "random", "top_k", "score_filter"):
        assert name in res.output


def test_input_and_set_override_the_recipe(tmp_path):
    cfg = _recipe(tmp_path)
    other = tmp_path / "other.jsonl"
    other.write_text("\n".join(json.dumps({"instruction": f"Name the colour number {i}.", "output": f"Colour {i}."})
                               for i in range(10)) + "\n")
    res = runner.invoke(app, ["run", str(cfg), "--input", str(other), "--set", "stages.1.budget=4",
                              "--no-progress", "--no-verbose"])
    assert res.exit_code == 0, res.output
    assert "10 in -> 4 selected, 6 dropped, 0 quarantined" in res.output
    res = runner.invoke(app, ["plan", str(cfg), "-i", str(other), "--set", "stages.1.budget=4"])
    assert "3/3 steps cached" in res.output  # the same overridden recipe: nothing to run
    res = runner.invoke(app, ["plan", str(cfg)])  # the recipe file itself is untouched
    assert "0/3 steps cached" in res.output


def test_bad_set_is_one_line_exit_2(tmp_path):
    cfg = _recipe(tmp_path)
    for bad, says in [("stages.5.budget=3", "index out of range"), ("budget", "expected key.path=value"),
                      ("stages.1.budgt=3", "stages[1].budgt")]:
        res = runner.invoke(app, ["run", str(cfg), "--set", bad, "--no-progress"])
        assert res.exit_code == 2 and says in res.output, (bad, res.output)


def test_no_progress_silences_third_party_tqdm_in_later_imports():
    """transformers' GGUF loader draws plain tqdm bars; `--no-progress` must reach them too."""
    import os
    import subprocess
    import sys

    os.environ.pop("TQDM_DISABLE", None)  # the autouse fixture puts back what was there
    assert runner.invoke(app, ["run", "/nonexistent/recipe.yaml"]).exit_code == 2
    assert "TQDM_DISABLE" not in os.environ  # bars stay on by default
    res = runner.invoke(app, ["run", "/nonexistent/recipe.yaml", "--no-progress"])
    assert res.exit_code == 2  # the flag acts before the recipe is even read
    probe = "from tqdm.auto import tqdm; print(tqdm(range(2)).disable)"
    quiet = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert quiet.stdout.strip() == "True"
