"""The recorder's pauses: the volunteer's (tray, hotkey, ``optin pause [DURATION]``), the
automatic ones (screen locked, idle) and the missing tray icon (P2), and resuming from each.

Pause never waits (P3): from the call on, the sink takes nothing (a counter the hooks read
before any lock), then the hooks and the grabber themselves are stopped, and the pause marker
is queued without waiting.  A hook or the writer asks for a pause on a thread of its own
(:meth:`RecorderPauses._pause_soon`): neither may wait for the lifecycle lock.

:class:`RecorderPauses` is a part of :class:`agent.control.Recorder`, which holds the state
it works on (declared below) and the lifecycle steps it calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent import pausing
from agent.errors import UsageError
from agent.events import now_ns
from agent.recorder_states import Event as Move
from agent.recorder_states import Lifecycle, Phase, State
from agent.recorder_status import describe_failure

if TYPE_CHECKING:
    from agent.backends import Backend
    from agent.capture.sources import CaptureSources
    from agent.paths import Dirs

logger = logging.getLogger("agent.control")

#: Why a recording can be paused.
PAUSED_BY_VOLUNTEER = "volunteer"
PAUSED_NO_INDICATOR = "no indicator"

__all__ = ["PAUSED_BY_VOLUNTEER", "PAUSED_NO_INDICATOR", "RecorderPauses"]


class RecorderPauses:
    """Pause and resume of :class:`agent.control.Recorder`; every step under its lifecycle lock."""

    dirs: Dirs
    backend: Backend
    reason: str | None
    notify: Callable[[str], None] | None
    _life: Lifecycle
    _lock: threading.RLock
    _gate_lock: threading.Lock
    _pauses_pending: int
    _volunteer_pause: pausing.VolunteerPause | None
    _idle_limit: float
    _sources: CaptureSources

    if TYPE_CHECKING:  # the lifecycle steps agent.control.Recorder provides

        @property
        def state(self) -> str: ...
        @property
        def _closed(self) -> bool: ...
        def _stop_capture(self) -> None: ...
        def _start_capture_or_fail(self) -> None: ...
        def _put_marker(self, name: str, *, wait: bool = False, **detail: Any) -> None: ...
        def _publish(self) -> None: ...

    def _pause_soon(self, reason: str, name: str) -> None:
        """Pause on another thread (a hook or the writer cannot wait for the lock), taking
        nothing from the sink from this very moment."""
        with self._gate_lock:
            self._pauses_pending += 1

        def run() -> None:
            try:
                self.pause(reason)
            except UsageError:
                pass  # stopped meanwhile: nothing to pause
            finally:
                with self._gate_lock:
                    self._pauses_pending -= 1

        self._in_background(run, name)

    def pause(self, reason: str = PAUSED_BY_VOLUNTEER, *, seconds: float | None = None) -> None:
        """Stop the hooks and the grabber themselves (P3); never waits for the writer.

        From the call on, the sink takes nothing (even while the lock is held by a
        lifecycle step under way); then the sources are stopped, the pause marker
        is queued without waiting, and the volunteer's pause is remembered.

        :param reason: :data:`PAUSED_BY_VOLUNTEER`, or why the recorder pauses by itself.
        :param seconds: the volunteer's pause ends by itself after this long (a
            notification says so); None: until :meth:`resume`.  The volunteer's
            pause is remembered across restarts.
        :raises UsageError: ``seconds`` is not a positive, finite number of at most
            :data:`agent.pausing.MAX_PAUSE_S`, or the recorder has stopped.
        """
        if seconds is not None:
            seconds = pausing.check_seconds(seconds, what="a pause", limit=pausing.MAX_PAUSE_S)
        with self._gate_lock:
            self._pauses_pending += 1  # the sink takes nothing from now on
        try:
            with self._lock:
                self._pause_locked(reason, seconds)
        finally:
            with self._gate_lock:
                self._pauses_pending -= 1

    def _pause_locked(self, reason: str, seconds: float | None) -> None:
        if self._closed:
            msg = f"optin is {self.state}; nothing to pause"
            raise UsageError(msg)
        if self._life.phase is Phase.RECORDING:
            t0 = now_ns()
            self._stop_capture()  # first: P3 is about the hooks, not the bookkeeping after
            self._put_marker("pause", reason=reason, stop_ms=round((now_ns() - t0) / 1e6, 3))
            self._life.fire(Move.PAUSE)
            self.reason = reason
        elif self._life.phase is Phase.PAUSED and reason == PAUSED_BY_VOLUNTEER:
            self.reason = reason  # the volunteer's pause outlasts any other reason
        if reason == PAUSED_BY_VOLUNTEER:
            now = time.time()
            self._volunteer_pause = pausing.VolunteerPause(now, None if seconds is None else now + seconds)
            try:
                pausing.save(self.dirs, self._volunteer_pause)
            except OSError as exc:  # paused all the same; only the memory of it across a restart is lost
                logger.warning("could not remember the pause across restarts (%s)", describe_failure(exc))
        if self._life.phase in (Phase.RECORDING, Phase.PAUSED):
            self._publish()

    def resume(self) -> None:
        """Start capturing again after a pause (not while the tray icon is missing: P2)."""
        with self._lock:
            self._volunteer_pause = None
            pausing.clear(self.dirs)
            if self._life.phase is not Phase.PAUSED or self.reason == PAUSED_NO_INDICATOR:
                return
            self._resume_capture()

    def _resume_capture(self) -> None:
        self._put_marker("resume", after=self.reason)
        self._life.fire(Move.RESUME)
        self.reason = None
        self._start_capture_or_fail()
        self._publish()

    def _check_pauses(self) -> None:
        """Once a second on the writer thread: end a timed pause; pause and resume for absence."""
        pause = self._volunteer_pause
        if pause is not None and not pause.active(time.time()):
            self._in_background(self._end_timed_pause, "optin-resume")
            return
        if self.state not in (State.RECORDING, State.PAUSED) or pause is not None:
            return
        why = pausing.absence_reason(
            self.backend.screen_locked(), self.backend.idle_seconds(), self._idle_limit
        )
        if self.state == State.RECORDING and why is not None:
            self._pause_soon(why, "optin-pause")
        elif (
            self.state == State.PAUSED
            and why is None
            and self.reason in (pausing.PAUSED_IDLE, pausing.PAUSED_LOCKED)
        ):
            self._in_background(self._return_from_absence, "optin-resume")

    def _end_timed_pause(self) -> None:
        with self._lock:
            pause = self._volunteer_pause
            if pause is None or pause.active(time.time()):
                return  # resumed or paused again meanwhile
            self.resume()
        self._notify("optin is recording again: the pause has ended")

    def _return_from_absence(self) -> None:
        with self._lock:
            if self.state == State.PAUSED and self.reason in (pausing.PAUSED_IDLE, pausing.PAUSED_LOCKED):
                self._resume_capture()

    def _notify(self, message: str) -> None:
        """Tell the volunteer (the tray sets :attr:`notify`); the message never holds content."""
        logger.info("%s", message)
        notify = self.notify
        if notify is not None:
            try:
                notify(message)
            except Exception as exc:  # a notification must never break capture
                logger.warning("could not show a notification (%s)", describe_failure(exc))

    def _in_background(self, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` on its own thread: the writer must not wait for the lifecycle lock."""
        threading.Thread(target=fn, name=name, daemon=True).start()

    def own_process(self, pid: int) -> None:
        """A dialog optin started runs as ``pid``: what is done in it is left out like the tray's."""
        self._sources.add_own_pid(pid)

    #: What the tray last reported (it reports every second).
    _indicator_shown = False

    def indicator_changed(self, shown: bool) -> None:  # a plain fact from the tray
        """The tray reports whether its icon is visible: no indicator, no capture (P2)."""
        own = self._sources.own
        appeared, self._indicator_shown = shown and not self._indicator_shown, shown
        if appeared and own is not None:
            # the icon is an own window: its clicks are left out from now on.  Only when it appears:
            # the report comes every second, and a scan of every window cost the idle agent 1.1 %
            # of a core (issue 18); the own-window watcher also looks again every 5 s by itself.
            own.rescan()
        if not shown and self.state == State.RECORDING:
            self.pause(PAUSED_NO_INDICATOR)
            return
        with self._lock:
            if shown and self.state == State.PAUSED and self.reason == PAUSED_NO_INDICATOR:
                self._resume_capture()
