"""Helpers shared by the detector families: checksums, context words, value shapes.

Nothing here looks at more than the text it is given, and nothing is logged.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

from agent.redact.spans import Span

#: What every family module exposes: ``find(text)`` → spans (unsorted, may overlap).
Finder = Callable[[str], list[Span]]


def folded(text: str) -> str | None:
    """``text.lower()`` when it keeps every character at its index (almost always), else None.

    Scanning the folded text with a case-sensitive pattern is about ten times faster than
    ``re.IGNORECASE``; :func:`scan` picks whichever applies.
    """
    low = text.lower()
    return low if len(low) == len(text) else None


def caseless(pattern: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """``pattern`` (written in lower case) compiled for folded text and for ``re.IGNORECASE``."""
    return re.compile(pattern), re.compile(pattern, re.IGNORECASE)


def scan(
    patterns: tuple[re.Pattern[str], re.Pattern[str]], text: str, low: str | None
) -> Iterator[re.Match[str]]:
    """Matches of a :func:`caseless` pair; positions index ``text`` either way (read values from ``text``)."""
    if low is not None:
        return patterns[0].finditer(low)
    return patterns[1].finditer(text)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check of a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def context_before(text: str, start: int, words: re.Pattern[str], window: int = 40) -> bool:
    """True when ``words`` matches in the ``window`` characters before ``start`` on the same line.

    ``words`` should end with ``$``-anchored filler (e.g. ``[^\\d\\n]{0,20}$``) so that only a
    word close to the value counts.
    """
    lo = max(0, start - window)
    head = text[lo:start]
    cut = head.rfind("\n")
    if cut >= 0:
        head = head[cut + 1 :]
    return words.search(head) is not None


def char_classes(value: str) -> int:
    """How many of lower, upper, digit and other characters ``value`` has (0–4)."""
    lower = upper = digit = other = 0
    for ch in value:
        if ch.islower():
            lower = 1
        elif ch.isupper():
            upper = 1
        elif ch.isdigit():
            digit = 1
        else:
            other = 1
    return lower + upper + digit + other


def _kind(ch: str) -> int:
    if ch.islower():
        return 0
    if ch.isupper():
        return 1
    if ch.isdigit():
        return 2
    return 3


def class_changes(value: str) -> float:
    """The share of neighbouring characters of different kinds (lower, upper, digit, other).

    Random base64 scores about 0.65, words and identifiers much less
    (``AmazonSecurityLakeS3ReplicationRole``: 0.3).
    """
    if len(value) < 2:
        return 0.0
    kinds = [_kind(ch) for ch in value]
    changes = sum(1 for a, b in itertools.pairwise(kinds) if a != b)
    return changes / (len(value) - 1)


def looks_random(value: str, min_len: int = 8) -> bool:
    """A token-shaped value: long enough, no spaces, letters mixed with digits (or 16+ characters
    of three kinds), and not made of words (:func:`class_changes` at least 0.05, or 0.35 without digits).

    Knowingly misses secrets made only of lower-case letters (``correcthorse``).
    """
    if len(value) < min_len or any(ch.isspace() for ch in value):
        return False
    has_digit = any(ch.isdigit() for ch in value)
    has_alpha = any(ch.isalpha() for ch in value)
    if has_digit and has_alpha:
        return class_changes(value) >= 0.05
    return len(value) >= 16 and char_classes(value) >= 3 and class_changes(value) >= 0.35
