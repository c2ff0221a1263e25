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

**Only inside the store.**  Every step goes through :mod:`agent.store.safe_fs`: session
folders are opened without following links, files are shredded only when they are regular
files with one name, and everything is removed relative to a directory descriptor.  A link,
FIFO, device or hard-linked file where a session, a segment or ``meta.json`` should be is
left where it is and reported (:class:`~agent.store.safe_fs.UnsafeEntry`) after everything
else was deleted; the budget and retention log it instead.

Nothing here reads, logs or reports content: session ids, counts, sizes, times and paths.
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

from agent.backends import platform_calls
from agent.errors import NotFound, StoreError, UsageError
from agent.paths import Dirs
from agent.store.format import (
    KEY_MATERIAL_OFFSET,
    KEY_MATERIAL_SIZE,
    DeletionInfo,
    Framing,
    is_segment_name,
    scan_framing,
    segment_commit,
    segment_name,
    session_id_bytes,
    write_deletion_segment,
)
from agent.store.safe_fs import (
    Refused,
    Sessions,
    StoreDir,
    UnsafeEntry,
    is_plain_file,
    open_session,
)
from agent.store.writer import META_FILE, load_meta_at, segment_sizes, utc_timestamp, write_meta_at

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

#: Paths retention already warned about in this process (it runs once a minute).
_WARNED: set[str] = set()
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

    :ivar reason: ``age``, ``budget``, ``volunteer`` (``sessions delete``, ``purge``),
        ``delete-last``, ``exported`` (the study's ``after_export``) or ``delivered`` (its
        ``after_upload``, once the intake confirmed).
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


# --- crypto-shredding ---------------------------------------------------------------------------------


def shred_segment(path: Path) -> int:
    """Shred the segment file ``path`` (see :func:`shred_at`); its folder and the file are never
    followed through a link.  Returns its size.

    :raises UnsafeEntry: ``path`` (or its folder) is not a regular file (a real folder), or the
        file has other names (hard links): nothing was changed.
    """
    with StoreDir.open(path.parent, expected="a folder of segments") as folder:
        return shred_at(folder, path.name)


def shred_at(folder: StoreDir, name: str) -> int:
    """Overwrite the key material of the segment ``name`` with random bytes, fsync, unlink; its size.

    The key material is the ephemeral share and the wrapped file key (header
    bytes 60..140).  A file shorter than that has its part of it overwritten.
    Only a regular file with one name is shredded: a link is never followed (the
    bytes it points to could be anything, anywhere) and a file with other names
    (hard links) would change under those names too.

    :raises UnsafeEntry: ``name`` is not such a file; nothing was changed.
    """
    fd, st = folder.open_file(name, os.O_RDWR)
    try:
        if st.st_nlink != 1:
            raise UnsafeEntry([folder.refusal(name, os.fstat(fd))])
        size = st.st_size
        end = min(size, KEY_MATERIAL_OFFSET + KEY_MATERIAL_SIZE)
        if end > KEY_MATERIAL_OFFSET:
            platform_calls.overwrite_durably(fd, KEY_MATERIAL_OFFSET, os.urandom(end - KEY_MATERIAL_OFFSET))
    finally:
        os.close(fd)
    folder.unlink(name)
    return size


def shred_session(dirs: Dirs, session_id: str, *, reason: str = "volunteer") -> Deleted:
    """Shred every segment of a session, remove its other files and its directory.

    Only regular files inside the real session folder are touched.  A session folder
    that is a link is refused whole; a link, FIFO, device or folder inside it is left
    where it is (never followed) and reported, after everything else was shredded.

    :raises UsageError: not a session id.
    :raises NotFound: no such session.
    :raises StoreError: its writer is alive (the session is being recorded).
    :raises UnsafeEntry: what was refused, with the fix; the message says what was deleted.
    """
    root, folder = open_session(dirs.sessions, session_id, refused=f"session {session_id} was not deleted")
    with root:
        with folder:
            folder.lock()  # refuses a session whose writer is alive
            segments, size, refused = shred_files(folder)
        if refused:
            lead = (
                f"session {session_id} was not deleted completely ({segments} segments, {size} bytes "
                "shredded; its folder and what is named here are left)"
            )
            raise UnsafeEntry(refused, lead=lead, partial=Deleted(session_id, reason, segments, size))
        root.rmdir(session_id)
        root.fsync()
    return Deleted(session_id, reason, segments, size)


