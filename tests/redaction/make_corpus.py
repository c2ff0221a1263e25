"""Regenerate the labelled corpus that measures the text detectors (see README.md here).

    python -m tests.redaction.make_corpus             # rewrite tests/redaction/corpus/
    python -m tests.redaction.make_corpus --explain   # also list the real lines the screen dropped

Everything is deterministic for a given seed. The shell, chat and form negatives and all the
positives depend only on the seed (``test_corpus.py`` regenerates them and compares); the code and
prose negatives are sampled from files installed on the machine that made the corpus (the Python
standard library, C headers, licence texts, Debian changelogs), recorded in ``corpus/sources.txt``.

This file was written from public specifications only (ISO 13616 and the SWIFT IBAN registry,
card issuer ranges, vendors' documented token formats, RFC 7468 PEM, the NANP/Ofcom/ACMA/ARCEP
fictitious number ranges), never from ``agent/redact/detectors``: the corpus is a held-out test.
"""

from __future__ import annotations

import argparse
import base64
import collections
import gzip
import hashlib
import json
import random
import re
import string
import struct
import sys
import sysconfig
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SEED = 20240617
HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
NEGATIVES = CORPUS / "negatives"
POSITIVES = CORPUS / "positives.jsonl"

CATEGORIES = ("code", "prose", "shell", "chat", "form")
#: Line counts the negatives are generated to (the real ones after screening).
NEGATIVE_TARGETS = {"code": 9000, "prose": 5000, "shell": 1400, "chat": 650, "form": 700}
#: Samples per family in positives.jsonl.
POSITIVE_COUNTS = {
    "email": 300,
    "phone": 320,
    "card": 320,
    "iban": 220,
    "ssn": 100,
    "url_credentials": 100,
    "token": 320,
    "private_key": 60,
    "prompt_secret": 150,
}

# Characters that str.splitlines() treats as line breaks: never inside a corpus line.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f]")


# --------------------------------------------------------------------------------------------
# Checksums and alphabets
# --------------------------------------------------------------------------------------------

DIGITS = string.digits
UPPER = string.ascii_uppercase
ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
B64 = string.ascii_letters + string.digits + "+/"
B64URL = string.ascii_letters + string.digits + "-_"
HEX = "0123456789abcdef"


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check that every payment card number passes."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_complete(partial: str) -> str:
    """``partial`` plus the one check digit that makes it Luhn-valid."""
    return next(partial + c for c in DIGITS if luhn_valid(partial + c))


def iban_remainder(iban: str) -> int:
    """ISO 13616 / ISO 7064 mod 97-10 of an IBAN (compact, upper case): 1 when valid."""
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97


def make_iban(country: str, bban: str) -> str:
    check = 98 - iban_remainder(country + "00" + bban)
    return f"{country}{check:02d}{bban}"


def group(text: str, size: int = 4, sep: str = " ") -> str:
    return sep.join(text[i : i + size] for i in range(0, len(text), size))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --------------------------------------------------------------------------------------------
# The screen: what must never be in a negative line
# --------------------------------------------------------------------------------------------
# Each rule names a shape that a detector may reasonably flag as sensitive. Real lines (code,
# prose) that match are dropped (sources are public; the real e-mail addresses and phone numbers
# of authors and maintainers are put neither in the negatives nor the positives). Generated lines
# that match are regenerated. The deliberate near-misses (bad checksums, type hints, version
# strings...) are built not to match.

EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
URL_CREDENTIALS_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:[^\s/@]+@")
PRIVATE_KEY_RE = re.compile(r"PRIVATE KEY")
TOKEN_RE = re.compile(
    r"\b(?:A[SK]IA[A-Z0-9]{16}|AIza[0-9A-Za-z_-]{30,}|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_"
    r"|glpat-|xox[abposre]-|hooks\.slack\.com/services|[rs]k_(?:live|test)_|sk-[A-Za-z0-9_-]{16,}"
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.)"
)
_SENSITIVE_NAME = (
    r"(?:pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|auth[_-]?key|access[_-]?key|credentials?)"
)
#: ``password = "literal"``, ``"token": "literal"``, ``secret => 'literal'``.
SECRET_LITERAL_RE = re.compile(
    rf"""(?i){_SENSITIVE_NAME}\w*['"]?\s*(?:[:=]|=>)\s*[bru]{{0,2}}['"][^'"\s]{{3,}}"""
)
#: ``password: hunter2``, ``the password is x7Tq!`` (a value containing a digit).
SECRET_VALUE_RE = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|pwd|secret|api[ _-]?key|token|pin)s?\b\s*(?:is|was|:|=)\s*"
    r"['\"]?(?![\w.]*\()[^\s'\"]*\d"
)
SECRET_FLAG_RE = re.compile(
    r"(?i)(?:--pass(?:word)?[= ]\S|\bbearer\s+[A-Za-z0-9._~+/-]{8,}|\bmysql\b.*\s-p\S"
    r"|\bcurl\b.*\s-u\s*\S+:\S+|\bsshpass\s+-p|\bpass:\S)"
)
SSN_RE = re.compile(r"\b(\d{3})([- ])(\d{2})\2(\d{4})\b")
SSN_CONTEXT_RE = re.compile(r"(?i)\b(?:ssn|social security)\b\D{0,20}\d{9}\b")
PHONE_RES = (
    # +CC then at least 8 more digits, with the usual separators
    re.compile(r"\+\d{1,3}[ .-]?(?:\(0?\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{2,5}){1,4}"),
    # NANP with separators: (212) 555-0147, 212-555-0147, 212.555.0147
    re.compile(r"(?:\(\d{3}\)\s?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b"),
    # national numbers with a trunk 0 and grouping: 020 7946 0123, 0161 496 0123, 06 12 34 56 78
    re.compile(r"\b0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}\b"),
    re.compile(r"\b0\d(?:[ .]\d{2}){4}\b"),
    re.compile(r"\(0\d{1,4}\)\s?\d{3,4}[ -]?\d{3,4}\b"),
)
PHONE_CONTEXT_RE = re.compile(
    r"(?i)\b(?:tel|telephone|phone|fax|mobile|cell|call|ring|whatsapp|sms)\b\D{0,15}\d[\d ()./-]{5,}\d"
)
_CARD_GROUPED_RE = re.compile(r"(?<!\d)\d{1,7}(?:[ -]\d{1,7})+(?!\d)")
_DIGIT_RUN_RE = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,32}\b")


def _card_shaped(line: str) -> bool:
    for m in _DIGIT_RUN_RE.finditer(line):
        if luhn_valid(m.group()):
            return True
    for m in _CARD_GROUPED_RE.finditer(line):
        groups = re.split(r"[ -]", m.group())
        for i in range(len(groups)):
            digits = ""
            for g in groups[i:]:
                digits += g
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    return True
    return False


def _iban_shaped(line: str) -> bool:
    for m in _IBAN_RE.finditer(line):
        compact = m.group().replace(" ", "")
        n = IBAN_LENGTH.get(compact[:2], len(compact))
        if 15 <= n <= min(34, len(compact)) and iban_remainder(compact[:n]) == 1:
            return True
    return False


def _ssn_shaped(line: str) -> bool:
    for m in SSN_RE.finditer(line):
        area, _, grp, serial = m.groups()
        if area not in ("000", "666") and area[0] != "9" and grp != "00" and serial != "0000":
            return True
    return bool(SSN_CONTEXT_RE.search(line))


def _phone_shaped(line: str) -> bool:
    for rx in PHONE_RES:
        for m in rx.finditer(line):
            if sum(c.isdigit() for c in m.group()) >= 8:
                return True
    return bool(PHONE_CONTEXT_RE.search(line))


#: (rule name, predicate); a line is dropped (or regenerated) when any predicate is true.
SCREEN_RULES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("email", lambda s: bool(EMAIL_RE.search(s))),
    ("url_credentials", lambda s: bool(URL_CREDENTIALS_RE.search(s))),
    ("private_key", lambda s: bool(PRIVATE_KEY_RE.search(s))),
    ("token", lambda s: bool(TOKEN_RE.search(s))),
    ("secret_literal", lambda s: bool(SECRET_LITERAL_RE.search(s))),
    ("secret_value", lambda s: bool(SECRET_VALUE_RE.search(s))),
    ("secret_flag", lambda s: bool(SECRET_FLAG_RE.search(s))),
    ("card", _card_shaped),
    ("iban", _iban_shaped),
    ("ssn", _ssn_shaped),
    ("phone", _phone_shaped),
)


def screen(line: str) -> str | None:
    """The first screen rule ``line`` trips, or None when it is a clean negative."""
    for name, hit in SCREEN_RULES:
        if hit(line):
            return name
    return None


def usable(line: str) -> bool:
    """Not blank, one line for every splitter, no control characters."""
    return bool(line.strip()) and not _LINE_BREAKS.search(line) and not _CONTROL.search(line)


# --------------------------------------------------------------------------------------------
# Real negatives: code and prose
# --------------------------------------------------------------------------------------------


@dataclass
class Sampled:
    lines: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    dropped_lines: list[tuple[str, str, str]] = field(default_factory=list)  # (rule, source, line)

    def take(self, source: str, licence: str, lines: list[tuple[int, str]], budget: int) -> None:
        kept = 0
        first = last = None
        for number, raw in lines:
            if kept >= budget:
                break
            line = raw.rstrip()
            if not usable(line):
                continue
            rule = screen(line)
            if rule:
                self.dropped[rule] += 1
                self.dropped_lines.append((rule, source, line))
                continue
            self.lines.append(line)
            kept += 1
            first = number if first is None else first
            last = number
        if kept:
            self.sources.append(f"{source}:{first}-{last} ({kept} lines) [{licence}]")


def _chunks(rng: random.Random, text: str, size: int) -> list[tuple[int, str]]:
    """``size`` consecutive non-blank lines of ``text`` from a random start, numbered from 1."""
    numbered = [(i + 1, s) for i, s in enumerate(text.split("\n")) if s.strip()]
    if len(numbered) <= size:
        return numbered
    start = rng.randrange(len(numbered) - size)
    return numbered[start : start + size]


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace").replace("\r\n", "\n")


def sample_code(rng: random.Random) -> Sampled:
    """Python standard library modules (PSF-2.0) and C headers (Python's: PSF-2.0; X11: MIT/X11)."""
    out = Sampled()
    stdlib = Path(sysconfig.get_path("stdlib"))
    skip = ("test", "tests", "idle_test", "site-packages", "encodings", "pydoc_data", "__pycache__")
    modules = sorted(
        p
        for p in stdlib.rglob("*.py")
        if not set(p.relative_to(stdlib).parts[:-1]) & set(skip)
        and not p.name.startswith(("_sysconfigdata", "test_"))
        and not p.relative_to(stdlib).parts[0].startswith("config-")
    )
    rng.shuffle(modules)
    python_target = NEGATIVE_TARGETS["code"] * 5 // 6
    for path in modules:
        if len(out.lines) >= python_target:
            break
        text = _read(path)
        out.take(f"stdlib/{path.relative_to(stdlib)}", "PSF-2.0", _chunks(rng, text, 60), 50)

    headers: list[tuple[str, str, Path]] = []
    include = Path(sysconfig.get_path("include"))
    headers += [("python-include", "PSF-2.0", p) for p in sorted(include.glob("*.h"))]
    x11 = Path("/usr/include/X11")
    for p in sorted(x11.glob("*.h")) if x11.is_dir() else []:
        head = _read(p)[:3000]
        if "Permission to use, copy, modify" in head and "GNU" not in head:
            headers.append(("X11", "MIT/X11 notice in the file", p))
    rng.shuffle(headers)
    for label, licence, path in headers:
        if len(out.lines) >= NEGATIVE_TARGETS["code"]:
            break
        base = include if label == "python-include" else x11
        out.take(f"{label}/{path.relative_to(base)}", licence, _chunks(rng, _read(path), 50), 40)
    return out


def sample_prose(rng: random.Random) -> Sampled:
    """Python's language reference (pydoc topics) and IDLE notes, licence texts, changelogs."""
    out = Sampled()
    target = NEGATIVE_TARGETS["prose"]
    stdlib = Path(sysconfig.get_path("stdlib"))

    # 1. The language reference shipped as pydoc_data.topics (PSF-2.0): ~2,600 lines.
    from pydoc_data.topics import topics

    names = sorted(topics)
    rng.shuffle(names)
    for name in names:
        if len(out.lines) >= 2900:
            break
        out.take(f"pydoc_data.topics[{name!r}]", "PSF-2.0", _chunks(rng, topics[name], 90), 80)

    # 2. IDLE's NEWS, README and HISTORY (PSF-2.0): ~500 lines.
    for name in ("NEWS.txt", "NEWS2x.txt", "README.txt", "HISTORY.txt", "TODO.txt"):
        path = stdlib / "idlelib" / name
        if path.exists():
            out.take(f"stdlib/idlelib/{name}", "PSF-2.0", _chunks(rng, _read(path), 120), 100)

    # 3. Licence texts (each permits verbatim copies): ~1,300 lines.
    licences = Path("/usr/share/common-licenses")
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GFDL-1.3", "Artistic", "BSD", "CC0-1.0"):
        path = licences / name
        if path.exists():
            text = _read(path)
            out.take(f"common-licenses/{name}", f"the {name} text itself", _chunks(rng, text, 180), 170)

    # 4. Upstream changelogs and NEWS of permissively licensed Debian packages.
    doc = Path("/usr/share/doc")
    for rel, licence in (
        ("dunst/changelog.gz", "BSD-3-clause (dunst)"),
        ("dunst/NEWS.gz", "BSD-3-clause (dunst)"),
        ("jq/changelog.gz", "Expat (jq)"),
        ("curl/changelog.gz", "curl (MIT-style)"),
        ("libarchive13/NEWS.gz", "BSD-2-clause (libarchive)"),
        ("debconf/changelog.gz", "BSD-2-clause (debconf)"),
        ("file/changelog.gz", "BSD-2-clause (file)"),
    ):
        if len(out.lines) >= target:
            break
        path = doc / rel
        if path.exists():
            budget = min(200, target - len(out.lines))
            out.take(f"/usr/share/doc/{rel}", licence, _chunks(rng, _read(path), budget + 80), budget)
    return out


# --------------------------------------------------------------------------------------------
# Random values shared by the generated negatives and the positives
# --------------------------------------------------------------------------------------------

