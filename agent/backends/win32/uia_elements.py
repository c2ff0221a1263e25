"""The UI element under a point, or with the keyboard focus, on Windows through UI Automation.

:meth:`UiaElementFinder.element_at` asks ``IUIAutomation::ElementFromPointBuildCache``:
UI Automation hit-tests the point itself, in z-order (the window on top answers; nothing
is skipped or looked up window by window as on X11).  :meth:`UiaElementFinder.focused_element`
asks ``GetFocusedElementBuildCache``.  Both come back with the properties the element is
described by already read (one cache request, :data:`CACHED_PROPERTIES`, so describing an
element is one cross-process round trip); the ancestors come from the control view's
TreeWalker (``ControlViewWalker.GetParentElementBuildCache``), one round trip each, up to the
top-level window (a ``window`` control type, or the element whose parent is the desktop), at
most :data:`~agent.elements.MAX_PATH` of them.  A passive hit (text, an image, a group inside
a button or a link) gives way to that actionable ancestor, as on X11.

The window first: before anything of the application is read, the hit's top-level window is
resolved and, when the recorder gave one, ``allow`` is asked about it (title, executable,
pid, frame, as the focus watcher reports a window: deny rules, optin's own windows).  The hit
query reads only the hit's process id and window handle (a small cache request); the window
is the top-level window (``GetAncestor(GA_ROOT)``) of the hit's handle, else the one
``WindowFromPoint`` (at a point) or ``GetForegroundWindow`` (for the focus) names when its
process is the hit's, else that of the nearest ancestor with a handle; both it and the window
that owns it (``GA_ROOTOWNER``: a menu's or a dialog's main window) must be allowed.  A window
refused is :data:`~agent.elements.DENIED`; with ``allow`` and no window resolved, the lookup
fails (fail closed).  Only then is the element read in full (``BuildUpdatedCache``).

What is read: the role is the control type's name, lower case (``button``, ``edit``,
``checkbox``); the states map ``HasKeyboardFocus``, ``IsEnabled``, ``IsKeyboardFocusable``,
``IsPassword``, ``IsRequiredForForm`` and the Value, Toggle, SelectionItem and ExpandCollapse
patterns' states onto the vocabulary (:func:`~agent.backends.win32.uia_model.states_of`); the
bounds are ``BoundingRectangle`` in physical screen pixels (the process is per-monitor DPI
aware, :func:`agent.backends.win32.make_backend`, so they share the pointer's and the frames'
coordinates); the automation id is ``AutomationId``; the process is ``ProcessId``, its
``app`` the executable's file name (``notepad.exe``, as ``window.app_class``); the window id
is the top-level window resolved above.  No value, text or description is read.

Bounds: every call is guarded.  The client is made with ``ConnectionTimeout`` and
``TransactionTimeout`` at the call timeout (``IUIAutomation2``), so an application that does
not answer fails the call with ``UIA_E_TIMEOUT`` (:data:`~agent.elements.STALLED`), and
lookups in it are skipped for :data:`~agent.elements.STALL_SKIP_S` (when its process is known); a lookup
makes at most :data:`MAX_CALLS` cross-process calls and none after its budget
(:data:`~agent.elements.OUT_OF_TIME`); an elevated application refuses a process that is not
(``E_ACCESSDENIED``: :data:`~agent.elements.NOT_ON_BUS`, exported as ``not_accessible``);
every other error is a miss (:data:`~agent.elements.FAILED`), never an exception.  optin's
own windows are never described (the hit's process is this one:
:data:`~agent.elements.DENIED`, with or without ``allow``).  Windows has no accessibility
switch: UI Automation is always on.

Names, automation ids and titles are captured content: this module never logs them (error
types only) and never puts them in an exception message.  One finder belongs to one thread,
the :class:`agent.capture.element_lookup.ElementLookup` worker, which makes it there
(:func:`finder_factory`: the COM apartment is joined on that thread).  Written against the
documented API; runs on Windows only in the GitHub Actions smoke test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.backends.win32.uia_com import com_initialize, create_automation
from agent.backends.win32.uia_model import (
    ACTIONABLE_LEVELS,
    ACTIONABLE_ROLES,
    CACHED_PROPERTIES,
    MAX_CALLS,
    MAX_PROCESS_NAMES,
    PASSIVE_ROLES,
    TREE_SCOPE_ELEMENT,
    UIA_EXPAND_COLLAPSE_STATE,
    UIA_NATIVE_WINDOW_HANDLE,
    UIA_PROCESS_ID,
    UIA_SELECTION_ITEM_IS_SELECTED,
    UIA_TOGGLE_STATE,
    UIA_VALUE_IS_READ_ONLY,
    WINDOW_ROLE,
    hresult_of,
    reason_of_hresult,
    rect_bounds,
    role_of,
    states_of,
)
from agent.capture.element_lookup import WindowCheck
from agent.elements import (
    DENIED,
    FAILED,
    MAX_APP_NAME,
    MAX_AUTOMATION_ID,
    MAX_NAME,
    MAX_PATH,
    MAX_PATH_NAME,
    NO_ELEMENT,
    NO_FOCUS,
    NO_PID,
    NO_WINDOW,
    OUT_OF_TIME,
    STALLED,
    Element,
    Lookup,
    LookupBudget,
    Miss,
    OutOfTime,
    Stalled,
    cut,
)
from agent.events import WindowFocus

logger = logging.getLogger(__name__)


class WindowsInfo(Protocol):
    """What the finder asks Windows itself (user32, kernel32; no UI Automation):
    :class:`~agent.backends.win32.api.Api`.  None of these sends a message to another process."""

    def process_name(self, pid: int | None) -> str | None:
        """The executable's file name of process ``pid``; None when it cannot be read."""

    def root_window(self, hwnd: int) -> int | None:
        """The top-level window of window ``hwnd``; None when there is none."""

    def root_owner(self, hwnd: int) -> int | None:
        """The window at the end of ``hwnd``'s owner chain; None when there is none."""

    def window_at(self, x: int, y: int) -> int | None:
        """The top-level window at screen point (``x``, ``y``); None when there is none."""

    def foreground_window(self) -> int | None:
        """The foreground window; None when there is none."""

    def describe_window(self, hwnd: int) -> WindowFocus:
        """Title, executable, pid and frame of top-level window ``hwnd``."""


