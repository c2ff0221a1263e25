"""Telephone numbers (``PHONE``).

Catches, without any context word:

* international numbers: ``+`` or ``00`` and a valid country calling code, then 8–15 digits
  in any grouping (``+44 20 7946 0958``, ``+14155552671``, ``+44 (0)20 7946 0958``,
  ``0044 20 7946 0958``; ``00`` needs at least one separator);
* North American and other 3-3-4 groupings: ``(415) 555-2671``, ``415-555-2671``,
  ``415.555.2671``, ``1-415-555-2671``, ``222 123 4495``;
* national numbers with a trunk ``0``, 9–12 digits in 2+ groups of 2+ digits: ``020 7946 0958``,
  ``07700 900123``, ``030 12345678``, ``0151 23456789``, ``030/1234567``, ``01 23 45 67 89``,
  ``01.23.45.67.89``, ``098765 43210``, ``(02) 1234 5678``, ``03-1234-5678``, ``08-123 456 78``;
* a few national styles without a trunk prefix: Brazil ``(11) 96123-1560``, Russia
  ``8 (912) 345-67-89``, China ``131 2345 6789``, Mexico ``55 1234 5678``, Spain, Poland and
  Portugal ``612 34 56 78``, ``512 345 678``, ``12 345 67 89``;
* anything phone-shaped with 7–15 digits (also bare ``4155552671``) right after a context
  word and at most a few filler words ("phone number:", "call me at"): tel, phone, call,
  mobile, cell, fax, ph., SMS, WhatsApp, Telefon, Handy, téléphone, teléfono, celular,
  "text me", ring...;
* any of the shapes above filling a whole comma-separated field (``42,Ana,+31671707904,x``).

Never fires on dates (``2024-01-15``, ``15.01.2024``), times, versions, IP addresses,
ZIP+4 codes (``02110-1301``), ISBNs, UUIDs, hashes, prices, or number literals in code: a
number must stand alone (no letter, ``.``, ``-``, ``/`` or ``+`` glued to either end, and no
further digit group right after it).  Bit strings (``+10011010010``), runs of one digit,
counts written with thousands spaces (``400 000 000``), groups of four after ``00``
(``0031 2044 0034``, code points) and dotted ``00`` runs (``001.000.008.016``) are refused.

Knowingly misses: numbers without a ``+``, trunk ``0`` or one of the groupings above and
without a context word (``6123 4567`` in Singapore, ``32 12 34 56`` in Denmark,
``212 345 678`` for a Portuguese landline, ``4155552671`` alone), numbers with extensions
beyond the main number, numbers written with letters (``1-800-FLOWERS``), and national
numbers followed by another digit group (``020 7946 0958 2023``) or glued to one
(``Room 12 020 7946 0958``).  Over-redacts the other way: any 3-3-4 grouping
(``571 612 1056``) is taken for a phone number.
"""

from __future__ import annotations

import re

from agent.redact.detectors._common import caseless, folded, scan
from agent.redact.spans import Span

NAME = "phone"

_CALLING_CODE_TABLE = """
    1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58
    60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98
    211 212 213 216 218 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236
    237 238 239 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258
    260 261 262 263 264 265 266 267 268 269 290 291 297 298 299 350 351 352 353 354 355 356
    357 358 359 370 371 372 373 374 375 376 377 378 379 380 381 382 383 385 386 387 389 420
    421 423 500 501 502 503 504 505 506 507 508 509 590 591 592 593 594 595 596 597 598 599
    670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 688 689 690 691 692 800
    808 850 852 853 855 856 870 878 880 881 882 883 886 888 960 961 962 963 964 965 966 967
    968 970 971 972 973 974 975 976 977 979 991 992 993 994 995 996 998
    """
_CALLING_CODES = frozenset(_CALLING_CODE_TABLE.split())

# A number stands alone: nothing word-like or number-like glued before it, and no further
# digit group after it.  The look-behinds sit after the first character (which keeps the
# regex engine's fast first-character scan) and look at the character before it.
_AFTER = r"(?![\w/+-]|[.,:]\d|[ \u00a0]\d|\)\d)"
_SEP = r"[ \u00a0]"


def _alone(first: str) -> str:
    """Pattern for ``first`` (one character class) not glued to a word or a digit group."""
    return rf"{first}(?<![\w+.,/)-]{first})(?<!\d[ .\-/]{first})"


