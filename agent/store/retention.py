"""Deletion that is real (P8): crypto-shredding, the byte budget and retention, ``delete-last``.

**Crypto-shredding.**  A segment is readable only through its file key, which
exists only wrapped in the segment's header (the ephemeral share and the
48-byte wrapped key, header bytes 60..140).  :func:`shred_segment` overwrites
those bytes in place with random bytes, fsyncs, and only then unlinks the
file, so the ciphertext left anywhere on the disk can no longer be decrypted,
even with the identity.  What file systems may still keep is said in
``docs/format.md`` (Deletion).

**Budget and retention.**  :func:`enforce` deletes whole sessions, oldest first,
until the store is within :data:`MAX_BYTES` and no session is older than
:data:`MAX_AGE_DAYS`; never one the caller keeps (the open session) nor one
whose writer is alive.  The decision is the pure :func:`plan`.

**Deleting recent time.**  :func:`delete_last` removes at least the last N
seconds of recorded time: sessions that started inside the range are shredded
whole; the one that straddles its start loses whole trailing segments and gets
a tombstone segment (``docs/format.md``, Deleting recent time).  It needs only
the recipient, like recording.

Nothing here reads, logs or reports content: session ids, counts, sizes, times.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import StoreError, UsageError
from agent.paths import Dirs, fsync_dir
from agent.store.format import (
    KEY_MATERIAL_OFFSET,
    KEY_MATERIAL_SIZE,
    DeletionInfo,
    Framing,
    scan_framing,
    segment_commit,
    segment_name,
    session_id_bytes,
    write_deletion_segment,
)
from agent.store.reader import load_meta, session_dir, session_paths
from agent.store.writer import (
    META_FILE,
    lock_session,
    unlock_session,
    utc_timestamp,
    write_meta,
    writer_active,
)

log = logging.getLogger(__name__)

#: Default byte budget of the whole store (2 GiB); a study file sets its own ([retention]).
MAX_BYTES = 2 * 1024**3
#: Default retention: sessions older than this many days are deleted.
MAX_AGE_DAYS = 30.0
#: The running agent enforces the budget at most this often (seconds).
ENFORCE_EVERY_S = 60.0
#: Slack added to a segment's end time (its mtime) when deciding whether it overlaps the
#: range ``delete_last`` removes: file systems keep coarse timestamps (seconds).
MTIME_SLACK_S = 1.0
#: Why the running agent refuses ``delete-last`` and ``purge`` (the control socket brings it).
AGENT_RUNNING = "pause/quit optin first (tray: Quit), or let the running agent do it (optin delete-last)"

_SESSION_NAME = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}")
_SHRED_TEMP = re.compile(r"\.(recovery|deletion)-[0-9a-f]{8}\.tmp")


@dataclass(frozen=True)
class SessionStat:
    """What :func:`plan` needs to know about one session (no content).

    :ivar started_at: start time, seconds since the epoch; None when unknown (treated as oldest).
    :ivar alive: a writer holds it (or whether one does cannot be told): never deleted.
    """

    id: str
    started_at: float | None
    bytes: int
    alive: bool = False


@dataclass(frozen=True)
class Deleted:
    """One session that was shredded.

    :ivar reason: ``age``, ``budget``, ``volunteer`` (``sessions delete``, ``purge``)
        or ``delete-last``.
    """

    session_id: str
    reason: str
    segments: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Trimmed:
    """A session whose trailing segments ``delete_last`` shredded, now ending with a tombstone."""

    session_id: str
    segments: int
    bytes: int
    kept_segments: int
    kept_until: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class DeleteReport:
    """What :func:`delete_last` removed: the range, whole sessions, trimmed sessions (no content)."""

    range_start: str
    range_end: str
    seconds: float
    deleted: list[Deleted] = field(default_factory=list)
    trimmed: list[Trimmed] = field(default_factory=list)

    @property
    def segments(self) -> int:
        """Segment files shredded in all."""
        return sum(d.segments for d in self.deleted) + sum(t.segments for t in self.trimmed)

    @property
    def bytes(self) -> int:
        """Bytes of segment files shredded in all."""
        return sum(d.bytes for d in self.deleted) + sum(t.bytes for t in self.trimmed)

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "range_start": self.range_start,
            "range_end": self.range_end,
            "seconds": self.seconds,
            "segments": self.segments,
            "bytes": self.bytes,
            "deleted": [d.to_dict() for d in self.deleted],
            "trimmed": [t.to_dict() for t in self.trimmed],
        }


# --- crypto-shredding ---------------------------------------------------------------------------


def shred_segment(path: Path) -> int:
    """Overwrite the segment's key material with random bytes, fsync, unlink; return its size.

    The key material is the ephemeral share and the wrapped file key (header
    bytes 60..140).  A file shorter than that has its part of it overwritten.
    """
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        size = os.fstat(fd).st_size
        end = min(size, KEY_MATERIAL_OFFSET + KEY_MATERIAL_SIZE)
        if end > KEY_MATERIAL_OFFSET:
            os.pwrite(fd, os.urandom(end - KEY_MATERIAL_OFFSET), KEY_MATERIAL_OFFSET)
            os.fsync(fd)
    finally:
        os.close(fd)
    path.unlink()
    return size


def shred_session(dirs: Dirs, session_id: str, *, reason: str = "volunteer") -> Deleted:
    """Shred every segment of a session, remove its other files and its directory.

    :raises UsageError: not a session id.
    :raises NotFound: no such session.
    :raises StoreError: its writer is alive (the session is being recorded).
    """
    path = session_dir(dirs, session_id)
    fd = lock_session(path)  # refuses a session whose writer is alive
    try:
        segments, size = shred_files(path)
    finally:
        unlock_session(fd)
    path.rmdir()
    fsync_dir(path.parent)
    return Deleted(session_id, reason, segments, size)


def shred_files(path: Path) -> tuple[int, int]:
    """Shred the segment files (and temp files that hold a header) of ``path``; unlink the rest."""
    segments = size = 0
    for file in sorted(path.iterdir(), reverse=True):  # the last segment first: a prefix stays
        if file.suffix == ".seg" and not file.name.startswith("."):
            size += shred_segment(file)
            segments += 1
        elif _SHRED_TEMP.fullmatch(file.name):
            shred_segment(file)
        elif file.name != META_FILE:
            file.unlink()
    with contextlib.suppress(FileNotFoundError):
        (path / META_FILE).unlink()
    fsync_dir(path)
    return segments, size


# --- budget and retention -----------------------------------------------------------------------


def plan(
    sessions: Iterable[SessionStat],
    *,
    max_bytes: int = MAX_BYTES,
    max_age_days: float = MAX_AGE_DAYS,
    now: float,
    keep: Iterable[str] = (),
) -> list[str]:
    """Which sessions to delete, oldest first: those older than ``max_age_days``, then more
    until the store (every session counted) is within ``max_bytes``.

    Never a session in ``keep`` nor one that is ``alive``; a session with no
    known start time counts as the oldest.  Pure: no I/O.
    """
    stats = list(sessions)
    kept = set(keep)
    deletable = sorted(
        (s for s in stats if s.id not in kept and not s.alive),
        key=lambda s: (s.started_at if s.started_at is not None else float("-inf"), s.id),
    )
    cutoff = now - max_age_days * 86400.0
    total = sum(s.bytes for s in stats)
    chosen: list[str] = []
    for s in deletable:
        too_old = s.started_at is None or s.started_at < cutoff
        if not too_old and total <= max_bytes:
            break
        chosen.append(s.id)
        total -= s.bytes
    return chosen


def enforce(
    dirs: Dirs,
    *,
    max_bytes: int = MAX_BYTES,
    max_age_days: float = MAX_AGE_DAYS,
    now: float | None = None,
    keep: Iterable[str] = (),
) -> list[Deleted]:
    """Shred whole sessions, oldest first, until the budget and the retention hold.

    Never raises for one session: a session that cannot be shredded is logged
    (id and the kind of failure) and skipped.
    """
    now = time.time() if now is None else now
    stats = [_stat(p) for p in session_paths(dirs)]
    chosen = plan(stats, max_bytes=max_bytes, max_age_days=max_age_days, now=now, keep=keep)
    cutoff = now - max_age_days * 86400.0
    starts = {s.id: s.started_at for s in stats}
    deleted: list[Deleted] = []
    for sid in chosen:
        started = starts.get(sid)
        reason = "age" if started is None or started < cutoff else "budget"
        try:
            deleted.append(shred_session(dirs, sid, reason=reason))
        except (OSError, StoreError) as exc:
            log.warning("retention could not delete session %s (%s)", sid, type(exc).__name__)
            continue
    return deleted


def _stat(path: Path) -> SessionStat:
    meta = load_meta(path) or {}
    active = writer_active(path)
    alive = active is True or (active is None and meta.get("state") != "closed")
    size = sum(f.stat().st_size for f in path.iterdir() if f.suffix == ".seg")
    return SessionStat(path.name, session_start(path.name, meta), size, alive)


def session_start(sid: str, meta: dict[str, Any] | None) -> float | None:
    """A session's start, seconds since the epoch: ``started_at`` of meta.json, else its name."""
    for text, fmt in (((meta or {}).get("started_at"), "%Y-%m-%dT%H:%M:%SZ"), (sid[:16], "%Y%m%dT%H%M%SZ")):
        if isinstance(text, str):
            with contextlib.suppress(ValueError):
                return float(calendar.timegm(time.strptime(text, fmt)))
    return None