def shred_all(dirs: Dirs, *, reason: str = "volunteer") -> list[Deleted]:
    """Shred every session (``purge``, opting out, ``uninstall --purge``), oldest first.

    What is not a real session folder (a link to one, a file by a session's name) and
    what a session holds that is not a regular file are refused, never followed; a
    session whose writer lock another process holds (its writer is alive), or that the
    disk would not let go, is left.  All of them are reported together after every
    other session was shredded.

    :raises UnsafeEntry: what was refused and each session that was not deleted, with why
        (``refused`` holds the refused entries); ``partial`` holds the sessions that were shredded.
    """
    with Sessions(dirs.sessions) as store:
        names, refused = store.names, store.refused
    notes = [r.message for r in refused]
    deleted: list[Deleted] = []
    for sid in names:
        try:
            deleted.append(shred_session(dirs, sid, reason=reason))
        except NotFound:
            continue  # gone meanwhile
        except UnsafeEntry as exc:
            refused.extend(exc.refused)
            notes.extend(r.message for r in exc.refused)
        except (OSError, StoreError) as exc:
            notes.append(_not_deleted(sid, exc))
    if notes:
        lead = f"{len(deleted)} sessions were deleted, but not everything in {dirs.sessions}"
        raise UnsafeEntry(refused, lead=lead, partial=deleted, notes=notes)
    return deleted


def _not_deleted(sid: str, exc: OSError | StoreError) -> str:
    """Why session ``sid`` was left by :func:`shred_all`, with the fix (paths and error names: no content)."""
    if isinstance(exc, StoreError):  # its writer lock is held: a recorder is writing it
        return (
            f"session {sid} was not deleted: {exc}. Fix: quit the optin that records it (tray: Quit; "
            "optin status shows it) or wait until it stops, then run the command again"
        )
    where = f" ({exc.filename})" if exc.filename else ""
    return (
        f"session {sid} was not deleted: {type(exc).__name__}{where}: {exc.strerror or exc}. "
        "Fix: check the folder's permissions and the disk, then run the command again"
    )


def shred_files(folder: StoreDir) -> tuple[int, int, list[Refused]]:
    """Shred the segment files (and temp files that hold a header) of ``folder``; unlink the rest.

    Returns (segments shredded, their bytes, what was refused).  ``meta.json`` goes last, and
    only when nothing was refused (the session then stays listed, to be deleted again once the
    volunteer has fixed what the refusals name).
    """
    segments = size = 0
    refused: list[Refused] = []
    meta: os.stat_result | None = None
    for name, st in reversed(folder.entries()):  # the last segment first: a prefix stays
        if name == META_FILE:
            meta = st
            continue
        if not is_plain_file(st):
            refused.append(folder.refusal(name, st))
            continue
        try:
            if is_segment_name(name):
                size += shred_at(folder, name)
                segments += 1
            elif _SHRED_TEMP.fullmatch(name):
                shred_at(folder, name)
            else:
                folder.unlink(name)
        except FileNotFoundError:
            continue
        except UnsafeEntry as exc:
            refused.extend(exc.refused)
    if meta is not None and not is_plain_file(meta):
        refused.append(folder.refusal(META_FILE, meta))
    elif meta is not None and not refused:
        with contextlib.suppress(FileNotFoundError):
            folder.unlink(META_FILE)
    folder.fsync()
    return segments, size, refused


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
    (id and the kind of failure) and skipped.  Only real session folders are
    counted and deleted: a link (or a file) by a session's name is logged with
    its path and the fix, never followed.
    """
    now = time.time() if now is None else now
    stats: list[SessionStat] = []
    with Sessions(dirs.sessions) as store:
        refused = store.refused
        for sid in store.names:
            try:
                with store.open_dir(sid) as folder:
                    stats.append(_stat(folder, sid))
            except (OSError, UnsafeEntry) as exc:  # gone or replaced since it was listed
                if isinstance(exc, UnsafeEntry):
                    refused.extend(exc.refused)
    for item in refused:
        if item.path not in _WARNED:  # enforce() runs every minute: say it once per run of the agent
            _WARNED.add(item.path)
            log.warning("retention left this alone: %s", item.message)
    chosen = plan(stats, max_bytes=max_bytes, max_age_days=max_age_days, now=now, keep=keep)
    cutoff = now - max_age_days * 86400.0
    starts = {s.id: s.started_at for s in stats}
    deleted: list[Deleted] = []
    for sid in chosen:
        started = starts.get(sid)
        reason = "age" if started is None or started < cutoff else "budget"
        try:
            deleted.append(shred_session(dirs, sid, reason=reason))
        except UnsafeEntry as exc:
            log.warning("retention could not delete everything: %s", exc)
            continue
        except (OSError, StoreError) as exc:
            log.warning("retention could not delete session %s (%s)", sid, type(exc).__name__)
            continue
    return deleted


def _stat(folder: StoreDir, sid: str) -> SessionStat:
    meta = load_meta_at(folder) or {}
    active = folder.writer_alive()
    alive = active is True or (active is None and meta.get("state") != "closed")
    size = sum(segment_sizes(folder.entries()))
    return SessionStat(sid, session_start(sid, meta), size, alive)


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

    Only regular files in real session folders are read or deleted.  A session
    folder that is a link, or a session whose segments or ``meta.json`` are not
    all regular files with one name, is not trimmed; every such refusal is
    reported together after everything else was deleted.

    :raises UsageError: ``seconds`` is not positive, or a session is being recorded.
    :raises UnsafeEntry: what was refused, with the fix; ``partial`` is the report of what was deleted.
    """
    if not seconds > 0:
        msg = f"the duration to delete must be positive, got {seconds} seconds"
        raise UsageError(msg)
    now = time.time() if now is None else now
    start = now - seconds
    report = DeleteReport(utc_timestamp(start), utc_timestamp(now), seconds)
    problems: list[Refused | UnsafeEntry] = []
    with Sessions(dirs.sessions) as store:
        if store.root is None:
            return report
        names = store.names
        problems.extend(store.refused)
        for sid in names:
            with contextlib.suppress(OSError, UnsafeEntry), store.open_dir(sid) as folder:
                if folder.writer_alive():
                    raise UsageError(AGENT_RUNNING)
    finish_interrupted_deletions(dirs)
    recipient: list[bytes] = []
    for sid in names:
        try:
            _delete_last_in(dirs, sid, start, now=now, report=report, recipient=recipient)
        except (FileNotFoundError, NotFound):
            continue  # gone since it was listed
        except UnsafeEntry as exc:
            problems.append(exc)
    if problems:
        lead = (
            f"deleted {report.segments} segments ({report.bytes} bytes) of the last {seconds:g} seconds, "
            "but what is named here was not checked or not deleted, and may hold recorded time of that range"
        )
        raise UnsafeEntry.gather(problems, lead=lead, partial=report)
    return report


