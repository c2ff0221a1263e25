"""Crash recovery at the next start: seal what a killed recorder left, with the public key only.

The recorder holds only the recipient (P5), so it can neither authenticate nor
re-seal an old segment.  What it can do without any key (``docs/format.md``,
Recovery rules):

1. cut the last segment of a session whose writer died after its last
   structurally complete record (a record whose head and ciphertext are all
   there, and whose tag is not all zero bytes, which is what a file system
   leaves when it grew the file but lost the data), or remove it when it is
   shorter than a header;
2. append a **recovery segment**: a fresh segment holding one RECOVERY record
   (what was cut, in bytes) and a SEAL with the recovered and closes-session
   flags, whose ``prev_commit`` binds the cut segment's bytes as they now are;
3. mark ``meta.json`` closed and recovered, keeping its counts.

A reader then authenticates every record before the cut, as in any segment:
recovery committed to that length, so a record there that fails is damage or
tampering, reported with its file and offset, never passed off as crash loss;
and any change made after recovery breaks the chain.  The RECOVERY record says
how many bytes were cut.  (A recorder killed mid-write loses only the write in
progress, and after a power loss at most about the last second; but a recovery
segment needs only the public key, so the store cannot prove it was a crash.)

A session without ``meta.json`` is recovered only when its end is open (no
segment, a cut-off header of segment 0, or a last segment without a SEAL): a
sealed last segment may be the one that closes the session, which recovery
cannot tell without the key, and appending after it would break a healthy
session.

Recovery never touches a session whose writer is alive (it takes the writer's
lock first), is idempotent, and never raises: what it could not do is in the
returned :class:`RecoveryReport` and in the log (session ids and byte counts,
never content).

It acts only on regular files inside real session folders (P8, through
:mod:`agent.store.safe_fs`): a link, FIFO or device where a session folder, a
segment, ``meta.json`` or a temporary file should be is never followed nor opened,
and a segment with other names (hard links) is never cut; the session is left as
it is and reported as ``skipped`` with the path and the fix.
"""

from __future__ import annotations

import calendar
import contextlib
import logging
import os
import re
import struct
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreError
from agent.paths import Dirs
from agent.store import safe_fs
from agent.store.format import write_recovery_segment
from agent.store.safe_fs import StoreDir, UnsafeEntry, is_plain_file, refusals_text
from agent.store.segment_layout import (
    HEADER_SIZE,
    RECOVERY,
    TAG_SIZE,
    ZERO_COMMIT,
    Framing,
    RecoveryInfo,
    is_segment_name,
    scan_framing,
    segment_commit,
    segment_index,
    segment_name,
    session_id_bytes,
)
from agent.store.writer import META_FILE, META_SCHEMA, load_meta_at, utc_timestamp, write_meta_at
from agent.untrusted_text import visible

log = logging.getLogger(__name__)

#: Names of session directories made by :class:`~agent.store.writer.SessionWriter`.
_SESSION_NAME = re.compile(r"(\d{8}T\d{6}Z)-[0-9a-f]{8}")
#: Temporary files recovery or ``write_private_file`` leave behind when killed.
_TEMP_FILE = re.compile(r"\.(recovery-[0-9a-f]{8}\.tmp|meta\.json\.tmp-[0-9a-f]{8})")
_OPEN_STATES = ("recording", "closing")
_RECORD_HEAD = struct.Struct(">IB")  # ciphertext length, record type (docs/format.md, Records)
_ZERO_TAG = bytes(TAG_SIZE)


@dataclass(frozen=True)
class RecoveryReport:
    """What :func:`recover_sessions` did to one session.

    :ivar action: ``recovered`` (a recovery segment was appended), ``finalized``
        (the end was already sealed, by the writer or an interrupted recovery:
        only ``meta.json`` was completed) or ``skipped`` (left alone; see ``problem``).
    :ivar shape: for ``recovered``: ``unsealed``, ``sealed`` or ``removed`` (see
        :class:`~agent.store.format.RecoveryInfo`).
    :ivar segment: the segment that was cut, closed after, or removed.
    :ivar original_bytes: its size as found; ``kept_bytes``: its size after recovery.
    :ivar problem: why the session was skipped (no content, ever).
    """

    session_id: str
    action: str
    shape: str | None = None
    segment: int | None = None
    original_bytes: int | None = None
    kept_bytes: int | None = None
    problem: str | None = None

    @property
    def lost_bytes(self) -> int:
        """Bytes cut or removed (0 when nothing was)."""
        if self.original_bytes is None or self.kept_bytes is None:
            return 0
        return self.original_bytes - self.kept_bytes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


