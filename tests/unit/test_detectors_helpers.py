"""Synthetic values and helpers for the text detector tests (no tests here); never real personal data."""

from __future__ import annotations

from agent.redact import detectors


def found(text: str) -> list[tuple[str, str]]:
    """``(entity, covered text)`` for every span :func:`detectors.detect` reports."""
    return [(s.entity, text[s.start : s.end]) for s in detectors.detect(text)]


def entities(text: str) -> set[str]:
    return {s.entity for s in detectors.detect(text)}


def luhn_digit(body: str) -> str:
    """The check digit that makes ``body + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(prefix: str, length: int, *, valid: bool = True) -> str:
    """A card-shaped number: ``prefix``, filler digits, and a right (or wrong) Luhn digit."""
    body = prefix + "".join(str((i * 7 + 3) % 10) for i in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + 1) % 10)
    return body + check


def iban(country: str, bban: str) -> str:
    """``country`` + the right check digits + ``bban`` (ISO 7064 mod 97-10)."""
    numeric = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def grouped(value: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(value[i : i + size] for i in range(0, len(value), size))