_INTL = re.compile(
    rf"(?:\+(?<![\w+.,/)-]\+)|00(?<![\w+.,/)-]00)(?<!\d[ .\-/]00){_SEP}?)"
    r"[1-9](?:[\d()]|[ \u00a0.-](?=[\d(]))*"  # one way to match a run: no backtracking
)
_NATIONAL = [
    # North American and other 3-3-4 groupings
    re.compile(rf"\((?<![\w)]\()\d{{3}}\){_SEP}?\d{{3}}[ .\-\u00a0]\d{{4}}{_AFTER}"),
    re.compile(rf"{_alone(r'[0-9]')}\d{{2}}([ .\-\u00a0])\d{{3}}\1\d{{4}}{_AFTER}"),
    re.compile(rf"{_alone('1')}([ .\-])\d{{3}}\1\d{{3}}\1\d{{4}}{_AFTER}"),
    re.compile(rf"{_alone('1')} \(\d{{3}}\) ?\d{{3}}-\d{{4}}{_AFTER}"),
    # trunk 0
    re.compile(rf"{_alone('0')}[1-9]\d{{0,4}}(?:[ \-/\u00a0]\d{{2,8}}){{1,4}}{_AFTER}"),
    re.compile(rf"\((?<![\w)]\()0\d{{1,4}}\){_SEP}?\d{{2,8}}(?:[ \-\u00a0]\d{{2,8}}){{0,3}}{_AFTER}"),
    re.compile(rf"{_alone('0')}[1-9](?:\.\d{{2}}){{4}}{_AFTER}"),
    # Brazil, Russia, China, Mexico, Spain, Poland
    re.compile(rf"\((?<![\w)]\()\d{{2}}\){_SEP}?\d{{4,5}}-\d{{4}}{_AFTER}"),
    re.compile(rf"{_alone('8')}{_SEP}?\(\d{{3,5}}\){_SEP}?\d{{1,3}}(?:-\d{{2}}){{2}}{_AFTER}"),
    re.compile(rf"{_alone('8')} \d{{3}} \d{{3}}-\d{{2}}-\d{{2}}{_AFTER}"),
    re.compile(rf"{_alone('1')}[3-9]\d([ \-])\d{{4}}\1\d{{4}}{_AFTER}"),
    re.compile(rf"{_alone('[2-9]')}\d \d{{4}} \d{{4}}{_AFTER}"),
    re.compile(rf"{_alone('[6-9]')}\d{{2}}(?: \d{{2}}){{3}}{_AFTER}"),
    re.compile(rf"{_alone('[4-9]')}\d{{2}} \d{{3}} \d{{3}}{_AFTER}"),
    re.compile(rf"{_alone('[1-9]')}\d [1-9]\d{{2}} \d{{2}} \d{{2}}{_AFTER}"),
]

_CONTEXT = caseless(
    r"(?<![\w-])(?:tel(?:ephone|efon|éfono|efone|efono)?|t[ée]l[ée]phone|t[ée]l|phone|ph(?=[.:])|"
    r"call(?:ing)?|mobile?|mob|cell(?:phone)?|fax|sms|whats[ -]?app|hotline|"
    r"helpline|dial|handy|rufnummer|telefonnummer|mobil|celular|m[óo]vil|te?xt(?= (?:me|us)\b)|ring|"
    r"tel[ée]fono|cellulare|telefono|tlf|puhelin|telefoon)(?![^\W\d_])"
)
#: After a context word: punctuation and a few short words ("phone number:", "call me at"), then the number.
_CONTEXT_VALUE = re.compile(
    r"(?i)[^\w\n(+]{0,4}(?:(?:numbers?|no|nr|num|nummer|n°|is|at|me|us|on|to|via|or|office|home|work|"
    r"mobile|cell|direct|line|de|du)[^\w\n(+]{1,4}){0,3}"
    r"((?:\+|\()?\d(?:[ .\-/\u00a0]?\(?\)?[ \u00a0]?\d){6,16})(?![\w+-]|[.,:/]\d)"
)
_DATE_LIKE = re.compile(r"(?:\d{4}[./\-]\d{1,2}[./\-]\d{1,2}|\d{1,2}[./\-]\d{1,2}[./\-]\d{2,4})(?!\d)")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_GROUP = re.compile(r"\(?\d+\)?")


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def _binary(digits: str) -> bool:
    """Only 0 and 1: bit strings (``+10011010010``), never a real number."""
    return not digits.strip("01")


