"""The build's plan, between its two passes (docs/dataset.md, "Plan (driver)").

Pure: pass 1's answers and what the current version already holds in, parts out. The study a
DEST holds, duplicate sessions, the order and the packing into parts are decided here once, so
that every engine, and a build killed and run again, writes the same parts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.errors import UsageError
from agent.untrusted_text import visible

#: Default shard size: "~1 GB" shards, the WebDataset convention.
DEFAULT_SHARD_SIZE = 10**9


@dataclass(frozen=True)
class Accepted:
    """A bundle pass 1 accepted: what the plan and pass 2 need, never its content."""

    name: str
    size: int
    etag: str
    sha256: str
    session: str
    volunteer: str
    signing_key: str
    study: str
    study_name: str
    schema: str
    room: int
    steps: int


@dataclass(frozen=True)
class Quarantined:
    """A bundle refused with a reason code; ``message`` is printed, never stored."""

    name: str
    size: int
    etag: str
    sha256: str
    reason: str
    stage: str
    message: str
    session: str | None = None
    volunteer: str | None = None


@dataclass(frozen=True)
class Deferred:
    """A bundle that could not be read now (I/O): not recorded, tried again by the next build."""

    name: str
    message: str


@dataclass(frozen=True)
class Skipped:
    """A bundle already in the ledger (by its SRC name, size and ETag, or by its SHA-256)."""

    name: str
    sha256: str | None


@dataclass(frozen=True)
class Duplicate:
    session: str
    kept: str
    quarantined: str


@dataclass
class Plan:
    study: str | None
    parts: list[list[Accepted]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)


def _quarantine(record: Accepted, reason: str, message: str) -> Quarantined:
    return Quarantined(
        record.name,
        record.size,
        record.etag,
        record.sha256,
        reason,
        "dataset",
        message,
        session=record.session,
        volunteer=record.volunteer,
    )


def bind_study(accepted: Iterable[Accepted], current: str | None, chosen: str | None) -> str | None:
    """The study this DEST holds: the current version's, else ``--study-id``, else the one all share.

    :raises UsageError: the first build sees bundles of several studies and no ``--study-id``
        (or ``--study-id`` differs from the study the DEST already holds).
    """
    if current is not None:
        if chosen is not None and chosen != current:
            msg = (
                f"--study-id {visible(chosen)} is not the study this DEST holds ({visible(current)}). "
                "Fix: drop --study-id, or build into another DEST"
            )
            raise UsageError(msg)
        return current
    if chosen is not None:
        return chosen
    studies = Counter(r.study for r in accepted)
    if len(studies) <= 1:
        return next(iter(studies), None)
    listed = ", ".join(f"{visible(s)} ({n} bundles)" for s, n in sorted(studies.items()))
    msg = (
        f"the bundles belong to {len(studies)} studies: {listed}; a DEST holds one. A study key "
        "reused across studies is the usual cause. Fix: choose one with --study-id ID"
    )
    raise UsageError(msg)


def plan(
    accepted: Iterable[Accepted],
    *,
    ingested_sessions: Mapping[str, str],
    study: str | None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> Plan:
    """Decide what pass 2 writes.

    :param ingested_sessions: session id -> SHA-256 of the bundle the current version holds.
    :param study: the DEST's study (:func:`bind_study`).
    """
    result = Plan(study)
    by_sha: dict[str, Accepted] = {}
    for record in accepted:
        if record.sha256 in by_sha:
            result.skipped.append(Skipped(record.name, record.sha256))  # one bundle under two names
        else:
            by_sha[record.sha256] = record
    by_session: dict[str, list[Accepted]] = {}
    for record in sorted(by_sha.values(), key=lambda r: r.sha256):
        if study is not None and record.study != study:
            result.quarantined.append(
                _quarantine(record, "study_mismatch", "the bundle belongs to another study than this DEST")
            )
            continue
        by_session.setdefault(record.session, []).append(record)
    keep: list[Accepted] = []
    for session, records in by_session.items():
        held = ingested_sessions.get(session)
        first = 0 if held is None else None
        for i, record in enumerate(records):
            if i == first:
                keep.append(record)
                continue
            kept = held if held is not None else records[0].sha256
            result.duplicates.append(Duplicate(session, kept, record.sha256))
            result.quarantined.append(
                _quarantine(record, "duplicate_session", "another bundle of this session is in the dataset")
            )
    keep.sort(key=lambda r: (r.volunteer, r.session))
    part: list[Accepted] = []
    room = 0
    for record in keep:
        if part and room + record.room > shard_size:
            result.parts.append(part)
            part, room = [], 0
        part.append(record)
        room += record.room
    if part:
        result.parts.append(part)
    return result


__all__ = [
    "DEFAULT_SHARD_SIZE",
    "Accepted",
    "Deferred",
    "Duplicate",
    "Plan",
    "Quarantined",
    "Skipped",
    "bind_study",
    "plan",
]
