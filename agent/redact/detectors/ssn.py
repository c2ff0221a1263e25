"""US Social Security numbers (``US_SSN``).

Catches ``AAA-GG-SSSS`` and ``AAA GG SSSS`` standing alone, and a bare ``AAAGGSSSS`` (or
one with dots) only after a context word (SSN, SSN#, social security, soc. sec., SS#, SSA)
close before it on the same line.  Numbers that were never issued are refused: area 000,
666 or 900–999 (the 9xx range is ITINs and test numbers), group 00, serial 0000.

Knowingly misses: bare nine-digit numbers without a context word (they are ZIP+4 codes,
order numbers, phone numbers...), and numbers with other separators or groupings.
"""

from __future__ import annotations

import re

from agent.redact.detectors._common import context_before
from agent.redact.spans import Span

NAME = "ssn"

_GROUPED = re.compile(r"\d(?<![\w.+/-]\d)\d\d([- ])\d\d\1\d{4}(?![\w/+-]|[.,]\d|[ ]\d)")
_BARE = re.compile(r"\d(?<![\w.+/-]\d)\d\d([-. ]?)\d\d\1\d{4}(?![\w/+-]|[.,]\d)")
_CONTEXT = re.compile(
    r"(?i)(?:\bssn|\bss\s?#|\bsocial[ -]?security|\bsoc\.?\s?sec|\bssa\b|\bsozialversicherung)"
    r"[^\d\n]{0,25}\Z"
)


def valid(area: str, group: str, serial: str) -> bool:
    """True when the three parts could belong to an issued SSN."""
    a = int(area)
    return a not in (0, 666) and a < 900 and group != "00" and serial != "0000"


def find(text: str) -> list[Span]:
    """Every US Social Security number in ``text``."""
    spans: list[Span] = []
    for m in _GROUPED.finditer(text):
        raw = m.group()
        if valid(raw[0:3], raw[4:6], raw[7:11]):
            spans.append(Span(m.start(), m.end(), "US_SSN"))
    low = text.lower()
    if "ss" in low or "soc" in low or "sozial" in low:
        for m in _BARE.finditer(text):
            raw = m.group()
            digits = "".join(ch for ch in raw if ch.isdigit())
            if valid(digits[0:3], digits[3:5], digits[5:9]) and context_before(text, m.start(), _CONTEXT):
                spans.append(Span(m.start(), m.end(), "US_SSN"))
    return spans
