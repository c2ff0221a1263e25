"""Payment card numbers (``CREDIT_CARD``).

Catches 12–19 digit numbers that pass the Luhn check and lie in a current issuer range:

========== ==================================================== ==========
issuer     prefixes                                             lengths
========== ==================================================== ==========
Visa       4                                                    13, 16, 19
Mastercard 51–55, 2221–2720                                     16
Amex       34, 37                                               15
Discover   6011, 644–649, 65, 622126–622925                     16–19
JCB        3528–3589                                            16–19
Diners     300–305, 3095, 36, 38, 39                            14–19
UnionPay   62                                                   16–19
Maestro    50, 56–69                                            12–19
Mir        2200–2204                                            16–19
Troy       9792                                                 16
========== ==================================================== ==========

The digits may be written bare (``4111111111111111``) or grouped with one kind of separator,
a space or a dash: in fours, the last group possibly shorter (``4111 1111 1111 1111``,
``4301 6613 1860 8``), or 4-6-5 / 4-6-4 (``3782-822463-10005``).  They may be glued to
letters (``visa4111111111111111``).  Inside a longer run of digit groups (a card
followed by its expiry or CVC) the first card-shaped window of whole groups is taken.

Refused because they are numbers in code or identifiers, not cards: digits after a
decimal point or before ``.0`` (``0.5772156649015328``), inside a hex digest or commit hash,
joined to a word or path (``fuzzer-5667125715927040``, ``/issues/5667125715927040``), in
arithmetic (``* q``, ``/ 10**15``), in a list of numbers (``[1, …, 2]``, ``{…: 1}``, with a
space after the comma: CSV rows are kept), after ``seed``/``rng``, repeating patterns
(``636363636363636``), and windows inside a longer row of same-width groups (tables).

Knowingly misses: numbers with a bad Luhn digit or outside the ranges above (UATP, private
label and test cards of other schemes), numbers split by other separators (``4111.1111...``)
or in other groupings, card numbers in a URL path, and the cases above when a real card
happens to look like them.
"""

from __future__ import annotations

import re

from agent.redact.detectors._common import luhn_ok
from agent.redact.spans import Span

NAME = "cards"

# A run of digits with single space/dash separators, not the fraction of a decimal number.
_RUN = re.compile(r"\d(?<![\d.]\d)(?:[ \-]?\d){11,}")
_PIECE = re.compile(r"\d+")
#: How card numbers are grouped: fours (the last group shorter), or Amex/Diners 4-6-5 and 4-6-4.
_GROUPING = re.compile(r"(?:4-)+[1-4]|4-6-[45]")
_WORD_BEFORE = re.compile(r"[A-Za-z0-9]*\Z")
_WORD_AFTER = re.compile(r"[A-Za-z0-9]*")
_HEX_WORD = re.compile(r"[0-9a-fA-F]+")
_JOINED = re.compile(r"(?:[A-Za-z0-9][-_]|/)\Z")
_AFTER_CODE = re.compile(r"\.\d|/\d|[ \t]*(?:\*|/[ \t]*\d|\^)|[eE][-+]?\d")
_BEFORE_CODE = re.compile(r"(?:[*/^][ \t]*|\d/)\Z")
_LIST_BEFORE = re.compile(r"\d[lL]?[ \t]*[,:][ \t]+\Z")  # code puts a space after the comma; CSV does not
_LIST_AFTER = re.compile(r"[lL]?[ \t]*[,:][ \t]+[-+]?\d")
_OPEN = re.compile(r"[\[({][ \t]*\Z")
_CLOSE = re.compile(r"[lL]?[ \t]*[\])}]")
_SEED = re.compile(r"(?i)(?:seed|rng|random_state|random)\w*\W{1,8}\Z")


