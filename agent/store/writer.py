"""Record one session into encrypted, chained segment files.

A session is the directory ``Dirs.sessions/<id>/`` (mode 0700) holding
``000000.seg``, ``000001.seg``... (mode 0600, see ``docs/format.md``) and a
plaintext ``meta.json`` with counts and times only, so that ``optin sessions``
can list sessions without the private key.  Captured content is written only
through :class:`agent.store.format.SegmentWriter`, i.e. encrypted.

While a :class:`SessionWriter` is open it holds an exclusive ``flock`` on the
session directory (POSIX); :func:`writer_active` asks whether one still does,
which tells a live recording from one whose writer is gone.  ``meta.json`` says
``recording`` while it writes, ``closing`` just before the closing seal and
``closed`` after it; :mod:`agent.store.recovery` seals what a killed writer left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from agent.errors import StoreError, UsageError
from agent.events import Event, Frame, FramePatch, encode
from agent.paths import Dirs, check_private_dir, ensure_private_dir, write_private_file
from agent.store.format import (
    EVENTS,
    FRAME,
    KEY_SIZE,
    ZERO_COMMIT,
    SegmentWriter,
    is_segment_name,
    segment_name,
    session_id_bytes,
)
from agent.store.safe_fs import WRITER_LOCK, StoreDir, UnsafeEntry, is_plain_file, lock_dir

#: Name of the plaintext metadata file in a session directory.
META_FILE = "meta.json"
#: Version of the ``meta.json`` layout.
META_SCHEMA = 1
#: At most this much of a ``meta.json`` is read (a real one is a few hundred bytes).
META_LIMIT = 1 << 20
#: Target plaintext size of one EVENTS record; larger batches are split.
EVENTS_RECORD_TARGET = 1 << 20

_LEN = struct.Struct(">I")
_FSYNC_INTERVAL = 1.0
_STAT_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: How a session directory is opened for its lock: a directory, never through a link.
_DIR_FLAGS = getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


class SessionWriter:
    """Owns one session directory and its current segment.  Not thread-safe: one writer thread.

    Build it with :meth:`create`.  Segments rotate when the current one is older
    than ``segment_seconds`` or larger than ``segment_bytes``: the old one is
    sealed and the new one chains to its commit.
    """

    def __init__(
        self,
        path: Path,
        recipient: bytes,
        *,
        segment_seconds: float,
        segment_bytes: int,
        clock: Callable[[], float],
        lock_fd: int | None,
        session_id: str | None = None,
    ) -> None:
        self._path = path
        self._id = session_id or path.name  # a rewrite (agent.store.cut) writes the id under a temp name
        self._id_bytes = session_id_bytes(self._id)
        self._recipient = recipient
        self._segment_seconds = segment_seconds
        self._segment_bytes = segment_bytes
        self._clock = clock
        self._lock_fd = lock_fd
        self._started_at = _utc_now()
        self._counts: dict[str, int] = {}
        self._records = 0
        self._synced_records = 0  # records written when the segment was last fsynced
        self._sealed_bytes = 0
        self._closed = False
        self._last_fsync = clock()
        self._index = 0
        self._segment = self._open_segment(0, ZERO_COMMIT)
        self._segment.flush(fsync=True)
        self._fsync_dir()
        self._write_meta("recording")
        self._unsynced_segment = False  # a rotated-to segment whose header and name are not yet fsynced
        self._meta_stale = False  # meta.json lags behind the segment count

    @classmethod
    def create(
        cls,
        dirs: Dirs,
        recipient: bytes,
        *,
        segment_seconds: float = 60.0,
        segment_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> SessionWriter:
        """Create a new session directory, its first segment and ``meta.json`` (state ``recording``).

        :param recipient: the volunteer's raw X25519 public key (:func:`agent.store.keys.load_recipient`).
        :param clock: monotonic seconds, for segment age and fsync pacing.
        """
        if len(recipient) != KEY_SIZE:
            msg = f"recipient key must be {KEY_SIZE} bytes, got {len(recipient)}"
            raise UsageError(msg)
        if segment_seconds <= 0 or segment_bytes <= 0:
            msg = f"segment limits must be positive (got {segment_seconds} s, {segment_bytes} bytes)"
            raise UsageError(msg)
        ensure_private_dir(dirs.data)
        path = _make_session_dir(ensure_private_dir(dirs.sessions))
        lock_fd = lock_session(path)
        try:
            return cls(
                path,
                recipient,
                segment_seconds=segment_seconds,
                segment_bytes=segment_bytes,
                clock=clock,
                lock_fd=lock_fd,
            )
        except BaseException:
            unlock_session(lock_fd)
            with contextlib.suppress(OSError):
                path.rmdir()  # only succeeds if nothing was written
            raise

    @property
    def session_id(self) -> str:
        return self._id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def records(self) -> int:
        """Data records written so far, over all segments."""
        return self._records

    @property
    def bytes_written(self) -> int:
        """Bytes of segment files written so far."""
        return self._sealed_bytes + self._segment.bytes_written

    @property
    def counts(self) -> dict[str, int]:
        """Events written so far, by kind."""
        return dict(sorted(self._counts.items()))

    def write_events(self, events: Iterable[Event]) -> None:
        """Encrypt and write ``events`` in order.

        Each run of non-frame events becomes one EVENTS record (split at about
        :data:`EVENTS_RECORD_TARGET` bytes); each :class:`~agent.events.Frame`
        and :class:`~agent.events.FramePatch` becomes its own FRAME record.
        """
        self._check_open()
        parts: list[bytes] = []
        size = 0
        counts = self._counts
        for event in events:
            counts[event.KIND] = counts.get(event.KIND, 0) + 1
            if isinstance(event, (Frame, FramePatch)):
                if parts:
                    self._append(EVENTS, b"".join(parts))
                    parts, size = [], 0
                self._append(FRAME, encode(event))
                continue
            blob = encode(event)
            parts.append(_LEN.pack(len(blob)))
            parts.append(blob)
            size += _LEN.size + len(blob)
            if size >= EVENTS_RECORD_TARGET:
                self._append(EVENTS, b"".join(parts))
                parts, size = [], 0
        if parts:
            self._append(EVENTS, b"".join(parts))

    def flush(self, *, force_fsync: bool = False) -> None:
        """Hand written records to the OS; fsync at most once a second unless forced.

        The fsync also makes a segment started since the last one durable (its
        directory entry) and brings ``meta.json`` up to date.  Also rotates a
        segment that has grown too old while the session was idle.
        """
        if self._closed:
            return
        self._maybe_rotate()
        now = self._clock()
        if not (force_fsync or now - self._last_fsync >= _FSYNC_INTERVAL):
            self._segment.flush()
            return
        # an idle second wrote nothing: nothing to make durable
        self._segment.flush(
            fsync=force_fsync or self._unsynced_segment or self._records != self._synced_records
        )
        self._synced_records = self._records
        if self._unsynced_segment:
            self._fsync_dir()
            self._unsynced_segment = False
        if self._meta_stale:
            self._write_meta("recording")
            self._meta_stale = False
        self._last_fsync = now

    def close(self, stats: Mapping[str, int] | None = None) -> None:
        """Seal the last segment (marked as closing the session) and write the final ``meta.json``.

        :param stats: the capture pipeline's loss counters (P9), e.g.
            ``{"events": 0, "frames": 2}``: lowercase names, non-negative ints.
        :raises UsageError: a malformed counter (checked before anything is sealed).
        """
        dropped = _check_stats(stats or {})
        if self._closed:
            return
        try:
            # every record the final counts include is made durable before meta.json counts it (verify
            # holds a recovered session's segments to at least the counts its meta.json last had)
            self._segment.flush(fsync=True)
            # "closing" first: tells crash recovery that a sealed last segment is the closing one
            self._write_meta("closing", dropped)
            self._segment.seal(closes_session=True)
            if self._unsynced_segment:
                self._fsync_dir()
            self._closed = True
            self._write_meta("closed", dropped)
        except BaseException:
            # the disk refused (full, read-only): leave what a crash leaves, with no file left open
            self._closed = True
            with contextlib.suppress(Exception):
                self._segment.close()
            raise
        finally:
            self._release()

    def abort(self) -> None:
        """Stop without sealing: leaves exactly what a crash leaves (unsealed tail, state ``recording``)."""
        if self._closed:
            return
        self._closed = True
        try:
            self._segment.flush(fsync=True)
        finally:
            with contextlib.suppress(Exception):
                self._segment.close()
            self._release()

    def _check_open(self) -> None:
        if self._closed:
            msg = f"session {self._id} is closed; start a new session to record more"
            raise StoreError(msg)

    def _append(self, record_type: int, plaintext: bytes) -> None:
        self._maybe_rotate()
        self._segment.append(record_type, plaintext)
        self._records += 1

    def _maybe_rotate(self) -> None:
        segment = self._segment
        if not segment.records:
            return
        too_old = self._clock() - self._segment_started >= self._segment_seconds
        if too_old or segment.bytes_written >= self._segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        """Seal (and so fsync) the current segment and start the next.

        The new segment's header, directory entry and the segment count in
        ``meta.json`` become durable at the next once-a-second fsync: a crash
        before it loses at most that second, which recovery handles like any
        other (the shapes ``sealed`` and ``removed`` of docs/format.md).
        """
        commit = self._segment.seal()
        self._sealed_bytes += self._segment.bytes_written
        self._index += 1
        self._segment = self._open_segment(self._index, commit)
        self._unsynced_segment = self._meta_stale = True

    def _open_segment(self, index: int, prev_commit: bytes) -> SegmentWriter:
        segment = SegmentWriter(
            self._path / segment_name(index),
            session_id=self._id_bytes,
            index=index,
            prev_commit=prev_commit,
            recipient=self._recipient,
        )
        self._segment_started = self._clock()
        return segment

    def _write_meta(self, state: str, dropped: Mapping[str, int] | None = None) -> None:
        """Replace ``meta.json`` atomically; it holds counts and times, never content."""
        counts = self.counts
        meta: dict[str, Any] = {
            "schema": META_SCHEMA,
            "id": self._id,
            "state": state,
            "started_at": self._started_at,
            "stopped_at": _utc_now() if state == "closed" else None,
            "segments": self._index + 1,
            "records": self._records,
            "events": counts,
            "frames": counts.get(Frame.KIND, 0) + counts.get(FramePatch.KIND, 0),
            "dropped": sum((dropped or {}).values()),
            "dropped_by_source": dict(sorted((dropped or {}).items())),
            "bytes": self.bytes_written,
        }
        write_meta(self._path, meta)

    def _fsync_dir(self) -> None:
        if self._lock_fd is not None:
            os.fsync(self._lock_fd)

    def _release(self) -> None:
        unlock_session(self._lock_fd)
        self._lock_fd = None


def writer_active(session_path: Path) -> bool | None:
    """Whether a :class:`SessionWriter` still holds ``session_path``; None where this cannot be told."""
    try:  # never through a link: a link by a session's name is not a session (P8)
        with StoreDir.open(session_path) as folder:
            return folder.writer_alive()
    except (OSError, UnsafeEntry):
        return None


def encode_meta(meta: Mapping[str, Any]) -> bytes:
    """The bytes of ``meta.json``: indented JSON with sorted keys, ASCII, a final newline."""
    return (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("ascii")


def write_meta(session_path: Path, meta: Mapping[str, Any]) -> None:
    """Replace ``session_path/meta.json`` atomically and durably (mode 0600; counts and times only)."""
    write_private_file(session_path / META_FILE, encode_meta(meta))


def load_meta_at(folder: StoreDir) -> dict[str, Any] | None:
    """``meta.json`` of a session folder, read without following a link; None when missing,
    unreadable, not schema 1 or not a regular file."""
    try:
        meta = json.loads(folder.read_file(META_FILE, limit=META_LIMIT))
    except (OSError, ValueError, RecursionError, UnsafeEntry):
        return None
    if not isinstance(meta, dict) or meta.get("schema") != META_SCHEMA:
        return None
    return meta


def write_meta_at(folder: StoreDir, meta: dict[str, Any]) -> None:
    """Count the segment files into ``meta`` and replace meta.json in ``folder`` (by descriptor),
    encoded by :func:`encode_meta`, as every meta.json is."""
    sizes = segment_sizes(folder.entries())
    meta["segments"] = len(sizes)
    meta["bytes"] = sum(sizes)
    folder.write_file(META_FILE, encode_meta(meta))


def segment_sizes(entries: Iterable[tuple[str, os.stat_result]]) -> list[int]:
    """The sizes of the segment files among a folder's entries (names and ``lstat``): regular files
    only, so a link is not followed (a dangling one has no size) and a FIFO is not opened."""
    return [st.st_size for name, st in entries if is_segment_name(name) and is_plain_file(st)]


def utc_timestamp(seconds: float | None = None) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` of ``seconds`` since the epoch (default: now), as in ``meta.json``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _make_session_dir(sessions: Path) -> Path:
    """Create ``<UTC time>Z-<8 hex>`` exclusively with mode 0700."""
    for _ in range(16):
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = sessions / f"{stamp}-{secrets.token_hex(4)}"
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        check_private_dir(path)
        return path
    msg = f"could not create a new session directory in {sessions}"
    raise StoreError(msg)


def lock_session(path: Path) -> int | None:
    """Open the session directory ``path`` and take its writer lock (an exclusive flock; POSIX).

    Returns the descriptor, which also serves directory fsync, or None where
    there is no lock (Windows).  Release it with :func:`unlock_session`.

    :raises StoreError: another process holds the lock (its writer is alive).
    """
    if not WRITER_LOCK:
        return None
    fd = os.open(path, os.O_RDONLY | _DIR_FLAGS)  # a link to a folder is not a session (P8)
    try:
        lock_dir(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def unlock_session(fd: int | None) -> None:
    """Release a lock taken by :func:`lock_session` (closing the descriptor drops the flock)."""
    if fd is not None:
        os.close(fd)


def _check_stats(stats: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in stats.items():
        if not isinstance(key, str) or not _STAT_KEY.fullmatch(key):
            msg = f"loss counter name {key!r} is invalid; use lowercase names like 'events' or 'frames'"
            raise UsageError(msg)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            msg = f"loss counter {key!r} must be a non-negative int, got {type(value).__name__}"
            raise UsageError(msg)
        out[key] = value
    return out


def _utc_now() -> str:
    return utc_timestamp()


__all__ = [
    "EVENTS_RECORD_TARGET",
    "META_FILE",
    "META_LIMIT",
    "META_SCHEMA",
    "SessionWriter",
    "encode_meta",
    "load_meta_at",
    "lock_session",
    "segment_sizes",
    "unlock_session",
    "utc_timestamp",
    "write_meta",
    "write_meta_at",
    "writer_active",
]
