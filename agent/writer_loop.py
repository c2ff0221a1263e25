"""The writer thread of one session: queued events → deny filter → coalescing → encrypted store.

:class:`WriterLoop` is the only code that touches a session's
:class:`~agent.store.writer.SessionWriter` while it is open.  Every tick it takes
a batch from the recorder's queue, leaves out input in denied windows (P4) and
focus events without the window-titles scope, caps pointer moves at
:data:`POINTER_HZ`, writes, flushes and counts.  Every :data:`CHECK_EVERY_S` it
runs the recorder's checks (status, consent, pauses); every
:data:`agent.store.retention.ENFORCE_EVERY_S` it enforces the store's budget and
retention (:func:`enforce_retention`).  A store failure ends the loop and goes to
the recorder with the count of the batch it lost.

The deny rules are judged here, never on a hook thread: after each batch the
loop publishes :attr:`WriterLoop.judged`, the latest focus event it saw and
whether a rule denies it, which the hooks read in O(1).  Nobody waits on this
thread without a bound: :meth:`WriterLoop.finish` gives up after its timeout
and the loop is *abandoned*: it takes nothing more from the queue (the next
session's loop may own it), and if it ever returns from what held it, it seals
its session with the loss counted, as crash recovery would at the next start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable

from agent.capture import deny
from agent.capture.coalesce import CoalesceState, coalesce
from agent.capture.coalesce import flush as flush_moves
from agent.deny_rules import DenyRule
from agent.events import Event, Marker, WindowFocus, now_ns
from agent.failures import describe_failure
from agent.paths import Dirs
from agent.recorder_status import Counters
from agent.store import housekeeping, retention
from agent.store.writer import SessionWriter
from agent.study import Study

logger = logging.getLogger(__name__)

#: Most events written in one encrypted record.
BATCH_MAX = 4096
#: How often the writer runs the recorder's checks: status, consent, pauses (seconds).  With nothing
#: queued it sleeps until the next check: what it takes is written and flushed at once.
CHECK_EVERY_S = 1.0
#: Pointer moves are stored at most this often (a press, release or scroll keeps the position before it).
POINTER_HZ = 50.0


def enforce_retention(dirs: Dirs, study: Study, *, keep: set[str]) -> None:
    """Delete sessions beyond the study's byte budget and retention; never fatal, never those in ``keep``."""
    housekeeping.enforce_budget(
        dirs, keep=keep, max_bytes=study.retention_max_bytes, max_age_days=study.retention_days
    )


