"""One web page -> main text: the checks before extraction and the extraction itself.

:func:`precheck` runs where the page is read (cheap, on bytes): an empty page is
``empty_text``, a binary payload (an image, a PDF, a gzip stream, NUL bytes) is ``not_html``.
:func:`extract_page` runs in an extraction worker (:mod:`curate.ingest.web.pool`): it decodes the
bytes (:mod:`curate.ingest.web.charset`), drops a leading XML declaration (the text is already
decoded, so its ``encoding`` would only mislead the parser), finds the page's own URL where asked
(``<link rel="canonical">``, else ``<meta property="og:url">``; absolute http(s) only), and
extracts the main text with FineWeb's trafilatura settings (datatrove 0.10.1
``extractors/trafilatura.py``): ``favor_precision=True, include_comments=False,
deduplicate=True``. One difference: trafilatura's deduplication cache is process-wide by
default, so a page's text would depend on which pages the same worker extracted before it
(input order, worker count); curate gives every page a fresh cache, so deduplication removes
segments repeated inside the page and the result depends on the page alone.

Outcomes are plain tuples (they cross process boundaries): ``("ok", text, url, charset)`` or
``("error", reason, message)`` with ``reason`` one of :data:`curate.ingest.formats.REASONS`:
``invalid_encoding``, ``extraction_failed`` (trafilatura/lxml cannot build an HTML tree, or
raised), ``no_main_text`` (trafilatura found no main text).
"""
from __future__ import annotations

import logging
import re
from html.parser import HTMLParser

from curate.ingest.quarantine import RAW_CHARS
from curate.ingest.web.charset import EncodingError, decode

Outcome = tuple  # ("ok", text, url | None, charset) or ("error", reason, message)

_MAGIC = (b"\x89PNG", b"GIF87a", b"GIF89a", b"\xff\xd8\xff", b"%PDF-", b"PK\x03\x04", b"\x1f\x8b",
          b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd", b"wOFF", b"wOF2", b"\x00\x00\x01\x00", b"OggS", b"ID3",
          b"\x7fELF")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_XML_DECL = re.compile(r"^\ufeff?\s*<\?xml[^>]*\?>")
_HEAD_END = re.compile(r"</head\s*>|<body[\s>]", re.IGNORECASE)
HEAD_CHARS = 65536  # the URL is looked for in <head>, or at most this many characters


def raw_of_page(data: bytes, reason: str) -> str:
    """A bad page's ``raw`` for its quarantine record: its first characters (``repr`` of its
    first bytes when it is binary), at most :data:`curate.ingest.quarantine.RAW_CHARS`."""
    if reason == "not_html":
        return repr(data[:200])[:RAW_CHARS]
    return data[: 4 * RAW_CHARS].decode("utf-8", "replace")[:RAW_CHARS]


def precheck(data: bytes) -> tuple[str, str] | None:
    """(reason, message) when ``data`` cannot be an HTML page, else None.

    Args:
        data (bytes): the page's bytes (or at least its first 8 KB).
    """
    if not data.strip():
        return "empty_text", f"the page is empty ({len(data)} bytes, whitespace only)"
    if data.startswith(_MAGIC):
        return "not_html", f"binary content (starts with {data[:8]!r}), not an HTML page"
    head = data[:8192]
    nul = head.count(b"\0")
    if not head.startswith(_UTF16_BOMS) and nul > max(1, len(head) // 100):
        return "not_html", f"binary content ({nul} NUL bytes in the first {len(head)}), not an HTML page"
    return None


class _UrlFinder(HTMLParser):
    """The canonical link and og:url of a page's head."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.canonical: str | None = None
        self.og_url: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "link" and self.canonical is None and "canonical" in a.get("rel", "").lower().split():
            self.canonical = _absolute(a.get("href"))
        elif tag == "meta" and self.og_url is None and "og:url" in (a.get("property", "").lower(), a.get("name", "").lower()):
            self.og_url = _absolute(a.get("content"))


def _absolute(url: str | None) -> str | None:
    url = (url or "").strip()
    return url if url.lower().startswith(("http://", "https://")) and len(url) > 8 else None


def page_url(html: str) -> str | None:
    """The page's own URL: ``<link rel="canonical">``, else ``og:url``; absolute http(s) only, else None."""
    m = _HEAD_END.search(html, 0, HEAD_CHARS)
    finder = _UrlFinder()
    finder.feed(html[: m.start() if m else HEAD_CHARS])
    return finder.canonical or finder.og_url


_ready = False


def _setup() -> None:
    global _ready
    if not _ready:
        # trafilatura logs every page it rejects; the outcome is reported as a quarantine reason
        for name in ("trafilatura", "htmldate", "courlan", "justext"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        _ready = True


def extract_text(html: str) -> Outcome:
    """trafilatura on decoded HTML: ("ok", text, None, "") or ("error", reason, message)."""
    from trafilatura import extract
    from trafilatura.deduplication import LRUCache
    from trafilatura.settings import LRU_SIZE
    from trafilatura.utils import load_html

    _setup()
    try:
        tree = load_html(html)
        if tree is None:
            return "error", "extraction_failed", "trafilatura could not build an HTML tree (not an HTML document)"
        text = extract(tree, favor_precision=True, include_comments=False, deduplicate=LRUCache(maxsize=LRU_SIZE))
    except Exception as e:  # noqa: BLE001 - trafilatura/lxml on hostile markup: the page is quarantined
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        return "error", "extraction_failed", f"trafilatura raised {type(e).__name__}: {msg}"
    if not text or not text.strip():
        return "error", "no_main_text", "trafilatura found no main text (boilerplate only, or too little text)"
    return "ok", text, None, ""


def extract_page(data: bytes, http_charset: str | None = None, want_url: bool = False) -> Outcome:
    """Decode, find the URL (if asked), extract: the whole per-page work of a worker.

    Args:
        data (bytes): the page, already through :func:`precheck`.
        http_charset (str | None): the HTTP ``Content-Type`` charset label; default None.
        want_url (bool): look for the canonical/og:url (HTML files); default False.

    Returns:
        ``("ok", text, url | None, charset)`` or ``("error", reason, message)``.
    """
    try:
        html, how = decode(data, http_charset)
    except EncodingError as e:
        return "error", "invalid_encoding", str(e)
    html = _XML_DECL.sub("", html, count=1)
    url = page_url(html) if want_url else None
    out = extract_text(html)
    return ("ok", out[1], url, how) if out[0] == "ok" else out
