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

Pause never waits (P3).  The moment :meth:`Recorder.pause` is called the sink
stops taking events (a counter the hooks read, before any lock), then the
sources are stopped; the pause marker is queued without waiting.  The hooks
never judge deny rules (the writer does, and publishes its verdict), so no
rule can hold a hook thread that stopping joins.  Nothing on the stop path
waits for the writer without a bound: after :data:`STOP_WAIT_S` it is
abandoned, what it had not written is counted as lost, and the session is
sealed when (if) the writer returns, or by crash recovery at the next start.

:class:`Recorder` keeps the lifecycle (start, stop, sessions sealed and opened,
delete-last, exclude, opt-out) and what the writer thread calls; its parts live
next to it: :mod:`agent.recorder_sink` is the O(1) sink the hooks call,
:mod:`agent.recorder_pauses` the pauses and resuming (volunteer, absence, missing
tray icon), :mod:`agent.recorder_tasks` the volunteer's tasks (started, ended, given up),
:mod:`agent.recorder_states` is its lifecycle (the
phases and the one table of moves between them), :mod:`agent.capture.sources`
starts and stops the capture sources, :mod:`agent.writer_loop` is the writer
thread, :mod:`agent.recorder_status` holds the counters and the published status,
and :func:`agent.store.housekeeping.open_store` readies the store at start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from agent import consent, deny_rules, exclusions, pausing, recorder_status
from agent.backends import Backend, allocator
from agent.capture import deny
from agent.capture.screen import ScreenWatch, Shot
from agent.capture.sources import CaptureSources
from agent.consent import Receipt
from agent.errors import OptinError, StoreError, UsageError
from agent.events import ClockAnchor, Event, Marker, WindowFocus, now_ns
from agent.keyboard.hotkey import Hotkey
from agent.paths import Dirs, check_private_files, ensure_private_dir
from agent.recorder_elements import RecorderElements
from agent.recorder_pauses import PAUSED_BY_VOLUNTEER, PAUSED_NO_INDICATOR, RecorderPauses
from agent.recorder_sink import RecorderSink
from agent.recorder_states import Event as Move
from agent.recorder_states import Intake, Lifecycle, Phase
from agent.recorder_status import Counters, describe_failure, read_status
from agent.recorder_tasks import RecorderTasks, RunningTask
from agent.store import housekeeping, keys, retention
from agent.store.recovery import RecoveryReport
from agent.store.safe_fs import UnsafeEntry
from agent.store.writer import SessionWriter
from agent.study import Study, installed_study
from agent.writer_loop import WriterLoop

T = TypeVar("T")


def _study_hotkey(text: str, key: str) -> Hotkey | None:
    """The study's hotkey ``text`` (None: none).

    :raises UsageError: it cannot be used here (the study check accepts only what parses)."""
    try:
        return Hotkey.parse(text)
    except ValueError as exc:
        msg = f"the study's {key} cannot be used: {exc}"
        raise UsageError(msg) from None


logger = logging.getLogger(__name__)

#: Capacity of the queue between hooks and the writer.
QUEUE_SIZE = 65536
#: Longest wait for the writer to drain and seal a session when stopping (seconds).
STOP_WAIT_S = 5.0
#: The every-second status is written when it changed, and at least this often (seconds).
REPUBLISH_S = 60.0

# read_status lives in agent.recorder_status and the pause reasons in agent.recorder_pauses;
# tests import them from here.
__all__ = ["PAUSED_BY_VOLUNTEER", "PAUSED_NO_INDICATOR", "Recorder", "read_status"]


