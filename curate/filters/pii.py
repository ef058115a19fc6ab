"""PII replacement as FineWeb's last step (datatrove ``PIIFormatter``): e-mails and public IPs.

Never drops a page; rewrites ``text`` (``Selection.rewrite["text"]``) and records how many
replacements of each kind it made (extras ``pii__emails``, ``pii__ips``, ...).

* e-mail addresses (``name@host.tld``, dot-atom local part with RFC 5322's allowed symbols, or
  an ``[IPv4]`` host) are replaced by ``email@example.com`` and
  ``firstname.lastname@example.org`` in turn (example.com/.org are reserved for examples);
* IPv4 addresses (four 0-255 octets; not anchored to word boundaries, as datatrove) that Python's
  ``ipaddress`` calls global are replaced by one of six fixed addresses in turn; private,
  loopback, link-local, documentation and reserved addresses are kept, and so are strings that
  ``ipaddress`` rejects (leading zeros such as ``01.2.3.4``);
* off by default: ``ipv6`` (global IPv6 addresses, replaced by documentation addresses) and
  ``credit_card`` (13-19 digits, optionally grouped by spaces or dashes, passing the Luhn check;
  replaced by the Visa test number ``4111 1111 1111 1111``).

Deterministic: the turn of each kind restarts at its first replacement for every page, so a
page's output does not depend on which pages came before it. (datatrove keeps one turn counter
per worker across all its pages, so the same page can get a different replacement depending on
its shard position; the replaced spans and counts are the same.)
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import pyarrow as pa

from curate.core.registry import register
from curate.core.stage import Selection, Selector, StageContext
from curate.filters.web_rules import attach_rewrite, check_bool, column_texts

EMAIL_REPLACEMENTS = ("email@example.com", "firstname.lastname@example.org")
#: datatrove's replacement IPs (random addresses that did not answer pings when its list was made)
IP_REPLACEMENTS = ("22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11",
                   "18.104.22.168")
IPV6_REPLACEMENTS = ("2001:db8::1", "2001:db8::2")
CARD_REPLACEMENTS = ("4111 1111 1111 1111",)
EXTRA_KINDS = ("ipv6", "credit_card")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
EMAIL = re.compile(
    rf"\b{_ATEXT}+(?:\.{_ATEXT}+)*@"                       # local part: dot-separated atoms
    rf"(?:(?:{_LABEL}\.)+{_LABEL}"                          # host.domain.tld
    rf"|\[(?:{_OCTET}\.){{3}}(?:{_OCTET}|[A-Za-z0-9-]*[A-Za-z0-9]:)])"  # or an address literal
)
IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")
IPV6 = re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])")
CARD = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,18}(?![0-9])")


def is_public_ip(candidate: str) -> bool:
    """True when ``candidate`` parses as an IP address and ``ipaddress`` calls it global."""
    try:
        return ipaddress.ip_address(candidate).is_global
    except ValueError:
        return False


def luhn_valid(candidate: str) -> bool:
    """True when the digits of ``candidate`` pass the Luhn checksum (payment card numbers)."""
    digits = [int(c) for c in candidate if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def replace_cycling(pattern: re.Pattern, text: str, replacements: Sequence[str],
                    valid: Callable[[str], bool] | None = None) -> tuple[str, int]:
    """Replace every valid match of ``pattern`` by ``replacements`` in turn, from the first.

    Args:
        pattern: compiled regular expression.
        text: the text.
        replacements: strings used one after the other, wrapping around.
        valid: predicate on a match's text; an invalid match is left as it is and does not use
            a turn (default None: every match is valid).

    Returns:
        (new text, number of replacements).
    """
    turn = 0

    def sub(m: re.Match) -> str:
        nonlocal turn
        if valid is not None and not valid(m.group(0)):
            return m.group(0)
        out = replacements[turn % len(replacements)]
        turn += 1
        return out

    new = pattern.sub(sub, text)
    return new, turn


def _check_strings(pname: str, value) -> None:
    if isinstance(value, str) or not value or not all(isinstance(x, str) and x for x in value):
        raise ValueError(f"{pname} must be a non-empty list of non-empty strings, got {value!r}")


@register
class PII(Selector):
    """Replace e-mail addresses and public IP addresses in the text (FineWeb's PII step).

    Args:
        remove_emails: replace e-mail addresses (default True).
        remove_ips: replace IPv4 addresses (default True).
        only_remove_public_ips: replace only global addresses, keeping private/reserved ones
            (default True).
        email_replacement: e-mail replacements used in turn (default
            ``["email@example.com", "firstname.lastname@example.org"]``).
        ip_replacement: IPv4 replacements used in turn (default datatrove's six, :data:`IP_REPLACEMENTS`).
        extra_kinds: further kinds to replace, from ``["ipv6", "credit_card"]`` (default none).
        column: text column to rewrite (default ``"text"``).
    """

    name = "pii"
    version = "1"
    reasons: ClassVar[dict[str, str]] = {}  # never drops: it rewrites the text of every document it keeps

    def __init__(self, *, remove_emails: bool = True, remove_ips: bool = True, only_remove_public_ips: bool = True,
                 email_replacement: Sequence[str] = EMAIL_REPLACEMENTS, ip_replacement: Sequence[str] = IP_REPLACEMENTS,
                 extra_kinds: Sequence[str] = (), column: str = "text"):
        check_bool("remove_emails", remove_emails)
        check_bool("remove_ips", remove_ips)
        check_bool("only_remove_public_ips", only_remove_public_ips)
        _check_strings("email_replacement", email_replacement)
        _check_strings("ip_replacement", ip_replacement)
        if isinstance(extra_kinds, str) or any(k not in EXTRA_KINDS for k in extra_kinds):
            raise ValueError(f"extra_kinds must be a list from {list(EXTRA_KINDS)}, got {extra_kinds!r}")
        self.remove_emails, self.remove_ips, self.only_remove_public_ips = remove_emails, remove_ips, \
            only_remove_public_ips
        self.email_replacement, self.ip_replacement = email_replacement, ip_replacement
        self.extra_kinds, self.column = extra_kinds, column

    def required_columns(self) -> list[str]:
        return [self.column]

    def kinds(self) -> list[str]:
        """The kinds this stage replaces, in the order it replaces them."""
        return ([k for k, on in (("emails", self.remove_emails), ("ips", self.remove_ips)) if on]
                + [{"ipv6": "ipv6", "credit_card": "credit_cards"}[k] for k in EXTRA_KINDS if k in self.extra_kinds])

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """Replace this stage's kinds in one text.

        Returns:
            (new text, {kind: replacements}) with kinds as in :meth:`kinds`.
        """
        counts: dict[str, int] = {}
        if self.remove_emails:
            text, counts["emails"] = replace_cycling(EMAIL, text, tuple(self.email_replacement))
        if self.remove_ips:
            valid = is_public_ip if self.only_remove_public_ips else _is_ip
            text, counts["ips"] = replace_cycling(IPV4, text, tuple(self.ip_replacement), valid)
        if "ipv6" in self.extra_kinds:
            valid = is_public_ip if self.only_remove_public_ips else _is_ip
            text, counts["ipv6"] = replace_cycling(IPV6, text, IPV6_REPLACEMENTS, valid)
        if "credit_card" in self.extra_kinds:
            text, counts["credit_cards"] = replace_cycling(CARD, text, CARD_REPLACEMENTS, luhn_valid)
        return text, counts

    def select(self, table: pa.Table, ctx: StageContext) -> Selection:
        texts = column_texts(table, self.column)
        n = len(texts)
        new_text = np.empty(n, dtype=object)
        counts = {k: np.zeros(n, dtype=np.int64) for k in self.kinds()}
        for i, t in enumerate(texts):
            new_text[i], c = self.redact(t)
            for k, v in c.items():
                counts[k][i] = v
        sel = Selection(keep=np.ones(n, dtype=bool), reason=np.full(n, None, dtype=object),
                        extras={f"{self.name}__{k}": v for k, v in counts.items()})
        return attach_rewrite(sel, self.column, new_text)


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
        return True
    except ValueError:
        return False