def _delete_last_in(
    dirs: Dirs, sid: str, start: float, *, now: float, report: DeleteReport, recipient: list[bytes]
) -> None:
    """``delete_last`` in one session: shred it whole, trim it, or leave it."""
    root = StoreDir.open_root(dirs.sessions)
    if root is None:
        return
    with root:
        try:
            folder = root.open_dir(sid)
        except UnsafeEntry as exc:
            msg = f"session {sid} was not checked"
            raise exc.with_lead(msg) from None
        with folder:
            begun = session_start(sid, load_meta_at(folder))
            whole = begun is not None and begun >= start
            if not whole:
                files, bad = _segments(folder)
                if bad:
                    raise UnsafeEntry(bad, lead=f"session {sid} was not checked for the range nor trimmed")
                first = _first_removed(folder, files, start)
                if first is None:
                    return
                if first > 0:
                    if not recipient:
                        from agent.store import keys

                        recipient.append(keys.load_recipient(dirs))
                    report.trimmed.append(_trim(folder, files, first, recipient[0], now))
                    return
    report.deleted.append(shred_session(dirs, sid, reason="delete-last"))


#: A segment file's name and ``lstat``.
_File = tuple[str, os.stat_result]


def _segments(folder: StoreDir) -> tuple[list[_File], list[Refused]]:
    """Segment files in index order, and what stands where a segment or ``meta.json`` should be but
    is not a regular file with one name (``verify`` judges gaps and bad names; deletion only removes)."""
    files: list[_File] = []
    refused: list[Refused] = []
    for name, st in folder.entries():
        if not (is_segment_name(name) or name == META_FILE):
            continue
        if not is_plain_file(st) or (name != META_FILE and st.st_nlink != 1):
            refused.append(folder.refusal(name, st))
        elif name != META_FILE:
            files.append((name, st))
    files.sort(key=lambda f: (len(f[0]), f[0]))
    return files, refused


def _first_removed(folder: StoreDir, files: list[_File], start: float) -> int | None:
    """Index of the first trailing segment to remove, or None when nothing overlaps ``start``.

    Trailing recovery and tombstone segments hold no events: they go when any data
    segment does.  The last kept segment must be sealed (a segment that crash
    recovery cut is not), so a tombstone can chain to it.
    """
    framings: list[Framing | None] = []
    for name, _ in files:
        try:
            framings.append(scan_framing(folder.read_file(name), name=f"{folder.path.name}/{name}"))
        except StoreError:
            framings.append(None)  # damaged: never kept as the segment a tombstone chains to
    data_count = len(files)
    while data_count and _is_marker(framings[data_count - 1]):
        data_count -= 1
    first = _first_overlap(files[:data_count], start, _stopped_at(load_meta_at(folder)))
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


def _first_overlap(files: list[_File], start: float, stopped: float | None) -> int | None:
    """The first segment whose end (mtime + slack) is after ``start``; all later ones go with it.

    A segment cannot end after its session stopped: an mtime later than ``stopped_at``
    (a store copied or restored without its times) is capped there, so such a copy
    does not make every segment look recent.
    """
    for index, (_, st) in enumerate(files):
        end = st.st_mtime
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


