"""What the recorder reports about itself: counts, states and failures, never captured content.

:class:`Counters` measures loss and volume (P9: loss is measured, never silent);
:func:`~agent.failures.describe_failure` names a failure without quoting its text (it lives in
:mod:`agent.failures`, below the store and capture, and is importable from here too); :func:`snapshot`
is the recorder's state as plain data for ``optin status``, which the running agent
publishes as ``status.json`` in the runtime dir (0600, see :func:`publish`) and
:func:`read_status` reads back, only while that agent lives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import EnvironmentProblem
from agent.failures import describe_failure
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.pausing import VolunteerPause

logger = logging.getLogger(__name__)


@dataclass
class Counters:
    """Loss and volume counters (P9: loss is measured, never silent)."""

    dropped: int = 0  #: events refused by the full queue, or lost when the store failed
    frame_failures: int = 0  #: screen grabs that failed
    frames_skipped: int = 0  #: frames not stored: the encoder was behind, or capture stopped first
    coalesced: int = 0  #: pointer moves merged by the rate cap (not a loss: positions at actions are kept)
    own_ui: int = 0  #: clicks, scrolls and keys on optin's own tray, menu and windows, left out
    pastes_lost: int = 0  #: pastes recorded without their text: the clipboard thread was behind
    element_lookups: int = 0  #: UI element lookups never made: their worker's queue was full
    written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        """Screen frames written: whole frames and frame patches (docs/format.md, Frame patches)."""
        return self.by_kind.get("frame", 0) + self.by_kind.get("frame_patch", 0)

    def loss(self) -> dict[str, int]:
        """The loss counters, as stored with the session (P9)."""
        return {
            "events": self.dropped,
            "frame_failures": self.frame_failures,
            "frames_skipped": self.frames_skipped,
            "pastes_lost": self.pastes_lost,
            "element_lookups": self.element_lookups,
        }


def snapshot(
    *,
    state: str,
    reason: str | None,
    error: str | None,
    session: str | None,
    study: str,
    scopes: Sequence[str],
    counters: Counters,
    pause: VolunteerPause | None,
    filtered: bool,
    task: dict[str, Any] | None = None,
    queues: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The recorder's state as plain data (no captured content), as ``optin status`` shows it.

    :param pause: the volunteer's pause, if any; ``filtered``: a denied window has the focus.
    :param task: the running task (:meth:`agent.recorder_tasks.RunningTask.info`: its id, source
        and times, never its instruction), or None.
    :param queues: how much waits now, by queue: ``events`` for the writer, ``frames`` for the
        encoder (a depth that stays above 0 on an idle desktop means the agent cannot keep up).
    """
    by_kind = dict(counters.by_kind)  # a copy: the writer thread adds kinds
    return {
        "state": state,
        "reason": reason,
        "error": error,
        "pid": os.getpid(),
        "session": session,
        "study": study,
        "scopes": list(scopes),
        "events_written": counters.written,
        "events_by_kind": dict(sorted(by_kind.items())),
        "dropped": counters.dropped,
        "loss": counters.loss(),
        "paused_until": _paused_until(pause),
        "filtered": filtered,
        "coalesced_moves": counters.coalesced,
        "own_ui_left_out": counters.own_ui,
        "task": task,
        "queues": dict(queues or {}),
    }


def _paused_until(pause: VolunteerPause | None) -> str | None:
    """When the volunteer's pause ends (UTC, ISO 8601), ``"resumed"`` for until resumed, or None."""
    if pause is None:
        return None
    if pause.until is None:
        return "resumed"
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pause.until))
    except (OverflowError, OSError, ValueError):  # an end no clock can show: it lasts until resumed
        return "resumed"


#: Largest process id (a signed 32-bit pid_t); 0, -1 and 1 are never the agent (``kill(0)`` and
#: ``kill(-1)`` would address process groups, 1 is init).
MAX_PID = (1 << 31) - 1


def _status_path(dirs: Dirs) -> Path:
    return dirs.runtime / "status.json"


def publish(dirs: Dirs, status: dict[str, Any]) -> None:
    """Write the status file in the runtime dir (atomic; 0600); a failure is logged, never raised."""
    try:
        ensure_private_dir(dirs.runtime)
        write_private_file(_status_path(dirs), json.dumps(status).encode(), durable=False)
    except (OSError, EnvironmentProblem) as exc:
        logger.warning("could not write the status file (%s)", describe_failure(exc))


def remove(dirs: Dirs) -> None:
    """Remove the status file (the agent has stopped)."""
    with contextlib.suppress(OSError):
        _status_path(dirs).unlink()


def read_status(dirs: Dirs) -> dict[str, Any] | None:
    """The running agent's published status, or None when no agent runs (or the file is damaged)."""
    path = _status_path(dirs)
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(status, dict):
        return None
    pid = status.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 < pid <= MAX_PID or not _pid_alive(pid):
        return None
    return status


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process of this user (another user's PID is not our agent)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    return True


__all__ = ["MAX_PID", "Counters", "describe_failure", "publish", "read_status", "remove", "snapshot"]
