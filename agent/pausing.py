"""Pauses that outlast the agent, and when the volunteer's absence pauses capture.

The volunteer's own pause is a small file in the config directory, so it
survives a restart (P3): ``{"since": <epoch s>, "until": <epoch s> | null}``
(null: until resumed).  It holds no captured content.  A pause that has run out
by the time the agent starts is dropped; one that is unreadable or damaged, or
whose end is not a number or lies further than :data:`MAX_PAUSE_S` from its
start, lasts until resumed (the volunteer asked for a pause: keep it, fail closed).

Durations the volunteer gives are bounded (:func:`check_seconds`): a timed
pause lasts at most :data:`MAX_PAUSE_S` (no duration: until resumed), and
``delete-last`` reaches back at most :data:`MAX_DELETE_S`.

:func:`absence_reason` is the pure rule for the automatic pauses: a locked
screen or more than the idle limit without input pauses; both gone resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from agent.errors import UsageError
from agent.paths import Dirs, ensure_private_dir, write_private_file

#: Reasons the recorder pauses by itself when the volunteer is away.
PAUSED_IDLE = "idle"
PAUSED_LOCKED = "screen locked"

_FILE = "pause.json"

#: Longest timed pause (seconds): 30 days.  Longer: pause with no duration, until resumed.
MAX_PAUSE_S = 30 * 86400.0
#: Furthest ``delete-last`` reaches back (seconds): 50 years, i.e. everything recorded.
MAX_DELETE_S = 50 * 365.25 * 86400


def check_seconds(value: object, *, what: str, limit: float) -> float:
    """``value`` as seconds: a finite number above 0 and at most ``limit``.

    :param what: names the duration in the message (``"a pause"``).
    :raises UsageError: anything else, with the bound.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{what} needs a number of seconds, not {type(value).__name__}"
        raise UsageError(msg)
    try:
        seconds = float(value)
    except OverflowError:  # an integer too large for a float
        msg = f"{what} can last at most {limit:g} s ({limit / 86400:g} days)"
        raise UsageError(msg) from None
    if not math.isfinite(seconds) or seconds <= 0:
        msg = f"{what} must last a positive, finite time, got {seconds:g} s"
        raise UsageError(msg)
    if seconds > limit:
        msg = f"{what} can last at most {limit:g} s ({limit / 86400:g} days), got {seconds:g} s"
        raise UsageError(msg)
    return seconds


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
    """The volunteer's pause if one is still on (none without a file, or one that ran out).

    A file that cannot be read or makes no sense is a pause until resumed: the volunteer
    paused, and a damaged record of it must not restart recording (P3, fail closed).
    """
    now = time.time() if now is None else now
    try:
        raw = json.loads(_path(dirs).read_text(encoding="ascii"))
        since, until = _number(raw["since"]), raw["until"]
        until = None if until is None else _number(until)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return VolunteerPause(now, None)
    if not math.isfinite(since) or since > now:
        return VolunteerPause(now, None)  # a start no clock of this machine saw: damaged
    if until is not None and not (math.isfinite(until) and since < until <= since + MAX_PAUSE_S):
        until = None  # an end no optin writes: keep the pause until the volunteer resumes
    pause = VolunteerPause(since, until)
    return pause if pause.active(now) else None


def _number(value: object) -> float:
    """A JSON number as a float; anything else (a bool, a string) is a damaged file."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = "not a number"
        raise TypeError(msg)
    return float(value)


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


__all__ = [
    "MAX_DELETE_S",
    "MAX_PAUSE_S",
    "PAUSED_IDLE",
    "PAUSED_LOCKED",
    "VolunteerPause",
    "absence_reason",
    "check_seconds",
    "clear",
    "load",
    "save",
]
