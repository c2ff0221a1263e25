"""International bank account numbers (``IBAN``).

Catches a country code, two check digits and the BBAN, with the exact length the SWIFT IBAN
registry gives for that country (:data:`LENGTHS`, plus the national IBANs of countries not
in the registry) and a valid ISO 7064 mod-97 check.  Written compact
(``DE89370400440532013000``), in the print format's groups of four separated by spaces
(``GB82 WEST 1234 5698 7654 32``) or dashes, upper case or all lower case, and glued to
punctuation (``IBAN:DE89...``).

Knowingly misses: IBANs with a wrong check, other groupings (``DE 89 3704...``), mixed-case
ones (``De89...``), countries absent from the tables, and BBANs alone (national account
numbers without the country code).
"""

from __future__ import annotations

import re

from agent.redact.spans import Span

NAME = "iban"

#: IBAN length per country: every country in the SWIFT IBAN registry (as of 2025)...
LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
#: ... and national IBANs in use outside the registry (mostly the West and Central African
#: banking zones, Algeria, Iran, Morocco, Madagascar, Mozambique, Angola, Cape Verde).
LENGTHS.update({
    "AO": 25, "BF": 28, "BJ": 28, "CF": 27, "CG": 27, "CI": 28, "CM": 27, "CV": 25, "DZ": 26,
    "GA": 27, "GQ": 27, "GW": 25, "IR": 26, "KM": 27, "MA": 28, "MG": 27, "ML": 28, "MZ": 25,
    "NE": 28, "SN": 28, "TD": 27, "TG": 28,
})  # fmt: skip

_HEAD = re.compile(r"[A-Za-z](?<![A-Za-z0-9][A-Za-z])[A-Za-z]\d\d")
_SEPARATORS = " \u00a0-"


def mod97_ok(iban: str) -> bool:
    """The ISO 7064 mod-97-10 check of a compact, upper-case IBAN."""
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def _ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _take(text: str, pos: int, need: int) -> tuple[str, int] | None:
    """``need`` BBAN characters from ``pos``: compact, or in groups of 4 after the head."""
    n = len(text)
    out: list[str] = []
    grouped = pos < n and text[pos] in _SEPARATORS
    sep = text[pos] if grouped else ""
    i = pos
    while len(out) < need:
        if grouped and len(out) % 4 == 0:
            if i >= n or text[i] != sep:
                return None
            i += 1
        if i >= n or not _ascii_alnum(text[i]):
            return None
        out.append(text[i])
        i += 1
    if i < n and _ascii_alnum(text[i]):
        return None  # a longer token: not this IBAN
    return "".join(out), i


def find(text: str) -> list[Span]:
    """Every IBAN in ``text``."""
    spans: list[Span] = []
    pos = 0
    while True:
        m = _HEAD.search(text, pos)
        if m is None:
            return spans
        pos = m.start() + 1
        head = m.group()
        country = head[:2]
        if not (country.isupper() or country.islower()):
            continue
        length = LENGTHS.get(country.upper())
        if length is None:
            continue
        got = _take(text, m.end(), length - 4)
        if got is None:
            continue
        bban, end = got
        if country.isupper() and not (bban.isupper() or bban.isdigit()):
            continue
        if country.islower() and not (bban.islower() or bban.isdigit()):
            continue
        if mod97_ok((head + bban).upper()):
            spans.append(Span(m.start(), end, "IBAN"))
            pos = end