# --- deleting recent time -----------------------------------------------------------------------


def delete_last(dirs: Dirs, seconds: float, *, now: float | None = None) -> DeleteReport:
    """Remove at least the last ``seconds`` of recorded time, across closed sessions.

    Sessions that started inside the range are shredded whole.  A session that
    straddles its start loses every trailing segment whose time may overlap the
    range (a segment ends at its file's mtime, plus :data:`MTIME_SLACK_S`, and
    begins where its predecessor ended) and gets a tombstone segment.

    :raises UsageError: ``seconds`` is not positive, or a session is being recorded.
    """
    if not seconds > 0:
        msg = f"the duration to delete must be positive, got {seconds} seconds"
        raise UsageError(msg)
    now = time.time() if now is None else now
    start = now - seconds
    paths = session_paths(dirs)
    if any(writer_active(p) for p in paths):
        raise UsageError(AGENT_RUNNING)
    finish_interrupted_deletions(dirs)
    report = DeleteReport(utc_timestamp(start), utc_timestamp(now), seconds)
    recipient: bytes | None = None
    for path in paths:
        begun = session_start(path.name, load_meta(path))
        if begun is not None and begun >= start:
            report.deleted.append(shred_session(dirs, path.name, reason="delete-last"))
            continue
        files = _segments(path)
        first = _first_removed(path, files, start)
        if first is None:
            continue
        if first == 0:
            report.deleted.append(shred_session(dirs, path.name, reason="delete-last"))
            continue
        if recipient is None:
            from agent.store import keys

            recipient = keys.load_recipient(dirs)
        report.trimmed.append(_trim(path, files, first, recipient, now))
    return report


