"""The running agent: owns the capture threads and the recording state.

Data flow (see docs/architecture.md)::

    pynput hooks ─┐
    focus watch  ─┼─> sink (O(1): bounded queue, drops counted) ─> writer thread ─> encrypted store
    grabber      ─┘          │
                             └─ a button press asks the grabber for a frame (O(1))

Nothing starts before consent (P1): :meth:`Recorder.start` asks the consent
gate first, then the backend whether this machine can capture at all, and
only then starts the writer, the grabber and the hooks, each only for the
scopes the volunteer granted.  :meth:`Recorder.pause` stops the hooks and the
grabber themselves (P3), not merely a filter.  A capture that cannot go on
(the store fails, consent is withdrawn) stops itself and says why; it never
goes on silently, and it never claims to record when it does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent import consent, exclusions, pausing
from agent.backends import Backend
from agent.capture import Hooks, OwnUi, deny
from agent.capture.clipboard import PasteWatch, paste_chord
from agent.capture.coalesce import CoalesceState, coalesce
from agent.capture.coalesce import flush as flush_moves
from agent.capture.hotkey import Hotkey
from agent.capture.screen import ScreenWatch, Shot, action_reason
from agent.capture.secure_input import SecureInputWatch
from agent.consent import Receipt
from agent.errors import EnvironmentProblem, OptinError, StoreError, UsageError
from agent.events import (
    ButtonPress,
    ButtonRelease,
    ClockAnchor,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    Scroll,
    WindowFocus,
    now_ns,
)
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.store import keys, retention
from agent.store.recovery import RecoveryReport, recover_sessions
from agent.store.writer import SessionWriter
from agent.study import Study, installed_study

logger = logging.getLogger(__name__)

#: Capacity of the queue between hooks and the writer.
QUEUE_SIZE = 65536
#: The writer wakes at least this often to flush (seconds).
WRITER_TICK_S = 0.2
#: Most events written in one encrypted record.
BATCH_MAX = 4096
#: How often the writer publishes the status and re-checks consent (seconds).
CHECK_EVERY_S = 1.0
#: Pointer moves are stored at most this often (a press, release or scroll keeps the position before it).
POINTER_HZ = 50.0

#: Why a recording can be paused.
PAUSED_BY_VOLUNTEER = "volunteer"
PAUSED_NO_INDICATOR = "no indicator"


@dataclass
class Counters:
    """Loss and volume counters (P9: loss is measured, never silent)."""

    dropped: int = 0  #: events refused by the full queue, or lost when the store failed
    frame_failures: int = 0  #: screen grabs that failed
    frames_skipped: int = 0  #: frames not stored: the encoder was behind, or capture stopped first
    coalesced: int = 0  #: pointer moves merged by the rate cap (not a loss: positions at actions are kept)
    own_ui: int = 0  #: clicks, scrolls and keys on optin's own tray, menu and windows, left out
    pastes_lost: int = 0  #: pastes recorded without their text: the clipboard thread was behind
    written: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def loss(self) -> dict[str, int]:
        """The loss counters, as stored with the session (P9)."""
        return {
            "events": self.dropped,
            "frame_failures": self.frame_failures,
            "frames_skipped": self.frames_skipped,
            "pastes_lost": self.pastes_lost,
        }


def describe_failure(exc: BaseException) -> str:
    """A failure in words without its message text (which may quote captured content)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


