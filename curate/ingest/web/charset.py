"""Bytes of a web page -> text: which charset, and what to do when the bytes do not fit it.

The rule is what a browser does, except that where a browser would show a page full of
replacement characters the page is quarantined instead (``invalid_encoding``):

1. The declared charset, first found of: a byte-order mark; the HTTP ``Content-Type`` charset
   (WARC responses); a ``<meta charset>`` / ``<meta http-equiv="Content-Type">`` or an XML
   declaration's ``encoding`` in the first :data:`PRESCAN_BYTES` bytes. Labels are mapped as the
   WHATWG Encoding standard does where it differs from Python: ``iso-8859-1``, ``latin1`` and
   ``ascii`` mean windows-1252 (C1 bytes are curly quotes and dashes on real pages, not control
   characters), and ``utf-16`` declared inside an ASCII-compatible page means UTF-8. An unknown
   label counts as no declaration.
2. The page is decoded strictly with the declared charset, or UTF-8 when nothing is declared.
3. If that fails but the undecodable bytes are few (at most 1 per :data:`STRAY_PER_BYTES`
   bytes, at least 1): a few stray bytes in an otherwise well-encoded page; they become U+FFFD.
4. Else a declared non-UTF-8 charset that does not fit is tried as UTF-8 (a common mislabel).
5. Else, when nothing was declared, the charset is guessed (``charset_normalizer``, as
   browsers guess) and the page decoded strictly with the guess.
6. Else the page is ``invalid_encoding``.
"""
from __future__ import annotations

import codecs
import re

PRESCAN_BYTES = 4096  # browsers look at 1024; real pages often put <meta charset> after long scripts
STRAY_PER_BYTES = 1000
_META = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_HTTP = re.compile(r"""charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_WHATWG = {"iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252",
           "l1": "cp1252", "ascii": "cp1252", "us-ascii": "cp1252", "windows-1252": "cp1252",
           "x-user-defined": "cp1252", "iso-8859-9": "cp1254", "latin5": "cp1254", "tis-620": "cp874",
           "iso-8859-11": "cp874", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
           "ks_c_5601-1987": "cp949", "euc-kr": "cp949", "shift_jis": "cp932", "sjis": "cp932",
           "utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8", "unicode": "utf-8"}


class EncodingError(ValueError):
    """The bytes fit neither the declared charset nor UTF-8 nor a guess (``invalid_encoding``)."""


def normalise(label: str | None) -> str | None:
    """A charset label as a Python codec name (WHATWG mapping first), or None if unknown/None."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    name = _WHATWG.get(label, label)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def http_charset(content_type: str | None) -> str | None:
    """The ``charset`` parameter of an HTTP ``Content-Type`` value, as given (None if absent)."""
    m = _HTTP.search(content_type or "")
    return m.group(1) if m else None


def declared(data: bytes, http: str | None = None) -> tuple[str | None, str]:
    """The declared charset of a page and where it was declared.

    Args:
        data (bytes): the page.
        http (str | None): the HTTP ``Content-Type`` charset label, if any; default None.

    Returns:
        (codec name or None, one of ``"bom"``, ``"http"``, ``"meta"``, ``"none"``).
    """
    for bom, name in _BOMS:
        if data.startswith(bom):
            return name, "bom"
    if (name := normalise(http)) is not None:
        return name, "http"
    head = data[:PRESCAN_BYTES]
    for pattern in (_XML_DECL, _META):
        m = pattern.search(head)
        if m and (name := normalise(m.group(1).decode("ascii"))) is not None:
            return name, "meta"
    return None, "none"


def _n_bad(data: bytes, codec: str) -> int:
    """How many bytes of ``data`` do not decode with ``codec`` (each becomes one lone surrogate)."""
    text = data.decode(codec, "surrogateescape")
    return sum(1 for ch in text if "\udc80" <= ch <= "\udcff")


def decode(data: bytes, http: str | None = None) -> tuple[str, str]:
    """Decode a page's bytes by the rule of the module docstring.

    Args:
        data (bytes): the page.
        http (str | None): the HTTP ``Content-Type`` charset label, if any; default None.

    Returns:
        (text, how: the codec used, followed by ``" (replaced N stray bytes)"`` or
        ``" (guessed)"`` where rule 3 or 5 applied).

    Raises:
        EncodingError: rule 6, with the charset tried and how many bytes did not fit.
    """
    codec, where = declared(data, http)
    first = codec or "utf-8"
    try:
        return data.decode(first), first
    except UnicodeDecodeError:
        pass
    bad = _n_bad(data, first)
    if bad <= max(1, len(data) // STRAY_PER_BYTES):
        return data.decode(first, "replace"), f"{first} (replaced {bad} stray bytes)"
    if first != "utf-8":
        try:
            return data.decode("utf-8"), "utf-8 (declared " + first + ")"
        except UnicodeDecodeError:
            pass
    if codec is None:  # only undeclared, non-UTF-8 pages get here: import the guesser lazily
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        guess = normalise(best.encoding) if best is not None else None
        if guess is not None:
            try:
                return data.decode(guess), f"{guess} (guessed)"
            except UnicodeDecodeError:
                pass
    source = f"declared by {where}" if codec else "none declared, and no guess fits"
    raise EncodingError(f"{bad} of {len(data)} bytes are not valid {first} ({source})")
