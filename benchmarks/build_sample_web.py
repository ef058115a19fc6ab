"""Rebuild ``sample_web/`` (real web-like documents plus planted bad ones) deterministically.

Nothing is downloaded here. Get the sources first (Debian 12 "bookworm" packages, any machine)::

    mkdir -p /tmp/debs && cd /tmp/debs
    apt-get download debian-handbook manpages-de manpages-fr manpages-es manpages-it \\
        manpages-pl manpages-ru manpages-pt-br
    for f in *.deb; do d=x_${f%%_*}; mkdir -p $d; dpkg-deb -x $f $d; done

then, from the repository root (``groff`` and ``col`` must be installed to render man pages)::

    python benchmarks/build_sample_web.py --data "$CURATE_DATA" \\
        --handbook /tmp/debs/x_debian-handbook --manpages /tmp/debs/x_manpages-*

``--data`` is the folder of public datasets, ``$CURATE_DATA`` (docs/data.md: DCLM human-labelled pages, Dolly). Running it
again with the same sources gives byte-identical files (seeded sampling, gzip and WARC headers
without timestamps). ``sample_web/README.md`` is hand-written: keep its tables in sync with the
constants below. The ~10 MB page and the slow page are made by the tests, not stored here.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
import shutil
import subprocess
import uuid
from pathlib import Path

SEED = 0
REPO = Path(__file__).resolve().parent.parent
N_DOLLY = 1000          # Wikipedia paragraphs (Dolly contexts of >= MIN_CONTEXT characters)
MIN_CONTEXT = 1000
N_MAN = 50              # rendered man pages per language
MAN_CHARS = (1500, 30000)  # rendered man pages outside this length range are skipped
HANDBOOK_LANGS = ("en-US", "fr-FR")  # as .html files; en-US also goes into the WARC
WARC_DATE = "2022-09-22T00:00:00Z"  # the handbook package's date: fixed, for byte-identical output
BLOCKED_DOMAIN = "redtube.com"  # listed in datatrove 0.10.1's url_filterblacklistsv0_3_0 domains
_CANONICAL = re.compile(rb'<link[^>]*rel="canonical"[^>]*href="([^"]+)"')
LOREM = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore "
         "et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris nisi ut "
         "aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit esse cillum "
         "dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in culpa qui "
         "officia deserunt mollit anim id est laborum.")
BOILERPLATE = ("Home | About us | Products | Blog | Contact\nSign in  Register  Cart (0)\n"
               "We use cookies to improve your experience. Accept all cookies | Manage preferences\n"
               "Follow us on Facebook Twitter Instagram\nPrivacy policy | Terms of use | Sitemap\n"
               "Copyright 2024 All rights reserved.")


def gz_write(path: Path, data: bytes) -> None:
    """Write ``data`` gzip-compressed with no name or time in the header (byte-identical reruns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as fh:
        fh.write(data)


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


# ------------------------------------------------------------------ real documents

def dclm_docs(data: Path) -> list[dict]:
    """The 499 DCLM pages with their human label (1 = high quality), in file order."""
    rows = [json.loads(s) for s in (data / "quality/dclm_human_quality_majority.jsonl").read_text("utf-8").splitlines() if s.strip()]
    return [{"id": f"dclm-{i:04d}", "text": r["text"], "label": r["label"]} for i, r in enumerate(rows)]


def dolly_docs(data: Path) -> list[dict]:
    """N_DOLLY distinct long Dolly contexts (mostly Wikipedia paragraphs), sampled with SEED."""
    rows = json.loads((data / "instruct/dolly_15k.json").read_text("utf-8"))
    seen, cand = set(), []
    for i, r in enumerate(rows):
        ctx = (r.get("input") or "").strip()
        if len(ctx) >= MIN_CONTEXT and ctx not in seen:
            seen.add(ctx)
            cand.append((i, ctx))
    picked = sorted(random.Random(SEED).sample(cand, N_DOLLY))
    return [{"id": f"dolly-ctx-{i:05d}", "text": ctx, "dolly_row": i} for i, ctx in picked]


def render_man(path: Path) -> str | None:
    """A man page as plain UTF-8 text: groff -man -Tutf8 without hyphenation, overstrikes removed
    (col -bx), each line's justification spaces collapsed and runs of blank lines cut to one."""
    src = gzip.decompress(path.read_bytes())
    if src.lstrip().startswith(b".so "):  # a link to another page, not a page
        return None
    env = {"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["groff", "-k", "-Tutf8", "-man", "-rHY=0"], input=src, capture_output=True, env=env, check=False).stdout
    text = subprocess.run(["col", "-bx"], input=out, capture_output=True, env=env, check=True).stdout.decode("utf-8", "replace")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() or None


def man_docs(roots: list[Path]) -> list[dict]:
    """N_MAN rendered pages per language found under the given ``dpkg-deb -x`` roots."""
    docs = []
    for root in sorted(roots):
        for lang_dir in sorted(p for p in (root / "usr/share/man").iterdir() if p.is_dir()):
            pages = sorted(lang_dir.glob("man*/*.gz"))
            random.Random(SEED).shuffle(pages)
            lang, got = lang_dir.name.split("_")[0], []
            for p in pages:
                text = render_man(p)
                if text and MAN_CHARS[0] <= len(text) <= MAN_CHARS[1]:
                    got.append({"id": f"man-{lang_dir.name}-{p.name[:-3]}", "text": text, "lang": lang,
                                "locale": lang_dir.name, "page": p.name[:-3]})
                if len(got) == N_MAN:
                    break
            docs += sorted(got, key=lambda d: d["id"])
    return docs


def handbook_pages(root: Path, lang: str) -> list[Path]:
    return sorted((root / "usr/share/doc/debian-handbook/html" / lang).glob("*.html"))


# ------------------------------------------------------------------ WARC

def warc_records(pages: list[tuple[str, bytes, str]], extra: list | None = None, gzip_members: bool = True,
                 warcinfo: bool = True, tag: str = "") -> bytes:
    """A WARC (warcinfo, then per page a request and a response record) as bytes.

    Args:
        pages: (url, payload, content type) per response.
        extra: more (record type, url, payload, content type) records appended as they are.
        gzip_members: one gzip member per record (``.warc.gz``), else plain ``.warc``.
        warcinfo: start with a warcinfo record (False: records to append to another WARC).
        tag: mixed into the record ids, so that two files holding the same page differ.
    """
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    buf = io.BytesIO()
    w = WARCWriter(buf, gzip=gzip_members, warc_version="1.0")

    def rid(*parts) -> str:
        return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '|'.join((tag, *parts)))}>"

    if warcinfo:
        info = w.create_warcinfo_record("sample_web.warc", {"software": "curate benchmarks/build_sample_web.py",
                                                            "format": "WARC File Format 1.0"})
        info.rec_headers.replace_header("WARC-Record-ID", rid("warcinfo"))
        info.rec_headers.replace_header("WARC-Date", WARC_DATE)
        w.write_record(info)
    for kind, url, payload, ctype in [("response", u, p, c) for u, p, c in pages] + list(extra or []):
        if kind == "response":
            req_http = StatusAndHeaders(f"GET {url.split('/', 3)[-1]} HTTP/1.1", [("Host", url.split("/")[2])],
                                        is_http_request=True)
            w.write_record(w.create_warc_record(url, "request", payload=io.BytesIO(b""), length=0, http_headers=req_http,
                                                warc_headers_dict={"WARC-Record-ID": rid("request", url), "WARC-Date": WARC_DATE}))
            http = StatusAndHeaders("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(payload)))],
                                    protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(payload), length=len(payload), http_headers=http,
                                                warc_headers_dict={"WARC-Record-ID": rid("response", url), "WARC-Date": WARC_DATE}))
        else:
            w.write_record(w.create_warc_record(url, kind, payload=io.BytesIO(payload), length=len(payload), warc_content_type=ctype,
                                                warc_headers_dict={"WARC-Record-ID": rid(kind, url), "WARC-Date": WARC_DATE}))
    return buf.getvalue()


