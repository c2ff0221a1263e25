"""Pauses that outlast the agent, and when the volunteer's absence pauses capture.

The volunteer's own pause is a small file in the config directory, so it
survives a restart (P3): ``{"since": <epoch s>, "until": <epoch s> | null}``
(null: until resumed).  It holds no captured content.  A pause that has run out
by the time the agent starts is dropped.

:func:`absence_reason` is the pure rule for the automatic pauses: a locked
screen or more than the idle limit without input pauses; both gone resumes.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from agent.paths import Dirs, ensure_private_dir, write_private_file

#: Reasons the recorder pauses by itself when the volunteer is away.
PAUSED_IDLE = "idle"
PAUSED_LOCKED = "screen locked"

_FILE = "pause.json"


@dataclass(frozen=True)
class VolunteerPause:
    """The volunteer paused at ``since`` until ``until`` (epoch seconds; None: until resumed)."""

    since: float
    until: float | None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until

    def remaining(self, now: float) -> float | None:
        """Seconds left, or None when it lasts until resumed."""
        return None if self.until is None else max(0.0, self.until - now)


def _path(dirs: Dirs) -> Path:
    return dirs.config / _FILE


def save(dirs: Dirs, pause: VolunteerPause) -> None:
    """Remember the volunteer's pause (0600, atomic, durable)."""
    ensure_private_dir(dirs.config)
    data = json.dumps({"since": pause.since, "until": pause.until}).encode("ascii")
    write_private_file(_path(dirs), data)


def load(dirs: Dirs, now: float | None = None) -> VolunteerPause | None:
    """The volunteer's pause if one is still on; a run-out or unreadable file counts as none."""
    try:
        raw = json.loads(_path(dirs).read_text(encoding="ascii"))
        pause = VolunteerPause(float(raw["since"]), None if raw["until"] is None else float(raw["until"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pause if pause.active(time.time() if now is None else now) else None


def clear(dirs: Dirs) -> None:
    with contextlib.suppress(FileNotFoundError):
        _path(dirs).unlink()


def absence_reason(locked: bool | None, idle_s: float | None, idle_limit_s: float) -> str | None:
    """Why capture should pause for the volunteer's absence now, or None.

    ``locked`` and ``idle_s`` come from the backend (None: it cannot tell);
    ``idle_limit_s`` of 0 turns the idle pause off.
    """
    if locked:
        return PAUSED_LOCKED
    if idle_limit_s > 0 and idle_s is not None and idle_s >= idle_limit_s:
        return PAUSED_IDLE
    return None


__all__ = ["PAUSED_IDLE", "PAUSED_LOCKED", "VolunteerPause", "absence_reason", "clear", "load", "save"]
