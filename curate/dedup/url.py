"""``url_dedup``: keep one document per normalised URL (as datatrove's UrlDedup* steps).

Normalisation (:func:`normalize_url`), the syntax-based equivalences of RFC 3986 §6.2.2 plus
two that hold for fetched web pages:

* scheme and host lower-cased (both are case-insensitive); a trailing dot of the host dropped;
* the scheme's default port dropped (http/ws 80, https/wss 443, ftp 21);
* percent-escapes: hex digits upper-cased, escaped unreserved characters (A-Z a-z 0-9 - . _ ~)
  decoded; ``.`` and ``..`` path segments resolved; an empty path is ``/``;
* one trailing ``/`` of a non-root path dropped (``/a/`` and ``/a`` are one page on most sites);
* the fragment (``#...``) dropped: it is never sent to the server, so it names the same document;
* an empty query (``?`` alone) dropped.

Path and query keep their case (both are case-sensitive). Optional, off by default because
they can join different pages: ``strip_www`` (``www.example.com`` = ``example.com``),
``sort_query`` (``?b=2&a=1`` = ``?a=1&b=2``), ``ignore_scheme`` (``http`` = ``https``).
A string without ``://`` is read as ``host/path`` (``example.com/a``), except an opaque URI
(``mailto:x@y``), compared as written. Internationalised hosts
are compared as written (punycode and Unicode forms of one host differ).

Differences from datatrove (``pipeline/dedup/url_dedup.py``): datatrove compares the raw URL
string unless given a ``url_normalizer`` callable (its example lower-cases the WHOLE URL, path
included), so ``normalize=False`` here is its default. Both keep the first document of a URL
by default (datatrove: highest ``document_priority``, default 0, ties by position in the input
file); ``keep="longest"`` is its example's priority (text length). datatrove fails on a
document without ``metadata["url"]``; here such documents are kept.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.registry import register
from curate.core.schema import ID
from curate.core.stage import Selection, Selector, StageContext

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_OPAQUE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:(?!//)(?!\d)")  # mailto:, urn: (host:port has a digit)
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _fix_escapes(s: str) -> str:
    # %7e -> ~ (unreserved: decoding changes nothing), %2f -> %2F (hex case is not significant)
    def one(m: re.Match) -> str:
        c = chr(int(m.group(1), 16))
        return c if c in _UNRESERVED else "%" + m.group(1).upper()

    return _PCT.sub(one, s) if "%" in s else s


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4 on whole segments
    if "." not in path:
        return path
    out: list[str] = []
    segs = path.split("/")
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == ".":
            if last:
                out.append("")
        elif seg == "..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append("")
        else:
            out.append(seg)
    res = "/".join(out)
    return res if res.startswith("/") or not path.startswith("/") else "/" + res


def normalize_url(url: str | None, *, strip_www: bool = False, sort_query: bool = False,
                  ignore_scheme: bool = False) -> str | None:
    """The canonical form of a URL (see the module docstring), or None for a missing/blank one.

    Args:
        url: the URL as crawled.
        strip_www: drop a leading ``www.`` from the host (default False).
        sort_query: sort the ``&``-separated query parameters (default False).
        ignore_scheme: compare without the scheme, so http and https match (default False).

    Returns:
        The normalised URL string, or None.

    Example:
        >>> normalize_url("HTTP://Example.COM:80/a/./b/../c/?#top")
        'http://example.com/a/c'
    """
    if url is None:
        return None
    url = url.strip()
    if not url:
        return None
    if not _SCHEME.match(url) and not url.startswith("//"):
        if _OPAQUE.match(url):
            return url  # no authority to normalise
        url = "//" + url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed port or IPv6 literal: compare the trimmed string as is
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if strip_www and host.startswith("www."):
        host = host[4:]
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    netloc = (userinfo + "@" if userinfo else "") + host
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc += f":{port}"
    path = _remove_dot_segments(_fix_escapes(parts.path)) or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    query = _fix_escapes(parts.query)
    if sort_query and query:
        query = "&".join(sorted(p for p in query.split("&") if p))
    head = "//" if ignore_scheme or not scheme else scheme + "://"
    return head + netloc + path + ("?" + query if query else "")


@register
class UrlDedup(Selector):
    """Keep one document per (normalised) URL; later copies are dropped with ``dup_of``.

    Args:
        url_column: column holding each document's URL (default ``"url"``). Rows whose URL is
            null or blank are kept and never grouped.
        keep: which document of a URL survives: ``"first"`` (default, datatrove's default
            priority: lowest input position) or ``"longest"`` (most characters of
            ``text_column``; ties go to the first).
        normalize: compare :func:`normalize_url` forms (default True); False compares the raw
            strings (datatrove's default).
        strip_www: also treat ``www.host`` as ``host`` (default False).
        sort_query: also ignore the order of query parameters (default False).
        ignore_scheme: also treat http and https alike (default False).
        text_column: text column measured by ``keep="longest"`` (default ``"text"``).

    Extras in the Selection: ``dup_of`` (object, id of the kept document of the URL, or None)
    and ``url_norm`` (object, the normalised URL, or None).
    """

    name = "url_dedup"
    version = "1"
    reasons = {"duplicate_url": "same normalised URL as the kept document (dup_of names it)"}

    def __init__(self, *, url_column: str = "url", keep: str = "first", normalize: bool = True,
                 strip_www: bool = False, sort_query: bool = False, ignore_scheme: bool = False,
                 text_column: str = "text"):
        if not isinstance(url_column, str) or not url_column:
            raise ValueError(f"url_column must be a column name, got {url_column!r}")
        if keep not in ("first", "longest"):
            raise ValueError(f"keep must be 'first' or 'longest', got {keep!r}")
        for nm, v in (("normalize", normalize), ("strip_www", strip_www), ("sort_query", sort_query),
                      ("ignore_scheme", ignore_scheme)):
            if not isinstance(v, bool):
                raise ValueError(f"{nm} must be true or false, got {v!r}")
        if not isinstance(text_column, str) or not text_column:
            raise ValueError(f"text_column must be a column name, got {text_column!r}")
        self.url_column = url_column
        self.keep = keep
        self.normalize = normalize
        self.strip_www = strip_www
        self.sort_query = sort_query
        self.ignore_scheme = ignore_scheme
        self.text_column = text_column

    def required_columns(self) -> list[str]:
        cols = [self.url_column, ID]
        if self.keep == "longest":
            cols.append(self.text_column)
        return cols

    def normalized(self, urls: list[str | None]) -> np.ndarray:
        """(n,) object array of the URLs as compared (None where missing)."""
        out = np.empty(len(urls), dtype=object)
        for i, u in enumerate(urls):
            if not self.normalize:
                out[i] = u if u is not None and u.strip() else None
            else:
                out[i] = normalize_url(u, strip_www=self.strip_www, sort_query=self.sort_query,
                                       ignore_scheme=self.ignore_scheme)
        return out

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        if self.url_column not in table.column_names:
            raise ValueError(f"url_column={self.url_column!r} not in table; have {table.column_names}")
        norm = self.normalized(table.column(self.url_column).to_pylist())
        ids = np.array(table.column(ID).to_pylist(), dtype=object)
        n = len(norm)
        group = np.full(n, -1, dtype=np.int64)
        seen: dict[str, int] = {}
        for i, u in enumerate(norm.tolist()):
            if u is not None:
                group[i] = seen.setdefault(u, len(seen))
        has = np.flatnonzero(group >= 0)
        if self.keep == "longest":
            length = pc.fill_null(pc.utf8_length(table.column(self.text_column)), 0)
            prio = -np.asarray(length.to_numpy(zero_copy_only=False), dtype=np.int64)
        else:
            prio = np.zeros(n, dtype=np.int64)
        # per group the best row: lowest (-length), then lowest position
        order = has[np.lexsort((has, prio[has], group[has]))]
        first = np.ones(len(order), dtype=bool)
        first[1:] = group[order[1:]] != group[order[:-1]]
        rep_of_group = np.empty(len(seen), dtype=np.int64)
        rep_of_group[group[order[first]]] = order[first]
        keep = np.ones(n, dtype=bool)
        dup_of = np.full(n, None, dtype=object)
        rep = rep_of_group[group[has]]
        dropped = has[rep != has]
        keep[dropped] = False
        dup_of[dropped] = ids[rep[rep != has]]
        return Selection.keep_mask(keep, "duplicate_url", dup_of=dup_of, url_norm=norm)
