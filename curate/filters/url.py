"""URL block-list filter (FineWeb's step 1; datatrove ``URLFilter``), offline.

A page is dropped when, in this order (rule name -> reason code):

* ``domain`` -> ``domain``: its registered domain (``example.co.uk`` of ``a.b.example.co.uk``,
  by the Public Suffix List) is block-listed;
* ``subdomain`` -> ``subdomain``: its full host name is block-listed;
* ``url`` -> ``url``: the exact URL is block-listed;
* ``hard_words`` -> ``hard_blacklisted``: a banned word is one of the URL's tokens (the pieces
  between non-alphanumeric characters; case-sensitive as datatrove: the lists are lower case);
* ``soft_words`` -> ``soft_blacklisted``: at least ``soft_word_threshold`` soft-banned words are
  tokens of the URL;
* ``subwords`` -> ``blacklisted_subword``: a banned phrase occurs anywhere in the URL lowercased
  with every non-alphanumeric character removed.

Values: 1.0/0.0 for the three list look-ups, the number of (different) words found for the
other three. Rows without a URL (null or "") are kept; their values are NaN. The URL column is
read when present (a table without it keeps every row, with a warning), so a recipe runs on
documents that have no URLs.

The lists are the ones inside datatrove 0.10.1's wheel, shipped in ``curate/assets/url_filter/``
(origin and licences in its README). The 4.6 M block-listed domains are held as a sorted array of
64-bit xxh3 hashes (36 MB instead of ~0.5 GB of Python strings; a chance collision needs ~4e12
distinct domains). Domain parsing uses ``tldextract`` with its bundled Public Suffix List
snapshot: ``suffix_list_urls=()`` and no cache directory, so nothing is ever fetched (datatrove's
default ``TLDExtract()`` downloads the current list when it can, so its parsing may change over time).
"""
from __future__ import annotations

import logging
import lzma
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import xxhash

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.filters.web_rules import (
    Rule,
    check_bool,
    check_count,
    map_rule_values,
    optional_column,
    rule_selection,
)

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent.parent / "assets" / "url_filter"
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")


def normalize(text: str) -> str:
    """Lowercase ``text`` with every non-alphanumeric (ASCII) character removed."""
    return _NON_ALNUM.sub("", text).lower()


def parse_list(lines: Iterable[str], normalized: bool) -> set[str]:
    """Entries of a list: lines starting with "#" skipped (as datatrove), each stripped or normalized.

    Empty entries are dropped (an empty banned word would match every URL).
    """
    out = {normalize(x) if normalized else x.strip() for x in lines if x and x[0] != "#"}
    out.discard("")
    return out


def _read_lines(name: str) -> list[str]:
    path = ASSETS / name
    opener = lzma.open if name.endswith(".xz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")


@lru_cache(maxsize=2)
def domain_hashes(name: str = "domains.xz") -> np.ndarray:
    """Sorted (n,) uint64 xxh3 hashes of the shipped block-listed domains (a few seconds, once)."""
    path = ASSETS / name
    with lzma.open(path, "rb") as f:
        lines = f.read().split(b"\n")
    h = np.fromiter((xxhash.xxh3_64_intdigest(x.strip()) for x in lines if x.strip() and x[:1] != b"#"),
                    dtype=np.uint64)
    h.sort()
    return h


@lru_cache(maxsize=1)
def integrated_lists() -> dict[str, frozenset[str]]:
    """The shipped URL and word lists: {"urls", "banned_words", "soft_banned_words", "banned_subwords"}."""
    return {"urls": frozenset(parse_list(_read_lines("urls.xz"), normalized=False)),
            "banned_words": frozenset(parse_list(_read_lines("banned_words.txt"), normalized=True)),
            "soft_banned_words": frozenset(parse_list(_read_lines("soft_banned_words.txt"), normalized=True)),
            "banned_subwords": frozenset(parse_list(_read_lines("banned_subwords.txt"), normalized=True))}


@lru_cache(maxsize=1)
def offline_extractor():
    """A ``tldextract.TLDExtract`` that only uses its bundled suffix list (no download, no cache dir)."""
    from tldextract import TLDExtract

    return TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)


def _in_sorted(hashes: np.ndarray, keys: list[str]) -> np.ndarray:
    if not len(hashes) or not keys:
        return np.zeros(len(keys), dtype=bool)
    q = np.fromiter((xxhash.xxh3_64_intdigest(k.encode("utf-8")) for k in keys), dtype=np.uint64, count=len(keys))
    pos = np.minimum(np.searchsorted(hashes, q), len(hashes) - 1)
    return (hashes[pos] == q) & np.array([bool(k) for k in keys], dtype=bool)


def _strings(pname: str, value: Any) -> None:
    if isinstance(value, str) or not all(isinstance(x, str) for x in value):
        raise ValueError(f"{pname} must be a list of strings, got {value!r}")


