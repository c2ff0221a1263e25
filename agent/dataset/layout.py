"""The names of a dataset's DEST (docs/dataset.md: DEST layout, Object names).

Pure: every DEST-relative path a writer uses is built here, from literals, decimal version numbers, the
build's UTC date and hex digests, and checked with :func:`agent.dataset.dest.check_key`. The version
manifest and ``CURRENT`` are :mod:`agent.dataset.manifest`; reading DEST, publishing and garbage
collection :mod:`agent.dataset.versions`; the lock :mod:`agent.dataset.lock`.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterable

from agent.dataset.dest import DestError, check_key

FORMAT = "optin-dataset/1"
#: The Parquet tables of a part (docs/dataset.md, Parquet tables), and the ledger's own folder.
PART_TABLES = ("sessions", "steps", "events", "frames", "tasks")
TABLES = (*PART_TABLES, "ledger")
#: The folders garbage collection looks in (docs/dataset.md, Garbage collection and retention).
GC_PREFIXES = ("versions/", "shards/", "tables/", "register/", "cards/")
CURRENT_KEY = "CURRENT"
LOCK_KEY = "LOCK"
MAX_CURRENT = 4 * 1024
MAX_MANIFEST = 256 * 1024 * 1024
#: The mutable copies at DEST's top (never garbage collected).
TOP_WIDS = "wids.json"

HEX32 = re.compile(r"[0-9a-f]{32}", re.ASCII)
HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_DAY = re.compile(r"(?:ingest_date=)?(\d{4}-\d{2}-\d{2})", re.ASCII)
_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", re.ASCII)
_VERSION_KEY = re.compile(r"versions/v(\d{6,})\.json", re.ASCII)
PLOT = re.compile(r"plots/[a-z0-9][a-z0-9_-]{0,63}\.png", re.ASCII)
_MAX_INT = 2**63 - 1


class LayoutError(DestError):
    """A name, a version manifest or ``CURRENT`` is not what the layout allows (exit 1)."""


# --- names -------------------------------------------------------------------------------------------


def _digests(sha256s: Iterable[str], what: str, *, empty: bool) -> bytes:
    items = list(sha256s)
    for item in items:
        if not isinstance(item, str) or not HEX64.fullmatch(item):
            msg = (
                f"cannot name the {what}: {ascii(item)[:80]} is not a SHA-256 hex digest (64 lower-case "
                "hex digits). Fix: this is a bug in the caller"
            )
            raise LayoutError(msg)
    if len(set(items)) != len(items) or (not items and not empty):
        msg = f"cannot name the {what}: its bundle digests are empty or repeated. Fix: a bug in the caller"
        raise LayoutError(msg)
    return "".join(f"{d}\n" for d in sorted(items)).encode("ascii")


def part_id(sha256s: Iterable[str]) -> str:
    """A part's id: ``hex(SHA-256("optin dataset part v1" ‖ 0x00 ‖ S)[:16])``, S the sorted digests,
    each followed by a newline. Depends only on which bundles the part holds."""
    data = b"optin dataset part v1\x00" + _digests(sha256s, "part", empty=False)
    return hashlib.sha256(data).digest()[:16].hex()


def ledger_id(version: int, sha256s: Iterable[str]) -> str:
    """A ledger file's id: ``hex(SHA-256("optin dataset ledger v1" ‖ 0x00 ‖ V ‖ 0x00 ‖ S)[:16])``."""
    number = _number(version, "ledger")
    data = b"optin dataset ledger v1\x00" + str(number).encode("ascii") + b"\x00"
    return hashlib.sha256(data + _digests(sha256s, "ledger", empty=True)).digest()[:16].hex()


def register_id(data: bytes) -> str:
    """The withdrawal register's id: ``hex(SHA-256(its bytes)[:16])``."""
    return hashlib.sha256(data).digest()[:16].hex()