def issuer_ok(digits: str) -> bool:
    """True when ``digits`` has a length and prefix some current card issuer uses."""
    n = len(digits)
    p2 = int(digits[:2])
    p3 = int(digits[:3])
    p4 = int(digits[:4])
    p6 = int(digits[:6]) if n >= 6 else 0
    checks = (
        digits[0] == "4" and n in (13, 16, 19),  # Visa
        (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16,  # Mastercard
        p2 in (34, 37) and n == 15,  # Amex
        (p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925) and 16 <= n <= 19,
        3528 <= p4 <= 3589 and 16 <= n <= 19,  # JCB
        (300 <= p3 <= 305 or p4 == 3095 or p2 in (36, 38, 39)) and 14 <= n <= 19,  # Diners
        p2 == 62 and 16 <= n <= 19,  # UnionPay
        (p2 == 50 or 56 <= p2 <= 69) and 12 <= n <= 19,  # Maestro
        2200 <= p4 <= 2204 and 16 <= n <= 19,  # Mir
        p4 == 9792 and n == 16,  # Troy
    )
    return any(checks)


def is_card(digits: str) -> bool:
    """A card number: 12–19 digits, a current issuer range, and a valid Luhn check digit."""
    return 12 <= len(digits) <= 19 and issuer_ok(digits) and luhn_ok(digits)


def _in_longer_sequence(run: str, pieces: list[tuple[int, int]], i: int, j: int) -> bool:
    """Groups ``i..j`` sit inside a longer row of same-width groups (a table of numbers)."""
    width = pieces[i][1] - pieces[i][0]
    before = i > 0 and pieces[i - 1][1] - pieces[i - 1][0] >= 3
    after = j < len(pieces) and pieces[j][1] - pieces[j][0] == width == pieces[j - 1][1] - pieces[j - 1][0]
    return before or after


def _cards_in_run(offset: int, run: str) -> list[Span]:
    """Card windows in a run of digit groups: whole groups, one kind of separator, left to right."""
    pieces = [(m.start(), m.end()) for m in _PIECE.finditer(run)]
    spans: list[Span] = []
    i = 0
    while i < len(pieces):
        for j in range(min(len(pieces), i + 7), i, -1):  # 7 groups of 3+ digits > 19 digits
            window = pieces[i:j]
            if j - i > 1 and (
                not _GROUPING.fullmatch("-".join(str(e - s) for s, e in window))
                or len({run[e] for _, e in window[:-1]}) > 1
            ):
                continue
            digits = "".join(run[s:e] for s, e in window)
            if len(digits) < 12:
                break
            if j - i > 1 and _in_longer_sequence(run, pieces, i, j):
                continue
            if len(digits) <= 19 and is_card(digits):
                spans.append(Span(offset + window[0][0], offset + window[-1][1], "CREDIT_CARD"))
                i = j - 1
                break
        i += 1
    return spans


def _periodic(digits: str) -> bool:
    """``636363636363636``: a repeated pattern of 1–3 digits (``4111111111111111`` is not)."""
    return any(digits[p:] == digits[:-p] for p in (1, 2, 3))


def _in_word(text: str, start: int, end: int) -> bool:
    """Digits inside a hex digest or commit hash, or joined to a word or path (``fuzzer-5667…``)."""
    if text[start - 1 : start].isalnum() and text[end : end + 1].isalnum():
        return True  # b617318655057264e28b
    head = _WORD_BEFORE.search(text, max(0, start - 64), start)
    tail = _WORD_AFTER.match(text, end)
    word = (head.group() if head else "") + text[start:end] + (tail.group() if tail else "")
    if len(word) >= 20 and len(word) > end - start and _HEX_WORD.fullmatch(word):
        return True
    return _JOINED.search(text, max(0, start - 2), start) is not None


def _in_code(text: str, start: int, end: int) -> bool:
    """Digits in a decimal, a fraction, arithmetic, a list of numbers or a random seed."""
    if _AFTER_CODE.match(text, end) or _BEFORE_CODE.search(text, max(0, start - 3), start):
        return True
    lo = max(0, start - 24)
    listed_before = _LIST_BEFORE.search(text, lo, start) is not None
    listed_after = _LIST_AFTER.match(text, end) is not None
    return (
        (listed_before and listed_after)
        or (listed_before and _CLOSE.match(text, end) is not None)
        or (listed_after and _OPEN.search(text, lo, start) is not None)
        or _SEED.search(text, max(0, start - 40), start) is not None
    )


def find(text: str) -> list[Span]:
    """Every payment card number in ``text``."""
    spans: list[Span] = []
    for m in _RUN.finditer(text):
        for span in _cards_in_run(m.start(), m.group()):
            digits = "".join(ch for ch in text[span.start : span.end] if ch.isdigit())
            if not (
                _periodic(digits)
                or _in_word(text, span.start, span.end)
                or _in_code(text, span.start, span.end)
            ):
                spans.append(span)
    return spans