@register
class URLFilter(Selector):
    """Drop pages whose URL is block-listed or holds banned words (FineWeb's URL filter).

    Args:
        soft_word_threshold: soft-banned words that drop a URL together (default 2).
        extra_domains: domains/host names to block besides the lists (default none).
        extra_urls: exact URLs to block (default none).
        banned_words: extra banned URL tokens (normalized: lowercase, alphanumeric only).
        banned_subwords: extra banned phrases (normalized the same way).
        soft_banned_words: extra soft-banned URL tokens.
        use_integrated_lists: use the shipped lists (default True; False: only the extras).
        url_column: the column holding each page's URL (default ``"url"``).
    """

    name = "url_filter"
    version = "1"
    RULES: ClassVar[tuple[Rule, ...]] = (
        Rule("domain", "domain"), Rule("subdomain", "subdomain"), Rule("url", "url"),
        Rule("hard_words", "hard_blacklisted"), Rule("soft_words", "soft_blacklisted"),
        Rule("subwords", "blacklisted_subword"))
    reasons: ClassVar[dict[str, str]] = {
        "domain": "the registered domain is block-listed",
        "subdomain": "the host name is block-listed",
        "url": "the exact URL is block-listed",
        "hard_blacklisted": "a banned word is a token of the URL",
        "soft_blacklisted": "soft_word_threshold or more soft-banned words are tokens of the URL",
        "blacklisted_subword": "a banned phrase occurs in the normalized URL",
    }

    def __init__(self, *, soft_word_threshold: int = 2, extra_domains: Sequence[str] = (),
                 extra_urls: Sequence[str] = (), banned_words: Sequence[str] = (),
                 banned_subwords: Sequence[str] = (), soft_banned_words: Sequence[str] = (),
                 use_integrated_lists: bool = True, url_column: str = "url"):
        check_count("soft_word_threshold", soft_word_threshold, allow_none=False, minimum=1)
        for pname, v in (("extra_domains", extra_domains), ("extra_urls", extra_urls), ("banned_words", banned_words),
                         ("banned_subwords", banned_subwords), ("soft_banned_words", soft_banned_words)):
            _strings(pname, v)
        check_bool("use_integrated_lists", use_integrated_lists)
        self.soft_word_threshold = soft_word_threshold
        self.extra_domains, self.extra_urls = extra_domains, extra_urls
        self.banned_words, self.banned_subwords, self.soft_banned_words = banned_words, banned_subwords, \
            soft_banned_words
        self.use_integrated_lists, self.url_column = use_integrated_lists, url_column

    def required_columns(self) -> list[str]:
        return []  # read when present: pages without a URL are kept

    def lists(self) -> dict[str, Any]:
        """The effective lists: shipped (when used) plus extras; ``domain_hashes`` for the shipped domains."""
        base = integrated_lists() if self.use_integrated_lists else dict.fromkeys(
            ("urls", "banned_words", "soft_banned_words", "banned_subwords"), frozenset())
        return {"domain_hashes": domain_hashes() if self.use_integrated_lists else np.empty(0, dtype=np.uint64),
                "domains": parse_list(self.extra_domains, normalized=False),
                "urls": base["urls"] | parse_list(self.extra_urls, normalized=False),
                "banned_words": base["banned_words"] | parse_list(self.banned_words, normalized=True),
                "soft_banned_words": base["soft_banned_words"] | parse_list(self.soft_banned_words, normalized=True),
                "banned_subwords": sorted(base["banned_subwords"] | parse_list(self.banned_subwords, normalized=True))}

    def values(self, urls: list[str | None]) -> dict[str, np.ndarray]:
        """Every rule's value for each URL: {rule name: (n,) float64}; NaN where the URL is missing."""
        n = len(urls)
        out = {r.name: np.full(n, np.nan) for r in self.RULES}
        has = [i for i, u in enumerate(urls) if u]
        if not has:
            return out
        lists = self.lists()
        extract = offline_extractor()
        parts = [extract(urls[i]) for i in has]
        registered = [p.top_domain_under_public_suffix for p in parts]
        fqdn = [p.fqdn for p in parts]
        dom = _in_sorted(lists["domain_hashes"], registered) | np.array(
            [r in lists["domains"] for r in registered], dtype=bool)
        sub = _in_sorted(lists["domain_hashes"], fqdn) | np.array([f in lists["domains"] for f in fqdn], dtype=bool)
        for j, i in enumerate(has):
            url = urls[i]
            tokens = set(_NON_ALNUM.split(url))
            flat = normalize(url)
            out["domain"][i] = float(dom[j])
            out["subdomain"][i] = float(sub[j] and bool(fqdn[j]))
            out["url"][i] = float(url in lists["urls"])
            out["hard_words"][i] = len(tokens & lists["banned_words"])
            out["soft_words"][i] = len(tokens & lists["soft_banned_words"])
            out["subwords"][i] = sum(1 for w in lists["banned_subwords"] if w in flat)
        return out

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        urls = optional_column(table, self.url_column)
        if urls is None:
            log.warning("url_filter: no column %r (url_column) in the table (have %s); every row is kept",
                        self.url_column, table.column_names)
            urls = [None] * len(table)
        v = map_rule_values(ctx, urls, self.values, desc=self.name)
        passed = {"domain": ~(v["domain"] > 0), "subdomain": ~(v["subdomain"] > 0), "url": ~(v["url"] > 0),
                  "hard_words": ~(v["hard_words"] > 0), "soft_words": ~(v["soft_words"] >= self.soft_word_threshold),
                  "subwords": ~(v["subwords"] > 0)}
        return rule_selection(self.name, self.RULES, v, passed)