@dataclass(frozen=True)
class _Node:
    """One element as its cache request read it."""

    element: Any = field(repr=False)
    role: str
    name: str = field(repr=False)  # captured content
    pid: int
    handle: int
    states: tuple[str, ...]
    bounds: tuple[int, int, int, int] | None
    automation_id: str = field(repr=False)  # captured content


def _handle(value: object) -> int:
    """A window handle (``UIA_HWND``, which comtypes hands back as an int or None) as an int."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return value


def _choose(node: _Node, ancestors: list[_Node]) -> tuple[_Node, list[_Node]]:
    """``node``, or its actionable ancestor when ``node`` is passive, and the ancestors above it."""
    if node.role in PASSIVE_ROLES:
        for i, above in enumerate(ancestors[:ACTIONABLE_LEVELS]):
            if above.role == WINDOW_ROLE:
                break
            if above.role in ACTIONABLE_ROLES:
                return above, ancestors[i + 1 :]
    return node, ancestors


class UiaElementFinder:
    """Element lookups through one UI Automation client; use from the thread that made it.

    :param automation: an ``IUIAutomation`` (comtypes) made on this thread.
    :param module: the UIAutomationClient module comtypes generated (for ``tagPOINT``).
    :param system: windows and processes (:class:`WindowsInfo`).
    :param budget_s: the default time a whole lookup may take.
    :param allow: asked about the window resolved before anything of its application is read;
        False: the answer is :data:`~agent.elements.DENIED`.
    """

    def __init__(
        self,
        automation: Any,
        module: Any,
        system: WindowsInfo,
        *,
        budget_s: float = 0.05,
        allow: WindowCheck | None = None,
    ) -> None:
        self._automation = automation
        self._point = getattr(module, "tagPOINT", None) or _wintypes_point()
        self._system = system
        self._allow = allow
        self._budget = LookupBudget(budget_s, MAX_CALLS)
        self._cache: Any = self._cache_request(CACHED_PROPERTIES)
        self._probe: Any = self._cache_request((UIA_PROCESS_ID, UIA_NATIVE_WINDOW_HANDLE))
        self._walker: Any = automation.ControlViewWalker
        self._desktop = _handle(automation.GetRootElement().CurrentNativeWindowHandle)
        self._own_pid = os.getpid()
        self._names: dict[int, str] = {}
        self._window: int | None = None
        self._pid: int | None = None

    def _cache_request(self, properties: tuple[int, ...]) -> Any:
        cache = self._automation.CreateCacheRequest()
        for prop in properties:
            cache.AddProperty(prop)
        cache.TreeScope = TREE_SCOPE_ELEMENT
        return cache

    def close(self) -> None:
        """Drop the COM objects (on the thread that made them)."""
        self._cache = self._probe = self._walker = self._automation = None

    # -- the two lookups -------------------------------------------------------------------------

    @property
    def budget_s(self) -> float:
        """The default time a whole lookup may take."""
        return self._budget.budget_s

    def element_at(self, x: int, y: int, budget_s: float | None = None) -> Lookup:
        """The element at screen point (``x``, ``y``), physical pixels.  Never raises."""
        self._budget.start(budget_s)
        if not (_LONG_MIN <= x <= _LONG_MAX and _LONG_MIN <= y <= _LONG_MAX):
            return Lookup(None, FAILED, None, None)  # ctypes would wrap it silently: another point
        point = self._point(int(x), int(y))

        def find() -> Any:
            return self._automation.ElementFromPointBuildCache(point, self._probe)

        def guess() -> int | None:
            return self._system.window_at(int(x), int(y))

        return self._lookup(find, guess, NO_ELEMENT, NO_WINDOW, actionable=True)

    def focused_element(self, budget_s: float | None = None) -> Lookup:
        """The element with the keyboard focus.  Never raises."""
        self._budget.start(budget_s)

        def find() -> Any:
            return self._automation.GetFocusedElementBuildCache(self._probe)

        return self._lookup(find, self._system.foreground_window, NO_FOCUS, NO_FOCUS, actionable=False)

    # -- UI Automation ---------------------------------------------------------------------------

    def _lookup(
        self,
        find: Callable[[], Any],
        guess: Callable[[], int | None],
        missing: str,
        desktop: str,
        *,
        actionable: bool,
    ) -> Lookup:
        self._window, self._pid = None, None
        try:
            return self._find(find, guess, missing, desktop, actionable=actionable)
        except Stalled:
            self._budget.stalled(self._pid)
            return Lookup(None, STALLED, self._window, self._pid)
        except OutOfTime:
            return Lookup(None, OUT_OF_TIME, self._window, self._pid)
        except Miss as miss:
            return Lookup(None, miss.reason, self._window, self._pid)
        except Exception as exc:  # a lookup never raises into its caller; the type only, no content
            logger.debug("element lookup failed (%s)", type(exc).__name__)
            return Lookup(None, FAILED, self._window, self._pid)

    def _find(
        self,
        find: Callable[[], Any],
        guess: Callable[[], int | None],
        missing: str,
        desktop: str,
        *,
        actionable: bool,
    ) -> Lookup:
        hit = self._call(find, missing)
        if not hit:  # a NULL element
            return Lookup(None, missing, None, None)
        pid, handle = _positive(_get(hit, "CachedProcessId")), _handle(_get(hit, "CachedNativeWindowHandle"))
        if self._desktop and handle == self._desktop:
            return Lookup(None, desktop, None, None)
        self._pid = pid
        if pid is None:
            return Lookup(None, NO_PID, None, None)
        if pid == self._own_pid or self._budget.skipped(pid):  # optin's own windows are never described
            return Lookup(None, DENIED if pid == self._own_pid else STALLED, None, pid)
        window = self._window = self._window_of(hit, handle, pid, guess, missing)
        refused = self._refused(window)
        if refused is not None:
            return Lookup(None, refused, window, pid)
        full = self._call(hit.BuildUpdatedCache, missing, self._cache)  # now the element itself
        node = self._read(full)
        ancestors = self._ancestors(full, pid, missing)
        chosen, above = _choose(node, ancestors) if actionable else (node, ancestors)
        return Lookup(self._describe(chosen, above, pid), "", window, pid)

    def _call(self, fn: Callable[..., Any], missing: str, *args: Any) -> Any:
        """One cross-process call, within the lookup's deadline and call bound; its failure as
        :class:`Stalled` or :class:`Miss` (by HRESULT, :func:`reason_of_hresult`)."""
        self._budget.spend()
        try:
            return fn(*args)
        except Exception as exc:
            reason = reason_of_hresult(hresult_of(exc), missing)
            logger.debug("a UI Automation call failed (%s)", type(exc).__name__)
            if reason == STALLED:
                raise Stalled from None
            raise Miss(reason) from None

    # -- the window ------------------------------------------------------------------------------

    def _window_of(
        self, hit: Any, handle: int, pid: int, guess: Callable[[], int | None], missing: str
    ) -> int | None:
        """The top-level window of the hit: its own handle's; else the guessed window's (at the
        point, or the foreground) when that window is the hit's process's; else the handle of its
        nearest ancestor that has one (read with the small cache request: no names)."""
        if handle:
            return self._system.root_window(handle)
        guessed = guess()
        if guessed and self._system.describe_window(guessed).pid == pid:
            return guessed
        current = hit
        for _ in range(MAX_PATH + ACTIONABLE_LEVELS):
            parent = self._call(self._walker.GetParentElementBuildCache, missing, current, self._probe)
            if not parent:
                return None
            above = _handle(_get(parent, "CachedNativeWindowHandle"))
            if self._desktop and above == self._desktop:
                return None
            if above:
                return self._system.root_window(above)
            current = parent
        return None

    def _refused(self, window: int | None) -> str | None:
        """:data:`~agent.elements.DENIED` when ``allow`` refuses ``window`` or the window that owns
        it; :data:`~agent.elements.FAILED` when there is an ``allow`` to ask and no window (fail
        closed, as on X11); None when the lookup may go on."""
        if self._allow is None:
            return None
        if window is None:
            return FAILED
        owner = self._system.root_owner(window)
        windows = [window] if owner in (None, window) else [window, owner]
        if all(self._allow(self._system.describe_window(w)) for w in windows if w is not None):
            return None
        return DENIED

    # -- reading ---------------------------------------------------------------------------------

    def _read(self, element: Any) -> _Node:
        """The element's cached properties (local reads: a property that cannot be read is missing)."""

        def prop(pid: int) -> Any:
            try:
                return element.GetCachedPropertyValue(pid)
            except Exception:  # not in the cache, or not supported
                return None

        return _Node(
            element=element,
            role=role_of(_get(element, "CachedControlType")),
            name=cut(_get(element, "CachedName"), MAX_NAME),
            pid=_positive(_get(element, "CachedProcessId")) or 0,
            handle=_handle(_get(element, "CachedNativeWindowHandle")),
            states=states_of(
                focused=_get(element, "CachedHasKeyboardFocus"),
                enabled=_get(element, "CachedIsEnabled"),
                focusable=_get(element, "CachedIsKeyboardFocusable"),
                password=_get(element, "CachedIsPassword"),
                required=_get(element, "CachedIsRequiredForForm"),
                read_only=prop(UIA_VALUE_IS_READ_ONLY),
                toggle=prop(UIA_TOGGLE_STATE),
                selected=prop(UIA_SELECTION_ITEM_IS_SELECTED),
                expand=prop(UIA_EXPAND_COLLAPSE_STATE),
            ),
            bounds=rect_bounds(_get(element, "CachedBoundingRectangle")),
            automation_id=cut(_get(element, "CachedAutomationId"), MAX_AUTOMATION_ID),
        )

    def _ancestors(self, element: Any, pid: int, missing: str) -> list[_Node]:
        """The ancestors of ``element``, nearest first, up to its top-level window; a call that
        stalls, fails or comes late ends the list where it got to."""
        found: list[_Node] = []
        current = element
        try:
            for _ in range(MAX_PATH + ACTIONABLE_LEVELS):
                parent = self._call(self._walker.GetParentElementBuildCache, missing, current, self._cache)
                if not parent:
                    break
                node = self._read(parent)
                if self._desktop and node.handle == self._desktop:
                    break  # the desktop: ``current`` was the top-level window
                found.append(node)
                if node.role == WINDOW_ROLE:
                    break
                current = parent
        except Stalled:
            self._budget.stalled(pid)
        except (OutOfTime, Miss):
            pass
        return found

    def _process_name(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            try:
                name = self._system.process_name(pid) or ""
            except Exception as exc:  # the type only
                logger.debug("the process name could not be read (%s)", type(exc).__name__)
                name = ""
            if len(self._names) >= MAX_PROCESS_NAMES:
                self._names.clear()
            self._names[pid] = name
        return name

    def _describe(self, node: _Node, above: list[_Node], hit_pid: int) -> Element:
        pid = node.pid or hit_pid
        return Element(
            role=node.role,
            name=node.name,
            states=node.states,
            bounds=node.bounds,
            app=cut(self._process_name(pid), MAX_APP_NAME),
            pid=pid,
            path=tuple((n.role, cut(n.name, MAX_PATH_NAME)) for n in reversed(above[:MAX_PATH])),
            automation_id=node.automation_id,
        )


#: A POINT's coordinates are LONGs.
_LONG_MIN, _LONG_MAX = -(2**31), 2**31 - 1


def _get(element: Any, name: str) -> Any:
    """A cached property (a local read); None when it cannot be read (not cached, not supported)."""
    try:
        return getattr(element, name)
    except Exception:
        return None


def _positive(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


def _wintypes_point() -> Callable[[int, int], Any]:
    from ctypes import wintypes

    point: Callable[[int, int], Any] = wintypes.POINT
    return point


def finder_factory(system: WindowsInfo) -> Callable[[float, float, WindowCheck | None], UiaElementFinder]:
    """What :class:`agent.capture.element_lookup.ElementLookup` calls on its worker thread to make
    its finder: that thread joins the COM apartment and makes the UI Automation client, with
    its connection and transaction timeouts at ``call_timeout_s``."""

    def make(call_timeout_s: float, budget_s: float, allow: WindowCheck | None) -> UiaElementFinder:
        com_initialize()
        module, automation = create_automation(max(1, round(call_timeout_s * 1000)))
        return UiaElementFinder(automation, module, system, budget_s=budget_s, allow=allow)

    return make


__all__ = ["UiaElementFinder", "WindowsInfo", "finder_factory"]
