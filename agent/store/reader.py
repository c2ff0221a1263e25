"""List sessions (no key needed) and decrypt them (the volunteer's identity needed).

:func:`read_session` checks the whole chain: contiguous segment files, the same
session id, each ``prev_commit`` equal to the previous segment's commit, every
segment sealed except possibly the last (:mod:`agent.store.chain` walks it).
Any break raises :class:`~agent.errors.StoreCorrupt` or
:class:`~agent.errors.StoreFormatError` naming the file.  An unsealed or
unclosed *end* of a session that was never marked closed is what a crash
leaves: its whole records are read and the rest is reported in
:attr:`SessionData.problems`, never silently; once crash recovery
(:mod:`agent.store.recovery`) has sealed it, it reads as a closed session whose
cut is reported the same way.  A record that fails authentication always raises,
before a crash's cut as anywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.events import Event
from agent.paths import Dirs
from agent.store import safe_fs
from agent.store.chain import walk_session
from agent.store.safe_fs import (
    A_SESSION,
    SESSION_ID,
    StoreDir,
    UnsafeEntry,
    check_session_id,
    is_plain_dir,
    not_found,
    refusal,
)
from agent.store.writer import load_meta_at, segment_sizes, writer_active


@dataclass(frozen=True)
class SessionInfo:
    """One line of ``optin sessions``: metadata only, readable without the private key.

    :ivar state: ``recording`` (a writer holds it), ``interrupted`` (meta says
        recording or closing but its writer is gone: crash recovery has not run
        yet), ``closed`` (cleanly or by crash recovery), or ``unknown`` (no
        readable ``meta.json``).
    :ivar segments: segment files on disk.
    :ivar events: events of every kind (frames included); ``events_by_kind`` splits them.
    :ivar dropped: events and frames the capture pipeline lost (P9).
    :ivar bytes: size of the segment files on disk.
    """

    id: str
    state: str
    started_at: str | None
    stopped_at: str | None
    segments: int
    records: int
    events: int
    events_by_kind: dict[str, int]
    frames: int
    dropped: int
    bytes: int
    recovered: bool = False


@dataclass(frozen=True)
class SessionData:
    """A decrypted session.

    :ivar all_sealed: every segment ended with a valid SEAL record.
    :ivar problems: what a reader should be told (crash tail, what crash
        recovery cut); empty for a cleanly closed session.
    :ivar recovered: the session was sealed by crash recovery.
    """

    session_id: str
    events: list[Event]
    segments: int
    all_sealed: bool
    problems: list[str]
    recovered: bool = False


def session_dir(dirs: Dirs, session_id: str) -> Path:
    """The directory of ``session_id``: a real directory, never a link to one.

    :raises UsageError: ``session_id`` is not a plain session id (path separators, ``..``).
    :raises NotFound: there is no such session.
    :raises UnsafeEntry: a link, file, FIFO... stands where its folder should be (the message names
        it and the fix).
    """
    check_session_id(session_id)
    path = dirs.sessions / session_id
    try:
        st = path.lstat()
    except OSError:
        raise not_found(dirs.sessions, session_id) from None
    if not is_plain_dir(st):  # a link to a folder (or a file) by a session's name is never followed (P8)
        raise UnsafeEntry([refusal(path, st, A_SESSION)], lead=f"session {session_id} was not read")
    return path


def session_paths(dirs: Dirs) -> list[Path]:
    """Every real session directory, sorted by id (a link by a session's name is not one: never followed)."""
    return safe_fs.session_dirs(dirs.sessions, SESSION_ID)[0]


def list_sessions(dirs: Dirs) -> list[SessionInfo]:
    """Every session directory, sorted by id, described from its ``meta.json`` and file sizes."""
    return [_session_info(p) for p in session_paths(dirs)]


def read_session(dirs: Dirs, session_id: str, identity: bytes) -> SessionData:
    """Decrypt every segment of ``session_id`` and return its events in order.

    A session that crash recovery sealed reads as everything before the cut,
    with what was cut reported in :attr:`SessionData.problems`.  Every record
    before the cut is authenticated like any other: one that fails raises (its
    file and offset), and no record is ever left out quietly.

    :raises StoreCorrupt: authentication failed, or the chain is broken (a
        segment missing, reordered, replaced, truncated or from another session).
    :raises StoreFormatError: a structural problem, naming file and offset.
    """
    path = session_dir(dirs, session_id)
    meta = load_meta(path)
    closed = meta is not None and meta.get("state") == "closed"
    events: list[Event] = []
    walk = walk_session(
        path, identity, closed=closed, live=writer_active(path), strict=True, on_events=events.extend
    )
    problems = [finding.message for finding in walk.findings]
    return SessionData(session_id, events, walk.segments, walk.all_sealed, problems, walk.recovered)


def load_meta(path: Path) -> dict[str, Any] | None:
    """The ``meta.json`` of the session directory ``path``, or None when missing, not schema 1, or not
    a regular file in a real folder (a link is never followed, a FIFO never opened: P8)."""
    try:
        with StoreDir.open(path) as folder:
            return load_meta_at(folder)
    except (OSError, UnsafeEntry):
        return None


def _session_info(path: Path) -> SessionInfo:
    meta = load_meta(path) or {}
    try:
        with StoreDir.open(path) as folder:
            entries = folder.entries()
    except (OSError, UnsafeEntry):
        entries = []  # gone or replaced since it was listed
    sizes = segment_sizes(entries)
    raw = meta.get("events")
    by_kind = {str(k): _count(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return SessionInfo(
        id=path.name,
        state=_state(path, meta),
        started_at=_str_or_none(meta.get("started_at")),
        stopped_at=_str_or_none(meta.get("stopped_at")),
        segments=len(sizes),
        records=_count(meta.get("records")),
        events=sum(by_kind.values()),
        events_by_kind=by_kind,
        frames=_count(meta.get("frames")),
        dropped=_count(meta.get("dropped")),
        bytes=sum(sizes),
        recovered=meta.get("recovered") is True,
    )


def _state(path: Path, meta: dict[str, Any]) -> str:
    state = meta.get("state")
    if state == "closed":
        return "closed"
    if state in ("recording", "closing"):
        return "interrupted" if writer_active(path) is False else "recording"
    return "unknown"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


__all__ = [
    "SessionData",
    "SessionInfo",
    "list_sessions",
    "load_meta",
    "read_session",
    "session_dir",
    "session_paths",
]