def _number(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_INT:
        msg = (
            f"cannot name the {what}: version {n!r} is not an integer >= 1. Fix: this is a bug in the caller"
        )
        raise LayoutError(msg)
    return n


def _utc_datetime(when: int | datetime.datetime) -> datetime.datetime:
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            msg = "a naive datetime has no time zone. Fix: this is a bug; pass an aware (UTC) datetime"
            raise LayoutError(msg)
        return when.astimezone(datetime.timezone.utc)
    if isinstance(when, bool) or not isinstance(when, int) or when < 0:
        msg = f"{when!r} is not a time in nanoseconds since the epoch. Fix: this is a bug in the caller"
        raise LayoutError(msg)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return epoch + datetime.timedelta(microseconds=when // 1000)


def utc(when: int | datetime.datetime) -> str:
    """A UTC timestamp, RFC 3339 with microseconds and ``Z``, of nanoseconds since the epoch or an aware
    datetime (``2026-12-06T10:42:52.123456Z``)."""
    return _utc_datetime(when).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime.datetime:
    """The aware datetime of a :func:`utc` timestamp. :raises LayoutError: any other text."""
    if isinstance(text, str) and _UTC.fullmatch(text):
        try:
            return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            pass
    msg = f"{ascii(text)[:60]} is not a UTC timestamp like 2026-12-06T10:42:52.123456Z"
    raise LayoutError(msg)


def date_dir(when: int | datetime.datetime) -> str:
    """``ingest_date=YYYY-MM-DD``, the UTC date of nanoseconds since the epoch or an aware datetime."""
    return "ingest_date=" + _utc_datetime(when).strftime("%Y-%m-%d")


def day(date: str) -> str:
    """``YYYY-MM-DD`` of ``YYYY-MM-DD`` or ``ingest_date=YYYY-MM-DD`` (a real date)."""
    found = _DAY.fullmatch(date) if isinstance(date, str) else None
    if found:
        try:
            datetime.date.fromisoformat(found[1])
            return found[1]
        except ValueError:
            pass
    msg = f"{ascii(date)[:60]} is not a date YYYY-MM-DD. Fix: this is a bug in the caller (use date_dir())"
    raise LayoutError(msg)


def _part(part: str) -> str:
    if not isinstance(part, str) or not HEX32.fullmatch(part):
        msg = f"{ascii(part)[:60]} is not a part or file id (32 hex digits). Fix: this is a bug in the caller"
        raise LayoutError(msg)
    return part


def shard_path(date: str, part: str) -> str:
    """``shards/ingest_date=YYYY-MM-DD/<part>.tar`` (``date`` with or without ``ingest_date=``)."""
    return check_key(f"shards/ingest_date={day(date)}/{_part(part)}.tar")


def index_path(date: str, part: str) -> str:
    """``shards/ingest_date=YYYY-MM-DD/<part>.index.jsonl``."""
    return check_key(f"shards/ingest_date={day(date)}/{_part(part)}.index.jsonl")


def table_path(table: str, date: str, file_id: str) -> str:
    """``tables/<table>/ingest_date=YYYY-MM-DD/<file_id>.parquet`` (``table`` one of :data:`TABLES`)."""
    if table not in TABLES:
        msg = f"{ascii(table)[:40]} is not a table of the dataset ({', '.join(TABLES)}). Fix: a bug"
        raise LayoutError(msg)
    return check_key(f"tables/{table}/ingest_date={day(date)}/{_part(file_id)}.parquet")


def register_path(file_id: str) -> str:
    """``register/<register id>.jsonl``."""
    return check_key(f"register/{_part(file_id)}.jsonl")


def version_path(n: int) -> str:
    """``versions/v000042.json``: the version number zero-padded to 6 digits or more."""
    return check_key(f"versions/v{_number(n, 'version manifest'):06d}.json")


def card_dir(n: int) -> str:
    """``cards/v000042``: the folder of version ``n``'s card."""
    return check_key(f"cards/v{_number(n, 'card'):06d}")


def wids_path(n: int) -> str:
    """``versions/v000042.wids.json``: version ``n``'s wids descriptor."""
    return check_key(f"versions/v{_number(n, 'wids descriptor'):06d}.wids.json")


def version_of_path(key: str) -> int | None:
    """The version number of a version manifest's key (``versions/v000042.json`` -> 42), else None."""
    found = _VERSION_KEY.fullmatch(key)
    return int(found[1]) if found else None
