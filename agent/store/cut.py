"""Cut time ranges out of a recorded session, for real: the rest is re-encrypted, the old keys shredded.

``optin review`` lets the volunteer cut ranges of a session.  A cut is deleted locally,
not just left out of the export: :func:`cut_session` writes the kept events into a new
session directory under the same id (fresh segment keys, the same chain rules as any
session, a ``cut`` marker where each range was), swaps it into place, then shreds every
segment of the old copy (:func:`agent.store.retention.shred_files`: the wrapped keys are
overwritten, so the old ciphertext is unreadable even if the disk keeps it).  Only regular files
in real folders are read, carried or shredded (:mod:`agent.store.safe_fs`): a session holding a
link, a FIFO or a device is not cut, and a link by a temp copy's name is never followed.

The swap is two renames; a crash between any two steps leaves one of:

* ``.cut-new-<id>-<hex>`` and ``<id>``: the rewrite was not finished → the new copy is shredded;
* ``.cut-new-<id>-<hex>`` (closed) and ``.cut-old-<id>-<hex>``: the old copy was moved
  away → the new one is moved into place and the old one shredded;
* ``<id>`` and ``.cut-old-<id>-<hex>``: the old copy was not yet shredded → it is.

:func:`finish_interrupted_cuts` does that; the agent calls it at start, and every cut
before it begins.  Temp names start with a dot, so no listing takes them for sessions.
Nothing here logs or raises captured content: only ids, counts and error types.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StoreError, UsageError
from agent.events import Event, FramePatch, Marker
from agent.frame_regions import reanchor
from agent.paths import Dirs, write_private_file
from agent.store.reader import load_meta, read_session
from agent.store.retention import shred_files
from agent.store.safe_fs import (
    Refused,
    StoreDir,
    UnsafeEntry,
    is_plain_dir,
    is_plain_file,
    open_session,
)
from agent.store.segment_layout import is_segment_name
from agent.store.writer import (
    SessionWriter,
    load_meta_at,
    lock_session,
    unlock_session,
    utc_timestamp,
    write_meta,
)

log = logging.getLogger(__name__)

_TEMP = re.compile(r"\.cut-(new|old)-(?P<id>[A-Za-z0-9][A-Za-z0-9_.-]{0,127})-[0-9a-f]{8}")


@dataclass(frozen=True)
class CutReport:
    """What a cut removed: counts only."""

    session_id: str
    ranges: int
    events: int
    frames: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "ranges": self.ranges,
            "events": self.events,
            "frames": self.frames,
        }


def normalise(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, inclusive ``(start_ns, end_ns)`` ranges.

    :raises UsageError: a range ends before it starts.
    """
    out: list[tuple[int, int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in ranges):
        if end < start:
            msg = f"a cut must end after it starts (got {start} .. {end} ns)"
            raise UsageError(msg)
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def apply_cuts(events: Sequence[Event], ranges: Sequence[tuple[int, int]]) -> tuple[list[Event], int, int]:
    """The events outside ``ranges``; (kept, events cut, frames cut).  Pure.

    A ``cut`` marker (``from_ns``, ``to_ns``) stands where the first removed event of each range
    was, at the range's start.  The session's start and stop markers are kept even inside a
    range: they carry the clock anchor, the consent and the loss counts, not content.
    """
    merged = normalise(ranges)
    kept: list[Event] = []
    cut_events = cut_frames = 0
    marked: set[int] = set()
    for ev in events:
        hit = next((i for i, (a, b) in enumerate(merged) if a <= ev.t_ns <= b), None)
        if hit is None or (isinstance(ev, Marker) and ev.marker in ("session_start", "session_stop")):
            kept.append(ev)
            continue
        if hit not in marked:
            marked.add(hit)
            start, end = merged[hit]
            kept.append(Marker(start, "cut", {"from_ns": start, "to_ns": end}))
        if ev.KIND in ("frame", FramePatch.KIND):
            cut_frames += 1
        else:
            cut_events += 1
    return kept, cut_events, cut_frames


def cut_session(
    dirs: Dirs, session_id: str, ranges: Sequence[tuple[int, int]], identity: bytes, recipient: bytes
) -> CutReport:
    """Delete ``ranges`` (monotonic ns, inclusive) from a closed session, keeping its id.

    Only a real session folder holding only regular files is cut: a link where the folder,
    a segment, ``meta.json`` or ``review.json`` should be is refused before anything changes.

    :raises StoreError: the session is being recorded, or the disk refused (the session is
        then as it was, or completed by :func:`finish_interrupted_cuts`).
    :raises UnsafeEntry: the session folder holds something else (nothing was changed).
    """
    finish_interrupted_cuts(dirs)
    merged = normalise(ranges)
    root, folder = open_session(dirs.sessions, session_id, refused=f"session {session_id} was not cut")
    with root:
        with folder:
            if not merged:
                return CutReport(session_id, 0, 0, 0)
            folder.lock()  # refuses the session the recorder is writing
            unsafe = _unsafe_entries(folder)
            if unsafe:
                msg = f"session {session_id} was not cut (nothing was changed)"
                raise UnsafeEntry(unsafe, lead=msg)
            meta = load_meta_at(folder) or {}
            if meta.get("state") not in ("closed", None):
                msg = (
                    f"session {session_id} is still being recorded; "
                    "stop or pause recording and cut it afterwards"
                )
                raise StoreError(msg)
            data = read_session(dirs, session_id, identity, raw=True)
            kept, cut_events, cut_frames = apply_cuts(data.events, merged)
            kept = reanchor(data.events, kept)  # a kept patch whose base was cut becomes a keyframe
            tag = os.urandom(4).hex()
            new = f".cut-new-{session_id}-{tag}"
            report = CutReport(session_id, len(merged), cut_events, cut_frames)
            _write_copy(root, new, kept, recipient, meta=meta, report=report)
            _carry_metadata(folder, root.path / new)
            old = f".cut-old-{session_id}-{tag}"
            root.rename(session_id, old)
            root.rename(new, session_id)
            root.fsync()
        _shred_dir(root, old)
    return report


def _unsafe_entries(folder: StoreDir) -> list[Refused]:
    """What a cut would have to read, carry or shred but must not: anything that is not a regular
    file, and segments with other names (shredding the old copy would change those too)."""
    return [
        folder.refusal(name, st)
        for name, st in folder.entries()
        if not is_plain_file(st) or (is_segment_name(name) and st.st_nlink != 1)
    ]


def _write_copy(
    root: StoreDir,
    name: str,
    events: list[Event],
    recipient: bytes,
    *,
    meta: dict[str, Any],
    report: CutReport,
) -> None:
    new = root.path / name
    new.mkdir(mode=0o700)
    fd = lock_session(new)
    writer = None
    try:
        writer = SessionWriter(
            new,
            recipient,
            segment_seconds=float("inf"),
            segment_bytes=8 * 1024 * 1024,
            clock=time.monotonic,
            lock_fd=fd,
            session_id=report.session_id,
        )
        writer.write_events(events)
        writer.close(dict(meta.get("dropped_by_source") or {}))
    except BaseException:
        if writer is not None:
            writer.abort()
        else:
            unlock_session(fd)
        _shred_dir(root, name)
        raise
    fresh = load_meta(new) or {}
    for key in ("started_at", "stopped_at", "deleted", "recovered", "recovery"):
        if key in meta:
            fresh[key] = meta[key]
    fresh.setdefault("cuts", list(meta.get("cuts", []))).append(
        {**report.to_dict(), "cut_at": utc_timestamp(time.time())}
    )
    fresh["cuts"] = [{k: v for k, v in c.items() if k != "session"} for c in fresh["cuts"]]
    write_meta(new, fresh)


def _carry_metadata(old: StoreDir, new: Path) -> None:
    """Copy the session's other metadata files (``*.json`` beside ``meta.json``, e.g. the review
    record, which holds no content) into the new copy, so its history is not lost.  Only regular
    files are read (the caller refused anything else)."""
    for name, st in old.entries():
        if name.endswith(".json") and name != "meta.json" and not name.startswith(".") and is_plain_file(st):
            write_private_file(new / name, old.read_file(name))


def _shred_dir(root: StoreDir, name: str) -> None:
    """Shred the folder ``name`` of ``root`` (a temp copy of a cut) and remove it; only regular files
    in a real folder are touched.

    :raises UnsafeEntry: something in it is not (it is left, with the folder).
    """
    with root.open_dir(name, expected="a folder of a cut") as folder:
        _, _, refused = shred_files(folder)
    if refused:
        msg = f"the old copy {name} of a cut session was not deleted completely"
        raise UnsafeEntry(refused, lead=msg)
    root.rmdir(name)
    root.fsync()


def finish_interrupted_cuts(dirs: Dirs) -> list[str]:
    """Complete or undo every cut a crash interrupted (see the module docstring); the ids touched.

    Only real folders are taken for a cut's copies: a link by such a name is logged with its
    path and the fix, never followed.
    """
    root = StoreDir.open_root(dirs.sessions)
    if root is None:
        return []
    done: list[str] = []
    with root:
        found = [(name, st, m) for name, st in root.entries() if (m := _TEMP.fullmatch(name))]
        for temp, st, match in found:
            sid, kind = match["id"], match[1]
            if not is_plain_dir(st):
                log.warning(
                    "left an interrupted cut alone: %s", root.refusal(temp, st, "a folder of a cut").message
                )
                continue
            try:
                if kind == "new" and root.lstat(sid) is None and _closed(root, temp):
                    root.rename(temp, sid)
                    root.fsync()
                elif root.lstat(temp) is not None:
                    _shred_dir(root, temp)
            except (OSError, StoreError) as exc:
                why = str(exc) if isinstance(exc, UnsafeEntry) else type(exc).__name__
                log.warning("could not finish an interrupted cut of session %s (%s)", sid, why)
                continue
            done.append(sid)
    return done


def _closed(root: StoreDir, name: str) -> bool:
    with root.open_dir(name, expected="a folder of a cut") as folder:
        return (load_meta_at(folder) or {}).get("state") == "closed"
