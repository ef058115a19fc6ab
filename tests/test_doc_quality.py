"""doc_quality: the shipped fastText classifier, its training command, and the stage."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest
from select_toys import dolly_rows

from curate.core.stage import StageContext
from curate.score.doc_quality import (
    DocQuality,
    DocQualityModel,
    default_model_path,
    load_model,
    meta_path,
    normalize,
    train_doc_quality,
    train_doc_quality_file,
)

pytest.importorskip("fasttext")  # the stage's optional dependency (fasttext-wheel)

GOOD_DOC = ("The Danube is the second-longest river in Europe. It rises in the Black Forest in Germany and flows "
            "south-east for about 2,850 km through Central and Eastern Europe, passing through four capital "
            "cities, before it empties into the Black Sea through a delta in Romania and Ukraine. The river has "
            "been an important route for trade since antiquity, and its basin is home to about 80 million people.")
BAD_DOC = ("Home | Shop | Cart (0) | Login\nCHEAP watches!!! 70% OFF click here >>> free shipping casino bonus\n"
           "Posted by admin | 0 comments | Share | Tweet | Pin it\nCopyright 2012 All rights reserved | Sitemap")


def planted_bad(n: int, seed: int = 0) -> list[str]:
    """Web boilerplate and spam lines assembled from planted fragments (the fixture's bad class)."""
    rng = np.random.default_rng(seed)
    frags = ["Home", "Login", "Register", "Cart (0)", "click here", "BUY NOW", "free shipping", "casino bonus",
             "Posted by admin", "0 comments", "Share on Facebook", "Tweet", "Privacy Policy", "Sitemap", "$$$",
             "70% OFF", "best price", "Copyright 2012", "All rights reserved", "Next >>", "Tags: misc"]
    return [" | ".join(rng.choice(frags, size=int(rng.integers(6, 14)))) for _ in range(n)]


@pytest.fixture(scope="module")
def fixture_labels(tmp_path_factory):
    """A small ``text, label`` file: 60 real Dolly contexts (good) and 60 planted boilerplate texts (bad)."""
    good = [r["input"] for r in dolly_rows(2000) if len(r.get("input") or "") >= 200][:60]
    assert len(good) == 60
    rows = [{"text": t, "label": 1} for t in good] + [{"text": t, "label": 0} for t in planted_bad(60)]
    path = tmp_path_factory.mktemp("dq") / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_normalize():
    assert normalize("Hello,  World!\nIt's 2012.") == "hello , world ! it ' s 2012 ."
    assert normalize("") == "" and "\n" not in normalize("a\n\nb")


def test_shipped_model_ranks_planted_good_above_bad():
    m = DocQualityModel()
    p = m.predict_proba([GOOD_DOC, BAD_DOC, ""])
    assert ((0 <= p) & (p <= 1)).all()
    assert p[0] > 0.5 > p[1]
    assert p[0] - p[1] > 0.3


def test_shipped_model_scores_its_probes_as_when_trained():
    meta = json.loads(meta_path(default_model_path()).read_text())
    probe = meta["probe"]
    got = DocQualityModel().predict_proba(probe["texts"])
    np.testing.assert_allclose(got, probe["p_good"], atol=1e-6)
    assert meta["info"]["held_out"].startswith("all 281 DCLM agreement pages")
    assert default_model_path().stat().st_size < 2_000_000


def test_training_is_deterministic_and_learns_the_fixture(fixture_labels, tmp_path):
    a = train_doc_quality_file(fixture_labels, tmp_path / "a.ftz", epoch=10)
    b = train_doc_quality_file(fixture_labels, tmp_path / "b.ftz", epoch=10)
    assert (tmp_path / "a.ftz").read_bytes() == (tmp_path / "b.ftz").read_bytes()
    rows = [json.loads(line) for line in fixture_labels.read_text().splitlines()]
    texts, y = [r["text"] for r in rows], np.array([r["label"] for r in rows])
    pa_, pb = a.predict_proba(texts), b.predict_proba(texts)
    np.testing.assert_array_equal(pa_, pb)
    # held-out planted texts of both kinds land on the right side
    p = a.predict_proba([GOOD_DOC, BAD_DOC] + planted_bad(5, seed=9))
    assert p[0] > 0.5 and (p[1:] < 0.5).all()
    assert ((pa_ > 0.5) == (y == 1)).mean() > 0.95
    # the library function and the file command give the same model
    c = train_doc_quality(texts, y, tmp_path / "c.ftz", fasttext_params={"epoch": 10})
    np.testing.assert_array_equal(c.predict_proba(texts), pa_)
    # another seed is another model (the seed is really used)
    d = train_doc_quality(texts, y, tmp_path / "d.ftz", fasttext_params={"epoch": 10}, seed=1)
    assert not np.array_equal(d.predict_proba(texts), pa_)


def test_training_refuses_bad_labels(tmp_path):
    with pytest.raises(ValueError, match="both 0"):
        train_doc_quality(["a b", "c d"], [1, 1], tmp_path / "x.ftz")
    with pytest.raises(ValueError, match="equal length"):
        train_doc_quality(["a b"], [1, 0], tmp_path / "x.ftz")
    with pytest.raises(ValueError, match="unknown keys"):
        train_doc_quality(["a b", "c d"], [1, 0], tmp_path / "x.ftz", fasttext_params={"dimension": 3})


def test_stage_scores_rows_deterministically(tmp_path):
    texts = [GOOD_DOC, BAD_DOC, "A short line."]
    table = pa.table({"id": ["g", "b", "s"], "text": texts})
    stage = DocQuality()
    assert stage.required_columns() == ["text"] and stage.output_columns() == ["doc_quality"]
    assert stage.produces == ("doc_quality",) and stage.row_local
    out1 = stage.annotate(table, StageContext(work_dir=tmp_path / "w1", show_progress=False))
    out2 = stage.annotate(table, StageContext(work_dir=tmp_path / "w2", show_progress=False))
    assert out1.column_names == ["doc_quality"]
    assert out1.equals(out2)
    np.testing.assert_array_equal(out1.column("doc_quality").to_numpy(), DocQualityModel().predict_proba(texts))
    got = out1.column("doc_quality").to_pylist()
    assert got[0] > got[1]


def test_stage_cache_key_is_the_model_content(tmp_path, fixture_labels):
    copy = tmp_path / "copy.ftz"
    shutil.copy(default_model_path(), copy)
    assert DocQuality(model_path=str(copy)).cache_params() == DocQuality().cache_params()
    train_doc_quality_file(fixture_labels, tmp_path / "other.ftz", epoch=2)
    assert DocQuality(model_path=str(tmp_path / "other.ftz")).cache_params() != DocQuality().cache_params()


def test_model_retrained_in_place_is_read_again(tmp_path, fixture_labels):
    path = tmp_path / "m.ftz"
    train_doc_quality_file(fixture_labels, path, epoch=1)
    first = load_model(path).predict_proba([GOOD_DOC])
    train_doc_quality_file(fixture_labels, path, epoch=10)
    assert load_model(path).predict_proba([GOOD_DOC]) != pytest.approx(first, abs=1e-9)


def test_bad_parameters_and_missing_model(tmp_path):
    with pytest.raises(ValueError, match="model_path"):
        DocQuality(model_path=3)
    with pytest.raises(FileNotFoundError, match="nope.ftz"):
        DocQuality(model_path=str(tmp_path / "nope.ftz")).annotate(pa.table({"text": ["x"]}),
                                                                   StageContext(work_dir=tmp_path / "w"))