def _trim(folder: StoreDir, files: list[_File], first: int, recipient: bytes, now: float) -> Trimmed:
    """Shred segments ``first..`` and put a tombstone at ``first``, holding the writer's lock."""
    folder.lock()  # held until the folder is closed
    sid = folder.path.name
    kept_end = files[first - 1][1].st_mtime
    removed = files[first:]
    removed_bytes = sum(st.st_size for _, st in removed)
    info = DeletionInfo(first, len(removed), removed_bytes, int(now))
    tmp = f".deletion-{os.urandom(4).hex()}.tmp"
    prev_commit = segment_commit(folder.read_file(files[first - 1][0]))
    try:
        with os.fdopen(folder.create_file(tmp), "wb", buffering=0) as fh:
            write_deletion_segment(
                fh, session_id=session_id_bytes(sid), prev_commit=prev_commit, recipient=recipient, info=info
            )
    except BaseException:
        with contextlib.suppress(OSError, UnsafeEntry):
            folder.unlink(tmp)  # nothing was shredded yet: the session is as it was
        raise
    # From here the tombstone is on disk: if shredding or the rename is interrupted (a crash,
    # a full disk), finish_interrupted_deletions() completes it; it is never thrown away.
    _shred_from(folder, [name for name, _ in files], first)
    folder.rename(tmp, segment_name(first), replace=True)
    folder.fsync()
    _update_meta(folder, info, kept_end)
    return Trimmed(sid, len(removed), removed_bytes, first, utc_timestamp(kept_end))


def _shred_from(folder: StoreDir, names: list[str], first: int) -> None:
    """Shred the segments ``first..``, newest first, and make their removal durable."""
    for name in reversed(names[first:]):
        shred_at(folder, name)
    folder.fsync()


_DELETION_TEMP = re.compile(r"\.deletion-[0-9a-f]{8}\.tmp")


def finish_interrupted_deletions(dirs: Dirs) -> list[str]:
    """Complete every ``delete-last`` trim that a crash or an I/O error interrupted.

    A trim writes its tombstone to ``.deletion-XXXXXXXX.tmp`` (durably) before it
    shreds anything, so a leftover temp file means: the volunteer asked to delete
    the segments from the tombstone's index on.  This shreds whatever of them is
    left and renames the tombstone into place.  It needs no key: the index is in
    the tombstone's plaintext header.  Sessions whose writer is alive are left
    alone, and so is anything that is not a regular file in a real session folder
    (logged with its path and the fix).  Returns the ids of the sessions it
    completed; never raises for one session's problem (logged without content).
    """
    done: list[str] = []
    with Sessions(dirs.sessions) as store:  # what is not a real session folder: enforce() logs it
        for sid in store.names:
            try:
                if _finish_in(store, sid):
                    done.append(sid)
            except (OSError, StoreError) as exc:
                why = str(exc) if isinstance(exc, UnsafeEntry) else type(exc).__name__
                log.warning("could not finish the interrupted deletion in session %s (%s)", sid, why)
    return done


def _finish_in(store: Sessions, sid: str) -> bool:
    with store.open_dir(sid) as folder:
        temps = [(name, st) for name, st in folder.entries() if _DELETION_TEMP.fullmatch(name)]
        if not temps or folder.writer_alive():
            return False
        bad = [folder.refusal(name, st) for name, st in temps if not is_plain_file(st)]
        plain = [(name, st) for name, st in temps if is_plain_file(st)]
        if plain:
            _finish_trim(folder, max(plain, key=lambda f: f[1].st_mtime)[0])
            for name, _ in plain:
                with contextlib.suppress(OSError, UnsafeEntry):
                    folder.unlink(name)
        if bad:
            raise UnsafeEntry(bad)
        return True


def _finish_trim(folder: StoreDir, tombstone: str) -> None:
    folder.lock()
    first = scan_framing(folder.read_file(tombstone), name=tombstone).index
    files, bad = _segments(folder)
    if bad:
        raise UnsafeEntry(bad)
    _shred_from(folder, [name for name, _ in files], first)
    folder.rename(tombstone, segment_name(first), replace=True)
    folder.fsync()
    meta = load_meta_at(folder) or {"schema": 1, "id": folder.path.name}
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
    write_meta_at(folder, meta)


def _update_meta(folder: StoreDir, info: DeletionInfo, kept_end: float) -> None:
    """meta.json after a trim: closed, the deletion recorded; counts stay as recorded."""
    meta = load_meta_at(folder) or {"schema": 1, "id": folder.path.name}
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
    write_meta_at(folder, meta)


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
    "finish_interrupted_deletions",
    "plan",
    "session_start",
    "shred_all",
    "shred_at",
    "shred_files",
    "shred_segment",
    "shred_session",
]