def canonical(html: bytes) -> str:
    m = _CANONICAL.search(html)
    if m is None:
        raise ValueError("handbook page without a canonical link")
    return m.group(1).decode()


# ------------------------------------------------------------------ planted documents

def planted_docs(dclm: list[dict], dolly: list[dict]) -> list[dict]:
    """JSONL documents that read fine but are bad for pretraining, each with its ``planted`` label."""
    rng = random.Random(SEED)
    out: list[dict] = []

    def add(kind: str, text: str, **extra) -> None:
        out.append({"id": f"planted-{len(out) + 1:03d}", "text": text, "planted": kind, **extra})

    for i in range(3):
        add("boilerplate_only", BOILERPLATE.replace("2024", str(2021 + i)))
    for doc in dclm[10:13]:
        line = next(s for s in doc["text"].splitlines() if len(s) > 40)
        add("repeated_lines", "\n".join([line] * 30 + doc["text"].splitlines()[:3]))
    add("lorem_ipsum", "\n\n".join([LOREM] * 4))
    add("lorem_ipsum", dolly[5]["text"] + "\n\n" + LOREM)
    pii = ["Contact the editor at maria.rossi@example.org or call the office.",
           "The mirror runs at 8.8.8.8 and the admin panel at 192.168.1.20; write to ops-team@example.com.",
           "Servers: public 9.9.9.9, internal 10.12.0.7 and 172.16.5.4. Support: help.desk@example.net"]
    for j, line in enumerate(pii):
        add("pii", dolly[10 + j]["text"] + "\n\n" + line)
    for j in range(2):
        add("blocklisted_url", dolly[20 + j]["text"], url=f"https://www.{BLOCKED_DOMAIN}/watch/{1000 + j}")
    for src in (dclm[0], dclm[50], dclm[100], dolly[0], dolly[100]):
        add("exact_duplicate", src["text"], dup_of=src["id"])
    for src in (dclm[1], dclm[51], dclm[101], dolly[1], dolly[101]):
        words = src["text"].split(" ")
        for _ in range(max(2, len(words) // 50)):  # ~2% of the words swapped with their neighbour
            k = rng.randrange(len(words) - 1)
            words[k], words[k + 1] = words[k + 1], words[k]
        add("near_duplicate", " ".join(words) + " (updated)", dup_of=src["id"])
    return out


def planted_html(dolly: list[dict], png: bytes) -> dict[str, bytes]:
    """Bad (and two awkward but good) HTML pages, by file name; see sample_web/README.md.

    Args:
        dolly: the Dolly documents (real paragraphs for the page bodies).
        png: a real PNG image, saved as ``not_html.html``.
    """
    para = "".join(f"<p>{d['text']}</p>\n" for d in dolly[30:32])
    page = "<!DOCTYPE html>\n<html><head><meta charset=\"{cs}\"><title>{t}</title></head><body><article>{b}</article></body></html>\n"
    nav = "".join(f"<li><a href=\"/{w.lower()}\">{w}</a></li>" for w in ("Home", "About", "Blog", "Shop", "Contact"))
    boiler = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Welcome</title></head><body>"
              f"<nav><ul>{nav}</ul></nav><div class=\"cookie-banner\">We use cookies. <button>Accept</button></div>"
              f"<footer><ul>{nav}</ul><p>Copyright 2024 All rights reserved.</p></footer></body></html>\n")
    french = "L'été dernier, les élèves ont visité le château près de la forêt; à côté, un café très fréquenté. " * 6
    return {
        "boilerplate_only.html": boiler.encode(),
        # a JSON API response saved as .html (servers often label JSON text/html): no markup at all
        "unparseable_json.html": json.dumps({"status": "ok", "items": [{"id": k, "title": d["text"][:60]}
                                                                        for k, d in enumerate(dolly[40:43])]}).encode(),
        # declares UTF-8 but is Latin-1 throughout: every accent is an invalid byte
        "invalid_encoding.html": page.format(cs="utf-8", t="Visite", b=f"<p>{french}</p>").encode("latin-1"),
        "empty.html": b"",
        # declared Latin-1 and is Latin-1: kept, accents decoded right
        "latin1_declared.html": page.format(cs="iso-8859-1", t="Visite", b=f"<p>{french}</p>" + para.encode("latin-1", "replace").decode("latin-1")).encode("latin-1"),
        # UTF-8 with two stray bytes in ~3 KB: kept, the two bytes become U+FFFD
        "stray_bytes.html": page.format(cs="utf-8", t="Stray", b=para).encode().replace(b". ", b".\xff ", 2),
        "not_html.html": png,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the public datasets folder, $CURATE_DATA (quality/, instruct/; docs/data.md)")
    ap.add_argument("--handbook", type=Path, required=True, help="dpkg-deb -x root of debian-handbook")
    ap.add_argument("--manpages", type=Path, nargs="+", required=True, help="dpkg-deb -x roots of manpages-XX")
    ap.add_argument("--out", type=Path, default=REPO / "sample_web")
    a = ap.parse_args()
    out: Path = a.out
    for sub in ("jsonl", "html", "warc", "planted"):
        shutil.rmtree(out / sub, ignore_errors=True)
    dclm, dolly = dclm_docs(a.data), dolly_docs(a.data)
    gz_write(out / "jsonl/dclm_human_quality.jsonl.gz", jsonl(dclm))
    gz_write(out / "jsonl/wikipedia_dolly.jsonl.gz", jsonl(dolly))
    gz_write(out / "jsonl/manpages_l10n.jsonl.gz", jsonl(man_docs(a.manpages)))
    for lang in HANDBOOK_LANGS:
        for p in handbook_pages(a.handbook, lang):
            dst = out / "html/debian-handbook" / lang / p.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dst)
    en = [(canonical(b := p.read_bytes()), b, "text/html; charset=UTF-8") for p in handbook_pages(a.handbook, "en-US")]
    images = a.handbook / "usr/share/doc/debian-handbook/html/en-US/images"
    pngs = [("response", f"https://debian-handbook.info/browse/stable/images/{n}", (images / n).read_bytes(), "image/png")
            for n in ("openlogo-nd.png", "package.png")]
    (out / "warc").mkdir(parents=True, exist_ok=True)
    (out / "warc/debian-handbook-en-US.warc.gz").write_bytes(warc_records(en, pngs))
    # planted: JSONL documents (+ one line of invalid UTF-8), HTML pages, a truncated WARC
    docs = planted_docs(dclm, dolly)
    gz_write(out / "planted/planted.jsonl.gz", jsonl(docs) + b'{"id": "planted-bad-utf8", "text": "caf\xe9 cr\xe8me", "planted": "invalid_utf8"}\n')
    (out / "planted/html").mkdir(parents=True, exist_ok=True)
    for name, data in planted_html(dolly, pngs[0][2]).items():
        (out / "planted/html" / name).write_bytes(data)
    # truncated.warc.gz: a real page (kept), a PNG claimed as text/html (not_html), an image and a
    # metadata record (skipped), then a real page whose response member is cut (truncated_record)
    extra = [("response", "https://debian-handbook.info/browse/stable/images/package.png", pngs[1][2], "text/html"),
             pngs[0], ("metadata", en[0][0], b"fetchTimeMs: 120\r\n", "application/warc-fields")]
    head = warc_records([en[0]], extra, tag="truncated")
    tail = warc_records([en[1]], warcinfo=False, tag="truncated")  # a small request member, then the large response member
    (out / "planted/truncated.warc.gz").write_bytes(head + tail[: len(tail) * 2 // 3])


if __name__ == "__main__":
    main()