class _Skip(Exception):
    """Leave this session alone; the message says why."""


def recover_sessions(dirs: Dirs, recipient: bytes) -> list[RecoveryReport]:
    """Seal every session whose writer died, before a new session is opened.

    Sessions that are closed, or whose writer is alive, are left alone and not
    reported.  Never raises: a session that cannot be recovered is reported as
    ``skipped`` with the reason (and logged), and the next start goes on.

    Only real session folders and regular files in them are read, cut or written
    (:mod:`agent.store.safe_fs`): a link by a session's name, or a session whose
    segment, ``meta.json`` or temporary file is a link, FIFO or device, is reported
    as ``skipped`` with its path and the fix, and nothing it points to is touched.

    :param recipient: the volunteer's raw X25519 public key (as for recording).
    """
    try:
        paths, refused = safe_fs.session_dirs(dirs.sessions, _SESSION_NAME)
    except (OSError, UnsafeEntry):
        return []  # no sessions directory yet (or unusable: the writer will say so)
    reports: list[RecoveryReport] = []
    for entry in refused:
        report = RecoveryReport(Path(entry.path).name, "skipped", problem=entry.message)
        _log(report)
        reports.append(report)
    for path in paths:
        found = _recover_one(path, recipient)
        if found is not None:
            _log(found)
            reports.append(found)
    return sorted(reports, key=lambda r: r.session_id)


def _recover_one(path: Path, recipient: bytes) -> RecoveryReport | None:
    """Recover one session, or None when there is nothing to do (closed, or its writer is alive)."""
    sid = path.name
    try:
        with StoreDir.open(path) as folder:
            if _state(folder) == "closed":
                return None
            if not folder.lockable:
                msg = "this platform cannot tell whether its writer is alive"
                raise _Skip(msg)
            try:
                folder.lock()  # held until the folder is closed
            except StoreError:
                return None  # its writer is alive
            return _recover_locked(folder, recipient)
    except _Skip as exc:
        return RecoveryReport(sid, "skipped", problem=str(exc))
    except UnsafeEntry as exc:
        return RecoveryReport(sid, "skipped", problem=str(exc))
    except Exception as exc:  # never fail the next start; the report says what happened
        return RecoveryReport(sid, "skipped", problem=f"recovery failed: {type(exc).__name__}: {exc}")


def _state(folder: StoreDir) -> str | None:
    """``meta.json``'s state; None when there is no meta.json (a crash while creating the session, or lost).

    :raises _Skip: meta.json is not a regular file, is unreadable or has an unknown state.
    """
    st = folder.lstat(META_FILE)
    if st is None:
        return None
    if not is_plain_file(st):
        raise _Skip(folder.refusal(META_FILE, st).message)
    meta = load_meta_at(folder)
    state = meta.get("state") if meta else None
    if state not in (*_OPEN_STATES, "closed"):
        msg = "meta.json is unreadable or has an unknown state; left for optin verify"
        raise _Skip(msg)
    return str(state)


#: A segment file's name and ``lstat``.
_File = tuple[str, os.stat_result]


def _recover_locked(folder: StoreDir, recipient: bytes) -> RecoveryReport | None:
    """Recovery proper, holding the session's writer lock."""
    sid = folder.path.name
    state = _state(folder)  # again: the writer may have closed it before we took the lock
    if state == "closed":
        return None
    entries = folder.entries()
    _refuse_unsafe(folder, entries)
    _remove_temp_files(folder, entries)
    files = _segment_files(entries)
    stopped = _last_write(files)
    if not files:
        info, prev = RecoveryInfo("removed", 0, 0, 0), ZERO_COMMIT
    else:
        last = max(files)
        data = folder.read_file(files[last][0])
        if len(data) < HEADER_SIZE:
            if state is None and last > 0:
                raise _Skip(_NO_META_SEALED)  # segment last - 1 is sealed: perhaps the closing one
            info, prev = _remove_header_tail(folder, files, last, len(data))
        else:
            framing = _framing(sid, last, data)
            if framing.is_recovery_segment:  # an earlier recovery was killed before its meta.json
                before = {i: f for i, f in files.items() if i != last}
                _finalize(folder, stopped_at=_last_write(before), recovered=True, info=None)
                return RecoveryReport(sid, "finalized")
            kept = _kept_length(data, framing)
            sealed = framing.sealed and kept == framing.end
            if sealed and state is None:
                raise _Skip(_NO_META_SEALED)
            if sealed and state == "closing":  # killed between the closing seal and meta.json
                _finalize(folder, stopped_at=stopped, recovered=False, info=None)
                return RecoveryReport(sid, "finalized")
            info, prev = _cut(folder, files[last][0], last, data, kept, sealed=sealed)
    _append_recovery_segment(folder, recipient, info, prev)
    _finalize(folder, stopped_at=stopped, recovered=True, info=info)
    return RecoveryReport(sid, "recovered", info.shape, info.segment, info.original, info.kept)


