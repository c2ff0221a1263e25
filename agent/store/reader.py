"""List sessions (no key needed) and decrypt them (the volunteer's identity needed).

:func:`read_session` checks the whole chain: contiguous segment files, the same
session id, each ``prev_commit`` equal to the previous segment's commit, every
segment sealed except possibly the last.  Any break raises
:class:`~agent.errors.StoreCorrupt` or :class:`~agent.errors.StoreFormatError`
naming the file.  An unsealed or unclosed *end* of a session that was never
marked closed is what a crash leaves: it is read as far as it is valid and
reported in :attr:`SessionData.problems`, never silently.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import NotFound, StoreCorrupt, StoreFormatError, UsageError
from agent.events import Event, Frame, decode
from agent.paths import Dirs
from agent.store.format import (
    EVENTS,
    HEADER_SIZE,
    MAGIC,
    ZERO_COMMIT,
    SegmentContents,
    read_segment,
    segment_name,
    session_id_bytes,
)
from agent.store.writer import META_FILE, META_SCHEMA, writer_active

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class SessionInfo:
    """One line of ``optin sessions``: metadata only, readable without the private key.

    :ivar state: ``recording`` (a writer holds it), ``interrupted`` (meta says
        recording but its writer is gone), ``closed``, or ``unknown`` (no
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


@dataclass(frozen=True)
class SessionData:
    """A decrypted session.

    :ivar all_sealed: every segment ended with a valid SEAL record.
    :ivar problems: what a reader should be told (crash tail, recovered
        segments); empty for a cleanly closed session.
    """

    session_id: str
    events: list[Event]
    segments: int
    all_sealed: bool
    problems: list[str]


def session_dir(dirs: Dirs, session_id: str) -> Path:
    """The directory of ``session_id``.

    :raises UsageError: ``session_id`` is not a plain session id (path separators, ``..``).
    :raises NotFound: there is no such session.
    """
    if not _ID.fullmatch(session_id) or ".." in session_id:
        msg = (
            f"{session_id!r} is not a session id; ids look like 20261127T213000Z-1a2b3c4d. "
            "Fix: run: optin sessions"
        )
        raise UsageError(msg)
    path = dirs.sessions / session_id
    if not path.is_dir():
        msg = f"no session {session_id!r} in {dirs.sessions}. Fix: run: optin sessions (lists the ids)"
        raise NotFound(msg)
    return path


def list_sessions(dirs: Dirs) -> list[SessionInfo]:
    """Every session directory, sorted by id, described from its ``meta.json`` and file sizes."""
    root = dirs.sessions
    if not root.is_dir():
        return []
    paths = sorted(p for p in root.iterdir() if p.is_dir() and _ID.fullmatch(p.name))
    return [_session_info(p) for p in paths]


def read_session(dirs: Dirs, session_id: str, identity: bytes) -> SessionData:
    """Decrypt every segment of ``session_id`` and return its events in order.

    :raises StoreCorrupt: authentication failed, or the chain is broken (a
        segment missing, reordered, replaced, truncated or from another session).
    :raises StoreFormatError: a structural problem, naming file and offset.
    """
    path = session_dir(dirs, session_id)
    meta = _load_meta(path)
    closed = meta is not None and meta.get("state") == "closed"
    files = _segment_files(path, session_id)
    if not files:
        if closed:
            msg = f"{session_id}: the session was closed but has no segments"
            raise StoreCorrupt(msg)
        problem = f"{session_id}: no segments (the recorder stopped before writing any)"
        return SessionData(session_id, [], 0, all_sealed=False, problems=[problem])
    reader = _ChainReader(session_id, identity, closed=closed)
    for position, file in enumerate(files):
        if not reader.read(file, last=position == len(files) - 1):
            break
    return SessionData(session_id, reader.events, len(files), reader.all_sealed, reader.problems)


class _ChainReader:
    """Reads the segments of one session in order, checking the chain as it goes."""

    def __init__(self, session_id: str, identity: bytes, *, closed: bool) -> None:
        self.session_id = session_id
        self.identity = identity
        self.closed = closed
        self.expected_id = session_id_bytes(session_id)
        self.prev_commit = ZERO_COMMIT
        self.index = 0
        self.events: list[Event] = []
        self.problems: list[str] = []
        self.all_sealed = True

    def read(self, file: Path, *, last: bool) -> bool:
        """Read one segment; False when it was an empty crash tail (nothing more to read)."""
        name = f"{self.session_id}/{file.name}"
        data = file.read_bytes()
        if last and not self.closed and _is_header_prefix(data):
            self.all_sealed = False
            self.problems.append(f"{name}: header incomplete ({len(data)} bytes): the recorder stopped here")
            return False
        segment = read_segment(data, self.identity, name=name)
        self._check_chain(segment, name, last=last)
        self.events.extend(_decode_records(segment, name))
        if segment.recovered:
            self.problems.append(f"{name}: sealed by crash recovery; records after the crash were lost")
        if segment.sealed:
            self._check_end(segment, name, last=last)
        else:
            self.all_sealed = False
            self.problems.append(
                f"{name}: not sealed; read {len(segment.records)} records and ignored "
                f"{segment.tail} trailing bytes (still recording, or the recorder stopped without closing)"
            )
        self.prev_commit = segment.commit or ZERO_COMMIT
        self.index += 1
        return True

    def _check_chain(self, segment: SegmentContents, name: str, *, last: bool) -> None:
        if segment.session_id != self.expected_id:
            msg = f"{name}: segment belongs to another session: segment chain broken"
            raise StoreCorrupt(msg)
        if segment.index != self.index:
            msg = f"{name}: holds segment {segment.index}, expected {self.index}: segment chain broken"
            raise StoreCorrupt(msg)
        if segment.prev_commit != self.prev_commit:
            msg = f"{name}: previous segment missing, reordered or replaced: segment chain broken"
            raise StoreCorrupt(msg)
        if not segment.sealed and (not last or self.closed):
            why = "later segments follow" if not last else "the session was closed"
            msg = f"{name}: segment is truncated or not sealed, but {why}"
            raise StoreCorrupt(msg)

    def _check_end(self, segment: SegmentContents, name: str, *, last: bool) -> None:
        if segment.closes_session and not last:
            msg = f"{name}: segment closes the session but later segments follow"
            raise StoreCorrupt(msg)
        if last and not segment.closes_session:
            if self.closed:
                msg = f"{name}: the session was closed but its closing segment is missing"
                raise StoreCorrupt(msg)
            self.problems.append(
                f"{name}: the session has no closing segment (the recorder stopped between segments)"
            )


def _decode_records(segment: SegmentContents, name: str) -> list[Event]:
    events: list[Event] = []
    for number, (record_type, plaintext) in enumerate(segment.records):
        try:
            if record_type == EVENTS:
                events.extend(_split_events(plaintext))
            else:
                events.append(_decode_frame(plaintext))
        except StoreFormatError as exc:
            msg = f"{name}: record {number}: {exc}"
            raise StoreFormatError(msg) from None
    return events


def _split_events(plaintext: bytes) -> list[Event]:
    """Decode an EVENTS record: a sequence of ``u32 BE length | encoded event``."""
    events: list[Event] = []
    offset = 0
    size = len(plaintext)
    while offset < size:
        if size - offset < _LEN.size:
            msg = f"event length field cut short at byte {offset}"
            raise StoreFormatError(msg)
        (length,) = _LEN.unpack_from(plaintext, offset)
        start = offset + _LEN.size
        if start + length > size:
            msg = f"event at byte {offset} runs past the end of its record"
            raise StoreFormatError(msg)
        events.append(decode(plaintext[start : start + length]))
        offset = start + length
    return events


def _decode_frame(plaintext: bytes) -> Event:
    event = decode(plaintext)
    if not isinstance(event, Frame):
        msg = f"FRAME record holds a {event.KIND} event"
        raise StoreFormatError(msg)
    return event


def _is_header_prefix(data: bytes) -> bool:
    """True for a file cut off inside its header (what a crash at segment creation leaves)."""
    return len(data) < HEADER_SIZE and data[: len(MAGIC)] == MAGIC[: len(data)]


def _segment_files(path: Path, session_id: str) -> list[Path]:
    """The segment files in index order; a gap raises (a segment is missing)."""
    found: dict[int, Path] = {}
    for file in path.iterdir():
        if file.suffix != ".seg" or file.name.startswith("."):
            continue
        stem = file.stem
        if not stem.isdecimal() or segment_name(int(stem)) != file.name:
            msg = f"{session_id}/{file.name}: unexpected segment file name (expected NNNNNN.seg)"
            raise StoreFormatError(msg)
        found[int(stem)] = file
    for index in range(len(found)):
        if index not in found:
            msg = f"{session_id}/{segment_name(index)} is missing: segment chain broken"
            raise StoreCorrupt(msg)
    return [found[i] for i in range(len(found))]


def _load_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("schema") != META_SCHEMA:
        return None
    return meta


def _session_info(path: Path) -> SessionInfo:
    meta = _load_meta(path) or {}
    files = [p for p in path.iterdir() if p.suffix == ".seg" and not p.name.startswith(".")]
    raw = meta.get("events")
    by_kind = {str(k): _count(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
    return SessionInfo(
        id=path.name,
        state=_state(path, meta),
        started_at=_str_or_none(meta.get("started_at")),
        stopped_at=_str_or_none(meta.get("stopped_at")),
        segments=len(files),
        records=_count(meta.get("records")),
        events=sum(by_kind.values()),
        events_by_kind=by_kind,
        frames=_count(meta.get("frames")),
        dropped=_count(meta.get("dropped")),
        bytes=sum(p.stat().st_size for p in files),
    )


def _state(path: Path, meta: dict[str, Any]) -> str:
    state = meta.get("state")
    if state == "closed":
        return "closed"
    if state == "recording":
        return "interrupted" if writer_active(path) is False else "recording"
    return "unknown"


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


__all__ = ["SessionData", "SessionInfo", "list_sessions", "read_session", "session_dir"]
