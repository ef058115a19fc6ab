"""``datamap.html``: the report's interactive map of the pool (curate/report/datamap.py).

A planted pool (4 topics with their own vocabulary, vectors and clusters from ``_planted``) runs
through the engine; the map must show every row that reached the embedding step with its fate,
name each cluster by its own topic's words, carry the row's text in the hover, and load in
headless Chromium without a single network request (skipped where Chromium is not installed).
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from _planted import N_TOPICS  # noqa: F401 - registers planted_embedding

import curate
from curate.report.datamap import MAX_POINTS, ctfidf_labels, place_labels, subsample

VOCAB = {0: "guitar chords strings melody", 1: "flour oven bread dough", 2: "planets orbit telescope comet",
         3: "football goal league striker"}
SHARED = "please explain this thing clearly"


def _pool(path: Path, n: int = 160) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        c = i % 4
        words = VOCAB[c].split() * 3 + SHARED.split() if i % 5 else VOCAB[c].split()  # every 5th row short
        rows.append({"id": f"r{i}", "instruction": f"topic {c}: question {i}", "input": "",
                     "output": " ".join(rng.permutation(words)) + f" number {i}"})
    rows.append({**rows[0], "id": "dup0"})  # dropped before the embedding step: not on the map
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("datamap")
    mp = pytest.MonkeyPatch()
    mp.setenv("CURATE_CACHE", str(tmp / "cache"))
    stages = [{"type": "exact_dedup"}, {"type": "planted_embedding"},
              {"type": "length_filter", "min_words": 12},  # after the embedding: its drops are on the map
              {"type": "random", "budget": 40, "seed": 0}]
    res = curate.run({"name": "planted", "input": {"path": str(_pool(tmp / "pool.jsonl"))}, "stages": stages,
                      "output": {"dir": str(tmp / "out"), "save_dataset": False}}, show_progress=False)
    mp.undo()
    return res


def _figure(path: Path) -> dict:
    """The plotly figure's data and layout, read back from the HTML."""
    text = path.read_text()
    m = re.search(r'Plotly\.newPlot\(\s*"datamap",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{"displaylogo"', text, re.DOTALL)
    assert m, "plotly call not found"
    return {"data": json.loads(m.group(1)), "layout": json.loads(m.group(2))}


def _n(values) -> int:
    """Length of a plotly array: a list, or a typed array ``{"dtype", "bdata": base64}``."""
    if isinstance(values, dict):
        return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
    return len(values)


def test_ctfidf_names_each_cluster_by_its_own_words():
    texts = [f"{VOCAB[c]} {SHARED}" for c in range(4) for _ in range(5)]
    clusters = np.repeat(np.arange(4), 5)
    labels = ctfidf_labels(texts, clusters)
    for c in range(4):
        assert set(labels[c]) <= set(VOCAB[c].split()) and len(labels[c]) == 3  # never a shared word
    assert ctfidf_labels(texts, np.full(20, -1)) == {}  # no cluster: no label


def test_subsample_rule_above_max_points():
    picked = np.zeros(120_000, bool)
    picked[:1000] = True
    idx = subsample(picked)
    assert len(idx) == MAX_POINTS and picked[idx].sum() == 1000  # every pick drawn
    assert np.array_equal(idx, subsample(picked))  # seeded
    many = np.zeros(120_000, bool)
    many[::2] = True
    idx = subsample(many)
    assert len(idx) == MAX_POINTS and many[idx].sum() == MAX_POINTS // 2
    assert np.array_equal(subsample(picked[:500]), np.arange(500))  # below the cap: all rows


def test_labels_that_would_overlap_are_left_off():
    xy = np.array([[0.0, 0.0], [0.001, 0.0], [1.0, 1.0]])
    lx, _, lt = place_labels(xy, np.array([0, 1, 2]), {0: ["a", "b"], 1: ["c", "d"], 2: ["e", "f"]})
    assert lt == ["a · b", "e · f"] and len(lx) == 2


def test_map_shows_every_embedded_row_with_its_fate_text_and_cluster_words(run):
    rep = json.loads((run.output_dir / "report.json").read_text())
    dm = rep["datamap"]
    assert dm["file"] == "datamap.html" and dm["embeddings"] == "1:planted_embedding"
    assert dm["rows"] == dm["points"] == 160 and dm["rule"] == "all rows"
    assert dm["not_on_map"] == {"0:exact_dedup exact_duplicate": 1}
    fates = dm["fates"]
    assert fates["picked"] == 40 and sum(fates.values()) == 160
    assert any(k.startswith("dropped: 2:length_filter") for k in fates)
    assert any(k.startswith("not picked: 3:random") for k in fates)
    fig = _figure(run.output_dir / "datamap.html")
    assert sum(_n(t["x"]) for t in fig["data"]) == 160
    names = {t["name"].split(" (")[0] for t in fig["data"]}
    assert names == set(fates)
    hover = [h for t in fig["data"] for h in t["text"]]
    row = json.loads((run.output_dir.parent / "pool.jsonl").read_text().splitlines()[7])
    assert any(row["output"][:60] in h and "<b>r7</b>" in h for h in hover)  # the row's own text and id
    words = {w for a in fig["layout"]["annotations"] for w in a["text"].split(" · ")}
    assert words and all(any(w in VOCAB[c] for c in VOCAB) for w in words)  # topic words, never shared ones
    assert "datamap.html" in (run.output_dir / "report.md").read_text()


def test_map_is_self_contained(run):
    text = (run.output_dir / "datamap.html").read_text()
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=\"?https?:|@import|<iframe", text, re.IGNORECASE)
    assert len(text) > 1_000_000  # plotly.js is inlined, not fetched


# ---------------------------------------------------------------- headless Chromium

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1']


def _page_requests(html: Path, tmp: Path) -> tuple[list[str], str]:
    """Load ``html`` in headless Chromium; return (URLs the page itself asked for, rendered DOM).

    Chromium logs every request it starts (``--log-net-log``); the browser's own background
    requests carry ``initiator: "not an origin"``, a page's carry its origin (``null`` for file://).
    """
    log = tmp / "net.json"
    r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={log}",
                        "--virtual-time-budget=8000", "--dump-dom", html.resolve().as_uri()],
                       capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    net = json.loads(log.read_text())
    start = net["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    urls = [e["params"]["url"] for e in net["events"] if e["type"] == start and "url" in e.get("params", {})
            and e["params"].get("initiator") != "not an origin"]
    return urls, r.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_map_loads_in_chromium_without_network_requests(run, tmp_path):
    urls, dom = _page_requests(run.output_dir / "datamap.html", tmp_path / "map")
    assert urls == []
    assert "main-svg" in dom and "gl-container" in dom  # plotly ran and drew its WebGL scatter
    # the check can fail: a page that loads plotly from a CDN is caught
    cdn = tmp_path / "cdn.html"
    cdn.write_text('<html><body><script src="http://127.0.0.1:9/plotly.min.js"></script></body></html>')
    urls, _ = _page_requests(cdn, tmp_path / "cdn")
    assert urls == ["http://127.0.0.1:9/plotly.min.js"]