def _trunk_pairs_ok(raw: str) -> bool:
    """``0X XX …`` starting with two pairs must be pairs all through (``01 02 03 000004`` is not)."""
    groups = re.findall(r"\d+", raw)
    if len(groups) >= 3 and len(groups[0]) == 2 and len(groups[1]) == 2:
        return all(len(g) == 2 for g in groups)
    return True


def _calling_code_ok(digits: str) -> bool:
    return any(digits[:n] in _CALLING_CODES for n in (1, 2, 3))


def _intl(text: str, spans: list[Span]) -> None:
    for m in _INTL.finditer(text):
        following = text[m.end() : m.end() + 1]
        if following.isalnum() or following in ("_", "+"):
            continue  # glued to a word: +1234abc
        raw = m.group()
        while raw.endswith(")") and raw.count(")") > raw.count("("):
            raw = raw[:-1]  # (+44 20 7946 0958): the bracket around the number
        plus = raw.startswith("+")
        body = raw[1:] if plus else raw[2:].lstrip(" \u00a0")
        if raw.count("(") != raw.count(")"):
            continue
        # a trailing year or count glued by a space: keep the groups that fit in 15 digits
        groups: list[re.Match[str]] = []
        count = 0
        for group in _GROUP.finditer(body):
            count += sum(ch.isdigit() for ch in group.group())
            if groups and count > 15:
                break
            groups.append(group)
        body_end = groups[-1].end()
        digits = _digits(body[:body_end])
        if not 8 <= len(digits) <= 15 or not _calling_code_ok(digits):
            continue
        if not plus and (
            len(groups) < 2 or "." in body[:body_end] or all(len(g) == 4 for g in re.findall(r"\d+", raw))
        ):
            continue  # zero-padded numbers, addresses, hex code points: 0031 2044 0034
        if "." in body[:body_end] and len(groups) < 3:
            continue  # +1.5: a number, not a phone
        if _binary(digits) or _ISO_DATE.search(raw):
            continue
        end = m.start() + (len(raw) - len(body)) + body_end
        spans.append(Span(m.start(), end, "PHONE"))


def _national(text: str, spans: list[Span]) -> None:
    for pattern in _NATIONAL:
        for m in pattern.finditer(text):
            raw = m.group()
            digits = _digits(raw)
            if not 9 <= len(digits) <= 12:
                continue
            if len(set(digits)) == 1 or _binary(digits) or not _trunk_pairs_ok(raw):
                continue
            groups = re.findall(r"\d+", raw)
            if len(digits) == 9 and [len(g) for g in groups] == [3, 3, 3] and raw.startswith("0"):
                continue  # 041 117 132: octal or a count, not a national number
            if "000" in groups[1:] or (len(groups) == 2 and re.fullmatch(r"(?:19|20)\d\d", groups[1])):
                continue  # 400 000 000 is a count, "046110 2008" a page and a year
            if len(digits) == 9 and re.fullmatch(r"0\d{4}-\d{4}", raw):
                continue  # ZIP+4 (02110-1301)
            spans.append(Span(m.start(), m.end(), "PHONE"))


def _with_context(text: str, spans: list[Span]) -> None:
    for ctx in scan(_CONTEXT, text, folded(text)):
        m = _CONTEXT_VALUE.match(text, ctx.end())
        if m is None:
            continue
        raw = m.group(1)
        digits = _digits(raw)
        if not 7 <= len(digits) <= 15 or _DATE_LIKE.match(raw) or len(set(digits)) == 1 or _binary(digits):
            continue
        if raw.count("(") != raw.count(")"):
            continue
        spans.append(Span(m.start(1), m.end(1), "PHONE"))


def _csv_fields(text: str, spans: list[Span]) -> None:
    """Numbers that are a whole comma-separated field (``42,Name,+918804746736,active``).

    A comma glued to a number means a list in code, so the patterns refuse it; a number
    that fills a field from one comma to the next (or the line's end) is a CSV cell.
    """
    found: list[Span] = []
    variant = text.replace(",", " ")
    if "+" in text or "00" in text:
        _intl(variant, found)
    _national(variant, found)
    for span in found:
        before_ok = span.start > 0 and text[span.start - 1] == ","
        after_ok = span.end == len(text) or text[span.end] in ",;\r\n"
        if before_ok and after_ok:
            spans.append(span)


def find(text: str) -> list[Span]:
    """Every telephone number in ``text`` (overlapping candidates are merged by the caller)."""
    spans: list[Span] = []
    if "+" in text or "00" in text:
        _intl(text, spans)
    _national(text, spans)
    _with_context(text, spans)
    if "," in text:
        _csv_fields(text, spans)
    return spans