class Recorder(RecorderSink, RecorderPauses, RecorderTasks):
    """One recording session: hooks → queue → writer → encrypted segments.

    States: ``idle`` → ``recording`` ⇄ ``paused`` → ``stopped`` (or ``error``); every
    move is one of :data:`agent.recorder_states.TRANSITIONS`.  Lifecycle methods may
    be called from any thread (tray menu, signal, the writer's own failure); one
    lock serialises them.  The sink the hooks call (:class:`~agent.recorder_sink.RecorderSink`)
    and the pauses (:class:`~agent.recorder_pauses.RecorderPauses`) are parts of it, over
    the same state and lock.
    """

    def __init__(self, dirs: Dirs, backend: Backend, study: Study) -> None:
        self.dirs = dirs
        self.backend = backend
        self.study = study
        self._life = Lifecycle()  # moved only under self._lock
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
        self._loop: WriterLoop | None = None  # the open session's writer thread
        self._sources = CaptureSources(backend)
        self._volunteer_pause: pausing.VolunteerPause | None = None
        self._hotkey = _study_hotkey(study.pause_hotkey, "capture.pause_hotkey")
        self._done_hotkey = _study_hotkey(study.task_done_hotkey, "tasks.done_hotkey")
        #: Deny rules in force: optin's defaults, the study's, and the volunteer's exclusions.
        self.rules: tuple[deny_rules.DenyRule, ...] = (
            deny_rules.DEFAULT_RULES + study.deny + exclusions.load(dirs)
        )
        self._last_focus: WindowFocus | None = None  # the latest focus queued (set by the focus sink)
        self._pauses_pending = 0  # pause() calls under way: the sink takes nothing meanwhile (P3)
        self._gate_lock = threading.Lock()
        self._hotkeys_down: set[str] = set()  # the hotkeys pressed whose release is not seen yet
        self._idle_limit = study.idle_pause_s
        #: Shows a notification to the volunteer (set by the tray); None: log only.
        self.notify: Callable[[str], None] | None = None
        self._lock = threading.RLock()
        self._drop_lock = threading.Lock()
        self._intake = Intake.SHUT  # the sink's gate, read by hook threads before any lock
        self._elements: RecorderElements | None = None  # UI element lookups, for the whole run
        self._task: RunningTask | None = None  # the volunteer's task under way (agent.recorder_tasks)
        self._last_task: dict[str, Any] | None = None
        self._published: tuple[dict[str, Any] | None, float] = (None, 0.0)  # status last written, when

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What ``optin status`` shows: ``idle``, ``recording``, ``paused``, ``stopped`` or ``error``."""
        return self._life.phase.state.value

    @property
    def _closed(self) -> bool:
        """Stopping has begun: nothing can start, pause or open a session any more."""
        return self._life.phase.closed

    @property
    def scopes(self) -> tuple[str, ...]:
        return self._receipt.scopes if self._receipt else ()

    @property
    def _screen(self) -> ScreenWatch | None:
        """The running screen watcher, if any (the load tests and benchmarks read its counts)."""
        return self._sources.screen

    def start(self) -> None:
        """Check consent and the environment, open a session and start capturing.

        :raises ConsentRequired: no valid consent to this study's text.
        :raises EnvironmentProblem: this machine cannot capture.
        """
        with self._lock:
            if self._life.phase is not Phase.IDLE:
                msg = f"this recorder was already started or stopped (state {self.state})"
                raise UsageError(msg)
            check_private_files(self.dirs.config)  # the consent, study and rules it trusts (P1, P4)
            receipt = consent.require(self.dirs, self.study)  # P1: before anything is captured
            allocator.return_large_blocks()  # freed frame buffers go back to the OS (issue 18)
            self.backend.check_environment()
            recipient = keys.load_recipient(self.dirs)
            ensure_private_dir(self.dirs.data)
            # crash recovery, interrupted deletions and cuts, then retention (before a new session adds)
            self.recovered = housekeeping.open_store(
                self.dirs,
                recipient,
                max_bytes=self.study.retention_max_bytes,
                max_age_days=self.study.retention_days,
            )
            self._receipt = receipt
            self._recipient = recipient
            self._start_elements()
            try:
                self._open_session()
            except BaseException:  # no session: the lookups stop, accessibility is put back
                self._stop_elements()
                raise
            self._volunteer_pause = pausing.load(self.dirs)
            if self._volunteer_pause is not None:  # the volunteer paused before the last stop (P3)
                self._put_marker("pause", reason=PAUSED_BY_VOLUNTEER, restored=True)
                self._life.fire(Move.START_PAUSED)
                self.reason = PAUSED_BY_VOLUNTEER
                self._publish()
                return
            self._life.fire(Move.START)
            self._start_capture_or_fail()
            self._publish()

    def _open_session(self, **detail: Any) -> None:
        """Create a session and its writer thread; capture is the caller's to start."""
        receipt = self._receipt
        assert receipt is not None and self._recipient is not None  # noqa: S101 - set by start()
        try:
            writer = SessionWriter.create(self.dirs, self._recipient)
        except OSError as exc:
            msg = (
                f"cannot open a new session in {self.dirs.sessions}: {describe_failure(exc)}. "
                "Fix: free space or make the data directory writable (or set OPTIN_HOME)"
            )
            raise StoreError(msg) from exc
        self.session_id = writer.session_id
        self.counters = Counters()
        anchor = ClockAnchor.now()
        elements = self._elements
        if elements is not None and elements.api is not None:
            elements.new_session(anchor.mono_ns)
            detail = {"elements": elements.api, **detail}
        self._intake = self._intake.opened()
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
        self._loop = WriterLoop(
            self._queue,
            writer,
            self.counters,
            dirs=self.dirs,
            study=self.study,
            rules=self.rules,
            keep_titles="window_titles" in receipt.scopes,
            checks=self._every_second,
            failed=self._store_failed,
        )
        self._loop.start()

    def delete_last(self, seconds: float) -> dict[str, Any]:
        """Delete at least the last ``seconds`` of recording, the running session's included.

        The running session is sealed, trimmed (or shredded) by
        :func:`agent.store.retention.delete_last` with every other session, and a
        new session starts in the same state (recording or paused).  Returns what
        was deleted: ids, counts and sizes only.

        :raises UsageError: ``seconds`` is not a positive, finite number of at most
            :data:`agent.pausing.MAX_DELETE_S`, or the recorder has stopped.
        """
        seconds = pausing.check_seconds(seconds, what="delete-last", limit=pausing.MAX_DELETE_S)
        report = self._between_sessions("delete-last", lambda: retention.delete_last(self.dirs, seconds))
        return report.to_dict()

    def seal_for_review(self) -> str:
        """Seal the running session so it can be reviewed (recording goes on in a new one,
        in the same state); returns the sealed session's id.

        :raises UsageError: a task is running (sealing would split it from its end).
        """
        sealed: list[str] = []
        with self._lock:
            task = self._task
            if task is not None:
                msg = (
                    f"task {task.task_id} is running; end it (Task done, Task failed) or give it up "
                    "before reviewing"
                )
                raise UsageError(msg)
            self._between_sessions("review", lambda: sealed.append(str(self.session_id)))
        return sealed[0]

    def _between_sessions(
        self, reason: str, action: Callable[[], T], *, opened: Callable[[], None] | None = None
    ) -> T:
        """Seal the running session, run ``action``, open a new session in the state the old one had.

        A task running in the sealed session ends ``interrupted``; ``opened`` is called once the
        new session is open, before capture starts in it (a task's ``task_start`` goes there).
        """
        with self._lock:
            if self._life.phase is Phase.IDLE:
                msg = "optin is starting; try again in a moment"
                raise UsageError(msg)
            if self._life.phase not in (Phase.RECORDING, Phase.PAUSED):
                msg = f"optin is {self.state}; quit it and run the command again"
                raise UsageError(msg)
            reopen = Move.REOPEN_RECORDING if self._life.phase is Phase.RECORDING else Move.REOPEN_PAUSED
            why = self.reason
            if not self._close_session(reason=reason):  # the writer is stuck: stop here, say so
                self._life.fire(Move.CLOSE)
                recorder_status.remove(self.dirs)
                with contextlib.suppress(Exception):
                    self.backend.close()
                raise StoreError(str(self.error))
            try:
                result = action()
            finally:
                self._open_session(after=reason)
                if opened is not None:
                    opened()
                self._life.fire(reopen)
                self.reason = why
                if reopen is Move.REOPEN_RECORDING:
                    self._start_capture_or_fail()
                self._publish()
            return result

    def opt_out(self) -> dict[str, Any]:
        """Leave the study: stop, withdraw consent, and crypto-shred every local session.

        The keys stay (they protect nothing once the sessions are gone, and a
        later study may use them).  Returns counts only.

        :raises UnsafeEntry: a link, FIFO or hard-linked file in the store was left where it was
            (never followed, P8); every other session was shredded and consent is withdrawn.
        """
        with self._lock:
            if self._life.phase is Phase.IDLE:
                self._life.fire(Move.CLOSE)
            else:
                self._shutdown(reason="opted out")
            consent.withdraw(self.dirs)
            self._volunteer_pause = None
            pausing.clear(self.dirs)
            try:
                deleted = retention.shred_all(self.dirs, reason="opt-out")
            except UnsafeEntry as exc:  # consent is already withdrawn: nothing more is recorded
                done = exc.partial if isinstance(exc.partial, list) else []
                logger.warning(
                    "opted out: %d sessions deleted; what was left: %s",
                    len(done),
                    exc,  # session ids, paths, kinds and fixes: never content
                )
                raise
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
        if self._elements is not None:
            self._elements.focus_moved()
        self._sources.start(self.scopes, self._sink, self._mask)

    def _start_elements(self) -> None:
        """Start the UI element lookups for this run when the pointer or keyboard is recorded and
        the platform can tell elements (accessibility switched on until the run stops)."""
        scopes = self.scopes
        if "pointer" not in scopes and "keyboard" not in scopes:
            return
        elements = RecorderElements(
            self.backend,
            self._sink,
            lambda: self.rules,
            self._sources.own_pids,
            keep_names="window_titles" in scopes,
        )
        if elements.start() is not None:
            self._elements = elements

    def _stop_elements(self) -> None:
        elements, self._elements = self._elements, None
        if elements is not None:
            elements.stop()  # restores the accessibility setting found

    def _stop_capture(self) -> None:
        """Stop every source; each one is stopped even if another fails to."""
        self._sources.stop(self.counters)

    def stop(self) -> None:
        """Stop capturing, write everything queued, seal the session.

        Stopping a recorder that has not started closes it: it can no longer start.
        """
        with self._lock:
            if self._life.phase is Phase.IDLE:
                self._life.fire(Move.CLOSE)
                return
            self._shutdown()

    def _shutdown(self, *, error: str | None = None, reason: str | None = None) -> None:
        """Stop capture, drain the queue, seal the session; once only; under the lock."""
        if self._closed:
            return
        self._life.fire(Move.CLOSE)
        if error is not None:
            self.error = error
            self._life.fire(Move.FAIL)
            logger.error("capture stopped: %s", error)
        self.reason = reason
        self._close_session(reason=reason or error)
        self._stop_elements()
        self._life.fire(Move.SEALED)
        recorder_status.remove(self.dirs)
        with contextlib.suppress(Exception):  # the connections the writer's checks opened
            self.backend.close()

    def _close_session(self, *, reason: str | None) -> bool:
        """Stop capture, drain the queue into the store and seal the session.

        Waits at most :data:`STOP_WAIT_S` for the writer.  Returns False when the
        writer did not finish in time: what it had not written is counted as lost,
        the error says so, and the session is sealed late or at the next start.
        """
        self._stop_capture()
        self._intake = self._intake.shut()
        self._interrupt_task()  # its task_end goes into the session it ran in, before the seal
        if self._elements is not None:
            self.counters.element_lookups += self._elements.take_dropped()
        deadline = time.monotonic() + STOP_WAIT_S  # the marker's wait counts against the bound
        self._put_marker(
            "session_stop",
            wait=True,
            reason=reason,
            dropped=self.counters.dropped,
            loss=self.counters.loss(),
        )
        loop, self._loop = self._loop, None
        if loop is None:
            return True
        try:
            # the writer drains up to the marker and seals
            if loop.finish(timeout=max(0.0, deadline - time.monotonic())):
                return True
        except Exception as exc:  # report, never crash the stop path
            why = describe_failure(exc)
            self._report_error(f"the session could not be sealed ({why}); it is recovered at the next start")
            return True
        lost = self._drain_queue()
        self._count_drops(lost)
        self._report_error(
            f"the writer did not finish within {STOP_WAIT_S:g} s: {lost} queued events were not written "
            "(counted as lost); the session is sealed when the writer returns, or at the next start"
        )
        return False

    def _report_error(self, what: str) -> None:
        self.error = what if self.error is None else f"{self.error}; {what}"
        self._life.fire(Move.FAIL)
        logger.error("capture stopped: %s", self.error)  # message says it all, never content

    def _drain_queue(self) -> int:
        """Empty the queue; return how many events it held."""
        n = 0
        while True:
            try:
                if self._queue.get_nowait() is not None:
                    n += 1
            except queue.Empty:
                return n

    def _stop_in_background(self, *, error: str | None = None, reason: str | None = None) -> None:
        """Stop from a thread that the stop path joins (the writer): hand it to a new thread."""

        def run() -> None:
            with self._lock:
                self._shutdown(error=error, reason=reason)

        threading.Thread(target=run, name="optin-stopper", daemon=False).start()

    def _put_marker(self, name: str, *, wait: bool = False, **detail: Any) -> None:
        """Queue a marker; a full queue counts it as dropped at once, or after a second with
        ``wait`` (the session_stop marker, which the writer drains up to)."""
        ev = Marker(now_ns(), name, detail)
        try:
            if wait:
                self._queue.put(ev, timeout=1.0)
            else:
                self._queue.put_nowait(ev)
        except queue.Full:
            self._count_drops(1)

    # -- what the writer thread calls ----------------------------------------------------------

    def _every_second(self) -> None:
        """The writer's checks, once a second: publish the status, re-check consent and pauses."""
        self._publish(if_changed=True)
        self._check_consent()
        self._check_pauses()
        self._check_task_limit()

    def _mask(self, shot: Shot) -> Shot:
        """``shot`` with every window a deny rule matches painted over, focused or not (P4), and
        optin's own windows too: what they show (a task's words being written, a session under
        review, even parts since cut) is never recorded again."""
        windows = list(self.backend.visible_windows())
        if self._last_focus is not None:
            windows.append(self._last_focus)  # known even where the backend cannot list windows
        rects = deny.mask_rects(shot.geometry, windows, self.rules)
        own = self._sources.own
        if own is not None:
            rects += deny.box_rects(shot.geometry, own.window_rects())
        if not rects:
            return shot
        pixels = deny.apply_masks(shot.pixels, shot.width, shot.height, shot.left, shot.top, rects)
        return dataclasses.replace(shot, pixels=pixels)  # a fresh buffer nothing changes: no second copy

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
            loop = self._loop
            if loop is not None:
                loop.set_rules(self.rules)  # judged again by the writer; denied until then
        return rule.to_json()

    def _store_failed(self, exc: BaseException, lost: int) -> None:
        """The store cannot take more: stop accepting, count what is lost, stop capture."""
        self._intake = self._intake.failed()
        lost += self._drain_queue()
        self._count_drops(lost)
        self._stop_in_background(error=f"writing the encrypted store failed ({describe_failure(exc)})")

    def _check_consent(self) -> None:
        """Consent withdrawn, or a study with other terms installed: stop within a second (P1).

        A new study text needs the volunteer's agreement again: the next ``optin run``
        shows the consent dialog.
        """
        if self._intake is not Intake.OPEN:
            return
        receipt = consent.current_receipt(self.dirs)
        if receipt is None or not receipt.covers(self.study):
            self._intake = self._intake.shut()  # nothing more is queued from now on
            self._stop_in_background(reason="consent withdrawn")
            return
        try:
            installed = installed_study(self.dirs)
        except OptinError:
            return  # unreadable now: the consent given to the running study still holds
        if not receipt.covers(installed):
            # A new text, or the same text with other terms (recipients, policy, deny rules):
            # what the volunteer agreed to is no longer what is installed.
            self._intake = self._intake.shut()
            self._stop_in_background(reason="the study changed: agree again to record")

    # -- state for `optin status` ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The state as plain data (no captured content)."""
        return recorder_status.snapshot(
            state=self.state,
            reason=self.reason,
            error=self.error,
            session=self.session_id,
            study=self.study.id,
            scopes=self.scopes,
            counters=self.counters,
            pause=self._volunteer_pause,
            filtered=self._denied_now,
            task=self._task_info(),
            queues=self._queue_depths(),
        )

    def _queue_depths(self) -> dict[str, int]:
        screen = self._sources.screen
        return {"events": self._queue.qsize(), "frames": screen.backlog if screen is not None else 0}

    def _publish(self, *, if_changed: bool = False) -> None:
        """Write the status file in the runtime dir (atomic; 0600); with ``if_changed``, only when
        the status changed or :data:`REPUBLISH_S` passed (an idle agent writes nothing)."""
        if self._closed:
            return
        status = self.status()
        now = time.monotonic()
        if if_changed and status == self._published[0] and now - self._published[1] < REPUBLISH_S:
            return
        recorder_status.publish(self.dirs, status)
        self._published = (status, now)
