"""HTML and WARC ingest on the real sample (sample_web/) and on bad pages made here.

Counts are checked against an independent count of the files (JSONL lines, .html files, HTML
responses found by warcio directly), every planted page against its quarantine reason, and the
WARC against the same pages as .html files.
"""
from __future__ import annotations

import gzip
import io
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from curate.core.errors import InputError
from curate.ingest.formats import REASONS
from curate.ingest.read import read_input
from curate.ingest.readers import read_records
from curate.ingest.readers.warc import read_warc
from curate.ingest.web.charset import EncodingError, decode
from curate.ingest.web.page import page_url

WEB = Path(__file__).resolve().parents[1] / "sample_web"
HANDBOOK_EN = WEB / "html/debian-handbook/en-US"
WARC_EN = WEB / "warc/debian-handbook-en-US.warc.gz"
TRUNCATED = WEB / "planted/truncated.warc.gz"
PARA = ("The Debian Administrator's Handbook explains how to install, configure and maintain a Debian system, "
        "from the packaging tools to the network services that a small company needs every day. ")


def _page(body: str, head: str = "") -> bytes:
    return f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">{head}<title>t</title></head><body><article>{body}</article></body></html>\n".encode()


def _html_responses(path: Path) -> list[tuple[str, str]]:
    """(WARC-Target-URI, WARC-Record-ID) of every response whose Content-Type is HTML, read with warcio directly."""
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(path, "rb") as fh:
        for rec in ArchiveIterator(fh):
            if rec.rec_type == "response" and (rec.http_headers.get_header("Content-Type") or "").startswith("text/html"):
                out.append((rec.rec_headers.get_header("WARC-Target-URI"), rec.rec_headers.get_header("WARC-Record-ID")))
    return out


