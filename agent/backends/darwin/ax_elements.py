"""The UI element under a point, or with the keyboard focus, on macOS through the AX API.

:meth:`AxElementFinder.element_at` asks ``AXUIElementCopyElementAtPosition`` of the system-wide
element (``AXUIElementCreateSystemWide``): the window server hit-tests the point in z-order, so
the application on top answers.  :meth:`AxElementFinder.focused_element` reads
``kAXFocusedUIElementAttribute`` of the system-wide element.  Each element is then read in one
round trip (``AXUIElementCopyMultipleAttributeValues`` of
:data:`~agent.backends.darwin.ax_model.ATTRIBUTES`); the ancestors come from ``AXParent``, one
round trip each, up to the ``AXWindow`` (the ``AXApplication`` above it left out), at most
:data:`~agent.elements.MAX_PATH` of them.  A passive hit (static text, an image, a group inside
a button or a link) gives way to that actionable ancestor, as on X11.

The window first: before anything of the application is read (the hit and its process id
come from the hit test and ``AXUIElementGetPid``, which sends nothing to the application),
``allow``, when the recorder gave one, is asked about the application's windows the lookup is
judged by: the window at the point (any layer: a menu, a sheet) and its front normal window,
from the window server's list, each as the focus watcher reports a window (title, bundle
identifier, pid, bounds; ``windows``).  A window refused is :data:`~agent.elements.DENIED`;
with ``allow`` and no way to list windows the lookup fails (fail closed, as on X11).

What is read: the role is the AX role without ``AX``, lower case (``button``, ``textfield``);
the name ``AXTitle``, else ``AXDescription``; the states map ``AXEnabled``, ``AXFocused``,
``AXSelected``, ``AXExpanded``, the ``AXSecureTextField`` subrole (password), a text area
(multi-line), a text role's settable value (editable, else read-only) and a check box's value
(checked, indeterminate) onto the vocabulary
(:func:`~agent.backends.darwin.ax_model.states_of`); the bounds are ``AXPosition`` and ``AXSize``,
points, times ``pixels_per_point`` (the recording's pixels per point,
:data:`~agent.backends.darwin.constants.RECORDING_PIXELS_PER_POINT`), and a lookup's point is
divided by it; the automation id is ``AXIdentifier``; the process is ``AXUIElementGetPid``, its
``app`` the executable's name (``Safari``); the window id is the window server's number of the
first window judged (None without ``allow``: AX itself gives no window).  No value is read but
a check box's state.

Bounds: every call is guarded.  ``AXUIElementSetMessagingTimeout`` on the system-wide element
sets the call timeout for every AX call of this process, so an application that does not
answer fails the call with ``kAXErrorCannotComplete`` (:data:`~agent.elements.STALLED`) and is
skipped for :data:`~agent.elements.STALL_SKIP_S`; a lookup makes at most
:data:`~agent.backends.darwin.ax_model.MAX_CALLS` calls and none after its budget
(:data:`~agent.elements.OUT_OF_TIME`); strings are cut as they are copied.  **Without the
Accessibility permission** (``AXIsProcessTrusted`` false, which ``check_environment``
refuses, or the permission taken away during a recording) every call fails with
``kAXErrorAPIDisabled``: each lookup is :data:`~agent.elements.NOT_ON_BUS` (exported as
``not_accessible``), as is an application without accessibility (``kAXErrorNotImplemented``);
every other error is a miss (:func:`~agent.backends.darwin.ax_model.reason_of_ax_error`),
never an exception.  optin's own windows and menu bar item are never described (the hit's
process is this one: :data:`~agent.elements.DENIED`, with or without ``allow``).  macOS has
no accessibility switch to turn on.

Names, identifiers and titles are captured content: this module never logs them (error types
and codes only) and never puts them in an exception message.  One finder belongs to one thread,
the :class:`agent.capture.element_lookup.ElementLookup` worker (:func:`finder_factory`).
Written against the documented API; runs on macOS only in the GitHub Actions smoke test.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.backends.darwin.ax_model import (
    ACTIONABLE_LEVELS,
    ACTIONABLE_ROLES,
    APPLICATION_ROLE,
    ATTRIBUTES,
    FOCUSED_UI_ELEMENT,
    IDENTIFIER,
    MAX_CALLS,
    MAX_PROCESS_NAMES,
    PARENT,
    PASSIVE_ROLES,
    POSITION,
    ROLE,
    SIZE,
    VALUE,
    WINDOW_ROLE,
    bounds_in_pixels,
    is_text,
    is_toggle,
    name_of,
    reason_of_ax_error,
    role_of,
    states_of,
    to_points,
)
from agent.backends.darwin.constants import RECORDING_PIXELS_PER_POINT
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


class AxCalls(Protocol):
    """The AX calls a finder makes (:class:`~agent.backends.darwin.ax_native.AxNative`): each
    answers ``(AXError, value)`` and raises only for a broken library, never for an error code.
    Elements are opaque values, valid until :meth:`end_lookup`."""

    def system_wide(self) -> Any: ...

    def set_timeout(self, element: Any, seconds: float) -> int: ...

    def element_at(self, element: Any, x: float, y: float) -> tuple[int, Any]: ...

    def attribute(self, element: Any, name: str) -> tuple[int, Any]: ...

    def attributes(self, element: Any, names: tuple[str, ...]) -> tuple[int, dict[str, Any]]: ...

    def settable(self, element: Any, name: str) -> tuple[int, bool]: ...

    def pid(self, element: Any) -> tuple[int, int]: ...

    def process_name(self, pid: int) -> str | None: ...

    def end_lookup(self) -> None: ...

    def close(self) -> None: ...


#: The windows of a process a lookup at a point (points; None: the focus) is judged by, as
#: ``(window number or None, focus)``: :meth:`agent.backends.darwin.native.Cocoa.windows_of`.
WindowsOf = Callable[[int, "tuple[float, float] | None"], "list[tuple[int | None, WindowFocus]]"]


@dataclass(frozen=True)
class _Node:
    """One element and what one round trip read of it."""

    element: Any = field(repr=False)
    role: str
    attributes: Mapping[str, Any] = field(repr=False)  # names: captured content

    @property
    def parent(self) -> Any:
        value = self.attributes.get(PARENT)
        return None if value is None or isinstance(value, (str, bool, int, float, tuple)) else value


def _choose(node: _Node, ancestors: list[_Node]) -> tuple[_Node, list[_Node]]:
    """``node``, or its actionable ancestor when ``node`` is passive, and the ancestors above it."""
    if node.role in PASSIVE_ROLES:
        for i, above in enumerate(ancestors[:ACTIONABLE_LEVELS]):
            if above.attributes.get(ROLE) == WINDOW_ROLE:
                break
            if above.role in ACTIONABLE_ROLES:
                return above, ancestors[i + 1 :]
    return node, ancestors


class AxElementFinder:
    """Element lookups through the AX API; use from the thread that made it.

    :param ax: the AX calls (:class:`AxCalls`).
    :param call_timeout_s: the messaging timeout of every AX call of this process.
    :param budget_s: the default time a whole lookup may take.
    :param pixels_per_point: the recording's pixels per screen point.
    :param windows: the windows a lookup is judged by (:data:`WindowsOf`).
    :param allow: asked about those windows before anything of the application is read;
        False: the answer is :data:`~agent.elements.DENIED`.
    """

    def __init__(
        self,
        ax: AxCalls,
        *,
        call_timeout_s: float = 0.025,
        budget_s: float = 0.05,
        pixels_per_point: float = RECORDING_PIXELS_PER_POINT,
        windows: WindowsOf | None = None,
        allow: WindowCheck | None = None,
    ) -> None:
        if not pixels_per_point > 0:
            msg = f"pixels_per_point must be above 0, not {pixels_per_point!r}"
            raise ValueError(msg)
        self._ax = ax
        self._windows = windows
        self._allow = allow
        self._budget = LookupBudget(budget_s, MAX_CALLS)
        self._scale = pixels_per_point
        self._system = ax.system_wide()
        code = ax.set_timeout(self._system, call_timeout_s)
        if code != 0:
            logger.info("the AX messaging timeout could not be set (AXError %d)", code)
        self._own_pid = os.getpid()
        self._names: dict[int, str] = {}
        self._pid: int | None = None
        self._window: int | None = None

    def close(self) -> None:
        self._ax.close()

    # -- the two lookups -------------------------------------------------------------------------

    @property
    def budget_s(self) -> float:
        """The default time a whole lookup may take."""
        return self._budget.budget_s

    def element_at(self, x: int, y: int, budget_s: float | None = None) -> Lookup:
        """The element at point (``x``, ``y``) of the recording's coordinates.  Never raises."""
        self._budget.start(budget_s)
        px, py = to_points(x, y, self._scale)
        return self._lookup(
            lambda: self._ax.element_at(self._system, px, py), NO_ELEMENT, (px, py), actionable=True
        )

    def focused_element(self, budget_s: float | None = None) -> Lookup:
        """The element with the keyboard focus.  Never raises."""
        self._budget.start(budget_s)
        return self._lookup(
            lambda: self._ax.attribute(self._system, FOCUSED_UI_ELEMENT), NO_FOCUS, None, actionable=False
        )

    # -- AX --------------------------------------------------------------------------------------

    def _lookup(
        self,
        find: Callable[[], tuple[int, Any]],
        missing: str,
        at: tuple[float, float] | None,
        *,
        actionable: bool,
    ) -> Lookup:
        self._pid, self._window = None, None
        try:
            return self._find(find, missing, at, actionable=actionable)
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
        finally:
            try:
                self._ax.end_lookup()
            except Exception as exc:  # the type only
                logger.debug("releasing a lookup's elements failed (%s)", type(exc).__name__)

    def _find(
        self,
        find: Callable[[], tuple[int, Any]],
        missing: str,
        at: tuple[float, float] | None,
        *,
        actionable: bool,
    ) -> Lookup:
        hit = self._call(find, missing)
        if hit is None:
            return Lookup(None, missing, None, None)
        pid = self._pid = self._call(lambda: self._ax.pid(hit), NO_PID) or None
        if pid is None:
            return Lookup(None, NO_PID, None, None)
        if pid == self._own_pid or self._budget.skipped(pid):  # optin's own windows are never described
            return Lookup(None, DENIED if pid == self._own_pid else STALLED, None, pid)
        refused = self._refused(pid, at)
        if refused is not None:
            return Lookup(None, refused, self._window, pid)
        node = self._read(hit, missing)
        ancestors = self._ancestors(node, pid, missing)
        chosen, above = _choose(node, ancestors) if actionable else (node, ancestors)
        return Lookup(self._describe(chosen, above, pid, missing), "", self._window, pid)

    def _refused(self, pid: int, at: tuple[float, float] | None) -> str | None:
        """:data:`~agent.elements.DENIED` when ``allow`` refuses a window the lookup is judged by;
        :data:`~agent.elements.FAILED` when there is an ``allow`` to ask and no window list to
        judge by (fail closed, as on X11); None when the lookup may go on."""
        if self._allow is None:
            return None
        judged = self._windows(pid, at) if self._windows is not None else []
        if not judged:
            return FAILED
        self._window = judged[0][0]
        return None if all(self._allow(focus) for _, focus in judged) else DENIED

    def _call(self, fn: Callable[[], tuple[int, Any]], missing: str) -> Any:
        """One AX call within the lookup's deadline and call bound; its error code as
        :class:`Stalled` or :class:`Miss` (:func:`reason_of_ax_error`)."""
        self._budget.spend()
        code, value = fn()
        if code != 0:
            reason = reason_of_ax_error(code, missing)
            logger.debug("an AX call failed (AXError %d)", code)
            if reason == STALLED:
                raise Stalled
            raise Miss(reason)
        return value

    def _read(self, element: Any, missing: str) -> _Node:
        values = self._call(lambda: self._ax.attributes(element, ATTRIBUTES), missing)
        attributes: Mapping[str, Any] = values if isinstance(values, Mapping) else {}
        return _Node(element, role_of(attributes.get(ROLE)), attributes)

    def _ancestors(self, node: _Node, pid: int, missing: str) -> list[_Node]:
        """The ancestors of ``node``, nearest first, up to its ``AXWindow``; a call that stalls,
        fails or comes late ends the list where it got to."""
        found: list[_Node] = []
        current = node
        try:
            for _ in range(MAX_PATH + ACTIONABLE_LEVELS):
                parent = current.parent
                if parent is None:
                    break
                above = self._read(parent, missing)
                if above.attributes.get(ROLE) == APPLICATION_ROLE:
                    break  # the application object is left out
                found.append(above)
                if above.attributes.get(ROLE) == WINDOW_ROLE:
                    break
                current = above
        except Stalled:
            self._budget.stalled(pid)
        except (OutOfTime, Miss):
            pass
        return found

    def _optional(self, fn: Callable[[], tuple[int, Any]], missing: str) -> Any:
        """A call whose failure leaves a state out (a stall or the deadline still ends the lookup)."""
        try:
            return self._call(fn, missing)
        except Miss:
            return None

    def _process_name(self, pid: int) -> str:
        name = self._names.get(pid)
        if name is None:
            try:
                name = self._ax.process_name(pid) or ""
            except Exception as exc:  # the type only
                logger.debug("the process name could not be read (%s)", type(exc).__name__)
                name = ""
            if len(self._names) >= MAX_PROCESS_NAMES:
                self._names.clear()
            self._names[pid] = name
        return name

    def _describe(self, node: _Node, above: list[_Node], pid: int, missing: str) -> Element:
        attributes, element = node.attributes, node.element
        toggle = (
            self._optional(lambda: self._ax.attribute(element, VALUE), missing)
            if is_toggle(attributes)
            else None
        )
        settable = (
            self._optional(lambda: self._ax.settable(element, VALUE), missing)
            if is_text(attributes)
            else None
        )
        identifier = attributes.get(IDENTIFIER)
        return Element(
            role=node.role,
            name=cut(name_of(attributes), MAX_NAME),
            states=states_of(attributes, toggle, settable if isinstance(settable, bool) else None),
            bounds=bounds_in_pixels(attributes.get(POSITION), attributes.get(SIZE), self._scale),
            app=cut(self._process_name(pid), MAX_APP_NAME),
            pid=pid,
            path=tuple(
                (n.role, cut(name_of(n.attributes), MAX_PATH_NAME)) for n in reversed(above[:MAX_PATH])
            ),
            automation_id=cut(identifier, MAX_AUTOMATION_ID) if isinstance(identifier, str) else "",
        )


def finder_factory(
    windows: WindowsOf | None, pixels_per_point: float = RECORDING_PIXELS_PER_POINT
) -> Callable[[float, float, WindowCheck | None], AxElementFinder]:
    """What :class:`agent.capture.element_lookup.ElementLookup` calls on its worker thread to make
    its finder (the AX library is loaded there; :class:`OSError` off macOS)."""

    def make(call_timeout_s: float, budget_s: float, allow: WindowCheck | None) -> AxElementFinder:
        from agent.backends.darwin.ax_native import AxNative

        return AxElementFinder(
            AxNative(),
            call_timeout_s=call_timeout_s,
            budget_s=budget_s,
            pixels_per_point=pixels_per_point,
            windows=windows,
            allow=allow,
        )

    return make


__all__ = ["AxCalls", "AxElementFinder", "WindowsOf", "finder_factory"]
