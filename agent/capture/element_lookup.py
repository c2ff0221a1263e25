"""Element lookups off the capture threads: one worker, a bounded queue, a time budget.

Platform-neutral: the backend hands a factory of its finder (AT-SPI on X11, UI Automation,
AX; :class:`ElementFinder`) and, where the platform has one, the switch that turns
accessibility on (:class:`AccessibilitySwitch`).

:meth:`ElementLookup.request` (a point) and :meth:`ElementLookup.request_focus`
(the keyboard focus) are O(1) and never block: when the queue is full the
request is dropped and counted.  The worker answers each request through the
``on_result`` callback with the request's ``t_ns``; a lookup that fails, finds
nothing, waited too long in the queue (``max_age_s``) or took longer than its
budget is a counted miss (its element is dropped: it may describe another
moment).  A stalled application costs its own lookup about one AT-SPI timeout
and is then skipped for a while (see :mod:`~agent.backends.xorg.a11y`).

:meth:`ElementLookup.start` switches accessibility on (on X11
:func:`~agent.backends.xorg.a11y_bus.enable`) and :meth:`ElementLookup.stop`
restores the setting found.  Logs carry counts and durations only.

"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.elements import DENIED, FAILED, LATE, TOO_OLD, Lookup
from agent.events import WindowFocus

logger = logging.getLogger(__name__)

#: Default budget of one lookup, seconds.
BUDGET_S = 0.25
#: A request that waited longer than this in the queue is a miss without a lookup.
MAX_AGE_S = 0.5
QUEUE_SIZE = 64


class ElementFinder(Protocol):
    """A backend's lookups; used from the worker thread only.  Neither lookup raises."""

    def element_at(self, x: int, y: int) -> Lookup:
        """The element at screen point (``x``, ``y``)."""

    def focused_element(self) -> Lookup:
        """The element with the keyboard focus."""

    def close(self) -> None:
        """Release the finder's connections."""


#: Whether an element may be looked up in a window (title, class, pid and geometry as far as the
#: platform tells them); the finder asks before it reads anything of the window's application and
#: answers a refused window with reason :data:`agent.elements.DENIED`.
WindowCheck = Callable[[WindowFocus], bool]

#: Makes the worker's finder on the worker thread: ``(call_timeout_s, budget_s, allow) -> finder``.
FinderFactory = Callable[[float, float, WindowCheck | None], ElementFinder]


class AccessibilitySwitch(Protocol):
    """Turns the platform's accessibility on for the recording and back after."""

    def enable(self) -> bool | None:
        """Switch on; returns the setting found (None: unknown)."""

    def restore(self, before: bool | None) -> None:
        """Put back the setting :meth:`enable` found."""


_STOP = object()


@dataclass(frozen=True)
class LookupResult:
    """The answer to one request.

    :ivar t_ns: the request's time (the action it belongs to).
    :ivar kind: "point" or "focus".
    :ivar lookup: the element (None on a miss) and why.
    :ivar duration_ns: how long the lookup took (0 when it did not run).
    """

    t_ns: int
    kind: str
    lookup: Lookup
    duration_ns: int

    @property
    def hit(self) -> bool:
        return self.lookup.element is not None


@dataclass(frozen=True)
class _Request:
    t_ns: int
    queued: float
    x: int
    y: int
    focus: bool


