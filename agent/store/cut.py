"""Cut time ranges out of a recorded session, for real: the rest is re-encrypted, the old keys shredded.

``optin review`` lets the volunteer cut ranges of a session.  A cut is deleted locally,
not just left out of the export: :func:`cut_session` writes the kept events into a new
session directory under the same id (fresh segment keys, the same chain rules as any
session, a ``cut`` marker where each range was), swaps it into place, then shreds every
segment of the old copy (:func:`agent.store.retention.shred_files`: the wrapped keys are
overwritten, so the old ciphertext is unreadable even if the disk keeps it).

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
from agent.events import Event, Marker
from agent.paths import Dirs, fsync_dir, write_private_file
from agent.store.reader import load_meta, read_session, session_dir
from agent.store.retention import shred_files
from agent.store.writer import SessionWriter, lock_session, unlock_session, utc_timestamp, write_meta

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
        if ev.KIND == "frame":
            cut_frames += 1
        else:
            cut_events += 1
    return kept, cut_events, cut_frames


def cut_session(
    dirs: Dirs, session_id: str, ranges: Sequence[tuple[int, int]], identity: bytes, recipient: bytes
) -> CutReport:
    """Delete ``ranges`` (monotonic ns, inclusive) from a closed session, keeping its id.

    :raises StoreError: the session is being recorded, or the disk refused (the session is
        then as it was, or completed by :func:`finish_interrupted_cuts`).
    """
    finish_interrupted_cuts(dirs)
    path = session_dir(dirs, session_id)
    merged = normalise(ranges)
    if not merged:
        return CutReport(session_id, 0, 0, 0)
    fd = lock_session(path)  # refuses the session the recorder is writing
    try:
        meta = load_meta(path) or {}
        if meta.get("state") not in ("closed", None):
            msg = (
                f"session {session_id} is still being recorded; stop or pause recording and cut it afterwards"
            )
            raise StoreError(msg)
        data = read_session(dirs, session_id, identity)
        kept, cut_events, cut_frames = apply_cuts(data.events, merged)
        tag = os.urandom(4).hex()
        new = path.parent / f".cut-new-{session_id}-{tag}"
        report = CutReport(session_id, len(merged), cut_events, cut_frames)
        _write_copy(new, kept, recipient, meta, report)
        _carry_metadata(path, new)
        old = path.parent / f".cut-old-{session_id}-{tag}"
        path.rename(old)
        new.rename(path)
        fsync_dir(path.parent)
    finally:
        unlock_session(fd)
    _shred_dir(old)
    return report


def _write_copy(
    new: Path, events: list[Event], recipient: bytes, meta: dict[str, Any], report: CutReport
) -> None:
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
        _shred_dir(new)
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


def _carry_metadata(old: Path, new: Path) -> None:
    """Copy the session's other metadata files (``*.json`` beside ``meta.json``, e.g. the review
    record, which holds no content) into the new copy, so its history is not lost."""
    for file in old.glob("*.json"):
        if file.name != "meta.json" and not file.name.startswith("."):
            write_private_file(new / file.name, file.read_bytes())


def _shred_dir(path: Path) -> None:
    shred_files(path)
    path.rmdir()
    fsync_dir(path.parent)


def finish_interrupted_cuts(dirs: Dirs) -> list[str]:
    """Complete or undo every cut a crash interrupted (see the module docstring); the ids touched."""
    root = dirs.sessions
    if not root.is_dir():
        return []
    found = sorted((p, m) for p in root.iterdir() if p.is_dir() and (m := _TEMP.fullmatch(p.name)))
    done: list[str] = []
    for temp, match in found:
        sid, kind, target = match["id"], match[1], root / match["id"]
        try:
            if kind == "new" and not target.exists() and (load_meta(temp) or {}).get("state") == "closed":
                temp.rename(target)
                fsync_dir(root)
            elif temp.exists():
                _shred_dir(temp)
        except (OSError, StoreError) as exc:
            log.warning("could not finish an interrupted cut of session %s (%s)", sid, type(exc).__name__)
            continue
        done.append(sid)
    return done