# fmt: off
FIRST = (
    "Alice", "Bob", "Chen", "Priya", "Mateo", "Amara", "Yuki", "Olga", "Kwame", "Sofia", "Liam", "Fatima",
    "Noah", "Ines", "Hiroshi", "Zanele", "Lars", "Aisha", "Diego", "Mei", "Tomasz", "Leila", "Arjun",
    "Freya", "Omar", "Chloé", "Zoë", "José", "Søren", "Łukasz", "Nadia", "Emeka", "Hana", "Ravi", "Elena",
    "Tariq", "Greta", "Kofi", "Ana", "Dmitri", "Maya", "Joon", "Wanjiru", "Pablo", "Ingrid", "Sipho",
    "Aoife", "Mehmet"
)
# fmt: on
# fmt: off
LAST = (
    "Smith", "García", "Nguyen", "Okafor", "Müller", "Rossi", "Kowalski", "Tanaka", "Patel", "Johansson",
    "Dubois", "O'Brien", "Silva", "Kim", "Haddad", "Novak", "Cohen", "Fernández", "Ivanova", "Mensah",
    "Andersen", "Yılmaz", "Schmidt", "Moreau", "Costa", "Sato", "Singh", "Walker", "Nakamura", "Berg",
    "Van-Dijk", "Papadopoulos", "Murphy", "Ahmed", "Lindqvist", "Ochieng"
)
# fmt: on
ROLES = ("info", "support", "billing", "hr", "press", "security", "jobs", "admin", "sales", "team")
# fmt: off
DOMAINS = (
    "example.com", "example.org", "example.net", "mail.example.com", "corp.example.com", "example.co.uk",
    "northwind-traders.co.uk", "contoso-labs.de", "acme-widgets.io", "fabrikam.fr", "tailspin.dev",
    "globex.com.au", "initech.co.jp", "umbrella-research.ac.uk", "wayne-enterprises.org",
    "stark.industries", "bluth.company", "hooli.xyz", "piedpiper.tech", "dunder-mifflin.us",
    "vandelay-import.ca", "cyberdyne.systems", "soylent.green", "monsters-inc.es", "oceanic-air.aero",
    "tyrell-corp.ai", "aperture.science", "wonka.ch", "gringotts.bank", "lacuna.inc", "nakatomi.jp.example",
    "kastanienhof.at", "fjordline.no", "quercus.edu.pl", "mail.uni-example.nl"
)
# fmt: on
# fmt: off
WORDS = (
    "apple", "river", "stone", "cloud", "maple", "orbit", "tiger", "lemon", "violet", "falcon", "harbor",
    "copper", "meadow", "pixel", "quartz", "rocket", "saffron", "tundra", "walnut", "zephyr", "anchor",
    "birch", "cactus", "dolphin", "ember", "fjord", "glacier", "hazel", "indigo", "juniper", "kestrel",
    "lantern", "marble", "nectar", "olive", "pepper", "quill", "raven", "sierra", "thistle"
)
# fmt: on
# fmt: off
PRODUCTS = (
    "USB-C cable", "desk lamp", "standing mat", "27in monitor", "keyboard", "ergonomic chair", "webcam",
    "notebook pack", "whiteboard markers", "HDMI adapter", "coffee beans", "printer toner", "laptop stand"
)
# fmt: on
TEAMS = ("platform", "payments", "infra", "frontend", "data", "mobile", "growth", "search", "ml")
PYPKGS = (
    ("requests", "2.31.0"),
    ("numpy", "1.26.4"),
    ("pandas", "2.2.1"),
    ("urllib3", "2.2.1"),
    ("certifi", "2024.2.2"),
    ("idna", "3.6"),
    ("charset-normalizer", "3.3.2"),
    ("pytest", "8.1.1"),
    ("pluggy", "1.4.0"),
    ("packaging", "24.0"),
    ("mss", "9.0.1"),
    ("pillow", "10.2.0"),
    ("cryptography", "42.0.5"),
    ("cffi", "1.16.0"),
    ("pycparser", "2.21"),
    ("ruff", "0.3.4"),
    ("mypy", "1.9.0"),
    ("typing-extensions", "4.10.0"),
    ("platformdirs", "4.2.0"),
    ("pynput", "1.8.1"),
    ("six", "1.16.0"),
    ("python-xlib", "0.33"),
    ("keyring", "25.0.0"),
    ("jaraco.classes", "3.3.1"),
)
DEBS = (
    ("curl", "7.88.1-10+deb12u5", 315),
    ("libcurl4", "7.88.1-10+deb12u5", 390),
    ("git", "1:2.39.2-1.1", 7260),
    ("git-man", "1:2.39.2-1.1", 2051),
    ("xvfb", "2:21.1.7-3+deb12u7", 3163),
    ("jq", "1.6-2.1", 135),
    ("libjq1", "1.6-2.1", 135),
    ("libonig5", "6.9.8-1", 188),
    ("openbox", "3.6.1-10", 294),
    ("dunst", "1.9.0-2", 130),
    ("age", "1.1.1-1+b4", 1598),
    ("python3-venv", "3.11.2-1+b1", 1216),
    ("xdotool", "1:3.20160805.1-5", 23),
    ("tesseract-ocr", "5.3.0-2", 394),
)
COMMIT_SUBJECTS = (
    "Fix race in capture loop",
    "Bump pillow to 10.2.0",
    "Add --json to status",
    "Tray: show paused state",
    "Docs: export format v2",
    "Refactor store encryption",
    "Speed up frame diffing by 3x",
    "Handle missing XInput extension",
    "Test: pause survives suspend",
    "Drop Python 3.9",
    "Merge branch 'feature/deny-rules'",
    'Revert "Use monotonic clock for markers"',
    "CI: cache pip downloads",
    "Fix off-by-one in chunk index",
    "Log rotation at 50 MB",
    "Release 0.4.2",
)