class ElementLookup:
    """A worker thread that looks elements up.

    :param on_result: called on the worker thread with each :class:`LookupResult`; it should be
        quick (an exception from it is counted, not raised).
    :param make_finder: the backend's finder factory, called on the worker thread.
    :param budget_s: the time one lookup may take; each call's timeout is half of it (on AT-SPI
        a call to a stalled application returns after up to two timeouts, measured).
    :param switch: turns accessibility on while running (None: leave it as it is).
    :param allow: handed to the finder: windows where no lookup may be made (answered with
        reason :data:`~agent.elements.DENIED`, which is delivered but counted as neither hit
        nor miss).
    """

    def __init__(
        self,
        on_result: Callable[[LookupResult], None],
        make_finder: FinderFactory,
        *,
        budget_s: float = BUDGET_S,
        max_age_s: float = MAX_AGE_S,
        queue_size: int = QUEUE_SIZE,
        switch: AccessibilitySwitch | None = None,
        allow: WindowCheck | None = None,
    ) -> None:
        self._allow = allow
        self._on_result = on_result
        self._make_finder = make_finder
        self.budget_s = budget_s
        self.max_age_s = max_age_s
        self._switch = switch
        self._queue: queue.Queue[_Request | object] = queue.Queue(queue_size)
        self._thread: threading.Thread | None = None
        self._before: bool | None = None
        self._ready = threading.Event()
        self._failed_start = False
        self._lock = threading.Lock()
        #: Requests dropped because the queue was full.
        self.dropped = 0
        #: Lookups answered with an element.
        self.hits = 0
        #: Misses by reason (counts only).
        self.misses: Counter[str] = Counter()
        #: Lookups refused by ``allow`` (not misses).
        self.denied = 0
        #: Exceptions raised by ``on_result``.
        self.callback_errors = 0
        #: Durations of the lookups that ran, nanoseconds (the last 10,000).
        self.durations_ns: list[int] = []

    # -- the caller's side -----------------------------------------------------------------------

    def request(self, t_ns: int, x: int, y: int) -> bool:
        """Ask for the element at screen point (x, y); False when dropped (queue full or stopped)."""
        return self._put(_Request(t_ns, time.monotonic(), int(x), int(y), False))

    def request_focus(self, t_ns: int) -> bool:
        """Ask for the element with the keyboard focus; False when dropped."""
        return self._put(_Request(t_ns, time.monotonic(), 0, 0, True))

    def _put(self, item: _Request) -> bool:
        if self._thread is None:
            with self._lock:
                self.dropped += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1
            return False
        return True

    @property
    def missed(self) -> int:
        with self._lock:
            return sum(self.misses.values())

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 5.0) -> bool:
        """Switch accessibility on, start the worker; False when it could not start (no display,
        no AT-SPI typelib): requests are then dropped and counted."""
        if self._thread is not None:
            return True
        if self._switch is not None:
            self._before = self._switch.enable()
        self._ready.clear()
        self._failed_start = False
        thread = threading.Thread(target=self._run, name="optin-a11y", daemon=True)
        self._thread = thread
        thread.start()
        self._ready.wait(timeout)
        if self._failed_start:
            self._thread = None
            thread.join(1.0)
            self._restore()
            return False
        return True

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the worker (waiting at most ``timeout`` s for a lookup under way) and restore the
        accessibility setting; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None:
            self._restore()
            return
        while True:  # make room for the stop marker: pending requests are abandoned
            try:
                self._queue.put_nowait(_STOP)
                break
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
        thread.join(timeout)
        if thread.is_alive():
            logger.info("the accessibility worker did not stop within %.1f s", timeout)
        self._restore()
        with self._lock:
            total = self.hits + sum(self.misses.values())
            durations = sorted(self.durations_ns) or [0]
            logger.info(
                "element lookups: %d answered, %d hits, %d misses (%s), %d dropped; p50 %.1f ms, max %.1f ms",
                total,
                self.hits,
                sum(self.misses.values()),
                "; ".join(f"{reason}: {n}" for reason, n in sorted(self.misses.items())) or "none",
                self.dropped,
                durations[len(durations) // 2] / 1e6,
                durations[-1] / 1e6,
            )

    def _restore(self) -> None:
        if self._switch is not None:
            self._switch.restore(self._before)
            self._before = None

    # -- the worker ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            # a call that times out may take two timeouts (measured): half the budget each
            finder = self._make_finder(self.budget_s / 2, self.budget_s, self._allow)
        except Exception as exc:  # no display, no typelib: the type only
            logger.info("element lookups unavailable (%s)", type(exc).__name__)
            self._failed_start = True
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                item = self._queue.get()
                if item is _STOP or not isinstance(item, _Request):
                    return
                self._answer(finder, item)
        finally:
            finder.close()

    def _answer(self, finder: ElementFinder, item: _Request) -> None:
        kind = "focus" if item.focus else "point"
        if time.monotonic() - item.queued > self.max_age_s:
            self._deliver(LookupResult(item.t_ns, kind, Lookup(None, TOO_OLD, None, None), 0))
            return
        t0 = time.monotonic_ns()
        try:
            found = finder.focused_element() if item.focus else finder.element_at(item.x, item.y)
        except Exception:  # ElementFinder never raises; this is the last guard
            found = Lookup(None, FAILED, None, None)
        took = time.monotonic_ns() - t0
        if found.element is not None and took > self.budget_s * 1e9:
            found = Lookup(None, LATE, found.window_id, found.pid)
        with self._lock:
            self.durations_ns.append(took)
            if len(self.durations_ns) > 10_000:
                del self.durations_ns[:5_000]
        self._deliver(LookupResult(item.t_ns, kind, found, took))

    def _deliver(self, result: LookupResult) -> None:
        with self._lock:
            if result.hit:
                self.hits += 1
            elif result.lookup.reason == DENIED:
                self.denied += 1
            else:
                self.misses[result.lookup.reason] += 1
        try:
            self._on_result(result)
        except Exception as exc:  # the caller's bug must not end the worker; the type only
            with self._lock:
                self.callback_errors += 1
            logger.debug("element lookup callback failed (%s)", type(exc).__name__)


__all__ = [
    "BUDGET_S",
    "MAX_AGE_S",
    "AccessibilitySwitch",
    "ElementFinder",
    "ElementLookup",
    "FinderFactory",
    "LookupResult",
    "WindowCheck",
]