class Recorder:
    """One recording session: hooks → queue → writer → encrypted segments.

    States: ``idle`` → ``recording`` ⇄ ``paused`` → ``stopped`` (or ``error``).
    Lifecycle methods may be called from any thread (tray menu, signal, the
    writer's own failure); one lock serialises them.
    """

    def __init__(self, dirs: Dirs, backend: Backend, study: Study) -> None:
        self.dirs = dirs
        self.backend = backend
        self.study = study
        self.state = "idle"
        self.error: str | None = None
        #: Why the recorder is paused, or why it stopped by itself (None: the volunteer stopped it).
        self.reason: str | None = None
        self.counters = Counters()
        self.session_id: str | None = None
        #: What crash recovery did before this session started (no content: ids, shapes, sizes).
        self.recovered: list[RecoveryReport] = []
        self._receipt: Receipt | None = None
        self._recipient: bytes | None = None
        self._queue: queue.Queue[Event | None] = queue.Queue(QUEUE_SIZE)
        self._writer: SessionWriter | None = None
        self._writer_thread: threading.Thread | None = None
        self._hooks: list[Hooks] = []
        self._screen: ScreenWatch | None = None
        self._own: OwnUi | None = None
        self._own_pids = {os.getpid()}
        self._secure: SecureInputWatch | None = None
        self._paste: PasteWatch | None = None
        self._volunteer_pause: pausing.VolunteerPause | None = None
        try:
            self._hotkey = Hotkey.parse(study.pause_hotkey)
        except ValueError as exc:
            msg = f"the study's capture.pause_hotkey cannot be used: {exc}"
            raise UsageError(msg) from None
        #: Deny rules in force: optin's defaults, the study's, and the volunteer's exclusions.
        self.rules: tuple[deny.DenyRule, ...] = deny.DEFAULT_RULES + study.deny + exclusions.load(dirs)
        self._rules_changed = False
        self._denied_now = False  # a denied window has the focus (set by the focus sink, read by hooks)
        self._last_focus: WindowFocus | None = None
        self._hotkey_down = False
        self._idle_limit = study.idle_pause_s
        #: Shows a notification to the volunteer (set by the tray); None: log only.
        self.notify: Callable[[str], None] | None = None
        self._own_buttons: dict[str, bool] = {}  # buttons pressed on optin's own UI, not yet released
        self._lock = threading.RLock()
        self._drop_lock = threading.Lock()
        self._accepting = False
        self._draining = False  # set once the session_stop marker is queued: the writer may end
        self._failed = False
        self._closed = False

    # -- the sink: runs on hook threads, O(1) ----------------------------------------------------

    def _sink(self, event: Event) -> None:
        if not self._accepting:
            if self._failed:
                self._count_drops(1)  # capture is being torn down after a failure: still counted
            return
        hotkey = self._hotkey
        if (
            hotkey is not None
            and isinstance(event, (KeyPress, KeyRelease))
            and self._is_hotkey(event, hotkey)
        ):
            return  # the pause hotkey is never recorded
        secure = self._secure
        if secure is not None:
            if secure.active and isinstance(event, (KeyPress, KeyRelease)):
                secure.left_out()  # a password field or secure input: the key is not recorded at all
                return
            if isinstance(event, WindowFocus):
                secure.poke()
        own = self._own
        if own is not None and self._is_own_input(event, own):
            with self._drop_lock:  # a count only: what was done on optin's own UI is not kept
                self.counters.own_ui += 1
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count_drops(1)
            return
        self._after_queued(event)

    def _after_queued(self, event: Event) -> None:
        """Follow-ups of a queued event (hook threads, O(1)): focus state, paste, frame timing."""
        if isinstance(event, WindowFocus):
            self._last_focus = event
            self._denied_now = deny.match(self.rules, event) is not None
        elif isinstance(event, KeyPress):
            paste = self._paste  # the clipboard is read only where the keys are kept
            if (
                paste is not None
                and paste_chord(event)
                and not self._denied_now
                and deny.focus_known(self._last_focus)
            ):
                paste.request(event.t_ns)
        screen = self._screen
        if screen is not None and not self._denied_now:  # no frame timing from a denied window
            reason = action_reason(event)
            if reason is not None:
                screen.action(event.t_ns, reason)
            elif type(event) is PointerMove:
                screen.activity(event.t_ns)

    def _is_hotkey(self, event: KeyPress | KeyRelease, hotkey: Hotkey) -> bool:
        """The pause hotkey's key press (it pauses) or the release that follows it (O(1))."""
        if isinstance(event, KeyPress):
            if not hotkey.matches(event):
                return False
            self._hotkey_down = True
            self._in_background(self.pause, "optin-hotkey")
            return True
        if self._hotkey_down and hotkey.matches(event):
            self._hotkey_down = False
            return True
        return False

    def _is_own_input(self, event: Event, own: OwnUi) -> bool:
        """Whether ``event`` was done on optin's own tray, menu or windows (O(1), no I/O).

        A release goes with its press, wherever the pointer went in between.
        """
        if isinstance(event, ButtonRelease):
            return self._own_buttons.pop(event.button, False)
        if isinstance(event, (ButtonPress, Scroll)):
            if not own.covers(event.x, event.y):
                return False
            if isinstance(event, ButtonPress):
                self._own_buttons[event.button] = True
            return True
        return isinstance(event, (KeyPress, KeyRelease)) and own.has_focus

    def _count_drops(self, n: int) -> None:
        with self._drop_lock:  # only on the slow path: a full queue or a failed store
            self.counters.dropped += n

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._receipt.scopes if self._receipt else ()

    def start(self) -> None:
        """Check consent and the environment, open a session and start capturing.

        :raises ConsentRequired: no valid consent to this study's text.
        :raises EnvironmentProblem: this machine cannot capture.
        """
        with self._lock:
            if self.state != "idle" or self._closed:
                msg = f"this recorder was already started or stopped (state {self.state})"
                raise UsageError(msg)
            receipt = consent.require(self.dirs, self.study)  # P1: before anything else
            self.backend.check_environment()
            recipient = keys.load_recipient(self.dirs)
            ensure_private_dir(self.dirs.data)
            self.recovered = recover_sessions(self.dirs, recipient)  # sessions a crash left open
            for report in self.recovered:
                logger.warning("session %s was left open by a crash: %s", report.session_id, report.action)
            for sid in retention.finish_interrupted_deletions(self.dirs):
                logger.warning("finished a deletion in session %s that had been interrupted", sid)
            self._enforce_retention(keep=set())  # budget and retention before a new session adds to it
            self._receipt = receipt
            self._recipient = recipient
            self._open_session()
            self._volunteer_pause = pausing.load(self.dirs)
            if self._volunteer_pause is not None:  # the volunteer paused before the last stop (P3)
                self._put_marker("pause", reason=PAUSED_BY_VOLUNTEER, restored=True)
                self.state, self.reason = "paused", PAUSED_BY_VOLUNTEER
                self._publish()
                return
            self.state = "recording"
            self._start_capture_or_fail()
            self._publish()

    def _open_session(self, **detail: Any) -> None:
        """Create a session and its writer thread; capture is the caller's to start."""
        receipt = self._receipt
        assert receipt is not None and self._recipient is not None  # noqa: S101 - set by start()
        try:
            self._writer = SessionWriter.create(self.dirs, self._recipient)
        except OSError as exc:
            msg = (
                f"cannot open a new session in {self.dirs.sessions}: {describe_failure(exc)}. "
                "Fix: free space or make the data directory writable (or set OPTIN_HOME)"
            )
            raise StoreError(msg) from exc
        self.session_id = self._writer.session_id
        self.counters = Counters()
        self._draining = False
        anchor = ClockAnchor.now()
        self._accepting = True
        self._put_marker(
            "session_start",
            mono_ns=anchor.mono_ns,
            wall_ns=anchor.wall_ns,
            study_id=self.study.id,
            consent_version=receipt.consent_version,
            consent_sha256=receipt.text_sha256,
            scopes=list(receipt.scopes),
            backend=self.backend.name,
            **detail,
        )
        self._writer_thread = threading.Thread(target=self._write_loop, name="optin-writer", daemon=True)
        self._writer_thread.start()

    def delete_last(self, seconds: float) -> dict[str, Any]:
        """Delete at least the last ``seconds`` of recording, the running session's included.

        The running session is sealed, trimmed (or shredded) by
        :func:`agent.store.retention.delete_last` with every other session, and a
        new session starts in the same state (recording or paused).  Returns what
        was deleted: ids, counts and sizes only.

        :raises UsageError: ``seconds`` is not positive, or the recorder has stopped.
        """
        if not seconds > 0:
            msg = f"the duration to delete must be positive, got {seconds} seconds"
            raise UsageError(msg)
        with self._lock:
            if self.state == "idle" and not self._closed:
                msg = "optin is starting; try again in a moment"
                raise UsageError(msg)
            if self.state not in ("recording", "paused") or self._closed:
                msg = f"optin is {self.state}; quit it and run `optin delete-last` again"
                raise UsageError(msg)
            state, reason = self.state, self.reason
            self._close_session(reason="delete-last")
            try:
                report = retention.delete_last(self.dirs, seconds)
            finally:
                self._open_session(after="delete-last")
                self.state, self.reason = state, reason
                if state == "recording":
                    self._start_capture_or_fail()
                self._publish()
            return report.to_dict()

    def opt_out(self) -> dict[str, Any]:
        """Leave the study: stop, withdraw consent, and crypto-shred every local session.

        The keys stay (they protect nothing once the sessions are gone, and a
        later study may use them).  Returns counts only.
        """
        from agent.store.reader import list_sessions

        with self._lock:
            if self.state == "idle":
                self._closed, self.state = True, "stopped"
            else:
                self._shutdown(reason="opted out")
            consent.withdraw(self.dirs)
            self._volunteer_pause = None
            pausing.clear(self.dirs)
            infos = list_sessions(self.dirs)
            deleted = [retention.shred_session(self.dirs, i.id, reason="opt-out") for i in infos]
        logger.info("opted out: %d sessions deleted", len(deleted))
        return {"sessions": len(deleted), "bytes": sum(d.bytes for d in deleted)}

    def _start_capture_or_fail(self) -> None:
        """Start every consented source; if any fails, stop them all and the session."""
        try:
            self._start_capture()
        except BaseException as exc:
            self._shutdown(error=f"capture could not start ({describe_failure(exc)})")
            raise

    def _start_capture(self) -> None:
        scopes = self.scopes
        own = self.backend.own_ui(self._own_pids)
        own.start()  # before the hooks: optin's own windows are known when the first click comes
        self._own = own
        if "keyboard" in scopes and self.backend.HAS_SECURE_INPUT_DETECTION:
            secure = SecureInputWatch(self.backend.secure_input_active, self._sink)
            secure.start()  # before the hooks, like the own-UI answer
            self._secure = secure
        if "keyboard" in scopes:
            self._paste = PasteWatch(self.backend.read_clipboard, self._sink)
            self._paste.start()
        if "screen" in scopes:
            self._screen = ScreenWatch(self.backend.screen_grabber(), self._sink, mask=self._mask)
            self._screen.start()  # stores the screen as it is now ("start")
        # the deny rules need the focused window whatever the scopes; its title and class are
        # stored only with the window-titles scope (the writer drops them otherwise)
        self._hooks.append(self.backend.focus_watcher(self._sink))
        if "pointer" in scopes or "keyboard" in scopes:
            self._hooks.append(
                self.backend.input_hooks(
                    self._sink, pointer="pointer" in scopes, keyboard="keyboard" in scopes
                )
            )
        for hook in self._hooks:
            hook.start()

    def _stop_capture(self) -> None:
        """Stop every source; each one is stopped even if another fails to."""
        hooks, self._hooks = self._hooks, []
        for hook in reversed(hooks):
            try:
                hook.stop()
            except Exception as exc:  # the others must still stop
                logger.warning("a capture source failed to stop (%s)", describe_failure(exc))
        own, self._own = self._own, None
        if own is not None:
            own.stop()
        paste, self._paste = self._paste, None
        if paste is not None:
            paste.stop()  # answers the pastes already asked for
            self.counters.pastes_lost += paste.lost
        secure, self._secure = self._secure, None
        if secure is not None:
            secure.stop()
        self._own_buttons.clear()
        screen, self._screen = self._screen, None
        if screen is not None:
            screen.stop()
            self.counters.frame_failures += screen.failures
            self.counters.frames_skipped += screen.skipped

    def pause(self, reason: str = PAUSED_BY_VOLUNTEER, *, seconds: float | None = None) -> None:
        """Stop the hooks and the grabber themselves (P3).

        :param reason: :data:`PAUSED_BY_VOLUNTEER`, or why the recorder pauses by itself.
        :param seconds: the volunteer's pause ends by itself after this long (a
            notification says so); None: until :meth:`resume`.  The volunteer's
            pause is remembered across restarts.
        :raises UsageError: ``seconds`` is not positive.
        """
        if seconds is not None and not seconds > 0:
            msg = f"a pause must last a positive time, got {seconds} s"
            raise UsageError(msg)
        with self._lock:
            if self._closed:
                msg = f"optin is {self.state}; nothing to pause"
                raise UsageError(msg)
            if reason == PAUSED_BY_VOLUNTEER:
                now = time.time()
                self._volunteer_pause = pausing.VolunteerPause(
                    now, None if seconds is None else now + seconds
                )
                pausing.save(self.dirs, self._volunteer_pause)
            if self.state == "paused":
                if reason == PAUSED_BY_VOLUNTEER:
                    self.reason = reason  # the volunteer's pause outlasts any other reason
                    self._publish()
                return
            if self.state != "recording":
                return
            t0 = now_ns()
            self._stop_capture()
            self._put_marker("pause", reason=reason, stop_ms=round((now_ns() - t0) / 1e6, 3))
            self.state = "paused"
            self.reason = reason
            self._publish()

    def resume(self) -> None:
        """Start capturing again after a pause (not while the tray icon is missing: P2)."""
        with self._lock:
            self._volunteer_pause = None
            pausing.clear(self.dirs)
            if self.state != "paused" or self.reason == PAUSED_NO_INDICATOR:
                return
            self._resume_capture()

    def _resume_capture(self) -> None:
        self._put_marker("resume", after=self.reason)
        self.state = "recording"
        self.reason = None
        self._start_capture_or_fail()
        self._publish()

    def _check_pauses(self) -> None:
        """Once a second on the writer thread: end a timed pause; pause and resume for absence."""
        pause = self._volunteer_pause
        if pause is not None and not pause.active(time.time()):
            self._in_background(self._end_timed_pause, "optin-resume")
            return
        if self.state not in ("recording", "paused") or pause is not None:
            return
        why = pausing.absence_reason(
            self.backend.screen_locked(), self.backend.idle_seconds(), self._idle_limit
        )
        if self.state == "recording" and why is not None:
            self._in_background(lambda: self.pause(why), "optin-pause")
        elif (
            self.state == "paused"
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
            if self.state == "paused" and self.reason in (pausing.PAUSED_IDLE, pausing.PAUSED_LOCKED):
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
        self._own_pids.add(pid)
        own = self._own
        if own is not None:
            own.add_pid(pid)

    def indicator_changed(self, shown: bool) -> None:  # a plain fact from the tray
        """The tray reports whether its icon is visible: no indicator, no capture (P2)."""
        own = self._own
        if shown and own is not None:
            own.rescan()  # the icon is an own window: its clicks are left out from now on
        if not shown and self.state == "recording":
            self.pause(PAUSED_NO_INDICATOR)
            return
        with self._lock:
            if shown and self.state == "paused" and self.reason == PAUSED_NO_INDICATOR:
                self._resume_capture()

    def stop(self) -> None:
        """Stop capturing, write everything queued, seal the session.

        Stopping a recorder that has not started closes it: it can no longer start.
        """
        with self._lock:
            if self.state == "idle":
                self._closed, self.state = True, "stopped"
                return
            self._shutdown()

    def _shutdown(self, *, error: str | None = None, reason: str | None = None) -> None:
        """Stop capture, drain the queue, seal the session; once only; under the lock."""
        if self._closed:
            return
        self._closed = True
        if error is not None:
            self.error, self.state = error, "error"
            logger.error("capture stopped: %s", error)
        self.reason = reason
        self._close_session(reason=reason or error)
        if self.state != "error":
            self.state = "stopped"
        self._remove_status()
        with contextlib.suppress(Exception):  # the connections the writer's checks opened
            self.backend.close()

    def _close_session(self, *, reason: str | None) -> None:
        """Stop capture, drain the queue into the store and seal the session."""
        self._stop_capture()
        self._accepting = False
        self._put_marker(
            "session_stop", reason=reason, dropped=self.counters.dropped, loss=self.counters.loss()
        )
        self._draining = True
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)  # wakes the writer; if full it drains and ends anyway
        thread = self._writer_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close(self.counters.loss())
            except Exception as exc:  # report, never crash the stop path
                why = describe_failure(exc)
                sealing = f"the session could not be sealed ({why}); it is recovered at the next start"
                self.error = sealing if self.error is None else f"{self.error}; {sealing}"
                self.state = "error"
                logger.error("capture stopped: %s", self.error)  # message says it all

    def _stop_in_background(self, *, error: str | None = None, reason: str | None = None) -> None:
        """Stop from a thread that the stop path joins (the writer): hand it to a new thread."""

        def run() -> None:
            with self._lock:
                self._shutdown(error=error, reason=reason)

        threading.Thread(target=run, name="optin-stopper", daemon=False).start()

    def _put_marker(self, name: str, **detail: Any) -> None:
        ev = Marker(now_ns(), name, detail)
        try:
            self._queue.put(ev, timeout=1.0)
        except queue.Full:
            self._count_drops(1)

    # -- writer thread ---------------------------------------------------------------------------

    def _write_loop(self) -> None:
        writer = self._writer
        if writer is None:
            return
        last_check = last_retention = time.monotonic()
        moves = CoalesceState()
        denial = deny.DenyState()
        while True:
            batch, done = self._next_batch()
            batch, denial = self._deny(batch, denial, done=done)
            batch, moves = self._coalesce(batch, moves, done=done)
            try:
                if batch:
                    writer.write_events(batch)
                writer.flush()
            except Exception as exc:  # any store failure stops capture, counted
                self._store_failed(exc, lost=len(batch))
                return
            self._count(batch)
            now = time.monotonic()
            if now - last_check >= CHECK_EVERY_S:
                last_check = now
                self._publish()
                self._check_consent()
                self._check_pauses()
            if now - last_retention >= retention.ENFORCE_EVERY_S:
                last_retention = now
                self._enforce_retention(keep={writer.session_id})
            if done:
                return

    def _deny(
        self, batch: list[Event], state: deny.DenyState, *, done: bool
    ) -> tuple[list[Event], deny.DenyState]:
        """Leave out input in denied windows (P4) and focus events without the titles scope."""
        out: list[Event] = []
        if self._rules_changed:
            self._rules_changed = False
            out, state = deny.refocus(state, self.rules, now_ns())
        events, state = deny.filter_events(batch, state, self.rules)
        out.extend(events)
        if done:
            tail, state = deny.flush(state)
            out.extend(tail)
        if "window_titles" not in self.scopes:
            out = [e for e in out if not isinstance(e, WindowFocus)]
        return out, state

    def _mask(self, shot: Shot) -> Shot:
        """``shot`` with every window a deny rule matches painted over, focused or not (P4)."""
        windows = list(self.backend.visible_windows())
        if self._last_focus is not None:
            windows.append(self._last_focus)  # known even where the backend cannot list windows
        rects = deny.mask_rects(shot.geometry, windows, self.rules)
        if not rects:
            return shot
        pixels = deny.apply_masks(shot.pixels, shot.width, shot.height, shot.left, shot.top, rects)
        return dataclasses.replace(shot, pixels=bytes(pixels))

    def exclude(self, *, app_class: str | None = None, title: str | None = None) -> dict[str, Any]:
        """Add a deny rule for an application class, a title pattern, or (neither) the focused app.

        It takes effect at once and is remembered (config/exclusions.json).

        :raises UsageError: nothing has the focus, or the pattern is not valid.
        """
        if app_class is None and title is None:
            focus = self._last_focus
            if focus is None or not focus.app_class:
                msg = "no application has the focus that optin could tell; name one with --app CLASS"
                raise UsageError(msg)
            app_class = focus.app_class
        rule = exclusions.volunteer_rule(app_class, title)
        with self._lock:
            exclusions.add(self.dirs, rule)
            self.rules = (*self.rules, rule)
            self._rules_changed = True
            self._denied_now = deny.match(self.rules, self._last_focus) is not None
        return rule.to_json()

    def _coalesce(
        self, batch: list[Event], moves: CoalesceState, *, done: bool
    ) -> tuple[list[Event], CoalesceState]:
        """Cap pointer moves at POINTER_HZ (never losing the position at an action) and put the
        count on the ``session_stop`` marker, which only the writer sees after every move."""
        events, moves = coalesce(batch, moves, max_hz=POINTER_HZ)
        if done:
            tail, moves = flush_moves(moves)
            events.extend(tail)
        self.counters.coalesced = moves.coalesced
        for i, event in enumerate(events):
            if type(event) is Marker and event.marker == "session_stop":
                detail = {**event.detail, "coalesced_moves": moves.coalesced}
                events[i] = dataclasses.replace(event, detail=detail)
        return events, moves

    def _enforce_retention(self, *, keep: set[str]) -> None:
        """Delete sessions beyond the byte budget and the retention; never fatal, never the open one."""
        try:
            deleted = retention.enforce(
                self.dirs,
                keep=keep,
                max_bytes=self.study.retention_max_bytes,
                max_age_days=self.study.retention_days,
            )
        except Exception as exc:  # a failed clean-up must not stop recording
            logger.warning("enforcing the store's budget and retention failed (%s)", describe_failure(exc))
            return
        for item in deleted:
            logger.info("deleted session %s (%s, %s bytes)", item.session_id, item.reason, item.bytes)

    def _store_failed(self, exc: BaseException, lost: int) -> None:
        """The store cannot take more: stop accepting, count what is lost, stop capture."""
        self._failed = True
        self._accepting = False
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    lost += 1
            except queue.Empty:
                break
        self._count_drops(lost)
        self._stop_in_background(error=f"writing the encrypted store failed ({describe_failure(exc)})")

    def _check_consent(self) -> None:
        """Consent withdrawn, or a new consent text or version installed: stop within a second (P1).

        A new study text needs the volunteer's agreement again: the next ``optin run``
        shows the consent dialog.
        """
        if not self._accepting:
            return
        receipt = consent.current_receipt(self.dirs)
        if receipt is None or not receipt.covers(self.study):
            self._accepting = False  # nothing more is queued from now on
            self._stop_in_background(reason="consent withdrawn")
            return
        try:
            installed = installed_study(self.dirs)
        except OptinError:
            return  # unreadable now: the consent given to the running study still holds
        if (installed.text_sha256, installed.consent_version) != (
            self.study.text_sha256,
            self.study.consent_version,
        ):
            self._accepting = False
            self._stop_in_background(reason="new consent version: agree again to record")

    def _next_batch(self) -> tuple[list[Event], bool]:
        """Wait up to one tick for events; return ``(batch, writer_should_end)``.

        The writer ends once the stop path has queued its ``session_stop``
        marker (``_draining``) and the queue is drained up to it.
        """
        batch: list[Event] = []
        try:
            item = self._queue.get(timeout=WRITER_TICK_S)
        except queue.Empty:
            return batch, self._draining
        while True:
            if item is not None:
                batch.append(item)
                if len(batch) >= BATCH_MAX:
                    return batch, False
            elif self._draining:
                return batch, True
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False

    def _count(self, batch: list[Event]) -> None:
        c = self.counters
        c.written += len(batch)
        for ev in batch:
            c.by_kind[ev.KIND] = c.by_kind.get(ev.KIND, 0) + 1

    # -- state for `optin status` ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The state as plain data (no captured content)."""
        by_kind = dict(self.counters.by_kind)  # a copy: the writer thread adds kinds
        return {
            "state": self.state,
            "reason": self.reason,
            "error": self.error,
            "pid": os.getpid(),
            "session": self.session_id,
            "study": self.study.id,
            "scopes": list(self.scopes),
            "events_written": self.counters.written,
            "events_by_kind": dict(sorted(by_kind.items())),
            "dropped": self.counters.dropped,
            "loss": self.counters.loss(),
            "paused_until": self._paused_until(),
            "filtered": self._denied_now,
            "coalesced_moves": self.counters.coalesced,
            "own_ui_left_out": self.counters.own_ui,
        }

    def _paused_until(self) -> str | None:
        """When the volunteer's pause ends (UTC, ISO 8601), ``"resumed"`` for until resumed, or None."""
        pause = self._volunteer_pause
        if pause is None:
            return None
        return (
            "resumed"
            if pause.until is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(pause.until))
        )

    def _status_path(self) -> Any:
        return self.dirs.runtime / "status.json"

    def _publish(self) -> None:
        """Write the status file in the runtime dir (atomic; 0600)."""
        if self._closed:
            return
        try:
            ensure_private_dir(self.dirs.runtime)
            write_private_file(self._status_path(), json.dumps(self.status()).encode(), durable=False)
        except (OSError, EnvironmentProblem) as exc:
            logger.warning("could not write the status file (%s)", describe_failure(exc))

    def _remove_status(self) -> None:
        with contextlib.suppress(OSError):
            self._status_path().unlink()


def read_status(dirs: Dirs) -> dict[str, Any] | None:
    """The running agent's published status, or None when no agent runs."""
    path = dirs.runtime / "status.json"
    try:
        status: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    pid = status.get("pid")
    if not isinstance(pid, int) or not _pid_alive(pid):
        return None
    return status


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process of this user (another user's PID is not our agent)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