def _warc(pages: list[tuple]) -> bytes:
    """A .warc.gz of one text/html response per (url, payload[, extra HTTP headers]), written with warcio."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=True)
    for url, payload, *extra in pages:
        http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), *(extra[0] if extra else [])], protocol="HTTP/1.1")
        w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), length=len(payload), http_headers=http))
    return buf.getvalue()


@pytest.fixture(scope="module")
def whole():
    return read_input(WEB)


def _by_file(got) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for q in got.quarantine:
        out.setdefault(q["file"], []).append(q["reason"])
    return out


# ---------------------------------------------------------------- the whole sample

def test_whole_sample_counts_are_exact(whole):
    lines = sum(1 for f in WEB.rglob("*.jsonl.gz") for b in gzip.decompress(f.read_bytes()).split(b"\n") if b.strip())
    pages = len(list(WEB.rglob("*.html")))
    responses = sum(len(_html_responses(f)) for f in WEB.rglob("*.warc.gz"))
    assert (lines, pages, responses) == (1873, 261, 130)
    assert whole.n_records == lines + pages + responses == 2264
    assert whole.table.num_rows + len(whole.quarantine) == whole.n_records
    assert (whole.table.num_rows, len(whole.quarantine)) == (2256, 8)
    assert {q["reason"] for q in whole.quarantine} <= set(REASONS)


def test_every_planted_page_gets_its_reason_and_the_run_goes_on(whole):
    assert _by_file(whole) == {
        "planted/html/boilerplate_only.html": ["no_main_text"],
        "planted/html/empty.html": ["empty_text"],
        "planted/html/invalid_encoding.html": ["invalid_encoding"],
        "planted/html/not_html.html": ["not_html"],
        "planted/html/unparseable_json.html": ["extraction_failed"],
        "planted/planted.jsonl.gz": ["invalid_utf8"],
        "planted/truncated.warc.gz": ["not_html", "truncated_record"],
    }
    ids = set(whole.table.column("id").to_pylist())
    # the pages after a bad one in the same folder are read
    assert {"planted/html/latin1_declared.html:1", "planted/html/stray_bytes.html:1"} <= ids
    assert "planted/html/invalid_encoding.html:1" not in ids


def test_planted_jsonl_rows_are_kept_with_their_label(whole):
    rows = [r for r in whole.table.select(["id", "planted", "url"]).to_pylist() if r["planted"]]
    assert Counter(r["planted"] for r in rows) == {"boilerplate_only": 3, "repeated_lines": 3, "lorem_ipsum": 2, "pii": 3,
                                                    "blocklisted_url": 2, "exact_duplicate": 5, "near_duplicate": 5}
    assert all("redtube.com" in r["url"] for r in rows if r["planted"] == "blocklisted_url")
    texts = dict(zip(whole.table.column("id").to_pylist(), whole.table.column("text").to_pylist(), strict=True))
    assert texts["planted-014"] == texts["dclm-0000"]          # an exact duplicate of a real page
    assert texts["planted-019"] != texts["dclm-0001"]          # a near one is not exact
    assert "8.8.8.8" in texts["planted-010"] and "192.168.1.20" in texts["planted-010"]


def test_warc_ingests_the_same_documents_as_the_html_files(whole):
    rows = whole.table.select(["id", "url", "text", "source"]).to_pylist()
    html = {r["url"]: r for r in rows if r["source"].startswith("html/debian-handbook/en-US/")}
    warc = {r["url"]: r for r in rows if r["source"] == "warc/debian-handbook-en-US.warc.gz"}
    assert len(html) == len(warc) == len(list(HANDBOOK_EN.glob("*.html"))) == 127
    assert html.keys() == warc.keys()
    assert all(html[u]["text"] == warc[u]["text"] for u in html)
    assert {r["id"] for r in warc.values()} == {rid for _, rid in _html_responses(WARC_EN)}


def test_url_and_id_of_a_real_page(whole):
    rows = {r["id"]: r for r in whole.table.select(["id", "url", "text", "warc_date"]).to_pylist()}
    fr = rows["html/debian-handbook/fr-FR/apt.html:1"]
    assert fr["url"] == "https://debian-handbook.info/browse/fr-FR/stable/apt.html"  # its <link rel="canonical">
    assert "apt-get" in fr["text"] and "Common_Content" not in fr["text"]
    uri, rid = next((u, r) for u, r in _html_responses(WARC_EN) if u.endswith("/stable/apt.html"))
    assert rows[rid]["url"] == uri and rows[rid]["warc_date"] == "2022-09-22T00:00:00Z"
    assert rows[rid]["text"] == rows["html/debian-handbook/en-US/apt.html:1"]["text"]


def test_charset_edge_pages_are_kept_and_decoded(whole):
    rows = {r["id"]: r["text"] for r in whole.table.select(["id", "text"]).to_pylist()}
    assert "L'été dernier, les élèves ont visité le château" in rows["planted/html/latin1_declared.html:1"]
    assert rows["planted/html/stray_bytes.html:1"].count("\ufffd") == 2


# ---------------------------------------------------------------- WARC

def test_truncated_warc_record_and_skipped_records():
    records = read_warc(TRUNCATED, 1_000_000)
    got = list(records)
    assert len(got) == len(_html_responses(TRUNCATED)) == 3
    assert isinstance(got[0].value, dict) and got[0].value["url"].endswith("/advanced-administration.html")
    assert [(r.line, r.value.reason) for r in got[1:]] == [(5, "not_html"), (10, "truncated_record")]
    assert "18296 bytes before the end" in got[2].value.message
    want = "truncated.warc.gz: skipped 7 WARC records that are not HTML responses (4 request, 1 metadata, 1 response image/png, 1 warcinfo)"
    assert records.warnings == [want]


def _members(data: bytes) -> bytes:
    import zlib

    out = []
    while data:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(data))
        data = d.unused_data
    return b"".join(out)


def test_damaged_warc_files(tmp_path):
    full = WARC_EN.read_bytes()
    (tmp_path / "plain_cut.warc").write_bytes(_members(full)[:200_000])  # uncompressed, cut in a record
    small = _warc([(f"https://example.com/{i}", _page(f"<p>{i} {PARA * 3}</p>")) for i in range(3)])
    (tmp_path / "garbage.warc.gz").write_bytes(small + b"this is not a WARC record\r\n\r\n")  # broken between records
    cut = list(read_warc(tmp_path / "plain_cut.warc", 1_000_000))
    assert [r.value.reason for r in cut if not isinstance(r.value, dict)] == ["truncated_record"]
    assert cut[-1].value.reason == "truncated_record" and len(cut) > 1
    garbage = list(read_warc(tmp_path / "garbage.warc.gz", 1_000_000))
    assert len(garbage) == 4 and garbage[-1].value.reason == "truncated_file"
    assert all(isinstance(r.value, dict) for r in garbage[:-1])
    (tmp_path / "text.warc").write_bytes(b"hello, this is not a WARC file\n")
    got = read_input([tmp_path / "text.warc", TRUNCATED])  # one unreadable file among good ones: one record
    assert [q["reason"] for q in got.quarantine if q["file"].endswith("text.warc")] == ["unreadable_file"]
    with pytest.raises(InputError, match="not a WARC file"):
        read_input(tmp_path / "text.warc")


def test_compressed_and_chunked_payloads_are_decoded(tmp_path):
    import brotli

    body = _page(f"<p>{PARA * 3}</p>")
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    (tmp_path / "enc.warc.gz").write_bytes(_warc([
        ("https://example.com/plain", body),
        ("https://example.com/gzip", gzip.compress(body), [("Content-Encoding", "gzip")]),
        ("https://example.com/br", brotli.compress(body), [("Content-Encoding", "br")]),
        ("https://example.com/chunked", chunked, [("Transfer-Encoding", "chunked")]),
    ]))
    got = read_input(tmp_path / "enc.warc.gz")
    assert got.quarantine == [] and got.table.num_rows == 4
    assert len(set(got.table.column("text").to_pylist())) == 1 and PARA.strip() in got.table.column("text")[0].as_py()


def test_ten_mb_pages_are_row_too_large_without_being_read(tmp_path, monkeypatch):
    big = _page("<p>start</p>") + b"<p>" + b"y" * (10 * 2**20) + b"</p>"
    (tmp_path / "a_big.html").write_bytes(big)
    (tmp_path / "b_small.html").write_bytes(_page(f"<p>{PARA * 3}</p>"))
    (tmp_path / "c_big.warc.gz").write_bytes(_warc([("https://example.com/big", big),
                                                    ("https://example.com/small", _page(f"<p>{PARA * 3}</p>"))]))
    real = Path.read_bytes

    def guarded(self):  # the big page must never be read whole
        assert self.name != "a_big.html", "the 10 MB page was read"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    got = read_input(tmp_path)
    assert [(q["file"], q["reason"]) for q in got.quarantine] == [("a_big.html", "row_too_large"), ("c_big.warc.gz", "row_too_large")]
    assert all(q["raw"].startswith("<!DOCTYPE html>") for q in got.quarantine)
    assert sorted(got.table.column("url").to_pylist(), key=str) == [None, "https://example.com/small"]


# ---------------------------------------------------------------- timeout, threads, determinism

def _slow_page() -> bytes:
    """~0.8 MB that trafilatura needs many seconds for (30,000 table cells holding a paragraph each)."""
    cells = "".join(f"<td><p>cell {i} ab</p></td>" for i in range(30000))
    return f"<html><body><table><tr>{cells}</tr></table></body></html>".encode()


def test_timeout_fires_on_a_slow_page_in_a_worker_thread_and_the_next_page_is_read(tmp_path):
    (tmp_path / "a_slow.html").write_bytes(_slow_page())
    (tmp_path / "b_next.html").write_bytes(_page(f"<p>{PARA * 3}</p>"))
    box: dict = {}

    def run():  # as the Prefect flow does: ingest outside the main thread (no signal.alarm there)
        t0 = time.perf_counter()
        box["got"], box["s"] = read_input(tmp_path), time.perf_counter() - t0

    th = threading.Thread(target=run)
    th.start()
    th.join(120)
    got = box["got"]
    assert [(q["file"], q["reason"]) for q in got.quarantine] == [("a_slow.html", "extraction_timeout")]
    assert got.table.column("id").to_pylist() == ["b_next.html:1"]
    assert PARA.strip() in got.table.column("text")[0].as_py()
    assert "the worker was killed" in got.quarantine[0]["error"]  # cut off, not waited for
    assert box["s"] < 15


def test_read_records_takes_the_timeout(tmp_path):
    p = tmp_path / "slow.html"
    p.write_bytes(_slow_page())
    (rec,) = read_records(p, 1_000_000, "train", extract_timeout=0.2)
    assert rec.value.reason == "extraction_timeout" and "timeout 0.2 s" in rec.value.message


def test_identical_pages_keep_their_text_whatever_was_extracted_before(tmp_path):
    # trafilatura's default deduplication cache is process-wide: the second identical page would
    # come back empty. Each page gets its own cache, so copies are kept for the dedup stages.
    for i in range(4):
        (tmp_path / f"copy{i}.html").write_bytes(_page(f"<p>{PARA * 3}</p>"))
    got = read_input(tmp_path)
    assert got.table.num_rows == 4 and len(set(got.table.column("text").to_pylist())) == 1


def test_pool_survives_a_dying_worker_and_idle_exits():
    from curate.ingest.web.pool import ExtractPool

    pool = ExtractPool(1, idle_s=0.5)
    page = _page(f"<p>{PARA * 3}</p>")
    try:
        assert pool.result(pool.submit((page, None, True), 30))[0] == "ok"  # the worker is up and idle
        slow = pool.submit((_slow_page(), None, False), None)
        assert pool.workers[0].job[0] == slow  # sent at once to the idle worker
        pool.workers[0].proc.kill()  # as the OOM killer would
        assert pool.result(slow)[:2] == ("error", "extraction_failed")
        assert pool.result(pool.submit((page, None, True), 30))[0] == "ok"
        time.sleep(1.5)  # the worker exits on its own after 0.5 s idle; the next page still gets one
        again = pool.submit((page, None, True), 30)
        assert pool.result(again)[0] == "ok"
        with pytest.raises(KeyError):
            pool.result(again)
    finally:
        pool.close()


# ---------------------------------------------------------------- charset and url rules

def test_charset_rules():
    assert decode(b"\xef\xbb\xbfcaf\xc3\xa9")[0] == "café"                                   # BOM
    meta = b'<html><head><meta charset="iso-8859-1"></head><body>\x93caf\xe9\x94</body></html>'
    assert "\u201ccafé\u201d" in decode(meta)[0]                                              # latin-1 label = windows-1252
    assert decode("<p>привет</p>".encode("cp1251"), http="windows-1251")[0] == "<p>привет</p>"  # HTTP header
    text, how = decode(("<p>" + "ok " * 400 + "</p>").encode() + b"\xff")                   # one stray byte
    assert text.endswith("\ufffd") and "replaced 1" in how
    mislabel = ('<meta charset="euc-jp"><p>' + "Привет, мир. " * 20 + "</p>").encode()      # UTF-8 labelled EUC-JP
    assert decode(mislabel) == (mislabel.decode(), "utf-8 (declared euc_jp)")
    guessed, how = decode(("<p>" + "Съешь же ещё этих мягких французских булок, да выпей чаю. " * 20 + "</p>").encode("cp1251"))
    assert "французских булок" in guessed and "guessed" in how
    with pytest.raises(EncodingError, match="not valid utf-8"):
        decode(('<meta charset="utf-8"><p>' + "élève à côté " * 50 + "</p>").encode("latin-1"))


def test_page_url_rules():
    og = '<meta property="og:url" content="https://example.com/og">'
    assert page_url(f'<html><head>{og}<link rel="canonical" href="https://example.com/c"></head>') == "https://example.com/c"
    assert page_url(f'<html><head><link rel="canonical" href="/relative">{og}</head>') == "https://example.com/og"
    assert page_url('<html><head><title>x</title></head><body><link rel="canonical" href="https://x.org/b"></body>') is None
    assert page_url("<html><body>no head</body></html>") is None