def _segments(path: Path) -> list[Path]:
    """Segment files in index order (``verify`` judges gaps and bad names; deletion only removes)."""
    files = [f for f in path.iterdir() if f.suffix == ".seg" and not f.name.startswith(".")]
    return sorted(files, key=lambda f: (len(f.name), f.name))


def _first_removed(path: Path, files: list[Path], start: float) -> int | None:
    """Index of the first trailing segment to remove, or None when nothing overlaps ``start``.

    Trailing recovery and tombstone segments hold no events: they go when any data
    segment does.  The last kept segment must be sealed (a segment that crash
    recovery cut is not), so a tombstone can chain to it.
    """
    framings: list[Framing | None] = []
    for file in files:
        try:
            framings.append(scan_framing(file.read_bytes(), name=f"{path.name}/{file.name}"))
        except StoreError:
            framings.append(None)  # damaged: never kept as the segment a tombstone chains to
    data_count = len(files)
    while data_count and _is_marker(framings[data_count - 1]):
        data_count -= 1
    first = _first_overlap(files[:data_count], start, _stopped_at(load_meta(path)))
    if first is None:
        return None  # no data segment overlaps (a trailing marker segment alone is not recorded time)
    while first > 0 and not _sealed(framings[first - 1]):
        first -= 1
    return first


def _is_marker(framing: Framing | None) -> bool:
    """A recovery or tombstone segment: it holds no events."""
    return framing is not None and (framing.is_recovery_segment or framing.is_deletion_segment)


def _sealed(framing: Framing | None) -> bool:
    return framing is not None and framing.sealed


def _first_overlap(files: list[Path], start: float, stopped: float | None) -> int | None:
    """The first segment whose end (mtime + slack) is after ``start``; all later ones go with it.

    A segment cannot end after its session stopped: an mtime later than ``stopped_at``
    (a store copied or restored without its times) is capped there, so such a copy
    does not make every segment look recent.
    """
    for index, file in enumerate(files):
        end = file.stat().st_mtime
        if stopped is not None:
            end = min(end, stopped)
        if end + MTIME_SLACK_S > start:
            return index
    return None


def _stopped_at(meta: dict[str, Any] | None) -> float | None:
    """``stopped_at`` of meta.json as Unix seconds (its end is a whole second: +1), or None."""
    text = (meta or {}).get("stopped_at")
    if not isinstance(text, str):
        return None
    try:
        return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")) + 1.0
    except ValueError:
        return None


