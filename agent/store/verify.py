"""``optin verify``: read everything and report every problem (like ``restic check --read-data``).

Every segment of every session (or of one) is authenticated and decoded, and
the chain is checked (:mod:`agent.store.chain`), collecting problems instead of
stopping at the first.  A problem names the session, the file, the offset when
there is one, a short ``kind`` and a message.  Authentication failures stay
opaque ("segment authentication failed at offset N"); structural problems are
precise.  What is not wrong but worth saying (a crash tail that recovery sealed,
a session still being recorded) is reported as ``info``, not as a problem.

The caller (the CLI) obtains the identity with :func:`agent.store.keys.load_identity`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.paths import Dirs
from agent.store import safe_fs
from agent.store.chain import INFO, Finding, Walk, walk_session
from agent.store.reader import load_meta, session_dir
from agent.store.writer import META_FILE, writer_active


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`verify` (a problem, or an info note).

    :ivar session: the session id.
    :ivar file: the file inside the session directory (``000003.seg``, ``meta.json``), or None.
    :ivar offset: byte offset in that file, or None.
    :ivar kind: ``authentication``, ``format``, ``chain``, ``missing-segment``,
        ``truncated``, ``unsealed``, ``meta``, ``io``, ``unsafe`` (not a regular file or directory: never
        followed); for info: ``recovered``, ``recording``,
        ``deleted`` (the volunteer deleted the end of the session: a tombstone).
    :ivar message: what is wrong, naming the file (never captured content).
    """

    session: str
    file: str | None
    offset: int | None
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class SessionSummary:
    """What :func:`verify` read in one session.

    :ivar state: ``closed``, ``recording`` (a writer holds it), ``interrupted``
        (its writer died and recovery has not run) or ``unknown`` (no readable meta.json).
    :ivar records: data records that authenticated; ``events``: events decoded from them.
    :ivar ok: no problem in this session (info notes do not count).
    """

    session: str
    state: str
    recovered: bool
    segments: int
    records: int
    events: int
    problems: int
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class VerifyReport:
    """Everything :func:`verify` found."""

    sessions: list[SessionSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    info: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        """0 when everything verified, 1 when anything is wrong."""
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: ``ok``, ``sessions``, ``problems``, ``info``."""
        return {
            "ok": self.ok,
            "sessions": [s.to_dict() for s in self.sessions],
            "problems": [p.to_dict() for p in self.problems],
            "info": [p.to_dict() for p in self.info],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def render_text(self) -> str:
        """A human report: one line per session, its problems and notes under it, a summary."""
        lines: list[str] = []
        for summary in self.sessions:
            lines.append(_summary_line(summary))
            lines += [
                f"    problem  {p.kind}: {p.message}" for p in self.problems if p.session == summary.session
            ]
            lines += [
                f"    info     {p.kind}: {p.message}" for p in self.info if p.session == summary.session
            ]
        failed = sum(1 for s in self.sessions if not s.ok)
        if not self.sessions:
            lines.append("no sessions to verify")
        elif failed:
            lines.append(
                f"{len(self.sessions)} sessions verified: {failed} with problems "
                f"({len(self.problems)} problems). Nothing was changed."
            )
        else:
            lines.append(f"{len(self.sessions)} sessions verified: no problems")
        return "\n".join(lines)


def verify(dirs: Dirs, identity: bytes, session_id: str | None = None) -> VerifyReport:
    """Read every byte of one session (``session_id``) or of all, and report every problem.

    Reads only; never changes the store.

    :param identity: the volunteer's raw private key (:func:`agent.store.keys.load_identity`).
    :raises UsageError: ``session_id`` is not a session id.
    :raises NotFound: there is no such session.
    """
    report = VerifyReport()
    if session_id is None:
        paths, refused = safe_fs.session_dirs(dirs.sessions, safe_fs.SESSION_ID)
        for r in refused:  # a link or a file by a session's name: never followed, always reported
            name = Path(r.path).name
            report.problems.append(Problem(name, None, None, "unsafe", r.message))
            report.sessions.append(SessionSummary(name, "unknown", False, 0, 0, 0, 1, False))
    else:
        paths = [session_dir(dirs, session_id)]
    for path in paths:
        summary, problems, info = _verify_session(path, identity)
        report.sessions.append(summary)
        report.problems.extend(problems)
        report.info.extend(info)
    return report


def _verify_session(path: Path, identity: bytes) -> tuple[SessionSummary, list[Problem], list[Problem]]:
    sid = path.name
    meta = load_meta(path)
    live = writer_active(path)
    state = meta.get("state") if meta else None
    walk = walk_session(path, identity, closed=state == "closed", live=live, strict=False)
    found = [_problem(sid, f) for f in walk.findings]
    problems = [p for p, f in zip(found, walk.findings, strict=True) if f.level != INFO]
    info = [p for p, f in zip(found, walk.findings, strict=True) if f.level == INFO]
    problems += _meta_problems(path, meta, live=live, walk=walk, walk_clean=not problems)
    summary = SessionSummary(
        session=sid,
        state=_state(state, live),
        recovered=walk.recovered,
        segments=walk.segments,
        records=walk.records,
        events=walk.events,
        problems=len(problems),
        ok=not problems,
    )
    return summary, problems, info


def _problem(sid: str, finding: Finding) -> Problem:
    return Problem(sid, finding.file, finding.offset, finding.kind, finding.message)


def _meta_problems(
    path: Path, meta: dict[str, Any] | None, *, live: bool | None, walk: Walk, walk_clean: bool
) -> list[Problem]:
    """meta.json is plaintext and unauthenticated; check that it is there and agrees with the segments.

    What kind of end the session has comes from the authenticated walk (a recovery
    segment, a tombstone), never from meta.json's own ``recovered`` or ``deleted``
    keys, which anyone with write access can add.  A recovered session's counts
    are what its writer last wrote, after an fsync of every record they count, so
    the segments hold at least that many; a tombstoned one keeps the counts of
    what was recorded before its end was deleted, which cannot be checked.
    """
    sid = path.name
    if meta is None or meta.get("state") not in ("recording", "closing", "closed"):
        if live:
            return []  # a writer is creating it right now
        what = _missing_meta(walk) if not os.path.lexists(path / META_FILE) else None
        what = what or "unreadable, not schema 1, or an unknown state"
        return [Problem(sid, META_FILE, None, "meta", f"{sid}/{META_FILE}: {what}")]
    if meta.get("state") != "closed" or walk.deleted or not walk_clean:
        return []  # counts of an open or trimmed session are not those of its segments
    records, events = walk.records, walk.events
    raw = meta.get("events")
    meta_events = _sum_counts(raw) if isinstance(raw, dict) else None
    meta_records = meta.get("records")
    if not isinstance(meta_records, int) or isinstance(meta_records, bool) or meta_events is None:
        what = "has no valid record and event counts"
    elif walk.recovered:
        if meta_records <= records and meta_events <= events:
            return []
        what = (
            f"says {meta_records} records and {meta_events} events were written before the crash, "
            f"but the segments hold only {records} records and {events} events: records the writer "
            "had made durable are missing"
        )
    elif meta_records == records and meta_events == events:
        return []
    else:
        what = (
            f"says {meta_records} records and {meta_events} events, "
            f"the segments hold {records} records and {events} events"
        )
    return [Problem(sid, META_FILE, None, "meta", f"{sid}/{META_FILE}: {what}")]


def _missing_meta(walk: Walk) -> str:
    """Why meta.json is missing, as far as the segments tell, and the fix."""
    if walk.open_tail and walk.records == 0:
        return "missing: the recorder was killed while creating the session (run optin run to recover)"
    if walk.open_tail:
        return "missing, and the last segment is not sealed (run optin run to recover)"
    return (
        f"missing, but the session ends with a sealed segment ({walk.records} records): it was removed "
        "after the session started, and crash recovery will not guess whether that segment closed the "
        "session. Fix: restore it from a backup"
    )


def _sum_counts(raw: dict[Any, Any]) -> int | None:
    """The total of meta.json's events by kind, or None when a count is not a non-negative int."""
    values = list(raw.values())
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        return None
    return int(sum(values))


def _state(state: object, live: bool | None) -> str:
    if state == "closed":
        return "closed"
    if state in ("recording", "closing"):
        return "interrupted" if live is False else "recording"
    return "recording" if live else "unknown"


def _summary_line(summary: SessionSummary) -> str:
    status = "ok    " if summary.ok else "FAILED"
    recovered = ", sealed by crash recovery" if summary.recovered else ""  # a crash is not proven
    return (
        f"{status}  {summary.session}  {summary.state}{recovered}: {summary.segments} segments, "
        f"{summary.records} records, {summary.events} events"
    )


__all__ = ["Problem", "SessionSummary", "VerifyReport", "verify"]