def _refuse_unsafe(folder: StoreDir, entries: list[_File]) -> None:
    """A segment or a temporary file that is not a regular file: leave the whole session alone.

    :raises _Skip: naming each such entry, what it is and the fix (nothing was changed).
    """
    refused = [
        folder.refusal(name, st)
        for name, st in entries
        if (is_segment_name(name) or _TEMP_FILE.fullmatch(name)) and not is_plain_file(st)
    ]
    if refused:
        msg = f"{refusals_text(refused)}; nothing was changed in this session"
        raise _Skip(msg)


def _segment_files(entries: list[_File]) -> dict[int, _File]:
    """Segment files by index (each a regular file: :func:`_refuse_unsafe` ran first).

    :raises _Skip: unexpected names or a gap: not what a crash leaves.
    """
    found: dict[int, _File] = {}
    for name, st in entries:
        if not is_segment_name(name):
            continue
        index = segment_index(name)
        if index is None:
            msg = f"unexpected file {visible(name)}; left for optin verify"
            raise _Skip(msg)
        found[index] = (name, st)
    if found and len(found) != max(found) + 1:
        msg = "segment files are not contiguous (a segment is missing); left for optin verify"
        raise _Skip(msg)
    return found


_NO_META_SEALED = (
    "meta.json is missing and the session ends with a sealed segment, which may be the one that "
    "closes it (that cannot be told without the key); left for optin verify"
)


def _kept_length(data: bytes, framing: Framing) -> int:
    """Where to cut: after the last complete record, but before the first whose tag is all zero.

    A real AES-GCM tag is all zero with probability 2^-128; an all-zero tag is what a
    file system leaves when a power loss kept the file's new length but not its last
    block.  Cutting there keeps every record before the cut authentic, as readers require.
    """
    offset = HEADER_SIZE
    while offset < framing.end:
        length, _ = _RECORD_HEAD.unpack_from(data, offset)
        end = offset + _RECORD_HEAD.size + length
        if data[end - TAG_SIZE : end] == _ZERO_TAG:
            return offset
        offset = end
    return framing.end


def _framing(sid: str, index: int, data: bytes) -> Framing:
    """The last segment's framing, checked to be a crash shape of this session's segment ``index``.

    :raises _Skip: a foreign or malformed header, bytes after a SEAL, a damaged recovery segment.
    """
    name = segment_name(index)
    try:
        framing = scan_framing(data, name=name)
    except StoreError as exc:
        msg = f"{exc}; left for optin verify"
        raise _Skip(msg) from None
    if framing.session_id != session_id_bytes(sid) or framing.index != index:
        msg = f"{name} has the header of another session or position; left for optin verify"
        raise _Skip(msg)
    if framing.stop == "after-seal":
        msg = f"{name}: bytes follow its SEAL record, which no crash does; left for optin verify"
        raise _Skip(msg)
    if framing.first_type == RECOVERY and not framing.is_recovery_segment:
        msg = f"{name} is a damaged recovery segment; left for optin verify"
        raise _Skip(msg)
    return framing


def _remove_header_tail(
    folder: StoreDir, files: dict[int, _File], last: int, size: int
) -> tuple[RecoveryInfo, bytes]:
    """A crash while creating segment ``last``: remove it; the recovery segment takes its place."""
    prev = segment_commit(folder.read_file(files[last - 1][0])) if last else ZERO_COMMIT
    folder.unlink(files[last][0])
    folder.fsync()
    del files[last]
    return RecoveryInfo("removed", last, size, 0), prev