class WriterLoop:
    """Drains ``events`` into ``writer`` on its own thread until :meth:`finish`.

    ``None`` on the queue only wakes the loop.  ``checks`` runs on the loop's
    thread once every :data:`CHECK_EVERY_S`; ``failed(exc, lost)`` once when the
    store fails, after which the loop has ended.
    """

    def __init__(
        self,
        events: queue.Queue[Event | None],
        writer: SessionWriter,
        counters: Counters,
        *,
        dirs: Dirs,
        study: Study,
        rules: tuple[DenyRule, ...],
        keep_titles: bool,
        checks: Callable[[], None],
        failed: Callable[[BaseException, int], None],
    ) -> None:
        self._events = events
        self._writer = writer
        self._counters = counters
        self._dirs = dirs
        self._study = study
        self._rules = rules
        self._rules_changed = False
        self._keep_titles = keep_titles
        self._checks = checks
        self._failed = failed
        self._draining = False  # set once the session_stop marker is queued: the loop may end
        self._abandoned = False  # finish() gave up waiting: take nothing more, seal and end
        self._ended = False  # the loop has run to its end (set under _handoff)
        self._handoff = threading.Lock()  # finish() giving up vs the loop ending: one of them seals
        self._thread: threading.Thread | None = None
        #: ``(focus, denied)``: the latest focus event judged and whether a deny rule matches it
        #: (a tuple, replaced whole, so a hook thread reads a consistent pair without a lock).
        self.judged: tuple[WindowFocus | None, bool] = (None, False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="optin-writer", daemon=True)
        self._thread.start()

    def set_rules(self, rules: tuple[DenyRule, ...]) -> None:
        """The deny rules changed: the focused window is judged again at the next batch, and
        counts as denied until then (fail closed)."""
        self._rules = rules
        self._rules_changed = True
        self.judged = (self.judged[0], True)
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)  # wakes the loop to judge at once; if full it is busy anyway

    def finish(self, timeout: float | None = None) -> bool:
        """Drain the queue up to the ``session_stop`` marker the caller has queued, then seal.

        :param timeout: give up after this many seconds (None: wait as long as it takes).
        :returns: True when the session is sealed; False when the loop did not end in
            time: it is abandoned (see the module docstring) and the caller must not
            wait for it.
        :raises Exception: the session could not be sealed.
        """
        self._draining = True
        with contextlib.suppress(queue.Full):
            self._events.put_nowait(None)  # wakes the loop; if full it drains and ends anyway
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            with self._handoff:
                if not self._ended and thread.is_alive():
                    self._abandoned = True
                    return False
        self._writer.close(self._counters.loss())
        return True

    @property
    def abandoned(self) -> bool:
        """Whether :meth:`finish` gave up waiting for this loop."""
        return self._abandoned

    def _run(self) -> None:
        writer = self._writer
        last_check = last_retention = time.monotonic()
        moves = CoalesceState()
        denial = deny.DenyState()
        while True:
            if self._abandoned:  # before taking from the queue: it may be the next session's now
                self._seal_abandoned(0)
                return
            batch, done = self._next_batch(max(last_check + CHECK_EVERY_S - time.monotonic(), 0.0))
            batch, denial = self._deny(batch, denial, done=done)
            batch, moves = self._coalesce(batch, moves, done=done)
            if self._abandoned:
                self._seal_abandoned(len(batch))
                return
            try:
                if batch:
                    writer.write_events(batch)
                writer.flush()
            except Exception as exc:  # any store failure stops capture, counted
                if self._abandoned:
                    return  # the recorder has moved on and counted the loss; recovery seals
                self._failed(exc, len(batch))
                return
            self._count(batch)
            now = time.monotonic()
            if now - last_check >= CHECK_EVERY_S:
                last_check = now
                self._checks()
            if now - last_retention >= retention.ENFORCE_EVERY_S:
                last_retention = now
                enforce_retention(self._dirs, self._study, keep={writer.session_id})
            if done:
                with self._handoff:
                    self._ended = True
                    abandoned = self._abandoned
                if abandoned:  # finish() gave up just before the end: nobody else seals
                    self._seal_abandoned(0)
                return

    def _seal_abandoned(self, lost: int) -> None:
        """The loop returned after :meth:`finish` gave up on it: seal what was written, count
        the rest (the recorder already reported the session as left for recovery)."""
        self._counters.dropped += lost
        try:
            self._writer.close(self._counters.loss())
        except Exception as exc:  # crash recovery seals it at the next start
            logger.warning("an abandoned session could not be sealed (%s)", describe_failure(exc))
        else:
            logger.warning("an abandoned session was sealed late; %d events in hand were lost", lost)

    def _next_batch(self, timeout: float) -> tuple[list[Event], bool]:
        """Wait up to ``timeout`` seconds for events; return ``(batch, loop_should_end)``.

        The loop ends once :meth:`finish` has been called (the stop path has
        queued its ``session_stop`` marker) and the queue is drained up to it.
        """
        batch: list[Event] = []
        try:
            item = self._events.get(timeout=timeout)
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
                item = self._events.get_nowait()
            except queue.Empty:
                return batch, False

    def _deny(
        self, batch: list[Event], state: deny.DenyState, *, done: bool
    ) -> tuple[list[Event], deny.DenyState]:
        """Leave out input in denied windows (P4) and focus events without the titles scope."""
        out: list[Event] = []
        if self._rules_changed:
            self._rules_changed = False
            out, state = deny.refocus(state, self._rules, now_ns())
        events, state = deny.filter_events(batch, state, self._rules)
        out.extend(events)
        if done:
            tail, state = deny.flush(state)
            out.extend(tail)
        if not self._rules_changed:  # rules changed meanwhile: stay denied until judged under them
            self.judged = (state.focus, state.denied)
        if not self._keep_titles:
            out = [e for e in out if not isinstance(e, WindowFocus)]
        return out, state

    def _coalesce(
        self, batch: list[Event], moves: CoalesceState, *, done: bool
    ) -> tuple[list[Event], CoalesceState]:
        """Cap pointer moves at POINTER_HZ (never losing the position at an action) and put the
        count on the ``session_stop`` marker, which only the writer sees after every move."""
        events, moves = coalesce(batch, moves, max_hz=POINTER_HZ)
        if done:
            tail, moves = flush_moves(moves)
            events.extend(tail)
        self._counters.coalesced = moves.coalesced
        for i, event in enumerate(events):
            if type(event) is Marker and event.marker == "session_stop":
                detail = {**event.detail, "coalesced_moves": moves.coalesced}
                events[i] = dataclasses.replace(event, detail=detail)
        return events, moves

    def _count(self, batch: list[Event]) -> None:
        c = self._counters
        c.written += len(batch)
        for ev in batch:
            c.by_kind[ev.KIND] = c.by_kind.get(ev.KIND, 0) + 1
