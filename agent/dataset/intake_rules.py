"""The intake's pure rules (docs/upload.md): its record of one ``(volunteer, session)``, what a
``begin`` does given that record, and the per-key token buckets of the rate limits.

No I/O here: :mod:`agent.dataset.intake_service` reads and writes the records in the bucket and
talks to the store; this module decides.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from typing import Any

from agent.canonical_json import canonical
from agent.export.recount import json_object
from agent.upload_protocol import REASONS, SESSION_ID, UploadRequest

#: Largest record the intake reads back (a record is a few hundred bytes).
MAX_RECORD_BYTES = 16 * 1024
STATES = ("uploading", "stored", "refused")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BadRecord(Exception):
    """A record in the bucket that is not one the intake wrote (never quoted)."""


@dataclass(frozen=True)
class Record:
    """``intake/sessions/<volunteer>/<session>.json`` (docs/upload.md, "The intake's records")."""

    volunteer: str
    session: str
    signing_key: str  #: base64, as the request carried it
    size: int
    sha256: str
    part_size: int
    upload_id: str
    state: str
    began: int
    reason: str | None = None
    finished: int | None = None

    def to_bytes(self) -> bytes:
        return canonical({"v": 1, **asdict(self)})


def record_key(volunteer: str, session: str) -> str:
    """The record's key below the intake's prefix."""
    return f"intake/sessions/{volunteer}/{session}.json"


def bundle_key(volunteer: str, session: str) -> str:
    """The bundle's key below the intake's prefix: what ``optin dataset build`` reads."""
    return f"bundles/{volunteer}/{session}.optin.tar.age"


def parse_record(blob: bytes, volunteer: str, session: str) -> Record:
    """A record read back from the bucket, checked to be one the intake wrote for this key.

    :raises BadRecord: it is not.
    """
    doc = json_object(blob) if len(blob) <= MAX_RECORD_BYTES else None
    fields: dict[str, Any] = {f: doc.get(f) for f in Record.__dataclass_fields__} if doc else {}
    if doc is None or doc.get("v") != 1 or set(doc) != {"v", *Record.__dataclass_fields__}:
        raise BadRecord
    ints = ("size", "part_size", "began")
    texts = ("volunteer", "session", "signing_key", "sha256", "upload_id", "state")
    if (
        any(not isinstance(fields[k], int) or isinstance(fields[k], bool) or fields[k] < 0 for k in ints)
        or any(not isinstance(fields[k], str) for k in texts)
        or not (fields["reason"] is None or fields["reason"] in REASONS)
        or not (
            fields["finished"] is None or (isinstance(fields["finished"], int) and fields["finished"] >= 0)
        )
        or fields["volunteer"] != volunteer
        or fields["session"] != session
        or fields["state"] not in STATES
        or not _HEX64.fullmatch(fields["sha256"])
        or not _HEX32.fullmatch(fields["volunteer"])
        or not SESSION_ID.fullmatch(fields["session"])
    ):
        raise BadRecord
    return Record(**fields)


def new_record(
    request: UploadRequest, signing_key_b64: str, part_size: int, upload_id: str, now: int
) -> Record:
    """The record of an upload ``begin`` starts."""
    return Record(
        volunteer=request.volunteer,
        session=request.session,
        signing_key=signing_key_b64,
        size=request.size,
        sha256=request.sha256,
        part_size=part_size,
        upload_id=upload_id,
        state="uploading",
        began=now,
    )


def finished(record: Record, state: str, now: int, reason: str | None = None) -> Record:
    """``record`` in its final ``state`` (``stored`` or ``refused`` with ``reason``)."""
    return replace(record, state=state, reason=reason, finished=now)


#: What ``begin`` does with the record it found (docs/upload.md, "begin").
START, RESUME, RESTART, ALREADY_STORED, DELIVERED_OTHERWISE = (
    "start",
    "resume",
    "restart",
    "already_stored",
    "delivered_otherwise",
)


def begin_action(record: Record | None, request: UploadRequest) -> str:
    """What a ``begin`` for ``request`` does, given the session's record (None: no record)."""
    if record is None:
        return START
    same = record.size == request.size and record.sha256 == request.sha256
    if record.state == "stored":
        return ALREADY_STORED if same else DELIVERED_OTHERWISE
    if record.state == "uploading" and same:
        return RESUME
    return RESTART  # another export of the session before the first finished, or after a refusal


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    """One token bucket per key (a volunteer id, a client address): ``rate`` tokens a second up to
    ``burst``. At most ``max_keys`` buckets are kept (the least recently used go first, full again:
    memory is bounded whatever ids a client mints)."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            msg = f"rate {rate}, burst {burst} and max_keys {max_keys} must be positive (burst at least 1)"
            raise ValueError(msg)
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens for ``key``: 0 when there were enough, else the seconds to wait (nothing
        is taken then)."""
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + max(0.0, now - bucket.at) * self.rate)
        bucket.at = now
        wait = 0.0
        if bucket.tokens >= cost:
            bucket.tokens -= cost
        else:
            wait = (cost - bucket.tokens) / self.rate
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


def metrics_text(counters: dict[str, int], gauges: dict[str, float]) -> str:
    """Counters and gauges in the Prometheus text format (names ``optin_intake_*``; no labels hold
    content: reasons are codes)."""
    lines: list[str] = []
    families: dict[str, list[tuple[str, int]]] = {}
    for name, value in sorted(counters.items()):
        base, _, label = name.partition("|")
        families.setdefault(base, []).append((label, value))
    for base, values in families.items():
        metric = f"optin_intake_{base}_total"
        lines.append(f"# TYPE {metric} counter")
        lines += [
            f'{metric}{{reason="{label}"}} {value}' if label else f"{metric} {value}"
            for label, value in values
        ]
    for name, gauge in sorted(gauges.items()):
        lines.append(f"# TYPE optin_intake_{name} gauge")
        lines.append(f"optin_intake_{name} {gauge:g}")
    return "\n".join(lines) + "\n"


__all__ = [
    "ALREADY_STORED",
    "DELIVERED_OTHERWISE",
    "RESTART",
    "RESUME",
    "START",
    "BadRecord",
    "Record",
    "TokenBuckets",
    "begin_action",
    "bundle_key",
    "finished",
    "metrics_text",
    "new_record",
    "parse_record",
    "record_key",
]
