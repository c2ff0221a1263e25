"""The accessible element under a point, or with the keyboard focus, on X11 through AT-SPI2.

AT-SPI has no z-order across applications (a desktop-wide hit test returns a
hit in every overlapping window), so the window comes from X11 first:
:meth:`ElementFinder.element_at` finds the topmost client window at the point
(``XTranslateCoordinates`` from the root down, which follows the stacking
order), reads its ``_NET_WM_PID``, takes the AT-SPI application with that
process id and descends its tree with ``get_accessible_at_point`` (screen
coordinates).  A static label, image or filler inside a button, link or entry
gives way to that actionable ancestor.  :meth:`ElementFinder.focused_element`
does the same from ``_NET_ACTIVE_WINDOW`` to the application's focused
descendant (an AT-SPI Collection query, else a bounded walk).

Bounds: every string is cut (:data:`MAX_NAME` and friends), the walk visits at
most :data:`MAX_NODES` nodes and :data:`MAX_DEPTH` levels, and every AT-SPI
call has a short D-Bus timeout (``Atspi.set_timeout``, set per finder): a
stalled application costs its own lookup one timeout (measured: a SIGSTOPped
GTK app answers nothing, and each call returns empty after the timeout; with
the library's default the first call waited 14.6 s, the "startup time").  An
application that stalled is then skipped for :data:`~agent.elements.STALL_SKIP_S`.

The caller decides where no lookup may happen (a denied window, optin's own
UI): :class:`Lookup` carries the X window id and pid that were resolved.

Names, values and titles are captured content: this module never logs them
(counts and durations only) and never puts them in an exception message.
The parts: :mod:`agent.elements` (what a lookup answers, platform-neutral),
:mod:`~agent.backends.xorg.a11y_model` (the walk's bounds and roles),
:mod:`~agent.backends.xorg.a11y_xwindows` (the X11 half), this module (the AT-SPI half),
:mod:`~agent.backends.xorg.a11y_bus` (switching accessibility on, the doctor's questions).

One finder belongs to one thread (libatspi and the X connection are not
shared): :class:`agent.capture.element_lookup.ElementLookup` runs it in its
worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from agent.backends.xorg.a11y_model import (
    ACTIONABLE_ROLES,
    APPS_REFRESH_S,
    FAILED,
    MAX_APP_NAME,
    MAX_APPS,
    MAX_AUTOMATION_ID,
    MAX_DEPTH,
    MAX_NAME,
    MAX_NODES,
    MAX_PATH,
    MAX_PATH_NAME,
    MAX_WINDOWS,
    NO_ELEMENT,
    NO_FOCUS,
    NO_PID,
    NO_WINDOW,
    NOT_ON_BUS,
    OUT_OF_TIME,
    PASSIVE_ROLES,
    STALLED,
    STATE_NAMES,
    WINDOW_ROLES,
    Element,
    Lookup,
    cut,
)
from agent.backends.xorg.a11y_xwindows import XWindows
from agent.capture.element_lookup import WindowCheck
from agent.capture.element_process import ProcessFinder
from agent.elements import DENIED, LookupBudget, OutOfTime, Stalled
from agent.paths import optin_command

logger = logging.getLogger(__name__)


class ElementFinder:
    """Element lookups on one X display and its accessibility bus; use from one thread only.

    :param display: X display name (None: ``$DISPLAY``).
    :param call_timeout_s: the D-Bus timeout of each AT-SPI call (process-wide in libatspi).
    :param budget_s: the default time a whole lookup may take.
    :param allow: asked about the window resolved (title, class, pid, geometry) before anything
        of its application is read; False: the answer is :data:`~agent.elements.DENIED`.
    """

    def __init__(
        self,
        display: str | None = None,
        *,
        call_timeout_s: float = 0.05,
        budget_s: float = 0.05,
        allow: WindowCheck | None = None,
    ):
        import gi

        gi.require_version("Atspi", "2.0")
        from gi.repository import Atspi

        self._atspi: Any = Atspi
        self._allow = allow
        self._timeout_s = call_timeout_s
        self._budget = LookupBudget(budget_s, MAX_NODES)
        # -1: enforce the timeout at once, also on an application that started a moment ago
        Atspi.set_timeout(max(1, round(call_timeout_s * 1000)), -1)
        name = display if display is not None else os.environ.get("DISPLAY", "")
        self._x = XWindows(name)
        self._states = [
            (getattr(Atspi.StateType, attr), ours)
            for attr, ours in STATE_NAMES
            if hasattr(Atspi.StateType, attr)
        ]
        self._apps: dict[int, Any] = {}
        self._apps_read = 0.0

    def close(self) -> None:
        self._x.close()

    # -- the two lookups -------------------------------------------------------------------------

    def element_at(self, x: int, y: int, budget_s: float | None = None) -> Lookup:
        """The element at screen point (``x``, ``y``).  Never raises."""
        wid, pid = None, None
        try:
            wid = self._x.client_at(x, y)
            if wid is None:
                return Lookup(None, NO_WINDOW, None, None)
            pid = self._x.pid(wid)
            refused = self._refused(wid, pid)
            if refused is not None:
                return refused
            if pid is None:
                return Lookup(None, NO_PID, wid, None)
            return self._element_at(x, y, wid, pid, budget_s)
        except Exception as exc:  # a lookup never raises into its caller; the type only, no content
            logger.debug("element lookup failed (%s)", type(exc).__name__)
            return Lookup(None, FAILED, wid, pid)

    def focused_element(self, budget_s: float | None = None) -> Lookup:
        """The element with the keyboard focus in the active window.  Never raises."""
        wid, pid = None, None
        try:
            wid = self._x.active_window()
            if wid is None:
                return Lookup(None, NO_WINDOW, None, None)
            pid = self._x.pid(wid)
            refused = self._refused(wid, pid)
            if refused is not None:
                return refused
            if pid is None:
                return Lookup(None, NO_PID, wid, None)
            return self._focused(wid, pid, budget_s)
        except Exception as exc:  # a lookup never raises into its caller; the type only, no content
            logger.debug("focus lookup failed (%s)", type(exc).__name__)
            return Lookup(None, FAILED, wid, pid)

    def _refused(self, wid: int, pid: int | None) -> Lookup | None:
        """The answer when ``allow`` refuses window ``wid`` (a window that vanished meanwhile is a
        failed lookup: fail closed), else None."""
        if self._allow is None:
            return None
        window = self._x.describe(wid)
        if window is None:
            return Lookup(None, FAILED, wid, pid)
        return None if self._allow(window) else Lookup(None, DENIED, wid, pid)

    # -- AT-SPI ----------------------------------------------------------------------------------

    @property
    def budget_s(self) -> float:
        """The default time a whole lookup may take."""
        return self._budget.budget_s

    def _call(self, fn: Any, *args: Any) -> Any:
        """One AT-SPI call.  libatspi answers a call that timed out with an empty value and no
        error, so a call that took (nearly) the whole timeout means a stalled application."""
        self._budget.spend()
        t0 = time.monotonic()
        value = fn(*args)
        if time.monotonic() - t0 >= self._timeout_s * 0.9:
            raise Stalled
        return value

    def _app_for(self, pid: int) -> Any:
        if self._budget.skipped(pid):
            raise Stalled
        app = self._apps.get(pid)
        if app is None and time.monotonic() - self._apps_read >= APPS_REFRESH_S:
            self._read_apps()
            app = self._apps.get(pid)
        return app

    def _read_apps(self) -> None:
        self._apps_read = time.monotonic()
        desktop = self._atspi.get_desktop(0)
        apps: dict[int, Any] = {}
        count = min(int(desktop.get_child_count()), MAX_APPS)
        for i in range(count):
            self._budget.check()
            app = desktop.get_child_at_index(i)
            if app is None:
                continue
            with contextlib.suppress(Exception):  # an application that left meanwhile
                apps.setdefault(int(app.get_process_id()), app)
        self._apps = apps

    def _windows(self, app: Any, wid: int, at: tuple[int, int] | None = None) -> list[Any]:
        """The application's showing windows (containing point ``at`` when given), the one whose
        bounds match X window ``wid`` first."""
        geometry = self._x.geometry(wid)
        found: list[tuple[int, int, Any]] = []
        count = min(int(self._call(app.get_child_count)), MAX_WINDOWS)
        for i in range(count):
            window = self._call(app.get_child_at_index, i)
            if window is None:
                continue
            states = self._call(window.get_state_set)
            if not states.contains(self._atspi.StateType.SHOWING):
                continue
            r = self._call(window.get_extents, self._atspi.CoordType.SCREEN)
            bounds = (r.x, r.y, r.width, r.height)
            if at is not None and not (0 <= at[0] - r.x < r.width and 0 <= at[1] - r.y < r.height):
                continue
            distance = sum(abs(a - b) for a, b in zip(bounds, geometry, strict=True)) if geometry else 0
            active = 0 if states.contains(self._atspi.StateType.ACTIVE) else 1
            found.append((distance, active * (i + 1), window))
        found.sort(key=lambda item: (item[0], item[1]))
        return [window for _, _, window in found]

    def _with_app(self, wid: int, pid: int, budget_s: float | None, fn: Any, none: str) -> Lookup:
        self._budget.start(budget_s)
        try:
            app = self._app_for(pid)
            if app is None:
                return Lookup(None, NOT_ON_BUS, wid, pid)
            element: Element | None = fn(app)
        except Stalled:
            self._budget.stalled(pid)
            self._apps.pop(pid, None)
            return Lookup(None, STALLED, wid, pid)
        except OutOfTime:
            return Lookup(None, OUT_OF_TIME, wid, pid)
        if element is None:
            return Lookup(None, none, wid, pid)
        return Lookup(element, "", wid, pid)

    def _element_at(self, x: int, y: int, wid: int, pid: int, budget_s: float | None) -> Lookup:
        def find(app: Any) -> Element | None:
            return self._descend(app, wid, x, y)

        return self._with_app(wid, pid, budget_s, find, NO_ELEMENT)

    def _focused(self, wid: int, pid: int, budget_s: float | None) -> Lookup:
        def find(app: Any) -> Element | None:
            for window in self._windows(app, wid)[:4]:
                node = self._focused_in(window)
                if node is not None:
                    return self._describe(app, node, self._pid_of(app))
            return None

        return self._with_app(wid, pid, budget_s, find, NO_FOCUS)

    def _descend(self, app: Any, wid: int, x: int, y: int) -> Element | None:
        coords = self._atspi.CoordType.SCREEN
        for window in self._windows(app, wid, (x, y)):
            node = window
            for _ in range(MAX_DEPTH):
                child = self._call(node.get_accessible_at_point, x, y, coords)
                if child is None or child == node:
                    break
                node = child
            if node == window:
                continue
            return self._describe(app, self._actionable(node), self._pid_of(app))
        return None

    def _pid_of(self, app: Any) -> int:
        return int(self._call(app.get_process_id))

    def _actionable(self, node: Any) -> Any:
        """``node``, or its actionable ancestor when ``node`` is a label, image or filler in one."""
        if self._call(node.get_role_name) not in PASSIVE_ROLES:
            return node
        parent = node
        for _ in range(4):
            parent = self._call(parent.get_parent)
            if parent is None:
                break
            role = self._call(parent.get_role_name)
            if role in WINDOW_ROLES:
                break
            if role in ACTIONABLE_ROLES:
                return parent
        return node

    def _focused_in(self, window: Any) -> Any:
        """The focused descendant of ``window``: one Collection query, else a bounded walk."""
        atspi = self._atspi
        focused = atspi.StateType.FOCUSED
        try:
            collection = self._call(window.get_collection_iface)
        except (Stalled, OutOfTime):
            raise
        except Exception:  # no Collection interface (GLib.Error): walk instead
            collection = None
        if collection is not None:
            match = atspi.CollectionMatchType.ALL
            states = atspi.StateSet.new([focused])
            rule = atspi.MatchRule.new(states, match, {}, match, [], match, [], match, False)
            try:
                matches = self._call(
                    collection.get_matches, rule, atspi.CollectionSortOrder.CANONICAL, 1, True
                )
            except (Stalled, OutOfTime):
                raise
            except Exception:  # the application does not implement GetMatches: walk instead
                matches = None
            if matches is not None:
                return matches[0] if matches else None
        for node in self._walk(window):
            if self._call(node.get_state_set).contains(focused):
                return node
        return None

    def _walk(self, top: Any) -> Iterator[Any]:
        """Showing descendants of ``top``, breadth first, within the node bound."""
        showing = self._atspi.StateType.SHOWING
        level = [top]
        for _ in range(MAX_DEPTH):
            below = []
            for node in level:
                count = min(int(self._call(node.get_child_count)), MAX_NODES)
                for i in range(count):
                    child = self._call(node.get_child_at_index, i)
                    if child is not None and self._call(child.get_state_set).contains(showing):
                        yield child
                        below.append(child)
            if not below:
                return
            level = below

    def _describe(self, app: Any, node: Any, pid: int) -> Element:
        role = cut(self._call(node.get_role_name), 64)
        states = self._call(node.get_state_set)
        names = {ours for state, ours in self._states if states.contains(state)}
        if self._call(node.get_role) == self._atspi.Role.PASSWORD_TEXT:
            names.add("password")
        r = self._call(node.get_extents, self._atspi.CoordType.SCREEN)
        try:
            automation_id = cut(self._call(node.get_accessible_id), MAX_AUTOMATION_ID)
        except (Stalled, OutOfTime):
            raise
        except Exception:  # older libatspi without accessible_id
            automation_id = ""
        return Element(
            role=role,
            name=cut(self._call(node.get_name), MAX_NAME),
            states=tuple(sorted(names)),
            bounds=(int(r.x), int(r.y), int(r.width), int(r.height)),
            app=cut(self._call(app.get_name), MAX_APP_NAME),
            pid=pid,
            path=self._path(node),
            automation_id=automation_id,
        )

    def _path(self, node: Any) -> tuple[tuple[str, str], ...]:
        """``(role, name)`` of ``node``'s ancestors up to its window, outermost first; a stalled
        or late call ends the path where it got to."""
        path: list[tuple[str, str]] = []
        parent = node
        try:
            for _ in range(MAX_PATH):
                parent = self._call(parent.get_parent)
                if parent is None:
                    break
                role = cut(self._call(parent.get_role_name), 64)
                if role == "application":
                    break
                path.append((role, cut(self._call(parent.get_name), MAX_PATH_NAME)))
                if role in WINDOW_ROLES:
                    break
        except (Stalled, OutOfTime):
            pass
        return tuple(reversed(path))


#: The hidden ``optin`` subcommand that runs the lookup process (agent/__main__.py dispatches it to
#: :mod:`agent.backends.xorg.a11y_child`), in the packaged app too.
LOOKUP_COMMAND = "_element-lookup"


def finder_factory(
    display: str | None = None,
) -> Callable[[float, float, WindowCheck | None], ProcessFinder]:
    """What :class:`agent.capture.element_lookup.ElementLookup` calls on its worker thread to make
    its finder on ``display`` (None: ``$DISPLAY``): an :class:`ElementFinder` in a child process
    (:mod:`agent.backends.xorg.a11y_child`; :mod:`agent.capture.element_process` says why)."""

    def make(call_timeout_s: float, budget_s: float, allow: WindowCheck | None) -> ProcessFinder:
        name = display if display is not None else os.environ.get("DISPLAY", "")
        argv = optin_command(LOOKUP_COMMAND, name, str(call_timeout_s), str(budget_s))
        return ProcessFinder(argv, budget_s, allow)

    return make


__all__ = [
    "ACTIONABLE_ROLES",
    "FAILED",
    "MAX_DEPTH",
    "MAX_NAME",
    "MAX_NODES",
    "MAX_PATH",
    "NOT_ON_BUS",
    "NO_ELEMENT",
    "NO_FOCUS",
    "NO_PID",
    "NO_WINDOW",
    "OUT_OF_TIME",
    "PASSIVE_ROLES",
    "STALLED",
    "Element",
    "ElementFinder",
    "Lookup",
    "cut",
    "finder_factory",
]
