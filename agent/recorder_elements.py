"""The recorder's element lookups: when to ask for the UI element under an action, what an answer
becomes, and where no lookup may happen.

The hook threads call :meth:`RecorderElements.after_queued` with each event the sink queued
(O(1), never blocks): a ``button_press`` asks for the element at its point, the first ``scroll``
of a burst likewise, and a ``key_press`` asks for the element with the keyboard focus when the
focus may have moved since the last ask (a click, a focus change, a start, or a key that moves
focus: Tab, Enter, arrows, a shortcut).  Typing into one field asks once.  The worker
(:class:`agent.capture.element_lookup.ElementLookup`) answers on its own thread; each answer
becomes an :class:`agent.events.ElementSeen` handed to the recorder's sink, so it passes the same
gates as any event (nothing is taken while paused or stopped).

No lookup inside a deny-listed window or on optin's own windows: the sink asks nothing while
a denied window has the focus (its verdict, :attr:`agent.recorder_sink.RecorderSink._denied_now`),
and the finder checks the window it resolved against :meth:`RecorderElements.allowed` before
it reads anything of that application (a click on a denied window that does not have the focus
yet).  Names are kept only with the ``window_titles`` scope (they are captured text, like titles).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.capture import EventSink
from agent.deny_rules import DenyRule, match
from agent.elements import DENIED, FOUND, record_of, result_of
from agent.events import ButtonPress, ElementSeen, Event, KeyPress, Scroll, WindowFocus
from agent.keyboard.names import key_action
from agent.steps import SCROLL_GAP_NS, SCROLL_SLOP_PX

if TYPE_CHECKING:
    from agent.backends import Backend
    from agent.capture.element_lookup import ElementLookup, LookupResult

logger = logging.getLogger(__name__)


class RecorderElements:
    """The element lookups of one recorder run (across its sessions and pauses).

    :param backend: whose :meth:`~agent.backends.base.Backend.element_lookup` makes the worker.
    :param sink: where answers go (the recorder's sink).
    :param rules: the deny rules in force, read at each check (the volunteer may add one).
    :param own_pids: optin's own processes (no lookup in their windows).
    :param keep_names: the ``window_titles`` scope: names, ancestor names and ids are kept.
    """

    def __init__(
        self,
        backend: Backend,
        sink: EventSink,
        rules: Callable[[], tuple[DenyRule, ...]],
        own_pids: Callable[[], frozenset[int]],
        *,
        keep_names: bool,
    ) -> None:
        self._backend = backend
        self._sink = sink
        self._rules = rules
        self._own_pids = own_pids
        self._keep_names = keep_names
        self._lookup: ElementLookup | None = None
        self._lock = threading.Lock()
        self._dropped = 0
        self._since_ns = 0
        # hook-thread state (one hook thread per device; a race costs one extra or missing ask)
        self._focus_stale = True
        self._scroll: tuple[int, int, int, int, int] | None = None  # t, x, y, dx sign, dy sign

    # -- lifecycle (the recorder's lock) ---------------------------------------------------------

    def start(self) -> str | None:
        """Start the worker; the API's name (``atspi``, ``uia``, ``ax``) when lookups run, else None."""
        api = self._backend.ELEMENT_API
        if api is None or self._lookup is not None:
            return api if self._lookup is not None else None
        lookup = self._backend.element_lookup(self._answered, self.allowed)
        if lookup is None or not lookup.start():
            return None
        self._lookup = lookup
        return api

    def stop(self) -> None:
        """Stop the worker and restore the accessibility setting; idempotent."""
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup.stop()

    @property
    def api(self) -> str | None:
        """The API in use, or None when no lookups run."""
        return self._backend.ELEMENT_API if self._lookup is not None else None

    def new_session(self, since_ns: int) -> None:
        """A session opened at ``since_ns``: answers to older actions are not its own."""
        with self._lock:
            self._since_ns = since_ns
            self._dropped = 0
        self.focus_moved()

    def take_dropped(self) -> int:
        """Lookups never made since the session opened (the worker's queue was full)."""
        with self._lock:
            dropped, self._dropped = self._dropped, 0
        return dropped

    # -- the hook threads: O(1) ------------------------------------------------------------------

    def focus_moved(self) -> None:
        """The focus may have moved (capture started, resumed): the next key asks again."""
        self._focus_stale = True

    def after_queued(self, event: Event) -> None:
        """Ask for the element an action was aimed at, when the rules say so (the sink calls this
        only for events it queued, never in a denied window or on optin's own UI)."""
        lookup = self._lookup
        if lookup is None:
            return
        if type(event) is ButtonPress:
            self._focus_stale = True
            self._ask(lookup.request(event.t_ns, event.x, event.y))
        elif type(event) is KeyPress:
            action = key_action(event)
            if action is None:
                return  # a modifier alone
            if self._focus_stale:
                self._ask(lookup.request_focus(event.t_ns))
            # a named key (Tab, Enter, an arrow) or a shortcut may move the focus
            self._focus_stale = action == "hotkey"
        elif type(event) is Scroll:
            if self._new_scroll(event):
                self._ask(lookup.request(event.t_ns, event.x, event.y))
        elif type(event) is WindowFocus:
            self._focus_stale = True

    def _new_scroll(self, event: Scroll) -> bool:
        """Whether ``event`` may begin a new scroll step (agent/steps.py's rules: a pause, a move,
        a change of direction), so its element is asked for."""
        sx = (event.dx > 0) - (event.dx < 0) if isinstance(event.dx, int) else 0
        sy = (event.dy > 0) - (event.dy < 0) if isinstance(event.dy, int) else 0
        last, self._scroll = self._scroll, (event.t_ns, event.x, event.y, sx, sy)
        if last is None:
            return True
        t, x, y, lx, ly = last
        return (
            event.t_ns - t > SCROLL_GAP_NS
            or abs(event.x - x) > SCROLL_SLOP_PX
            or abs(event.y - y) > SCROLL_SLOP_PX
            or sx * lx < 0
            or sy * ly < 0
        )

    def _ask(self, made: bool) -> None:
        if not made:
            with self._lock:
                self._dropped += 1

    # -- the worker thread -----------------------------------------------------------------------

    def allowed(self, window: WindowFocus) -> bool:
        """Whether an element may be looked up in ``window`` (the finder asks before it reads the
        application): not one of optin's own, not one a deny rule matches."""
        if window.pid is not None and window.pid in self._own_pids():
            return False
        return match(self._rules(), window) is None

    def _answered(self, result: LookupResult) -> None:
        if result.lookup.reason == DENIED:
            return  # a lookup the rules do not make: not a loss, not kept
        with self._lock:
            if result.t_ns < self._since_ns:
                return  # the action belongs to a session that has closed
        found = result_of(result.lookup)
        element = result.lookup.element
        record = None
        if found == FOUND and element is not None:
            record = record_of(element)
            if not self._keep_names:
                record["name"] = None
                record["automation_id"] = None
                record["path"] = [{"role": step["role"], "name": None} for step in record["path"]]
        self._sink(ElementSeen(result.t_ns, result.kind, found, record))


__all__ = ["RecorderElements"]