def _trim(path: Path, files: list[Path], first: int, recipient: bytes, now: float) -> Trimmed:
    """Shred segments ``first..`` and put a tombstone at ``first``, holding the writer's lock."""
    fd = lock_session(path)
    try:
        kept_end = files[first - 1].stat().st_mtime
        removed = files[first:]
        removed_bytes = sum(f.stat().st_size for f in removed)
        info = DeletionInfo(first, len(removed), removed_bytes, int(now))
        tmp = path / f".deletion-{os.urandom(4).hex()}.tmp"
        try:
            write_deletion_segment(
                tmp,
                session_id=session_id_bytes(path.name),
                prev_commit=segment_commit(files[first - 1].read_bytes()),
                recipient=recipient,
                info=info,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()  # nothing was shredded yet: the session is as it was
            raise
        # From here the tombstone is on disk: if shredding or the rename is interrupted (a crash,
        # a full disk), finish_interrupted_deletions() completes it; it is never thrown away.
        _shred_from(files, first)
        tmp.replace(path / segment_name(first))
        fsync_dir(path)
        _update_meta(path, info, kept_end)
    finally:
        unlock_session(fd)
    return Trimmed(path.name, len(removed), removed_bytes, first, utc_timestamp(kept_end))


def _shred_from(files: list[Path], first: int) -> None:
    """Shred the segments ``first..``, newest first, and make their removal durable."""
    for file in reversed(files[first:]):
        shred_segment(file)
    if files:
        fsync_dir(files[0].parent)


_DELETION_TEMP = re.compile(r"\.deletion-[0-9a-f]{8}\.tmp")


def finish_interrupted_deletions(dirs: Dirs) -> list[str]:
    """Complete every ``delete-last`` trim that a crash or an I/O error interrupted.

    A trim writes its tombstone to ``.deletion-XXXXXXXX.tmp`` (durably) before it
    shreds anything, so a leftover temp file means: the volunteer asked to delete
    the segments from the tombstone's index on.  This shreds whatever of them is
    left and renames the tombstone into place.  It needs no key: the index is in
    the tombstone's plaintext header.  Sessions whose writer is alive are left
    alone.  Returns the ids of the sessions it completed; never raises for one
    session's problem (logged without content).
    """
    done: list[str] = []
    for path in session_paths(dirs):
        temps = [p for p in path.iterdir() if _DELETION_TEMP.fullmatch(p.name)]
        if not temps or writer_active(path):
            continue
        try:
            _finish_trim(path, max(temps, key=lambda p: p.stat().st_mtime))
        except (OSError, StoreError) as exc:
            log.warning(
                "could not finish the interrupted deletion in session %s (%s)", path.name, type(exc).__name__
            )
            continue
        for stale in temps:
            with contextlib.suppress(OSError):
                stale.unlink()
        done.append(path.name)
    return done


def _finish_trim(path: Path, tombstone: Path) -> None:
    fd = lock_session(path)
    try:
        first = scan_framing(tombstone.read_bytes(), name=tombstone.name).index
        _shred_from(_segments(path), first)
        tombstone.replace(path / segment_name(first))
        fsync_dir(path)
        meta = load_meta(path) or {"schema": 1, "id": path.name}
        meta["state"] = "closed"
        meta.pop("recovered", None)
        meta.pop("recovery", None)
        meta.setdefault("deleted", []).append(
            {  # how many segments and bytes went is in the (encrypted) DELETION record
                "segment": first,
                "segments": None,
                "bytes": None,
                "deleted_at": utc_timestamp(time.time()),
                "completed_after_interruption": True,
            }
        )
        segments = [p for p in path.iterdir() if p.suffix == ".seg" and not p.name.startswith(".")]
        meta["segments"] = len(segments)
        meta["bytes"] = sum(p.stat().st_size for p in segments)
        write_meta(path, meta)
    finally:
        unlock_session(fd)


def _update_meta(path: Path, info: DeletionInfo, kept_end: float) -> None:
    """meta.json after a trim: closed, the deletion recorded; counts stay as recorded."""
    meta = load_meta(path) or {"schema": 1, "id": path.name}
    meta["state"] = "closed"
    meta["stopped_at"] = utc_timestamp(kept_end)
    meta.pop("recovered", None)  # a recovery segment is always at the end: it was removed
    meta.pop("recovery", None)
    meta.setdefault("deleted", []).append(
        {
            "segment": info.segment,
            "segments": info.segments,
            "bytes": info.removed_bytes,
            "deleted_at": utc_timestamp(info.deleted_at),
        }
    )
    segments = [p for p in path.iterdir() if p.suffix == ".seg" and not p.name.startswith(".")]
    meta["segments"] = len(segments)
    meta["bytes"] = sum(p.stat().st_size for p in segments)
    write_meta(path, meta)


__all__ = [
    "AGENT_RUNNING",
    "ENFORCE_EVERY_S",
    "MAX_AGE_DAYS",
    "MAX_BYTES",
    "DeleteReport",
    "Deleted",
    "SessionStat",
    "Trimmed",
    "delete_last",
    "enforce",
    "plan",
    "session_start",
    "shred_files",
    "shred_segment",
    "shred_session",
]
