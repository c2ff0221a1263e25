"""The X11 half of an element lookup: the topmost client window at a point, the active window,
their ``_NET_WM_PID`` and geometry (python-xlib, one connection, round trips only).

``XTranslateCoordinates`` from the root gives the child that contains the point in stacking
order (what is on top), one round trip per level: the first window with ``WM_STATE`` on the way
down is the client (ICCCM); an override-redirect menu or popup has none, so the first window
with ``_NET_WM_PID`` stands in.  :meth:`XWindows.describe` reads a window's title and class only
so the caller can judge it against the deny rules before any lookup; they are never kept.
"""

from __future__ import annotations

import Xlib.display
import Xlib.error
from Xlib import X

from agent.backends.xorg.a11y_model import MAX_X_DEPTH
from agent.backends.xorg.connection import close_quietly, ignore_x_error, open_display
from agent.backends.xorg.windows import Atoms, describe
from agent.events import WindowFocus, now_ns


class XWindows:
    """Window lookups on display ``name``; one thread only.

    :raises EnvironmentProblem: the display cannot be reached.
    """

    def __init__(self, name: str) -> None:
        self._x: Xlib.display.Display = open_display(name)
        try:
            self._x.set_error_handler(ignore_x_error)
            self._root = self._x.screen().root
            self._wm_state = self._x.intern_atom("WM_STATE")
            self._net_wm_pid = self._x.intern_atom("_NET_WM_PID")
            self._net_active = self._x.intern_atom("_NET_ACTIVE_WINDOW")
            self._atoms = Atoms(self._x)
        except Exception:
            close_quietly(self._x)
            raise

    def close(self) -> None:
        close_quietly(self._x)

    def client_at(self, x: int, y: int) -> int | None:
        """The topmost client window at the point: the first window with WM_STATE on the way down
        from the root (else the first with ``_NET_WM_PID``: override-redirect menus and popups)."""
        window = self._root
        with_pid = None
        for _ in range(MAX_X_DEPTH):
            child = window.translate_coords(self._root, x, y).child
            if not child:
                break
            window = child if not isinstance(child, int) else self._x.create_resource_object("window", child)
            if window.get_full_property(self._wm_state, X.AnyPropertyType) is not None:
                return int(window.id)
            if with_pid is None and self._cardinal(window.id, self._net_wm_pid) is not None:
                with_pid = int(window.id)
        return with_pid

    def active_window(self) -> int | None:
        wid = self._cardinal(self._root.id, self._net_active)
        if wid:
            return wid
        focus = self._x.get_input_focus().focus
        return None if isinstance(focus, int) else int(focus.id)

    def pid(self, wid: int) -> int | None:
        pid = self._cardinal(wid, self._net_wm_pid)
        return pid if pid else None

    def _cardinal(self, wid: int, atom: int) -> int | None:
        window = self._x.create_resource_object("window", wid)
        try:
            prop = window.get_full_property(atom, X.AnyPropertyType)
        except Xlib.error.XError:
            return None
        if prop is None or prop.format != 32 or len(prop.value) == 0:
            return None
        return int(prop.value[0])

    def describe(self, wid: int) -> WindowFocus | None:
        """Title, class, pid and geometry of ``wid`` (for the deny rules); None when it vanished."""
        try:
            return describe(self._x, self._root, wid, self._atoms, now_ns())
        except Xlib.error.XError:
            return None

    def geometry(self, wid: int) -> tuple[int, int, int, int] | None:
        window = self._x.create_resource_object("window", wid)
        try:
            geometry = window.get_geometry()
            origin = self._root.translate_coords(window, 0, 0)
        except Xlib.error.XError:
            return None
        return int(origin.x), int(origin.y), int(geometry.width), int(geometry.height)


__all__ = ["XWindows"]