def _cut(
    folder: StoreDir, name: str, index: int, data: bytes, kept: int, *, sealed: bool
) -> tuple[RecoveryInfo, bytes]:
    """Cut the last segment to ``kept`` bytes (nothing to cut when it is sealed).

    The file is opened without following a link and cut only when it is a regular file
    with one name: a file with other names (hard links) would be cut under those too.
    """
    if sealed:
        return RecoveryInfo("sealed", index, len(data), len(data)), segment_commit(data)
    if kept < len(data):
        fd, before = folder.open_file(name, os.O_WRONLY)
        try:
            if before.st_nlink != 1:
                msg = f"{folder.refusal(name, before).message}; nothing was changed in this session"
                raise _Skip(msg)
            if before.st_size != len(data):
                msg = f"{name} changed while it was being recovered; left for the next start"
                raise _Skip(msg)
            os.ftruncate(fd, kept)
            # keep the time the crashed writer last wrote: delete-last reads a segment's end from it
            os.utime(fd, ns=(before.st_atime_ns, before.st_mtime_ns))
            os.fsync(fd)
        finally:
            os.close(fd)
        folder.fsync()
    return RecoveryInfo("unsealed", index, len(data), kept), segment_commit(data[:kept])


def _append_recovery_segment(folder: StoreDir, recipient: bytes, info: RecoveryInfo, prev: bytes) -> None:
    """Write the recovery segment to a temporary file, then rename it into place (atomic)."""
    index = info.segment if info.shape == "removed" else info.segment + 1
    final = segment_name(index)
    if folder.lstat(final) is not None:
        msg = f"{final} already exists; left for optin verify"
        raise _Skip(msg)
    tmp = f".recovery-{os.urandom(4).hex()}.tmp"
    try:
        with os.fdopen(folder.create_file(tmp), "wb", buffering=0) as fh:
            write_recovery_segment(
                fh,
                session_id=session_id_bytes(folder.path.name),
                index=index,
                prev_commit=prev,
                recipient=recipient,
                info=info,
            )
        folder.rename(tmp, final)  # never over an entry that appeared meanwhile
    finally:
        with contextlib.suppress(OSError, UnsafeEntry):
            folder.unlink(tmp)
    folder.fsync()


def _finalize(
    folder: StoreDir, *, stopped_at: str | None, recovered: bool, info: RecoveryInfo | None
) -> None:
    """Rewrite ``meta.json`` as closed; counts stay what the writer last wrote."""
    meta = load_meta_at(folder) or _fresh_meta(folder.path.name)
    meta["state"] = "closed"
    meta["stopped_at"] = meta.get("stopped_at") or stopped_at
    if recovered:
        meta["recovered"] = True
    if info is not None:
        meta["recovery"] = {
            "shape": info.shape,
            "segment": info.segment,
            "original_bytes": info.original,
            "kept_bytes": info.kept,
            "recovered_at": utc_timestamp(),
        }
    write_meta_at(folder, meta)


def _fresh_meta(sid: str) -> dict[str, Any]:
    """meta.json of a session killed before it wrote one (nothing was recorded yet)."""
    match = _SESSION_NAME.fullmatch(sid)
    started = None
    if match:
        started = utc_timestamp(calendar.timegm(time.strptime(match.group(1), "%Y%m%dT%H%M%SZ")))
    return {
        "schema": META_SCHEMA,
        "id": sid,
        "state": "recording",
        "started_at": started,
        "stopped_at": None,
        "segments": 0,
        "records": 0,
        "events": {},
        "frames": 0,
        "dropped": 0,
        "dropped_by_source": {},
        "bytes": 0,
    }


def _last_write(files: dict[int, _File]) -> str | None:
    """When the writer last wrote (the newest segment's mtime): the session's stop time."""
    times = [st.st_mtime for _, st in files.values()]
    return utc_timestamp(max(times)) if times else None


def _remove_temp_files(folder: StoreDir, entries: list[_File]) -> None:
    """Temporary files of a killed recovery or meta.json write (regular files: checked; never content)."""
    for name, _ in entries:
        if _TEMP_FILE.fullmatch(name):
            with contextlib.suppress(FileNotFoundError):
                folder.unlink(name)


def _log(report: RecoveryReport) -> None:
    if report.action == "skipped":
        log.warning("session %s was not recovered: %s", report.session_id, report.problem)
    elif report.action == "recovered":
        log.warning(
            "recovered session %s after a crash: %s segment %s, %s of %s bytes kept",
            report.session_id,
            report.shape,
            report.segment,
            report.kept_bytes,
            report.original_bytes,
        )
    else:
        log.info("completed the metadata of session %s, which was already sealed", report.session_id)


__all__ = ["RecoveryReport", "recover_sessions"]