def rand_str(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def ascii_fold(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text.replace("ø", "o").replace("ł", "l").replace("Ł", "L"))
    return "".join(c for c in folded if c.isascii() and (c.isalnum() or c in ".-_"))


def full_name(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def unix_user(rng: random.Random) -> str:
    return rng.choice(("dev", "ci", "deploy", "app", "www-data", "build", "svc", "jenkins")) + rng.choice(
        ("", "", "", str(rng.randint(1, 9)))
    )


def short_host(rng: random.Random) -> str:
    return (
        rng.choice(("db", "api", "web", "cache", "build", "worker", "queue", "auth"))
        + f"-{rng.randint(1, 12):02d}"
    )


def internal_host(rng: random.Random) -> str:
    return f"{short_host(rng)}.{rng.choice(('internal', 'prod.lan', 'staging.local', 'eu-west.svc'))}"


def rand_date(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(2019, 2026), rng.randint(1, 12), rng.randint(1, 28)


MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
# fmt: off
MONTHS_LONG = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December"
)
# fmt: on
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def date_any(rng: random.Random) -> str:
    """A date in one of the many ways people and programs write them."""
    y, m, d = rand_date(rng)
    return rng.choice(
        (
            f"{y}-{m:02d}-{d:02d}",
            f"{d:02d}/{m:02d}/{y}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d:02d}.{m:02d}.{y}",
            f"{d} {MONTHS[m - 1]} {y}",
            f"{MONTHS_LONG[m - 1]} {d}, {y}",
            f"{d}-{MONTHS[m - 1]}-{y % 100:02d}",
            f"{y}{m:02d}{d:02d}",
            f"{rng.choice(DAYS)}, {d:02d} {MONTHS[m - 1]} {y} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d} +0000",
            f"{y}-{m:02d}-{d:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d}Z",
            f"{y}-{m:02d}-{d:02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}."
            f"{rng.randint(0, 999):03d}+01:00",
            f"{d} {MONTHS_LONG[m - 1]} {y}",
        )
    )


def clock(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"


def money(rng: random.Random) -> str:
    amount = rng.choice((rng.randint(1, 99), rng.randint(100, 9999), rng.randint(10000, 250000)))
    cents = rng.randint(0, 99)
    return rng.choice(
        (
            f"${amount:,}.{cents:02d}",
            f"€{amount:,}.{cents:02d}",
            f"£{amount:,}.{cents:02d}",
            f"{amount:,}.{cents:02d} EUR",
            f"USD {amount:,}.{cents:02d}",
            f"{amount:,}".replace(",", ".") + f",{cents:02d} €",
            f"CHF {amount:,}".replace(",", "'") + f".{cents:02d}",
            f"¥{amount * 100:,}",
        )
    )


def version(rng: random.Random) -> str:
    a, b, c = rng.randint(0, 12), rng.randint(0, 40), rng.randint(0, 30)
    return rng.choice(
        (
            f"{a}.{b}.{c}",
            f"v{a}.{b}.{c}",
            f"{a}.{b}",
            f"{a}.{b}.{c}-rc.{rng.randint(1, 4)}",
            f"{a}.{b}.{c}+build.{c * 7}",
        )
    )


def hexs(rng: random.Random, n: int) -> str:
    return rand_str(rng, HEX, n)


def uuid4(rng: random.Random) -> str:
    h = hexs(rng, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{rng.choice('89ab')}{h[17:20]}-{h[20:]}"


def ipv4(rng: random.Random) -> str:
    return rng.choice(
        (
            f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"172.{rng.randint(16, 31)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
            f"203.0.113.{rng.randint(1, 254)}",
            f"198.51.100.{rng.randint(1, 254)}",
        )
    )


def ipv6(rng: random.Random) -> str:
    groups = [hexs(rng, 4).lstrip("0") or "1" for _ in range(4)]
    return "fe80::" + ":".join(groups)


def isbn13(rng: random.Random) -> str:
    body = "978" + rand_str(rng, DIGITS, 9)
    check = (10 - sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(body)) % 10) % 10
    full = body + str(check)
    return f"{full[:3]}-{full[3]}-{full[4:8]}-{full[8:12]}-{full[12]}"


# --------------------------------------------------------------------------------------------
# Generated negatives: shell sessions, chat, forms
# --------------------------------------------------------------------------------------------


@dataclass
class Generated:
    lines: list[str] = field(default_factory=list)
    regenerated: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, make: Callable[[], list[str]], *, attempts: int = 40) -> None:
        """Append the lines of one ``make()``; regenerate it while any line trips the screen."""
        for _ in range(attempts):
            lines = make()
            bad = [r for r in (screen(s) for s in lines) if r]
            if not bad:
                assert all(usable(s) for s in lines), lines
                self.lines.extend(lines)
                return
            self.regenerated.update(bad)
        msg = f"a generator keeps tripping the screen: {lines}"
        raise AssertionError(msg)


def _prompt(rng: random.Random) -> str:
    return rng.choice(
        (
            "$ ",
            "$ ",
            "$ ",
            "% ",
            f"dev@laptop:~/src/{rng.choice(('optin', 'api', 'site'))}$ ",
            "(.venv) $ ",
            "# ",
        )
    )


def _shell_block(rng: random.Random) -> list[str]:  # noqa: PLR0911, PLR0912
    p = _prompt(rng)
    kind = rng.randrange(34)
    y, m, d = rand_date(rng)
    mon = MONTHS[m - 1]
    if kind == 0:
        out = [f"{p}ls -l{rng.choice(('', 'a', 'h'))}", f"total {rng.randint(8, 900)}"]
        for _ in range(rng.randint(4, 10)):
            isdir = rng.random() < 0.3
            perm = "drwxr-xr-x" if isdir else rng.choice(("-rw-r--r--", "-rwxr-xr-x", "-rw-------"))
            size = 4096 if isdir else rng.choice((rng.randint(0, 9999), rng.randint(10000, 99999999)))
            name = (
                rng.choice(("src", "docs", "tests", "build", "node_modules", ".git"))
                if isdir
                else rng.choice(
                    (
                        "README.md",
                        "setup.cfg",
                        "Makefile",
                        "main.py",
                        "report-2024-03.csv",
                        "photo_0423.jpg",
                        "backup.tar.gz",
                        "notes.txt",
                        "id_ed25519.pub",
                        "package-lock.json",
                        "data.sqlite3",
                    )
                )
            )
            out.append(
                f"{perm} {rng.randint(1, 9):2d} {unix_user(rng)} {rng.choice(('dev', 'staff', 'users'))} "
                f"{size:9d} {mon} {d:2d} {clock(rng)} {name}"
            )
        return out
    if kind == 1:
        out = [f"{p}git log --oneline -n {rng.randint(4, 9)}"]
        for i in range(rng.randint(4, 9)):
            deco = " (HEAD -> main, origin/main)" if i == 0 else ""
            out.append(f"{hexs(rng, 7)}{deco} {rng.choice(COMMIT_SUBJECTS)}")
        return out
    if kind == 2:
        return [
            f"{p}git show --stat --format='%H%n%ad%n%s' HEAD~{rng.randint(0, 5)}",
            hexs(rng, 40),
            f"{rng.choice(DAYS)} {mon} {d} {clock(rng)}:{rng.randint(10, 59)} {y} +0{rng.randint(0, 2)}00",
            rng.choice(COMMIT_SUBJECTS),
            f" agent/{rng.choice(('cli', 'store', 'tray', 'capture'))}.py | {rng.randint(1, 120)} "
            + "+" * rng.randint(1, 20)
            + "-" * rng.randint(0, 9),
            f" {rng.randint(1, 6)} files changed, {rng.randint(1, 400)} insertions(+), "
            f"{rng.randint(0, 90)} deletions(-)",
        ]
    pkgs: list[tuple[str, str]] | list[tuple[str, str, int]]  # pip's (name, version); apt's, and kB
    if kind == 3:
        pkgs = rng.sample(PYPKGS, rng.randint(2, 5))
        out = [f"{p}pip install {' '.join(n for n, _ in pkgs[:2])}"]
        for name, ver in pkgs:
            kb = rng.randint(12, 19000)
            out.append(f"Collecting {name}=={ver}" if rng.random() < 0.5 else f"Collecting {name}")
            out.append(f"  Downloading {name.replace('-', '_')}-{ver}-py3-none-any.whl ({kb / 10:.1f} kB)")
            out.append(
                f"     ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ {kb / 10:.1f}/{kb / 10:.1f} kB "
                f"{rng.randint(1, 90) / 10:.1f} MB/s eta 0:00:00"
            )
        out.append("Installing collected packages: " + ", ".join(n for n, _ in pkgs))
        out.append("Successfully installed " + " ".join(f"{n}-{v}" for n, v in pkgs))
        return out
    if kind == 4:
        pkgs = rng.sample(DEBS, rng.randint(2, 4))
        out = [
            f"{p}sudo apt-get install -y {pkgs[0][0]}",
            "Reading package lists... Done",
            "Building dependency tree... Done",
            "Reading state information... Done",
        ]
        for i, (name, ver, kb) in enumerate(pkgs, 1):
            out.append(
                f"Get:{i} http://deb.debian.org/debian bookworm/main amd64 {name} amd64 {ver} [{kb:,} kB]"
            )
        total = sum(k for _, _, k in pkgs)
        out.append(f"Fetched {total:,} kB in {rng.randint(1, 9)}s ({rng.randint(900, 9000):,} kB/s)")
        out += [f"Setting up {n} ({v}) ..." for n, v, _ in pkgs]
        out.append(f"Processing triggers for man-db ({rng.choice(('2.11.2-2', '2.12.0-4'))}) ...")
        return out
    if kind == 5:
        out = [
            f"{p}ps aux | head",
            "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND",
        ]
        for _ in range(rng.randint(4, 9)):
            out.append(
                f"{unix_user(rng):<10} {rng.randint(1, 99999):6d} {rng.randint(0, 999) / 10:4.1f} "
                f"{rng.randint(0, 300) / 10:4.1f} {rng.randint(1000, 9999999):7d} "
                f"{rng.randint(100, 999999):6d} "
                f"{rng.choice(('?', 'pts/0', 'pts/3', 'tty2'))}    "
                f"{rng.choice(('Ss', 'Sl', 'R+', 'S<', 'Ssl'))} "
                f"  {clock(rng)}   {rng.randint(0, 59)}:{rng.randint(0, 59):02d} "
                + rng.choice(
                    (
                        "/usr/bin/python3 -m http.server 8000",
                        "/usr/lib/systemd/systemd --user",
                        "postgres: checkpointer",
                        "/usr/sbin/sshd -D",
                        "node dist/server.js --port 3000",
                        "Xvfb :99 -screen 0 1920x1080x24",
                        "[kworker/3:1-events]",
                    )
                )
            )
        return out
    if kind == 6:
        out = [f"{p}df -h", "Filesystem      Size  Used Avail Use% Mounted on"]
        for dev, mnt in (
            ("/dev/nvme0n1p2", "/"),
            ("tmpfs", "/run"),
            ("/dev/nvme0n1p1", "/boot/efi"),
            ("/dev/sda1", "/mnt/backup"),
        ):
            size = rng.randint(1, 2000)
            used = rng.randint(0, size)
            out.append(f"{dev:<15} {size:4d}G {used:4d}G {size - used:4d}G {used * 100 // size:3d}% {mnt}")
        return out
    if kind == 7:
        return [
            f"{p}uptime",
            f" {clock(rng)}:{rng.randint(10, 59)} up {rng.randint(1, 300)} days, {rng.randint(0, 23)}:"
            f"{rng.randint(10, 59)},  {rng.randint(1, 5)} users,  load average: {rng.random():.2f}, "
            f"{rng.random():.2f}, {rng.random():.2f}",
            f"{p}free -m",
            "               total        used        free      shared  buff/cache   available",
            f"Mem:           {rng.randint(7000, 64000)}        {rng.randint(1000, 7000)}         "
            f"{rng.randint(100, 5000)}         {rng.randint(10, 900)}        "
            f"{rng.randint(1000, 9000)}        {rng.randint(1000, 9000)}",
            f"Swap:           {rng.randint(1000, 8000)}           0        {rng.randint(1000, 8000)}",
        ]
    if kind == 8:
        out = [f"{p}{rng.choice(('sha256sum', 'shasum -a 256'))} dist/*"]
        for name in rng.sample(
            (
                "optin-0.4.2.tar.gz",
                "optin-0.4.2-py3-none-any.whl",
                "SHA256SUMS.asc",
                "optin_0.4.2_amd64.deb",
                "frames-000017.tar",
            ),
            3,
        ):
            out.append(f"{hexs(rng, 64)}  dist/{name}")
        out.append(f"{p}md5sum notes.txt")
        out.append(f"{hexs(rng, 32)}  notes.txt")
        return out
    if kind == 9:
        return [
            f"{p}uuidgen",
            uuid4(rng),
            f"{p}date",
            f"{rng.choice(DAYS)} {mon} {d:2d} {clock(rng)}:"
            f"{rng.randint(10, 59)} {rng.choice(('UTC', 'CET', 'CEST', 'BST', 'PDT'))} {y}",
            f"{p}date -u +%FT%TZ",
            f"{y}-{m:02d}-{d:02d}T{clock(rng)}:{rng.randint(10, 59)}Z",
            f"{p}date +%s",
            str(rng.randint(1_500_000_000, 1_800_000_000)),
        ]
    if kind == 10:
        return [
            f"{p}ip -br addr",
            "lo               UNKNOWN        127.0.0.1/8 ::1/128",
            f"eth0             UP             {ipv4(rng)}/24 {ipv6(rng)}/64",
            "wlan0            DOWN           ",
            f"docker0          UP             172.17.0.1/16 {ipv6(rng)}/64",
            f"{p}ip link show eth0 | grep ether",
            "    link/ether " + ":".join(hexs(rng, 2) for _ in range(6)) + " brd ff:ff:ff:ff:ff:ff",
        ]
    if kind == 11:
        host = ipv4(rng)
        out = [f"{p}ping -c 3 {host}", f"PING {host} ({host}) 56(84) bytes of data."]
        for i in range(1, 4):
            out.append(
                f"64 bytes from {host}: icmp_seq={i} ttl={rng.choice((54, 63, 64, 117))} "
                f"time={rng.randint(100, 90000) / 1000:.3f} ms"
            )
        out.append(f"3 packets transmitted, 3 received, 0% packet loss, time {rng.randint(2001, 2010)}ms")
        return out
    if kind == 12:
        out = [f"{p}ss -tlnp", "State  Recv-Q Send-Q Local Address:Port  Peer Address:Port Process"]
        for port, proc in rng.sample(
            (
                (5432, "postgres"),
                (6379, "redis-server"),
                (8000, "python3"),
                (22, "sshd"),
                (3000, "node"),
                (9090, "prometheus"),
                (631, "cupsd"),
            ),
            4,
        ):
            out.append(
                f"LISTEN 0      {rng.choice((128, 511, 4096))}    127.0.0.1:{port}       0.0.0.0:*     "
                f'users:(("{proc}",pid={rng.randint(300, 99999)},fd={rng.randint(3, 30)}))'
            )
        return out
    if kind == 13:
        out = [
            f"{p}docker ps",
            "CONTAINER ID   IMAGE              COMMAND                  CREATED        STATUS"
            "        PORTS                    NAMES",
        ]
        for img, port, name in rng.sample(
            (
                ("postgres:16.2", 5432, "db"),
                ("redis:7.2-alpine", 6379, "cache"),
                ("nginx:1.25", 80, "proxy"),
                ("optin/api:0.4.2", 8000, "api"),
                ("minio/minio:RELEASE.2024-03-10T02-53-48Z", 9000, "s3"),
            ),
            3,
        ):
            out.append(
                f'{hexs(rng, 12)}   {img:<18} "docker-entrypoint.s…"   {rng.randint(2, 50)} hours ago   '
                f"Up {rng.randint(2, 50)} hours   0.0.0.0:{port}->{port}/tcp   {name}"
            )
        return out
    if kind == 14:
        tag = rng.choice(("3.12-slim", "bookworm", "16.2", "latest", "1.25.4-alpine"))
        return [
            f"{p}docker pull python:{tag}",
            f"{tag}: Pulling from library/python",
            f"{hexs(rng, 12)}: Pull complete",
            f"{hexs(rng, 12)}: Pull complete",
            f"Digest: sha256:{hexs(rng, 64)}",
            f"Status: Downloaded newer image for python:{tag}",
            f"docker.io/library/python:{tag}",
        ]
    if kind == 15:
        out = [
            f"{p}kubectl get pods -n {rng.choice(TEAMS)}",
            "NAME                          READY   STATUS    RESTARTS   AGE",
        ]
        for _ in range(rng.randint(3, 6)):
            suffix = rand_str(rng, "bcdfghjklmnpqrstvwxz2456789", 5)
            name = f"{rng.choice(('web', 'worker', 'api', 'scheduler'))}-{hexs(rng, 10)}-{suffix}"
            out.append(
                f"{name:<29} 1/1     {rng.choice(('Running', 'Running', 'Pending', 'Completed'))}   "
                f"{rng.randint(0, 4)}          {rng.randint(1, 40)}d{rng.randint(0, 23)}h"
            )
        return out
    if kind == 16:
        n = rng.randint(50, 600)
        out = [
            f"{p}pytest -q",
        ]
        for f in rng.sample(
            (
                "tests/unit/test_cli.py",
                "tests/unit/test_store.py",
                "tests/unit/test_export.py",
                "tests/unit/test_consent.py",
                "tests/display/test_demo.py",
            ),
            3,
        ):
            dots = "." * rng.randint(5, 40)
            out.append(f"{f} {dots}{' ' * 3}[{rng.randint(1, 100):3d}%]")
        out.append(
            f"{'=' * 10} {n} passed, {rng.randint(0, 5)} skipped in "
            f"{rng.randint(100, 9999) / 100:.2f}s {'=' * 10}"
        )
        return out
    if kind == 17:
        return [
            f"{p}python3 --version",
            f"Python 3.{rng.randint(8, 13)}.{rng.randint(0, 12)}",
            f"{p}node -v",
            f"v{rng.randint(16, 22)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
            f"{p}git --version",
            f"git version 2.{rng.randint(30, 45)}.{rng.randint(0, 4)}",
            f"{p}uname -r",
            f"6.{rng.randint(1, 9)}.0-{rng.randint(10, 30)}-amd64",
        ]
    if kind == 18:
        return [
            f"{p}curl -sI https://downloads.example.org/optin-{version(rng)}.tar.gz",
            "HTTP/2 200",
            "content-type: application/gzip",
            f"content-length: {rng.randint(1000, 99999999)}",
            f'etag: "{hexs(rng, 4)}-{hexs(rng, 13)}"',
            f"last-modified: {rng.choice(DAYS)}, {d:02d} {mon} {y} {clock(rng)}:{rng.randint(10, 59)} GMT",
            f"x-amz-id-2: {rand_str(rng, B64, 76)}",
            f"x-amz-request-id: {rand_str(rng, UPPER_ALNUM, 16)}",
            "x-cache: Hit from cloudfront",
            f"age: {rng.randint(1, 86400)}",
        ]
    if kind == 19:
        fp = base64.b64encode(rng.randbytes(32)).decode().rstrip("=")
        return [
            f"{p}ssh-keygen -lf ~/.ssh/id_ed25519.pub",
            f"256 SHA256:{fp} dev@laptop (ED25519)",
            f"{p}ssh-add -l",
            f"256 SHA256:{base64.b64encode(rng.randbytes(32)).decode().rstrip('=')} deploy key (ED25519)",
        ]
    if kind == 20:
        return [
            f"{p}sudo apt update",
            "[sudo] password for dev: ",
            "Hit:1 http://deb.debian.org/debian bookworm InRelease",
            "Get:2 http://deb.debian.org/debian-security bookworm-security InRelease "
            f"[{rng.randint(40, 60)}.{rng.randint(0, 9)} kB]",
            f"Fetched {rng.randint(40, 900)} kB in {rng.randint(1, 5)}s ({rng.randint(20, 400)} kB/s)",
            f"{rng.randint(0, 40)} packages can be upgraded. Run 'apt list --upgradable' to see them.",
        ]
    if kind == 21:
        start = rng.randint(100, 1900)
        cmds = (
            "cd ~/src/optin",
            "make test",
            "git pull --rebase",
            "vim agent/cli.py",
            "ls",
            "htop",
            "docker compose up -d",
            "git push origin HEAD",
            "python -m pytest -x",
            "less /var/log/syslog",
            "tar czf backup-2024-03-14.tar.gz data/",
            "du -sh ~/.cache/*",
            "make lint",
        )
        return [f"{p}history | tail -6"] + [f"{start + i:5d}  {rng.choice(cmds)}" for i in range(6)]
    if kind == 22:
        out = [f"{p}wc -l agent/*.py"]
        total = 0
        for name in rng.sample(("cli.py", "config.py", "consent.py", "demo.py", "errors.py", "events.py"), 4):
            n = rng.randint(20, 1800)
            total += n
            out.append(f"  {n:5d} agent/{name}")
        out.append(f"  {total:5d} total")
        out.append(f"{p}du -sh ~/.cache/* | sort -h | tail -3")
        out += [
            f"{rng.randint(1, 999)}{rng.choice('KMG')}\t/home/dev/.cache/{n}"
            for n in ("pip", "mozilla", "pre-commit")
        ]
        return out
    if kind == 23:
        out = [f"{p}journalctl -u {rng.choice(('nginx', 'ssh', 'optin', 'docker'))} --since today | tail -5"]
        for _ in range(5):
            out.append(
                f"{mon} {d:02d} {clock(rng)}:{rng.randint(10, 59)} laptop "
                + rng.choice(
                    (
                        "systemd[1]: Started Daily apt download activities.",
                        f"sshd[{rng.randint(300, 99999)}]: Accepted publickey for dev from {ipv4(rng)} "
                        f"port {rng.randint(1024, 65535)} ssh2: ED25519 "
                        f"SHA256:{base64.b64encode(rng.randbytes(32)).decode().rstrip('=')}",
                        f"kernel: [UFW BLOCK] IN=eth0 OUT= SRC={ipv4(rng)} DST={ipv4(rng)} "
                        f"LEN={rng.randint(40, 1500)} PROTO=TCP SPT={rng.randint(1024, 65535)} "
                        f"DPT={rng.choice((22, 23, 445, 3389))}",
                        f'dockerd[{rng.randint(300, 99999)}]: time="{y}-{m:02d}-{d:02d}T{clock(rng)}:'
                        f'{rng.randint(10, 59)}.{rng.randint(100000000, 999999999)}Z" level=info '
                        f'msg="ignoring event" container={hexs(rng, 64)}',
                        f"optin[{rng.randint(300, 99999)}]: session {uuid4(rng)} "
                        f"chunk {rng.randint(1, 400)} sealed ({rng.randint(1, 9000)} KiB)",
                    )
                )
            )
        return out
    if kind == 24:
        word = rng.choice(("hello world", "optin", "frame 17", "2024-03-14", '{"v":1}'))
        enc = base64.b64encode((word + "\n").encode()).decode()
        return [f"{p}echo '{word}' | base64", enc, f"{p}echo {enc} | base64 -d", word]
    if kind == 25:
        sri = base64.b64encode(rng.randbytes(64)).decode()
        return [
            f"{p}npm install",
            f"added {rng.randint(50, 1500)} packages, and audited {rng.randint(50, 1500)} packages "
            f"in {rng.randint(2, 90)}s",
            f"{rng.randint(10, 300)} packages are looking for funding",
            "  run `npm fund` for details",
            "found 0 vulnerabilities",
            f"{p}npm view left-pad dist.integrity",
            f"sha512-{sri}",
        ]
    if kind == 26:
        return [
            f"{p}env | grep -E '^(LANG|EDITOR|PAGER|SHELL|TERM)='",
            "LANG=en_GB.UTF-8",
            "EDITOR=vim",
            "PAGER=less",
            "SHELL=/bin/bash",
            "TERM=xterm-256color",
            f"{p}export GOPATH=$HOME/go PATH=$PATH:$HOME/.local/bin",
        ]
    if kind == 27:
        return [
            f"{p}docker login --username ci-bot --password-stdin registry.example.com "
            "< /run/secrets/registry",
            "WARNING! Your password will be stored unencrypted in /home/dev/.docker/config.json.",
            "Configure a credential helper to remove this warning. See",
            "https://docs.docker.com/engine/reference/commandline/login/#credential-stores",
            "Login Succeeded",
        ]
    if kind == 28:
        return [
            f"{p}stat {rng.choice(('README.md', 'data.sqlite3', 'main.py'))}",
            f"  Size: {rng.randint(100, 9999999):<10}\tBlocks: {rng.randint(8, 9999):<10} "
            "IO Block: 4096   regular file",
            f"Device: {rng.randint(200, 300)},{rng.randint(1, 9)}\t"
            f"Inode: {rng.randint(100000, 99999999):<11} Links: 1",
            "Access: (0644/-rw-r--r--)  Uid: ( 1000/     dev)   Gid: ( 1000/     dev)",
            f"Modify: {y}-{m:02d}-{d:02d} {clock(rng)}:{rng.randint(10, 59)}."
            f"{rng.randint(100000000, 999999999)} +0100",
            f" Birth: {y}-{m:02d}-{d:02d} {clock(rng)}:{rng.randint(10, 59)}."
            f"{rng.randint(100000000, 999999999)} +0100",
        ]
    if kind == 29:
        return [
            f"{p}dig +short {rng.choice(('example.com', 'example.org', 'docs.example.net'))}",
            ipv4(rng),
            f"{p}dig example.com A +noall +answer",
            f"example.com.\t\t{rng.choice((300, 3600, 86400))}\tIN\tA\t{ipv4(rng)}",
            f"{p}traceroute -n -q1 -m4 {ipv4(rng)}",
        ] + [f" {i}  {ipv4(rng)}  {rng.randint(100, 40000) / 1000:.3f} ms" for i in range(1, 5)]
    if kind == 30:
        sent = rng.randint(1000, 999999999)
        return [
            f"{p}rsync -az --stats data/ backup:/srv/backup/{y}{m:02d}{d:02d}/",
            f"Number of files: {rng.randint(10, 99999):,} (reg: {rng.randint(10, 9999):,}, "
            f"dir: {rng.randint(1, 999):,})",
            f"Total file size: {rng.randint(10**6, 10**11):,} bytes",
            f"sent {sent:,} bytes  received {rng.randint(20, 99999):,} bytes  "
            f"{rng.randint(1000, 9999999):,}.{rng.randint(10, 99)} bytes/sec",
            f"total size is {rng.randint(10**6, 10**11):,}  speedup is {rng.randint(100, 9999) / 100:.2f}",
        ]
    if kind == 31:
        account = rand_str(rng, DIGITS, 12)
        return [
            f"{p}aws sts get-caller-identity",
            "{",
            f'    "UserId": "AIDA{rand_str(rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 17)}",',
            f'    "Account": "{account}",',
            f'    "Arn": "arn:aws:iam::{account}:user/ci-deployer"',
            "}",
            f"{p}aws s3 ls s3://reports-{rand_str(rng, DIGITS + 'abcdef', 6)}/2024/",
        ] + [
            f"{y}-{m:02d}-{d:02d} {clock(rng)}:{rng.randint(10, 59)}   "
            f"{rng.randint(100, 9999999):8d} report-{i:03d}.csv"
            for i in range(1, rng.randint(3, 6))
        ]
    if kind == 32:
        return _code_listing(rng, p)
    return _public_pem(rng, p)


def _code_listing(rng: random.Random, p: str) -> list[str]:
    """``cat`` of a config module: the names of secrets, never their values."""
    lines = rng.sample(
        (
            "from dataclasses import dataclass",
            "import os",
            "@dataclass(frozen=True)",
            "class DatabaseSettings:",
            '    host: str = "localhost"',
            "    port: int = 5432",
            '    user: str = "app"',
            "    password: str | None = None",
            "    password_file: Path | None = None",
            "def connect(host: str, user: str, password: str) -> Connection:",
            "    if password is None:",
            '        password = getpass.getpass("Password: ")',
            'DB_PASSWORD = os.environ["DB_PASSWORD"]',
            'api_key = os.getenv("OPENAI_API_KEY")',
            'token = request.headers.get("Authorization", "")',
            "secret = secrets.token_hex(32)",
            "password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt())",
            "def set_password(self, raw_password: str) -> None:",
            "    self.password = make_password(raw_password)",
            "if not check_password(password, user.password_hash):",
            '    raise AuthError("invalid credentials")',
            'REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")',
            "MAX_PASSWORD_LENGTH = 128",
            "PASSWORD_MIN_LENGTH = 12",
            "session_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))",
            'log.info("token refreshed for user %s", user.id)',
            "assert len(secret) == 64",
            "    def __init__(self, username, password=None, token=None):",
            "        self._password = password",
            'kwargs = {"password": password, "timeout": 30}',
        ),
        rng.randint(6, 10),
    )
    return [f"{p}cat {rng.choice(('app/config.py', 'settings.py', 'auth/models.py', 'db.py'))}", *lines]


def _public_pem(rng: random.Random, p: str) -> list[str]:
    """Certificates and public keys: PEM and base64 that are not secret."""
    kind = rng.randrange(3)
    if kind == 0:
        body = base64.b64encode(bytes.fromhex("308203") + rng.randbytes(rng.randint(700, 1200))).decode()
        rows = [body[i : i + 64] for i in range(0, len(body), 64)]
        return [
            f"{p}cat /etc/ssl/certs/{rng.choice(('ca', 'server', 'intermediate'))}.crt",
            "-----BEGIN CERTIFICATE-----",
            *rows,
            "-----END CERTIFICATE-----",
        ]
    if kind == 1:
        body = base64.b64encode(
            bytes.fromhex("30820122300d06092a864886f70d01010105000382010f00") + rng.randbytes(270)
        ).decode()
        rows = [body[i : i + 64] for i in range(0, len(body), 64)]
        return [
            f"{p}openssl rsa -in key.pem -pubout 2>/dev/null",
            "-----BEGIN PUBLIC KEY-----",
            *rows,
            "-----END PUBLIC KEY-----",
        ]
    blobs = [
        base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + rng.randbytes(32)).decode()
        for _ in range(2)
    ]
    return [
        f"{p}cat ~/.ssh/id_ed25519.pub",
        f"ssh-ed25519 {blobs[0]} dev@laptop",
        f"{p}ssh-keyscan -t ed25519 {short_host(rng)} 2>/dev/null",
        f"{short_host(rng)} ssh-ed25519 {blobs[1]}",
    ]


def make_shell(rng: random.Random) -> Generated:
    out = Generated()
    while len(out.lines) < NEGATIVE_TARGETS["shell"]:
        out.add(lambda: _shell_block(rng))
    return out


CHAT_NAMES = ("alice", "bob", "chen", "priya", "mateo", "amara", "yuki", "olga", "kwame", "sofia", "liam")


def _chat_message(rng: random.Random) -> str:
    r = rng.randint
    t = clock(rng)
    msgs = (
        f"standup moved to {t}, same room",
        f"can we do {t} instead of {clock(rng)}?",
        f"lunch at {t}? the place on {rng.choice(('Main St', 'Rue Cler', 'Kastanienallee'))} "
        f"has a {r(8, 15)}€ menu",
        f"deploy of {version(rng)} went out at {t} UTC",
        f"the build took {r(1, 40)}m {r(1, 59)}s, cache miss again",
        f"PR #{r(100, 9999)} is ready for review",
        f"invoice INV-{r(2019, 2026)}-{r(1, 9999):04d} is paid ({money(rng)})",
        f"meet in room {rng.choice('ABCD')}{r(1, 5)}.{r(1, 40):02d}",
        f"my flight is {rng.choice(('LH', 'BA', 'AF', 'KL', 'UA'))} {r(100, 9999)} at {t}, "
        f"landing {clock(rng)}",
        f"order {r(1000000000, 99999999999)} still hasn't shipped",
        f"order #{r(100, 999)}-{r(1000000, 9999999)}-{r(1000000, 9999999)} arrived, thanks",
        f"tracking says 1Z{rand_str(rng, UPPER_ALNUM, 6)}{rand_str(rng, DIGITS, 10)}, out for delivery",
        f"it's on page {r(2, 900)} of the spec",
        f"p95 latency is {r(20, 900)} ms, p99 {r(900, 4000)} ms",
        f"we're at {r(1, 99)}.{r(0, 9)}% error budget for the quarter",
        f"ticket {rng.choice(('OPS', 'WEB', 'DATA', 'SEC'))}-{r(10, 99999)} has the details",
        f"build {r(1000, 99999)} failed on step {r(1, 12)}/{r(12, 20)}",
        f"that's commit {hexs(rng, 7)}, not {hexs(rng, 7)}",
        f"sha256 of the tarball: {hexs(rng, 64)}",
        f"the request id was {uuid4(rng)}",
        f"let's call it {version(rng)} and ship",
        f"I'll call you at {t}",
        f"can you call the vendor after {t}? they close at {clock(rng)}",
        f"the password policy changed: {r(10, 16)} characters minimum now",
        "reset my password yesterday, works again",
        "use the password manager, not a sticky note please",
        "the forgot-password link is broken on staging",
        "where do we keep the API key now? vault?",
        "rotated the token, old one is revoked",
        "no secrets in the repo please, use the vault",
        f"ISBN is {isbn13(rng)}",
        f"{r(2, 40)} people signed up, {r(1, 20)} on the waitlist",
        f"the screen is {rng.choice(('1920x1080', '2560x1440', '3840x2160'))} "
        f"at {rng.choice((60, 120, 144))} Hz",
        f"it's {r(-5, 35)}°C in the office",
        "postcode is "
        + rng.choice(("EC1A 1BB", "W1A 0AX", "M1 1AE", "10115", "75007", "02110-1301", "94105", "1010")),
        f"train leaves platform {r(1, 14)} at {t}",
        f"budget for Q{r(1, 4)} is {money(rng)}",
        f"the release is scheduled for {date_any(rng)}",
        f"moved to {date_any(rng)}, sorry",
        "pinned {} to {}".format(*rng.choice(PYPKGS)),
        f"server {ipv4(rng)} is down again, port {r(1024, 65535)}",
        f"coords are {r(-89, 89)}.{r(1000, 9999)}, {r(-179, 179)}.{r(1000, 9999)}",
        f"disk at {r(80, 99)}% on {short_host(rng)}",
        f"ETA {r(2, 20)} min",
        f"{r(2, 9)} tickets left at {money(rng)} each",
        f"the color is #{hexs(rng, 6)}",
        f"memory went from {r(100, 900)} MB to {r(1, 9)}.{r(0, 9)} GB after the upgrade",
        f"ok, {rng.choice(CHAT_NAMES)} takes the {t} slot",
        f"room {r(100, 499)} or {r(100, 499)}?",
        f"that was in {rng.choice(MONTHS_LONG)} {r(2019, 2026)}",
        f"batch {r(1, 99)}/{r(100, 200)} done in {r(1, 999)}.{r(0, 9)} s",
        f"{rng.choice(('👍', '🎉', 'lol', 'ok', 'thanks!', 'nice', '+1', 'on it'))}",
        f"can someone review {rng.choice(TEAMS)}/{rng.choice(('auth', 'ui', 'etl', 'api'))}#{r(1, 999)}?",
        f"the epoch timestamp is {r(1_500_000_000, 1_800_000_000)}, that's {date_any(rng)}",
        f"customer number {r(10000, 9999999)} asked for a refund of {money(rng)}",
        f"the UUID in the log is {uuid4(rng)}",
        f"we need {r(2, 30)} more {rng.choice(PRODUCTS)}s",
        f"quote ref Q-{r(2020, 2026)}/{r(1, 999):03d} is valid until {date_any(rng)}",
        f"docker image digest sha256:{hexs(rng, 64)}",
        f"base64 of the config is {base64.b64encode(rng.choice(WORDS).encode() * r(2, 4)).decode()}",
    )
    msg = rng.choice(msgs)
    style = rng.randrange(3)
    if style == 0:
        return f"[{t}] {rng.choice(CHAT_NAMES)}: {msg}"
    if style == 1:
        return f"{rng.choice(CHAT_NAMES)}: {msg}"
    return msg


def make_chat(rng: random.Random) -> Generated:
    out = Generated()
    while len(out.lines) < NEGATIVE_TARGETS["chat"]:
        out.add(lambda: [_chat_message(rng)])
    return out


def _form_field(rng: random.Random) -> str:
    r = rng.randint
    fields = (
        ("Order number", f"{r(1000000, 9999999999)}"),
        ("Order ID", f"{r(1000000000, 99999999999)}"),
        ("Order date", date_any(rng)),
        ("Invoice date", date_any(rng)),
        ("Due date", date_any(rng)),
        ("Delivery date", date_any(rng)),
        ("Quantity", str(r(1, 500))),
        ("Unit price", money(rng)),
        ("Total", money(rng)),
        ("VAT (20%)", money(rng)),
        ("Amount due", money(rng)),
        ("Postcode", rng.choice(("EC1A 1BB", "W1A 0AX", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT"))),
        ("ZIP code", rng.choice(("02110-1301", "94105", "10001", "60601-2101", "73301"))),
        ("PLZ", str(r(10000, 99999))),
        ("Country", rng.choice(("Germany", "United Kingdom", "France", "Japan", "Brazil", "Kenya"))),
        ("Reference", f"REF-{r(2019, 2026)}-{r(1, 999999):06d}"),
        ("Customer reference", f"CR{r(100000, 9999999)}"),
        ("Invoice number", f"INV/{r(2019, 2026)}/{r(1, 99999):05d}"),
        ("Policy number", f"POL-{r(10000, 99999)}-{rng.choice(UPPER)}"),
        ("Claim reference", f"CLM/{r(2019, 2026)}/{r(1, 99999):05d}"),
        ("Ticket", f"#{r(10000, 999999)}"),
        ("Tracking number", f"1Z{rand_str(rng, UPPER_ALNUM, 6)}{rand_str(rng, DIGITS, 10)}"),
        ("Parcel ID", f"JJD{rand_str(rng, DIGITS, 18)}"),
        ("ISBN", isbn13(rng)),
        ("SKU", f"{rng.choice(UPPER)}{rng.choice(UPPER)}-{r(100, 9999)}-{rng.choice(('BLK', 'WHT', 'RED'))}"),
        ("Item", rng.choice(PRODUCTS)),
        ("Weight", f"{r(1, 999) / 10:.1f} kg"),
        ("Dimensions", f"{r(5, 120)} x {r(5, 120)} x {r(1, 80)} cm"),
        ("Room", f"{rng.choice('ABCDE')}{r(1, 6)}.{r(1, 40):02d}"),
        ("Seats", str(r(1, 12))),
        ("Start time", clock(rng)),
        ("End time", clock(rng)),
        ("Duration", f"{r(1, 8)} h {r(0, 59)} min"),
        ("Version", version(rng)),
        ("Build", f"{r(2019, 2026)}.{r(1, 12):02d}.{r(1, 999)}"),
        ("Serial number", f"SN-{rand_str(rng, UPPER_ALNUM, 10)}"),
        ("Asset tag", f"IT-{r(10000, 99999)}"),
        ("Request ID", uuid4(rng)),
        ("Checksum (SHA-256)", hexs(rng, 64)),
        ("Tax year", f"{(yr := r(2019, 2026))}/{(yr + 1) % 100:02d}"),
        (
            "Payment method",
            rng.choice(("Bank transfer", "Invoice", "Card (Visa ending 4242)", "PayPal", "Cash")),
        ),
        ("Card", f"**** **** **** {r(1000, 9999)}"),
        ("Card expiry", f"{r(1, 12):02d}/{r(25, 31)}"),
        ("Account type", rng.choice(("Savings", "Current", "Business"))),
        ("Currency", rng.choice(("EUR", "GBP", "USD", "JPY", "CHF"))),
        ("Exchange rate", f"{r(1, 200) / 100:.4f}"),
        ("Discount", f"{r(1, 50)}%"),
        ("Password strength", rng.choice(("strong", "medium", "weak"))),
        ("Password last changed", date_any(rng)),
        ("Two-factor authentication", rng.choice(("enabled", "disabled"))),
        ("Status", rng.choice(("Submitted", "Approved", "Pending review", "Shipped", "Closed"))),
        ("Priority", rng.choice(("P1", "P2", "P3", "Low", "High"))),
        ("Department", rng.choice(TEAMS).title()),
        ("Cost centre", f"CC-{r(1000, 9999)}"),
        ("Project code", f"PRJ-{r(100, 999)}-{r(10, 99)}"),
        ("Licence plate", f"{rand_str(rng, UPPER, 2)}{r(10, 99)} {rand_str(rng, UPPER, 3)}"),
        ("Flight", f"{rng.choice(('LH', 'BA', 'AF', 'KL'))} {r(100, 9999)}"),
        ("Gate", f"{rng.choice('ABCDE')}{r(1, 60)}"),
        ("IP address", ipv4(rng)),
        ("Port", str(r(1024, 65535))),
        ("Page", f"{r(1, 40)} of {r(40, 80)}"),
        ("Employees", f"{r(1, 9999):,}"),
        ("Revenue", money(rng)),
        ("Comments", rng.choice(("Leave at the door", "Fragile", "n/a", "Call before delivery", "None"))),
    )
    label, value = rng.choice(fields)
    sep = rng.choice((": ", ": ", ":\t", " | ", " — ", ": "))
    return f"{label}{sep}{value}"


def _bad_luhn_card(rng: random.Random) -> str:
    """An issuer-shaped number whose Luhn check fails (a control: not a card)."""
    prefix, length = rng.choice(
        (("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16), ("35", 16))
    )
    valid = luhn_complete(prefix + rand_str(rng, DIGITS, length - len(prefix) - 1))
    bad = valid[:-1] + str((int(valid[-1]) + rng.randint(1, 9)) % 10)
    assert not luhn_valid(bad)
    if length == 15:
        return rng.choice((bad, f"{bad[:4]} {bad[4:10]} {bad[10:]}"))
    return rng.choice((bad, group(bad), group(bad, 4, "-")))


def _bad_iban(rng: random.Random) -> str:
    """An IBAN-shaped string whose mod-97 check fails (a control: not an IBAN)."""
    iban = rand_iban(rng)
    while True:
        check = f"{rng.randint(2, 98):02d}"
        bad = iban[:2] + check + iban[4:]
        if iban_remainder(bad) != 1:
            break
    return rng.choice((bad, group(bad)))


def _form_control(rng: random.Random) -> str:
    label = rng.choice(
        (
            "Voucher code",
            "Tracking number",
            "Serial no.",
            "Membership ID",
            "Batch",
            "Consignment",
            "Document no.",
            "Control number",
        )
    )
    if rng.random() < 0.5:
        return f"{label}: {_bad_luhn_card(rng)}"
    label = rng.choice(("Reference", "Mandate reference", "Document ID", "Case", "Transaction ref"))
    return f"{label}: {_bad_iban(rng)}"


def _rf_reference(rng: random.Random) -> str:
    """An ISO 11649 creditor reference: RF + mod-97 check digits, but no country, not an IBAN."""
    body = rand_str(rng, UPPER_ALNUM, rng.randint(8, 16))
    check = 98 - iban_remainder("RF00" + body)
    return f"RF{check:02d}{body}"


def make_forms(rng: random.Random) -> tuple[Generated, int]:
    out = Generated()
    titles = (
        "Order summary",
        "Delivery details",
        "Expense claim",
        "Room booking",
        "Support request",
        "Invoice",
        "Returns form",
        "Equipment request",
        "Account settings",
        "Shipping label",
    )
    controls = 0
    while len(out.lines) < NEGATIVE_TARGETS["form"]:
        title = rng.choice(titles)

        def form(title: str = title) -> list[str]:
            return [f"== {title} =="] + [_form_field(rng) for _ in range(rng.randint(5, 11))]

        out.add(form)
        if rng.random() < 0.9:
            out.add(lambda: [_form_control(rng)])
            controls += 1
        if rng.random() < 0.1:
            out.add(lambda: [f"Creditor reference: {_rf_reference(rng)}"])
    return out, controls


# --------------------------------------------------------------------------------------------
# Positives
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    family: str
    category: str
    kind: str
    text: str
    secret: str


def pick_template(rng: random.Random, templates: dict[str, tuple[str, ...]]) -> tuple[str, str]:
    category = rng.choice(sorted(templates))
    return category, rng.choice(templates[category])


def fill(rng: random.Random, template: str, secret: str) -> str:
    name = full_name(rng)
    values = {
        "s": secret,
        "name": name,
        "first": name.split()[0],
        "user": unix_user(rng),
        "host": internal_host(rng),
        "shorthost": short_host(rng),
        "db": rng.choice(("app", "orders", "analytics", "billing", "wiki")),
        "time": clock(rng),
        "date": f"{rand_date(rng)[0]}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        "n": str(rng.randint(2, 99)),
        "org": rng.choice(("acme", "northwind", "contoso", "globex", "initech")),
        "repo": rng.choice(("api", "infra", "website", "mobile-app", "etl")),
        "team": rng.choice(TEAMS),
        "month": rng.choice(MONTHS_LONG),
        "nick": rng.choice(CHAT_NAMES),
    }
    return template.format(**values)


# ---- e-mail ---------------------------------------------------------------------------------

EMAIL_TEMPLATES = {
    "code": (
        'EMAIL = "{s}"',
        '    send_mail(subject, body, to=["{s}"])',
        "# Maintainer: {name} <{s}>",
        '    "email": "{s}",',
        "user = User(name=\"{name}\", email='{s}')",
        'assert msg["To"] == "{s}"',
        "INSERT INTO users (name, email) VALUES ('{name}', '{s}');",
        '<a href="mailto:{s}">Contact us</a>',
        'ADMINS = [("{name}", "{s}")]',
        "  email: {s}",
        'DEFAULT_FROM_EMAIL = "{s}"',
        '__author__ = "{name} <{s}>"',
    ),
    "prose": (
        "For questions about this release, write to {s}.",
        "Please send your CV to {s} before the end of {month}.",
        "{name} ({s}) reviewed the draft.",
        "Reports can also be mailed to <{s}>; we answer within two working days.",
        "You can reach the organisers at {s} or through the website.",
        "Thanks to {name} <{s}> for the patch.",
        "If you did not request this change, contact {s} immediately.",
    ),
    "shell": (
        '$ git config --global user.email "{s}"',
        "Author: {name} <{s}>",
        '$ ssh-keygen -t ed25519 -C "{s}"',
        '$ echo "done" | mail -s "backup finished" {s}',
        "$ gpg --recipient {s} --encrypt report.pdf",
        "$ certbot certonly --webroot -w /var/www/html -d example.org -m {s} --agree-tos",
        "Signed-off-by: {name} <{s}>",
        "$ git log --author={s} --oneline | wc -l",
    ),
    "chat": (
        "ping me at {s} if the build breaks again",
        "can you add {s} to the invite?",
        "my new address is {s}, the old one is dead",
        "{s} is the one to use for invoices",
        "sent it to {s}, let me know if it bounces",
        "[{time}] {nick}: cc {s} on that thread pls",
        "{s}",
    ),
    "form": (
        "Email: {s}",
        "E-mail address: {s}",
        "Contact email *  {s}",
        "Billing email | {s}",
        "Reply-To: {s}",
        "Email address (work): {s}",
    ),
}


def gen_email(rng: random.Random) -> tuple[str, str]:
    first, last = ascii_fold(rng.choice(FIRST)).lower(), ascii_fold(rng.choice(LAST)).lower()
    local = rng.choice(
        (
            f"{first}.{last}",
            f"{first[0]}{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first}+{rng.choice(('news', 'github', 'test', 'shop'))}",
            f"{last}.{first}",
            f"{first}-{last}",
            rng.choice(ROLES),
            f"{first}{rng.randint(1970, 2005)}",
            f"{first[0]}.{last[0]}.{last}",
            f"{first.title()}.{last.title()}",
            f"{first}",
        )
    )
    domain = rng.choice(DOMAINS)
    if rng.random() < 0.05:
        domain = domain.upper()
    return f"{local}@{domain}", "address"


# ---- phone ----------------------------------------------------------------------------------

AU_FICTIONAL_MOBILES = (
    "0491 570 006",
    "0491 570 156",
    "0491 570 157",
    "0491 570 158",
    "0491 570 159",
    "0491 570 110",
    "0491 570 313",
    "0491 570 737",
    "0491 571 266",
    "0491 571 491",
    "0491 571 804",
    "0491 572 549",
    "0491 572 665",
    "0491 572 983",
    "0491 573 770",
    "0491 573 087",
    "0491 574 118",
    "0491 574 632",
    "0491 575 254",
    "0491 575 789",
    "0491 576 398",
    "0491 576 801",
    "0491 577 426",
    "0491 577 644",
    "0491 578 957",
    "0491 578 148",
    "0491 578 888",
    "0491 579 212",
    "0491 579 760",
    "0491 579 455",
)


#: Phone numbers per country (320 in all).
PHONE_PLAN = {
    "US": 30,
    "CA": 14,
    "UK": 36,
    "FR": 20,
    "DE": 20,
    "AU": 20,
    "IE": 15,
    "NL": 15,
    "ES": 15,
    "IT": 15,
    "JP": 15,
    "IN": 15,
    "BR": 15,
    "MX": 15,
    "SE": 15,
    "CH": 15,
    "PL": 15,
    "ZA": 15,
}


def gen_phone(rng: random.Random, country: str) -> tuple[str, str]:  # noqa: PLR0911, PLR0912
    """A phone number of ``country`` in its E.164 or a national format."""
    d: Callable[[int], str] = lambda n: rand_str(rng, DIGITS, n)  # noqa: E731
    nz: Callable[[], str] = lambda: rng.choice("23456789")  # noqa: E731
    if country in ("US", "CA"):
        area = rng.choice(
            ("212", "415", "312", "617", "206", "303", "512", "604", "416", "514", "800", "888")
        )
        line = f"01{d(2)}"  # 555-0100..0199 are reserved for fiction (NANPA)
        return rng.choice(
            (
                f"({area}) 555-{line}",
                f"{area}-555-{line}",
                f"{area}.555.{line}",
                f"+1 {area} 555 {line}",
                f"+1-{area}-555-{line}",
                f"+1{area}555{line}",
                f"1-{area}-555-{line}",
                f"+1 ({area}) 555-{line}",
            )
        ), f"{country}-NANP"
    if country == "UK":
        # Ofcom's drama ranges: 020 7946 0xxx, 0113/0114/0115/0116/0117/0118/0121/0131/0141/0151/0161
        # 496 0xxx,
        # 07700 900xxx (mobile), 028 9649 6xxx (Belfast)
        kind = rng.randrange(4)
        if kind == 0:
            nat, intl = f"020 7946 0{d(3)}", None
            intl = "+44 20 " + nat[4:]
        elif kind == 1:
            code = rng.choice(("113", "114", "115", "116", "117", "118", "121", "131", "141", "151", "161"))
            nat = f"0{code} 496 0{d(3)}"
            intl = f"+44 {code} 496 0{nat[-3:]}"
        elif kind == 2:
            nat = f"07700 900{d(3)}"
            intl = f"+44 7700 900{nat[-3:]}"
        else:
            nat = f"028 9649 6{d(3)}"
            intl = f"+44 28 9649 6{nat[-3:]}"
        return rng.choice((nat, nat, intl, intl.replace(" ", ""), "+44 (0)" + intl[4:])), "UK"
    if country == "FR":
        # ARCEP numbers reserved for fiction: 01 99 00 xx xx, 02 61 91, 03 53 01, 04 65 71, 05 36 49, 06 39 98
        pre = rng.choice(("1 99 00", "2 61 91", "3 53 01", "4 65 71", "5 36 49", "6 39 98"))
        tail = f"{d(2)} {d(2)}"
        nat = f"0{pre} {tail}"
        return rng.choice(
            (
                nat,
                nat.replace(" ", "."),
                f"+33 {pre} {tail}",
                f"+33 (0){pre} {tail}",
                ("+33" + pre + tail).replace(" ", ""),
            )
        ), "FR"
    if country == "DE":
        kind = rng.randrange(3)
        if kind == 0:
            area, num = rng.choice(("30", "40", "89", "69", "221")), nz() + d(rng.randint(6, 7))
        elif kind == 1:
            area, num = rng.choice(("151", "152", "160", "170", "171", "176")), nz() + d(7)
        else:
            area, num = rng.choice(("6221", "7071", "351", "511")), nz() + d(6)
        return rng.choice(
            (
                f"0{area} {num}",
                f"0{area}/{num}",
                f"+49 {area} {num}",
                f"+49 (0){area} {num}",
                f"+49{area}{num}",
                f"0{area} {num[:3]} {num[3:]}",
                f"+49 {area} {num[:4]} {num[4:]}",
            )
        ), "DE"
    if country == "AU":
        # ACMA fictitious: 0491 570 xxx mobiles (listed), 02 5550 xxxx, 03 7010 xxxx, 07 5550 xxxx,
        # 08 7010 xxxx
        if rng.random() < 0.5:
            nat = rng.choice(AU_FICTIONAL_MOBILES)
            return rng.choice(
                (nat, "+61 " + nat[1:], nat.replace(" ", ""), "+61" + nat[1:].replace(" ", ""))
            ), "AU"
        pre = rng.choice(("2 5550", "3 7010", "7 5550", "8 7010"))
        tail = d(4)
        return rng.choice((f"(0{pre[0]}) {pre[2:]} {tail}", f"0{pre} {tail}", f"+61 {pre} {tail}")), "AU"
    if country == "IE":
        if rng.random() < 0.5:
            a, n = rng.choice(("1", "21", "61", "91")), f"{nz()}{d(2)} {d(4)}"
        else:
            a, n = rng.choice(("83", "85", "86", "87", "89")), f"{nz()}{d(2)} {d(4)}"
        return rng.choice((f"0{a} {n}", f"+353 {a} {n}", f"+353 (0){a} {n}", f"(0{a}) {n}")), "IE"
    if country == "NL":
        if rng.random() < 0.5:
            return rng.choice(
                (
                    f"06-{nz()}{d(7)}",
                    f"06 {nz()}{d(7)}",
                    f"+31 6 {nz()}{d(7)}",
                    f"+316{nz()}{d(7)}",
                    f"06 {nz()}{d(3)} {d(4)}",
                )
            ), "NL"
        a = rng.choice(("20", "10", "70", "30"))
        return rng.choice(
            (f"0{a} {nz()}{d(2)} {d(4)}", f"+31 {a} {nz()}{d(2)} {d(4)}", f"0{a}-{nz()}{d(6)}")
        ), "NL"
    if country == "ES":
        first = rng.choice(("91", "93", "96", "95", "6", "7"))
        num = (first + d(9))[:9]
        return rng.choice(
            (
                f"{num[:3]} {num[3:6]} {num[6:]}",
                f"+34 {num[:3]} {num[3:6]} {num[6:]}",
                f"+34 {num[:3]} {num[3:5]} {num[5:7]} {num[7:]}",
                f"+34{num}",
            )
        ), "ES"
    if country == "IT":
        if rng.random() < 0.5:
            num = rng.choice(("06", "02", "055", "011")) + " " + d(4) + " " + d(rng.randint(3, 4))
            return rng.choice((num, f"+39 {num}")), "IT"
        num = f"3{rng.randint(20, 49)} {d(3)} {d(4)}"
        return rng.choice((num, f"+39 {num}", f"+39{num.replace(' ', '')}")), "IT"
    if country == "JP":
        if rng.random() < 0.5:
            p3 = rng.choice(("90", "80", "70"))
            return rng.choice(
                (f"0{p3}-{d(4)}-{d(4)}", f"+81 {p3}-{d(4)}-{d(4)}", f"+81 {p3} {d(4)} {d(4)}")
            ), "JP"
        return rng.choice(
            (f"03-{nz()}{d(3)}-{d(4)}", f"06-{nz()}{d(3)}-{d(4)}", f"+81 3-{nz()}{d(3)}-{d(4)}")
        ), "JP"
    if country == "IN":
        if rng.random() < 0.7:
            m = rng.choice("6789") + d(4)
            t = d(5)
            return rng.choice((f"{m} {t}", f"+91 {m} {t}", f"+91-{m}{t}", f"+91{m}{t}", f"0{m} {t}")), "IN"
        return rng.choice(
            (f"011 {nz()}{d(3)} {d(4)}", f"+91 11 {nz()}{d(3)} {d(4)}", f"022-{nz()}{d(7)}")
        ), "IN"
    if country == "BR":
        ddd = rng.choice(("11", "21", "31", "41", "51", "61", "71", "81"))
        num = f"9{d(4)}-{d(4)}" if rng.random() < 0.6 else f"{rng.choice('2345')}{d(3)}-{d(4)}"
        return rng.choice((f"({ddd}) {num}", f"+55 {ddd} {num}", f"+55 ({ddd}) {num}", f"{ddd} {num}")), "BR"
    if country == "MX":
        a = rng.choice(("55", "33", "81"))
        return rng.choice(
            (
                f"{a} {d(4)} {d(4)}",
                f"+52 {a} {d(4)} {d(4)}",
                f"+52 1 {a} {d(4)} {d(4)}",
                f"({a}) {d(4)} {d(4)}",
            )
        ), "MX"
    if country == "SE":
        if rng.random() < 0.5:
            p = rng.choice(("70", "72", "73", "76"))
            return rng.choice(
                (f"0{p}-{d(3)} {d(2)} {d(2)}", f"+46 {p} {d(3)} {d(2)} {d(2)}", f"0{p}-{d(7)}")
            ), "SE"
        return rng.choice(
            (f"08-{d(3)} {d(3)} {d(2)}", f"+46 8 {d(3)} {d(3)} {d(2)}", f"031-{d(3)} {d(2)} {d(2)}")
        ), "SE"
    if country == "CH":
        p = rng.choice(("44", "43", "31", "61", "21", "22", "76", "77", "78", "79"))
        tail = f"{nz()}{d(2)} {d(2)} {d(2)}"
        return rng.choice(
            (f"0{p} {tail}", f"+41 {p} {tail}", f"+41 (0){p} {tail}", f"+41{p}{tail.replace(' ', '')}")
        ), "CH"
    if country == "PL":
        if rng.random() < 0.5:
            num = f"{rng.choice('5678')}{d(2)} {d(3)} {d(3)}"
            return rng.choice((num, f"+48 {num}", f"+48{num.replace(' ', '')}", num.replace(" ", "-"))), "PL"
        num = f"{rng.choice(('22', '12', '61', '71', '58'))} {d(3)} {d(2)} {d(2)}"
        return rng.choice((num, f"+48 {num}")), "PL"
    # ZA
    p = rng.choice(("21", "11", "31", "82", "83", "72", "61"))
    return rng.choice(
        (f"0{p} {d(3)} {d(4)}", f"+27 {p} {d(3)} {d(4)}", f"+27{p}{d(7)}", f"(0{p}) {d(3)} {d(4)}")
    ), "ZA"


PHONE_TEMPLATES = {
    "code": (
        '    "phone": "{s}",',
        'PHONE = "{s}"',
        '<a href="tel:{s}">Call us</a>',
        'Contact(name="{name}", phone="{s}")',
        "INSERT INTO customers (name, phone) VALUES ('{name}', '{s}');",
        '  mobile: "{s}"',
        "SUPPORT_HOTLINE = '{s}'",
    ),
    "prose": (
        "Call us on {s} between 9:00 and 17:00.",
        "For urgent issues phone {s}.",
        "{name} can be reached at {s}.",
        "Bookings by telephone only: {s}.",
        "The helpline ({s}) is open at weekends.",
        "Fax your form to {s} or post it to the address below.",
    ),
    "shell": (
        '$ ./sms-send --to "{s}" --message "build failed"',
        '$ grep -n "{s}" contacts.csv',
        "42,{name},{s},active",
        '$ twilio api:core:messages:create --to "{s}" --body "deploy done"',
        "$ sqlite3 crm.db \"UPDATE contacts SET phone='{s}' WHERE id={n};\"",
    ),
    "chat": (
        "call me on {s}",
        "my number is {s}",
        "{s} is my new mobile",
        "text me at {s} when you land",
        "reach me at {s} after 6",
        "[{time}] {nick}: whatsapp {s}",
        "{s}",
        "new number: {s}",
    ),
    "form": (
        "Phone: {s}",
        "Mobile: {s}",
        "Telephone number: {s}",
        "Fax: {s}",
        "Tel. {s}",
        "Emergency contact number: {s}",
        "Phone (daytime) | {s}",
    ),
}

PHONE_CONTEXT_WORDS = re.compile(r"(?i)phone|\btel\b|mobile|\bcall\b|\bfax\b|whatsapp|\btext me\b|\bsms\b")
PHONE_CONTEXT_TEMPLATES = {
    c: tuple(t for t in ts if PHONE_CONTEXT_WORDS.search(t)) for c, ts in PHONE_TEMPLATES.items()
}


def _self_evident_phone(number: str) -> bool:
    """``+CC``, an area code in brackets, a trunk 0 followed by grouping, or NANP with separators."""
    return bool(
        re.match(r"\+|\(|0\d*[ ./-]\d|1-\d{3}-", number) or re.fullmatch(r"\d{3}([-.])\d{3}\1\d{4}", number)
    )


# ---- card -----------------------------------------------------------------------------------


#: Cards per issuer range (320 in all): (issuer, length) -> count.
CARD_PLAN = {
    ("visa", 16): 50,
    ("visa", 13): 15,
    ("visa", 19): 15,
    ("mastercard-51-55", 16): 40,
    ("mastercard-2221-2720", 16): 30,
    ("amex", 15): 40,
    ("discover-6011", 16): 20,
    ("discover-644-649", 16): 20,
    ("discover-65", 16): 15,
    ("discover-622126-622925", 16): 15,
    ("jcb", 16): 25,
    ("diners", 14): 20,
    ("unionpay", 0): 15,
}


def _card_prefix(rng: random.Random, range_name: str) -> str:
    prefixes: dict[str, Callable[[], str]] = {
        "visa": lambda: "4",
        "mastercard-51-55": lambda: str(rng.randint(51, 55)),
        "mastercard-2221-2720": lambda: str(rng.randint(2221, 2720)),
        "amex": lambda: rng.choice(("34", "37")),
        "discover-6011": lambda: "6011",
        "discover-644-649": lambda: str(rng.randint(644, 649)),
        "discover-65": lambda: "65",
        "discover-622126-622925": lambda: str(rng.randint(622126, 622925)),
        "jcb": lambda: str(rng.randint(3528, 3589)),
        "diners": lambda: rng.choice(("36", "38", "39", str(rng.randint(300, 305)))),
        "unionpay": lambda: "62" + rng.choice(("12", "14", "28", "82")),
    }
    return prefixes[range_name]()


def gen_card(rng: random.Random, range_name: str, length: int) -> tuple[str, str]:
    """A Luhn-valid number in an issuer's range and length, grouped the way that issuer prints."""
    prefix = _card_prefix(rng, range_name)
    length = length or rng.choice((16, 17, 18, 19))
    issuer = range_name.split("-", maxsplit=1)[0]
    number = luhn_complete(prefix + rand_str(rng, DIGITS, length - len(prefix) - 1))
    assert luhn_valid(number)
    styles: tuple[str, ...]
    if issuer == "amex":
        styles = (
            number,
            f"{number[:4]} {number[4:10]} {number[10:]}",
            f"{number[:4]}-{number[4:10]}-{number[10:]}",
        )
    elif length == 14:
        styles = (number, f"{number[:4]} {number[4:10]} {number[10:]}", group(number))
    elif length == 16:
        styles = (number, group(number), group(number), group(number, 4, "-"))
    else:
        styles = (number, group(number), group(number, 4, "-"))
    return rng.choice(styles), f"{range_name}-{length}"


CARD_TEMPLATES = {
    "code": (
        'card_number = "{s}"',
        '    {{"number": "{s}", "exp_month": 12, "exp_year": 2027}},',
        'charge = client.charge(card="{s}", amount=1999, currency="eur")',
        "TEST_CARD = '{s}'",
        "INSERT INTO payments (order_id, pan) VALUES ({n}, '{s}');",
    ),
    "prose": (
        "She read out the card number, {s}, and the order went through.",
        "The disputed charge was made with card {s} on {date}.",
        "Use {s} when the checkout asks for a card.",
    ),
    "shell": (
        '$ curl https://payments.example.com/v1/tokens -d "card[number]={s}" -d "card[exp_month]=04"',
        "$ echo {s} | ./luhn-check",
        '$ grep -c "{s}" /var/log/app/checkout.log',
        "{n}\t{s}\tdeclined",
    ),
    "chat": (
        "card is {s} exp 09/27",
        "use {s} for the checkout",
        "here's the company card: {s}",
        "{s}",
        "[{time}] {nick}: the number on the card is {s}",
    ),
    "form": (
        "Card number: {s}",
        "PAN: {s}",
        "Credit card: {s}",
        "Card no. {s}   Expiry: 08/27",
        "Card number * | {s}",
        "Debit card: {s}",
    ),
}

# ---- IBAN -----------------------------------------------------------------------------------

#: BBAN structures from the SWIFT IBAN registry: n digits, a upper-case letters, c alphanumerics.
IBAN_FORMATS = {
    "AD": "4n4n12c",
    "AE": "3n16n",
    "AT": "5n11n",
    "BE": "3n7n2n",
    "BG": "4a4n2n8c",
    "BR": "8n5n10n1a1c",
    "CH": "5n12c",
    "CY": "3n5n16c",
    "CZ": "4n6n10n",
    "DE": "8n10n",
    "DK": "4n9n1n",
    "EE": "2n2n11n1n",
    "ES": "4n4n1n1n10n",
    "FI": "3n11n",
    "FR": "5n5n11c2n",
    "GB": "4a6n8n",
    "GR": "3n4n16c",
    "HR": "7n10n",
    "HU": "3n4n1n15n1n",
    "IE": "4a6n8n",
    "IS": "4n2n6n10n",
    "IT": "1a5n5n12c",
    "LI": "5n12c",
    "LT": "5n11n",
    "LU": "3n13c",
    "LV": "4a13c",
    "MT": "4a5n18c",
    "NL": "4a10n",
    "NO": "4n6n1n",
    "PL": "8n16n",
    "PT": "4n4n11n2n",
    "RO": "4a16c",
    "SA": "2n18c",
    "SE": "3n16n1n",
    "SI": "5n8n2n",
    "SK": "4n6n10n",
    "TR": "5n1n16c",
    "MU": "4a2n2n12n3n3a",
    "QA": "4a21c",
    "UA": "6n19c",
}
IBAN_LENGTH = {
    "AD": 24,
    "AE": 23,
    "AT": 20,
    "BE": 16,
    "BG": 22,
    "BR": 29,
    "CH": 21,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DK": 18,
    "EE": 20,
    "ES": 24,
    "FI": 18,
    "FR": 27,
    "GB": 22,
    "GR": 27,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IS": 26,
    "IT": 27,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "MT": 31,
    "NL": 18,
    "NO": 15,
    "PL": 28,
    "PT": 25,
    "RO": 24,
    "SA": 24,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "TR": 26,
    "MU": 30,
    "QA": 29,
    "UA": 29,
}


def rand_iban(rng: random.Random, country: str | None = None) -> str:
    country = country or rng.choice(sorted(IBAN_FORMATS))
    bban = ""
    for count, kind in re.findall(r"(\d+)([nac])", IBAN_FORMATS[country]):
        alphabet = {"n": DIGITS, "a": UPPER, "c": UPPER_ALNUM if rng.random() < 0.3 else DIGITS}[kind]
        bban += rand_str(rng, alphabet, int(count))
    iban = make_iban(country, bban)
    assert len(iban) == IBAN_LENGTH[country], (country, iban)
    assert iban_remainder(iban) == 1
    return iban


def gen_iban(rng: random.Random) -> tuple[str, str]:
    iban = rand_iban(rng)
    return rng.choice((iban, group(iban), group(iban))), iban[:2]


IBAN_TEMPLATES = {
    "code": ('iban = "{s}"', '    "iban": "{s}",', "Creditor(name=\"{name}\", iban='{s}')", "  iban: {s}"),
    "prose": (
        "Please transfer the deposit to {s} (account holder: {name}) by 1 {month}.",
        "Refunds are paid to the account {s} within ten days.",
        "The membership fee goes to IBAN {s}.",
    ),
    "shell": (
        "$ ./sepa-export --creditor-iban {s} --amount 120.00",
        '$ grep "{s}" payouts-{date}.csv',
        "{n};{name};{s};EUR",
    ),
    "chat": (
        "send it to {s}",
        "my IBAN is {s}",
        "{s}",
        "the new account is {s}, old one closed",
        "iban: {s} thx",
    ),
    "form": (
        "IBAN: {s}",
        "Account (IBAN): {s}",
        "IBAN | {s}",
        "Bank account (IBAN) * {s}",
        "Payee IBAN: {s}",
    ),
}

# ---- SSN ------------------------------------------------------------------------------------


def gen_ssn(rng: random.Random) -> tuple[str, str]:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    ssn = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
    return rng.choice((ssn, ssn, ssn, ssn.replace("-", " "))), "dashed"


def gen_ssn_compact(rng: random.Random) -> tuple[str, str]:
    s, _ = gen_ssn(rng)
    return s.replace("-", "").replace(" ", ""), "compact"


SSN_TEMPLATES = {
    "code": ('ssn = "{s}"', '    "ssn": "{s}",', "Employee(name=\"{name}\", ssn='{s}')"),
    "prose": (
        "The applicant's Social Security number, {s}, was verified on {date}.",
        "SSN {s} appears twice in the file.",
    ),
    "shell": ('$ grep "{s}" applicants.csv', "{n},{name},{s}"),
    "chat": ("my ssn is {s}", "ssn for the form: {s}", "[{time}] {nick}: SSN {s}"),
    "form": ("SSN: {s}", "Social Security Number: {s}", "Social security no. | {s}", "SSN / ITIN: {s}"),
}

# ---- URL credentials ------------------------------------------------------------------------


def url_password(rng: random.Random) -> str:
    return rng.choice(
        (
            rand_str(rng, ALNUM, rng.randint(10, 24)),
            f"{rng.choice(WORDS).title()}{rng.randint(10, 9999)}{rng.choice('!*-_.~')}",
            f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(10, 99)}",
            rand_str(rng, ALNUM, 8) + "%40" + rand_str(rng, ALNUM, 6),
            rand_str(rng, HEX, 32),
        )
    )


URL_TEMPLATES = {
    "code": (
        'DATABASE_URL = "postgres://{user}:{s}@{host}:5432/{db}"',
        'r = redis.from_url("redis://:{s}@{host}:6379/0")',
        'SQLALCHEMY_DATABASE_URI = "mysql+pymysql://{user}:{s}@{host}/{db}"',
        'broker_url = "amqp://{user}:{s}@{host}:5672//"',
        "MONGO_URI=mongodb+srv://{user}:{s}@cluster0.{org}.mongodb.net/{db}?retryWrites=true",
        '  url: "postgresql://{user}:{s}@{host}/{db}?sslmode=require"',
    ),
    "shell": (
        "$ git clone https://{user}:{s}@git.{org}.example/{repo}.git",
        "$ curl -O ftp://{user}:{s}@files.{org}.example/pub/release.tar.gz",
        "$ export DATABASE_URL=postgresql://{user}:{s}@{host}/{db}",
        "$ pip install --index-url https://{user}:{s}@pypi.{org}.example/simple/ internal-lib",
        "$ psql 'postgres://{user}:{s}@{host}:5432/{db}'",
        "$ export https_proxy=http://{user}:{s}@proxy.{org}.example:3128",
    ),
    "chat": (
        "try postgres://{user}:{s}@{host}/{db}",
        "the proxy is http://{user}:{s}@proxy.{org}.example:3128",
        "clone from https://{user}:{s}@git.{org}.example/{repo}.git for now",
    ),
    "form": (
        "Connection string: postgres://{user}:{s}@{host}:5432/{db}",
        "Proxy URL: http://{user}:{s}@proxy.{org}.example:8080",
        "Webhook URL: https://{user}:{s}@hooks.{org}.example/ingest",
        "Repository URL | https://{user}:{s}@git.{org}.example/{repo}.git",
    ),
    "prose": (
        "Set the mirror to https://{user}:{s}@mirror.{org}.example/debian and run apt update.",
        "The nightly job reads from sftp://{user}:{s}@{host}/exports/.",
    ),
}

# ---- tokens ---------------------------------------------------------------------------------


def _jwt(rng: random.Random) -> str:
    alg = rng.choice(("HS256", "RS256", "ES256", "HS512"))
    header = {"alg": alg, "typ": "JWT"}
    if alg != "HS256" and rng.random() < 0.6:
        header["kid"] = hexs(rng, 16)
    now = rng.randint(1_600_000_000, 1_800_000_000)
    payload: dict[str, object] = {"sub": rng.choice((str(rng.randint(1, 10**9)), uuid4(rng))), "iat": now}
    if rng.random() < 0.7:
        payload["exp"] = now + rng.choice((300, 3600, 86400))
    if rng.random() < 0.5:
        payload["scope"] = rng.choice(("read write", "openid profile", "admin", "api:read"))
    if rng.random() < 0.4:
        payload["iss"] = f"https://auth.{rng.choice(('acme', 'globex', 'contoso'))}.example"
    sig_len = {"HS256": 32, "RS256": 256, "ES256": 64, "HS512": 64}[alg]
    enc: Callable[[object], str] = lambda obj: b64url(json.dumps(obj, separators=(",", ":")).encode())  # noqa: E731
    return f"{enc(header)}.{enc(payload)}.{b64url(rng.randbytes(sig_len))}"


#: How many of each token shape the corpus holds (320 in all).
TOKEN_PLAN = {
    "aws_access_key_id": 35,
    "aws_secret_access_key": 35,
    "google_api_key": 25,
    "github_ghp": 20,
    "github_gho": 10,
    "github_ghs": 10,
    "github_ghu": 5,
    "github_ghr": 5,
    "github_pat": 20,
    "gitlab_pat": 25,
    "slack_bot": 15,
    "slack_user": 10,
    "slack_webhook": 15,
    "stripe_sk_live": 15,
    "stripe_sk_test": 10,
    "stripe_rk_live": 10,
    "openai_legacy": 12,
    "openai_project": 18,
    "jwt": 25,
}


def gen_token(rng: random.Random, kind: str) -> tuple[str, str]:  # noqa: PLR0911, PLR0912
    if kind == "aws_access_key_id":
        return rng.choice(("AKIA", "AKIA", "AKIA", "ASIA")) + rand_str(
            rng, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16
        ), kind
    if kind == "aws_secret_access_key":
        return rand_str(rng, B64, 40), kind
    if kind == "google_api_key":
        return ("AIzaSy" + rand_str(rng, B64URL, 33)) if rng.random() < 0.7 else (
            "AIza" + rand_str(rng, B64URL, 35)
        ), kind
    if kind.startswith("github_gh"):
        return f"{kind[-3:]}_" + rand_str(rng, ALNUM, 36), kind
    if kind == "github_pat":
        return "github_pat_" + rand_str(rng, ALNUM, 22) + "_" + rand_str(rng, ALNUM, 59), kind
    if kind == "gitlab_pat":
        return "glpat-" + rand_str(rng, B64URL, 20), kind
    if kind == "slack_bot":
        return (
            f"xoxb-{rand_str(rng, DIGITS, rng.randint(10, 13))}-{rand_str(rng, DIGITS, rng.randint(10, 13))}-"
            + rand_str(rng, ALNUM, 24),
            kind,
        )
    if kind == "slack_user":
        return (
            f"xoxp-{rand_str(rng, DIGITS, 12)}-{rand_str(rng, DIGITS, 12)}-{rand_str(rng, DIGITS, 13)}-"
            + hexs(rng, 32),
            kind,
        )
    if kind == "slack_webhook":
        return (
            f"T{rand_str(rng, UPPER_ALNUM, rng.randint(8, 10))}/"
            f"B{rand_str(rng, UPPER_ALNUM, rng.randint(8, 10))}/" + rand_str(rng, ALNUM, 24),
            kind,
        )
    if kind.startswith("stripe_"):
        prefix = {"stripe_sk_live": "sk_live_", "stripe_sk_test": "sk_test_", "stripe_rk_live": "rk_live_"}[
            kind
        ]
        return prefix + rand_str(rng, ALNUM, rng.choice((24, 24, 34, 99))), kind
    if kind == "openai_legacy":
        return "sk-" + rand_str(rng, ALNUM, 20) + "T3BlbkFJ" + rand_str(rng, ALNUM, 20), kind
    if kind == "openai_project":
        if rng.random() < 0.5:
            return "sk-proj-" + rand_str(rng, B64URL, 74) + "T3BlbkFJ" + rand_str(rng, B64URL, 74), kind
        return "sk-proj-" + rand_str(rng, ALNUM, 48), kind
    return _jwt(rng), kind


TOKEN_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "aws_access_key_id": {
        "code": (
            "aws_access_key_id = {s}",
            '    "AccessKeyId": "{s}",',
            "AWS_ACCESS_KEY_ID={s}",
            'session = boto3.Session(aws_access_key_id="{s}")',
        ),
        "shell": ("$ export AWS_ACCESS_KEY_ID={s}", "$ aws configure set aws_access_key_id {s}"),
        "chat": ("key id is {s}", "{s} is the old key, deactivate it"),
        "form": ("Access key ID: {s}",),
        "prose": ("The access key {s} was rotated on {date}.",),
    },
    "aws_secret_access_key": {
        "code": (
            "aws_secret_access_key = {s}",
            '    "SecretAccessKey": "{s}",',
            "AWS_SECRET_ACCESS_KEY={s}",
            'session = boto3.Session(aws_secret_access_key="{s}")',
        ),
        "shell": ("$ export AWS_SECRET_ACCESS_KEY={s}", "$ aws configure set aws_secret_access_key {s}"),
        "chat": ("secret access key: {s}", "aws secret is {s}"),
        "form": ("Secret access key: {s}",),
        "prose": ("The leaked secret access key was {s}; it has been deactivated.",),
    },
    "google_api_key": {
        "code": (
            "GOOGLE_API_KEY={s}",
            '  apiKey: "{s}",',
            '<script src="https://maps.googleapis.com/maps/api/js?key={s}&callback=initMap"></script>',
        ),
        "shell": ('$ curl "https://maps.googleapis.com/maps/api/geocode/json?address=Berlin&key={s}"',),
        "chat": ("maps key: {s}", "{s}"),
        "form": ("API key: {s}",),
        "prose": ("The maps widget loads with the key {s}, restricted to our domain.",),
    },
    "github": {
        "code": ("GITHUB_TOKEN={s}", "  token: {s}", 'g = Github("{s}")'),
        "shell": (
            "$ echo {s} | gh auth login --with-token",
            '$ curl -H "Authorization: token {s}" https://api.github.com/user',
            "$ git remote set-url origin https://{s}@github.com/{org}/{repo}.git",
        ),
        "chat": ("here's my PAT {s}", "{s} (expires in 30 days)"),
        "form": ("Personal access token: {s}",),
        "prose": ("The workflow authenticates with {s}, a token scoped to one repository.",),
    },
    "gitlab_pat": {
        "code": ("GITLAB_TOKEN={s}", '  private_token: "{s}"'),
        "shell": (
            '$ curl --header "PRIVATE-TOKEN: {s}" "https://gitlab.example.com/api/v4/projects"',
            "$ glab auth login --token {s}",
        ),
        "chat": ("gitlab token {s}", "{s}"),
        "form": ("Access token: {s}",),
        "prose": ("Runners register with the token {s} until it is revoked.",),
    },
    "slack_token": {
        "code": ("SLACK_BOT_TOKEN={s}", 'client = WebClient(token="{s}")'),
        "shell": ('$ curl -H "Authorization: Bearer {s}" https://slack.com/api/auth.test',),
        "chat": ("bot token is {s}", "{s}"),
        "form": ("Bot User OAuth Token: {s}",),
        "prose": ("The bot posts as {s} in the release channel.",),
    },
    "slack_webhook": {
        "code": (
            "SLACK_WEBHOOK_URL=https://hooks.slack.com/services/{s}",
            '  webhook: "https://hooks.slack.com/services/{s}"',
        ),
        "shell": ('$ curl -X POST --data \'{{"text":"deploy done"}}\' https://hooks.slack.com/services/{s}',),
        "chat": ("webhook: https://hooks.slack.com/services/{s}",),
        "form": ("Webhook URL: https://hooks.slack.com/services/{s}",),
    },
    "stripe": {
        "code": ('stripe.api_key = "{s}"', "STRIPE_SECRET_KEY={s}"),
        "shell": ("$ curl https://api.stripe.com/v1/charges -u {s}:", "$ stripe login --api-key {s}"),
        "chat": ("stripe key {s}", "{s}"),
        "form": ("Secret key: {s}",),
        "prose": ("Charges were created with the key {s} before it was rolled.",),
    },
    "openai": {
        "code": ("OPENAI_API_KEY={s}", 'client = OpenAI(api_key="{s}")'),
        "shell": (
            '$ curl https://api.openai.com/v1/models -H "Authorization: Bearer {s}"',
            "$ export OPENAI_API_KEY={s}",
        ),
        "chat": ("use my key {s} for the demo", "{s}"),
        "form": ("API key: {s}",),
        "prose": ("The notebook calls the model with {s}, billed to the research budget.",),
    },
    "jwt": {
        "code": ("Authorization: Bearer {s}", 'token = "{s}"', "Cookie: session={s}"),
        "shell": ('$ curl -H "Authorization: Bearer {s}" https://api.{org}.example/v1/me',),
        "chat": ("this JWT is expired? {s}", "{s}"),
        "form": ("ID token: {s}",),
        "prose": ("Paste the token ({s}) into the debugger to read its claims.",),
    },
}
_TOKEN_GROUP = {
    "github_ghp": "github",
    "github_gho": "github",
    "github_ghs": "github",
    "github_ghu": "github",
    "github_ghr": "github",
    "github_pat": "github",
    "slack_bot": "slack_token",
    "slack_user": "slack_token",
    "stripe_sk_live": "stripe",
    "stripe_sk_test": "stripe",
    "stripe_rk_live": "stripe",
    "openai_legacy": "openai",
    "openai_project": "openai",
}

# ---- prompt secrets -------------------------------------------------------------------------


def prompt_value(rng: random.Random) -> str:
    return rng.choice(
        (
            f"{rng.choice(WORDS).title()}{rng.randint(1, 9999)}{rng.choice('!#$%&*?')}",
            rand_str(rng, ALNUM, rng.randint(12, 24)),
            f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(2, 99)}",
            hexs(rng, 32),
            f"{rng.choice(WORDS)}{rng.randint(10, 99)}",
            rand_str(rng, ALNUM + "!#%^*_-", rng.randint(14, 20)),
        )
    )


PROMPT_TEMPLATES = {
    "shell": (
        "$ mysql -u {user} -p{s} {db}",
        "$ export DB_PASSWORD={s}",
        "$ export ADMIN_PASSWORD='{s}'",
        '$ export JWT_SECRET="{s}"',
        "$ PGPASSWORD={s} psql -h {host} -U {user} {db}",
        "$ ./deploy.sh --password {s}",
        "$ ./manage.py createsuperuser --username admin --password={s}",
        "$ curl -u {user}:{s} https://{host}/api/v1/status",
        "$ sshpass -p '{s}' ssh {user}@{shorthost}",
        "$ docker login -u {user} -p {s} registry.example.com",
        "$ htpasswd -b -c .htpasswd {user} {s}",
        "$ redis-cli -a {s} ping",
        "$ mongosh --username {user} --password {s} --authenticationDatabase admin",
        '$ curl -H "Authorization: Bearer {s}" https://{host}/v2/items',
        "$ openssl pkcs12 -export -in cert.pem -inkey key.pem -out bundle.p12 -passout pass:{s}",
    ),
    "chat": (
        "the wifi password is {s}",
        "wifi: Office-5G / pw: {s}",
        "password for the staging db is {s}",
        "use {s} as the password, I'll rotate it tomorrow",
        "root pw is {s} btw",
        "the new admin password: {s}",
        "login is {user} and the password is {s}",
        "[{time}] {nick}: pass is {s}",
        "api key for the sandbox: {s}",
    ),
    "form": (
        "Password: {s}",
        "Confirm password: {s}",
        "New password: {s}",
        "Passphrase: {s}",
        "Client secret: {s}",
        "Wi-Fi password: {s}",
        "Password | {s}",
        "Secret key: {s}",
    ),
    "code": (
        'api_key = "{s}"',
        '    password="{s}",',
        '    "password": "{s}",',
        "client_secret: {s}",
        'SECRET_KEY = "{s}"',
        "DB_PASSWORD={s}",
        'conn = psycopg2.connect(host="{host}", user="{user}", password="{s}")',
        'headers = {{"Authorization": "Bearer {s}"}}',
        'app.config["SECRET_KEY"] = "{s}"',
        '<add key="ApiKey" value="{s}" />',
        "spring.datasource.password={s}",
    ),
    "prose": (
        "The default password for the appliance is {s}; change it on first login.",
        "Log in as {user} with the password {s}.",
    ),
}

# ---- private keys ---------------------------------------------------------------------------


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    return bytes([0x82]) + n.to_bytes(2, "big")


def _wrap(body: str, width: int) -> list[str]:
    return [body[i : i + width] for i in range(0, len(body), width)]


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def pem_key(rng: random.Random, kind: str) -> list[str]:  # noqa: PLR0912
    """The lines of a PEM private key: the real DER/openssh framing with random key material."""
    if kind == "rsa":
        bits = rng.choice((2048, 2048, 3072, 4096))
        total = {2048: 1190, 3072: 1766, 4096: 2348}[bits] + rng.randint(0, 4)
        n_len = bits // 8 + 1
        head = b"\x02\x01\x00\x02" + _der_len(n_len) + b"\x00"
        der = b"\x30" + _der_len(total - 4) + head + rng.randbytes(total - 4 - len(head))
        lines = ["-----BEGIN RSA PRIVATE KEY-----"]
        if rng.random() < 0.25:
            lines += ["Proc-Type: 4,ENCRYPTED", f"DEK-Info: AES-128-CBC,{hexs(rng, 32).upper()}", ""]
        return [*lines, *_wrap(base64.b64encode(der).decode(), 64), "-----END RSA PRIVATE KEY-----"]
    if kind == "ec":
        if rng.random() < 0.7:  # P-256 SEC1
            der = (
                bytes.fromhex("30770201010420")
                + rng.randbytes(32)
                + bytes.fromhex("a00a06082a8648ce3d030107a144034200")
                + b"\x04"
                + rng.randbytes(64)
            )
        else:  # P-384
            der = (
                bytes.fromhex("3081a40201010430")
                + rng.randbytes(48)
                + bytes.fromhex("a00706052b81040022a164036200")
                + b"\x04"
                + rng.randbytes(96)
            )
        return [
            "-----BEGIN EC PRIVATE KEY-----",
            *_wrap(base64.b64encode(der).decode(), 64),
            "-----END EC PRIVATE KEY-----",
        ]
    if kind == "pkcs8":
        choice = rng.randrange(3)
        if choice == 0:  # RSA 2048
            der = bytes.fromhex(
                "308204bd020100300d06092a864886f70d0101010500048204a7308204a30201000282010100"
            ) + rng.randbytes(1190)
        elif choice == 1:  # P-256
            der = (
                bytes.fromhex("308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b0201010420")
                + rng.randbytes(32)
                + bytes.fromhex("a144034200")
                + b"\x04"
                + rng.randbytes(64)
            )
        else:  # Ed25519: one 64-character line
            der = bytes.fromhex("302e020100300506032b657004220420") + rng.randbytes(32)
        return [
            "-----BEGIN PRIVATE KEY-----",
            *_wrap(base64.b64encode(der).decode(), 64),
            "-----END PRIVATE KEY-----",
        ]
    if kind == "encrypted":
        size = rng.choice((1298, 1298, 1874, 250))
        der = (
            b"\x30\x82"
            + size.to_bytes(2, "big")
            + bytes.fromhex("304e06092a864886f70d01050d3041302906092a864886f70d01050c301c0408")
            + rng.randbytes(8)
            + bytes.fromhex("020208003014")
            + rng.randbytes(size - 60)
        )
        return [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            *_wrap(base64.b64encode(der).decode(), 64),
            "-----END ENCRYPTED PRIVATE KEY-----",
        ]
    # openssh-key-v1 (PROTOCOL.key): ed25519 or rsa, optionally bcrypt-encrypted
    encrypted = rng.random() < 0.3
    if rng.random() < 0.6:
        pub = _ssh_string(b"ssh-ed25519") + _ssh_string(rng.randbytes(32))
        private = rng.randbytes(rng.choice((136, 144, 152)))
    else:
        pub = (
            _ssh_string(b"ssh-rsa") + _ssh_string(b"\x01\x00\x01") + _ssh_string(b"\x00" + rng.randbytes(384))
        )
        private = rng.randbytes(rng.choice((1648, 1656)))
    if encrypted:
        header = (
            _ssh_string(b"aes256-ctr")
            + _ssh_string(b"bcrypt")
            + _ssh_string(_ssh_string(rng.randbytes(16)) + struct.pack(">I", 16))
        )
    else:
        header = _ssh_string(b"none") + _ssh_string(b"none") + _ssh_string(b"")
    blob = b"openssh-key-v1\x00" + header + struct.pack(">I", 1) + _ssh_string(pub) + _ssh_string(private)
    return [
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        *_wrap(base64.b64encode(blob).decode(), 70),
        "-----END OPENSSH PRIVATE KEY-----",
    ]


def gen_private_key(rng: random.Random, kind: str, style: str) -> tuple[str, str, str]:
    """(category, text, secret) for one key in one setting."""
    lines = pem_key(rng, kind)
    if style == "json":  # a service-account file: the PEM on one line with \n escapes
        secret = "\\n".join(lines)
        text = "\n".join(
            (
                "{",
                '  "type": "service_account",',
                f'  "project_id": "demo-{rng.choice(WORDS)}-{rng.randint(100000, 999999)}",',
                f'  "private_key": "{secret}\\n",',
                '  "token_uri": "https://oauth2.googleapis.com/token"',
                "}",
            )
        )
        return "code", text, secret
    if style == "yaml":
        indent = " " * rng.choice((4, 6, 8))
        block = "\n".join(indent + s if s else s for s in lines)
        secret = block.lstrip(" ")
        text = "\n".join(
            (
                "apiVersion: v1",
                "kind: Secret",
                "stringData:",
                f"  tls.key: |\n{block}",
                "type: kubernetes.io/tls",
            )
        )
        return "code", text, secret
    secret = "\n".join(lines)
    if style == "python":
        var = rng.choice(("TEST_KEY", "PRIVATE_KEY", "SIGNING_KEY", "_KEY_PEM"))
        text = f'{var} = """\\\n{secret}\n"""\nkey = load_pem_private_key({var}.encode(), password=None)'
        return "code", text, secret
    if style == "shell":
        path = rng.choice(
            (
                "~/.ssh/id_rsa",
                "~/.ssh/id_ed25519",
                "deploy/key.pem",
                "/etc/ssl/private/server.key",
                "secrets/signing.pem",
            )
        )
        text = f"$ cat {path}\n{secret}\n$ chmod 600 {path}"
        return "shell", text, secret
    if style == "chat":
        opening = f"[{clock(rng)}] {rng.choice(CHAT_NAMES)}: here's the deploy key, don't share it"
        text = f"{opening}\n{secret}\n[{clock(rng)}] {rng.choice(CHAT_NAMES)}: thx"
        return "chat", text, secret
    text = f"Please find the key below.\n\n{secret}\n\nRegards,\n{rng.choice(FIRST)}"
    return "prose", text, secret


PRIVATE_KEY_PLAN = (
    [
        ("rsa", s)
        for s in (
            "shell",
            "python",
            "chat",
            "prose",
            "shell",
            "yaml",
            "python",
            "shell",
            "chat",
            "shell",
            "python",
            "shell",
            "chat",
            "prose",
        )
    ]
    + [
        ("ec", s)
        for s in ("shell", "python", "yaml", "chat", "shell", "python", "yaml", "shell", "prose", "chat")
    ]
    + [
        ("openssh", s)
        for s in (
            "shell",
            "shell",
            "shell",
            "chat",
            "python",
            "shell",
            "chat",
            "prose",
            "shell",
            "python",
            "shell",
            "chat",
            "shell",
            "yaml",
        )
    ]
    + [("encrypted", s) for s in ("shell", "python", "chat", "yaml", "shell", "prose", "python", "shell")]
    + [
        ("pkcs8", s)
        for s in (
            "json",
            "json",
            "json",
            "json",
            "json",
            "shell",
            "python",
            "yaml",
            "chat",
            "shell",
            "prose",
            "python",
            "json",
            "shell",
        )
    ]
)


def make_positives(rng: random.Random) -> list[dict[str, str]]:
    samples: list[Sample] = []

    def simple(
        family: str,
        count: int,
        gen: Callable[[random.Random], tuple[str, str]],
        templates: dict[str, tuple[str, ...]],
    ) -> None:
        for _ in range(count):
            secret, kind = gen(rng)
            category, template = pick_template(rng, templates)
            samples.append(Sample(family, category, kind, fill(rng, template, secret), secret))

    simple("email", POSITIVE_COUNTS["email"], gen_email, EMAIL_TEMPLATES)
    countries = [country for country, n in PHONE_PLAN.items() for _ in range(n)]
    assert len(countries) == POSITIVE_COUNTS["phone"]
    rng.shuffle(countries)
    for country in countries:
        secret, kind = gen_phone(rng, country)
        # a number that does not announce itself (+CC, a trunk 0, brackets, NANP separators) is
        # labelled a phone number only next to a word that says so
        templates = PHONE_TEMPLATES if _self_evident_phone(secret) else PHONE_CONTEXT_TEMPLATES
        category, template = pick_template(rng, templates)
        samples.append(Sample("phone", category, kind, fill(rng, template, secret), secret))
    ranges = [key for key, n in CARD_PLAN.items() for _ in range(n)]
    assert len(ranges) == POSITIVE_COUNTS["card"]
    rng.shuffle(ranges)
    for range_name, length in ranges:
        secret, kind = gen_card(rng, range_name, length)
        category, template = pick_template(rng, CARD_TEMPLATES)
        samples.append(Sample("card", category, kind, fill(rng, template, secret), secret))
    simple("iban", POSITIVE_COUNTS["iban"], gen_iban, IBAN_TEMPLATES)
    simple("ssn", POSITIVE_COUNTS["ssn"] * 4 // 5, gen_ssn, SSN_TEMPLATES)
    # nine digits with no separators are an SSN only next to the words that say so
    simple(
        "ssn",
        POSITIVE_COUNTS["ssn"] // 5,
        gen_ssn_compact,
        {
            "form": ("SSN: {s}", "Social Security Number: {s}"),
            "chat": ("my ssn is {s}",),
            "code": ('    "ssn": "{s}",',),
        },
    )
    simple(
        "url_credentials",
        POSITIVE_COUNTS["url_credentials"],
        lambda r: (url_password(r), "password"),
        URL_TEMPLATES,
    )
    token_kinds = [kind for kind, n in TOKEN_PLAN.items() for _ in range(n)]
    assert len(token_kinds) == POSITIVE_COUNTS["token"]
    rng.shuffle(token_kinds)
    for kind in token_kinds:
        secret, _ = gen_token(rng, kind)
        category, template = pick_template(rng, TOKEN_TEMPLATES[_TOKEN_GROUP.get(kind, kind)])
        samples.append(Sample("token", category, kind, fill(rng, template, secret), secret))
    assert len(PRIVATE_KEY_PLAN) == POSITIVE_COUNTS["private_key"]
    for kind, style in PRIVATE_KEY_PLAN:
        category, text, secret = gen_private_key(rng, kind, style)
        samples.append(Sample("private_key", category, f"{kind}-{style}", text, secret))
    simple(
        "prompt_secret",
        POSITIVE_COUNTS["prompt_secret"],
        lambda r: (prompt_value(r), "typed"),
        PROMPT_TEMPLATES,
    )

    out = []
    counters: collections.Counter[str] = collections.Counter()
    for s in samples:
        assert s.secret in s.text, s
        assert "\n" not in s.text or s.family == "private_key", s
        assert s.category in CATEGORIES, s
        counters[s.family] += 1
        out.append(
            {
                "id": f"{s.family}-{counters[s.family]:04d}",
                "category": s.category,
                "family": s.family,
                "kind": s.kind,
                "text": s.text,
                "secret": s.secret,
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def generated_parts(seed: int = SEED) -> dict[str, object]:
    """The seed-only parts: shell, chat and form negatives and the positives."""
    shell = make_shell(random.Random(f"{seed}/shell"))  # noqa: S311 - test data, not secrets
    chat = make_chat(random.Random(f"{seed}/chat"))  # noqa: S311
    forms, controls = make_forms(random.Random(f"{seed}/form"))  # noqa: S311
    positives = make_positives(random.Random(f"{seed}/positives"))  # noqa: S311
    return {"shell": shell, "chat": chat, "form": forms, "controls": controls, "positives": positives}


def positives_jsonl(positives: Iterable[dict[str, str]]) -> str:
    return "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in positives)


def negatives_text(lines: Iterable[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _explain(name: str, sampled: Sampled) -> Iterator[str]:
    for rule, source, line in sampled.dropped_lines:
        shown = "<an e-mail address: not shown>" if rule == "email" else line.strip()[:150]
        yield f"{name}\t{rule}\t{source}\t{shown}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--explain", action="store_true", help="print the real lines the screen dropped")
    args = parser.parse_args(argv)

    code = sample_code(random.Random(f"{SEED}/code"))  # noqa: S311
    prose = sample_prose(random.Random(f"{SEED}/prose"))  # noqa: S311
    parts = generated_parts()
    NEGATIVES.mkdir(parents=True, exist_ok=True)
    lines_by_category: dict[str, list[str]] = {
        "code": code.lines,
        "prose": prose.lines,
        "shell": parts["shell"].lines,  # type: ignore[attr-defined]
        "chat": parts["chat"].lines,  # type: ignore[attr-defined]
        "form": parts["form"].lines,  # type: ignore[attr-defined]
    }
    for category, lines in lines_by_category.items():
        (NEGATIVES / f"{category}.txt").write_text(negatives_text(lines), encoding="utf-8")
    positives: list[dict[str, str]] = parts["positives"]  # type: ignore[assignment]
    POSITIVES.write_text(positives_jsonl(positives), encoding="utf-8")
    (CORPUS / "sources.txt").write_text(
        "# Where the real negatives came from: file:first-last line numbers (lines kept) [licence]\n"
        + "".join(f"code\t{s}\n" for s in code.sources)
        + "".join(f"prose\t{s}\n" for s in prose.sources),
        encoding="utf-8",
    )
    manifest = {
        "seed": SEED,
        "python": sys.version.split()[0],
        "negatives": {c: len(v) for c, v in lines_by_category.items()},
        "form_checksum_controls": parts["controls"],
        "screened_out_real_lines": {
            "code": dict(sorted(code.dropped.items())),
            "prose": dict(sorted(prose.dropped.items())),
        },
        "regenerated_generated_lines": {
            c: dict(sorted(parts[c].regenerated.items()))  # type: ignore[attr-defined]
            for c in ("shell", "chat", "form")
        },
        "positives": dict(sorted(collections.Counter(p["family"] for p in positives).items())),
        "positives_by_category": {
            fam: dict(
                sorted(collections.Counter(p["category"] for p in positives if p["family"] == fam).items())
            )
            for fam in POSITIVE_COUNTS
        },
        "sha256": {
            str(path.relative_to(CORPUS)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted([*NEGATIVES.glob("*.txt"), POSITIVES])
        },
    }
    (CORPUS / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(
        json.dumps({k: manifest[k] for k in ("negatives", "screened_out_real_lines", "positives")}, indent=2)
    )
    if args.explain:
        for row in [*_explain("code", code), *_explain("prose", prose)]:
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
