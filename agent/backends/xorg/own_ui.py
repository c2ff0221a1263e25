"""Where optin's own windows are on an X11 screen, so its own clicks and keys are not recorded.

The hooks must decide at event time, in O(1) and without I/O, whether a click
landed on optin's tray icon, its menu or one of its windows.  So this watcher
keeps a small published answer up to date on its own thread and X connection:

* **rectangles** (root coordinates) of every viewable window whose owning
  process is optin (or one of its helper processes), found with the X-Resource
  extension (``XResQueryClientIds``, the client's PID) over the window tree —
  including tray icons, which the tray host has reparented into its own window;
  a managed window (one with ``WM_STATE``) counts with its window-manager frame,
  title bar included;
* **keyboard focus**: the active window (``_NET_ACTIVE_WINDOW``) is optin's, or
  one of optin's override-redirect popups (a menu, which grabs the keyboard) is
  mapped.

It rescans the whole tree when the window tree under the root changes
(``SubstructureNotify``), when the active window changes, when asked
(:meth:`OwnUiWatcher.rescan`, e.g. when the tray icon appears) and every
``FULL_RESCAN_INTERVAL`` seconds.  Every ``RESCAN_INTERVAL`` seconds in between it
only asks where the own windows it knows are now (two round trips each), because a
tray host moves its icons without telling the root; a window gone since means a
whole rescan.  An idle desktop so costs a few round trips every few seconds, not a
walk of every window.  Between a change and the rescan (milliseconds) a click can
be misjudged; the tray icon and menus never move that fast.  Without X-Resource
nothing is excluded, and :attr:`OwnUiWatcher.available` says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import Xlib.display
import Xlib.error
from Xlib import X
from Xlib.ext import res

from agent.backends.xorg.watcher import WatcherThread

#: Seconds between looks at where the known own windows are (tray icons move silently).
RESCAN_INTERVAL = 5.0
#: Seconds between whole rescans when nothing under the root changed.
FULL_RESCAN_INTERVAL = 60.0
#: Deepest level of the window tree searched (root children are level 1).
MAX_DEPTH = 7
#: Most windows looked at in one scan.
MAX_WINDOWS = 4000

Rect = tuple[int, int, int, int]  # left, top, right (exclusive), bottom (exclusive)


class OwnUiWatcher(WatcherThread):
    """Publishes optin's window rectangles and whether optin has the keyboard; see the module docstring.

    :param display_name: the X display.
    :param pids: processes whose windows are optin's own (the agent, its dialogs).
    """

    THREAD_NAME = "optin-own-ui"
    WHAT = "own-window watcher"

    def __init__(self, display_name: str, pids: Iterable[int]) -> None:
        super().__init__(display_name)
        self._pids = frozenset(pids)
        self._rects: tuple[Rect, ...] = ()
        self._focus = False
        self._known: tuple[Any, ...] = ()  # the windows _rects were measured on (watcher thread only)
        #: False when the X server has no X-Resource extension: nothing can be excluded.
        self.available = True

    # -- read by hook threads: O(1), no I/O -------------------------------------------------------

    def covers(self, x: int, y: int) -> bool:
        """Whether root point ``(x, y)`` is on one of optin's own windows."""
        # a handful of rectangles: the tray icon, a menu, a dialog
        return any(left <= x < right and top <= y < bottom for left, top, right, bottom in self._rects)

    @property
    def has_focus(self) -> bool:
        """Whether keys now go to one of optin's own windows."""
        return self._focus

    def window_rects(self) -> tuple[Rect, ...]:
        """optin's windows as last seen, ``(left, top, right, bottom)``."""
        return self._rects

    # -- lifecycle: start() connects, scans once (before returning) and keeps the answer up to date

    def rescan(self) -> None:
        """Look again soon (the tray icon was just shown, a dialog opened)."""
        self.wake()

    def add_pid(self, pid: int) -> None:
        """Windows of ``pid`` (a dialog optin started) are own windows too; look again now."""
        self._pids = self._pids | {pid}
        self.rescan()

    # -- the watcher thread -----------------------------------------------------------------------

    def _prepare(self, display: Xlib.display.Display) -> None:
        self.available = display.has_extension("X-Resource")
        root = display.screen().root
        root.change_attributes(event_mask=X.SubstructureNotifyMask | X.PropertyChangeMask)
        self._scan(display)

    def _loop(self, display: Xlib.display.Display) -> None:
        fd = display.fileno()
        last_full = time.monotonic()
        while not self._stopping.is_set():
            # events a scan's round trips queued inside python-xlib are invisible to select()
            woken = bool(display.pending_events()) or self._wait(fd, RESCAN_INTERVAL)
            while display.pending_events():
                display.next_event()  # any change under the root: look again
            if self._stopping.is_set():
                return
            if woken or time.monotonic() - last_full >= FULL_RESCAN_INTERVAL or not self._follow(display):
                self._scan(display)
                last_full = time.monotonic()

    def _finish(self) -> None:
        self._rects, self._focus, self._known = (), False, ()

    def _follow(self, display: Xlib.display.Display) -> bool:
        """Measure the known own windows again; False when one is gone (a whole rescan is due)."""
        if not self._known:
            return True
        root = display.screen().root
        try:
            rects = tuple(_rect(root, window) for window in self._known)
        except Xlib.error.XError:
            return False
        self._rects = rects
        return True

    def _scan(self, display: Xlib.display.Display) -> None:
        if not self.available or not self._pids:
            return
        try:
            known, popup = self._own_windows(display)
            rects = tuple(_rect(display.screen().root, window) for window in known)
            focus = popup or self._active_is_own(display)
        except Xlib.error.XError:
            return  # a window vanished mid-scan; the change that follows triggers another scan
        self._rects, self._focus, self._known = rects, focus, known

    def _own_windows(self, display: Xlib.display.Display) -> tuple[tuple[Any, ...], bool]:
        """The own windows (a managed one as its window-manager frame), and whether an own
        override-redirect popup is mapped."""
        root = display.screen().root
        wm_state = display.intern_atom("WM_STATE")
        found: list[Any] = []
        popup = False
        level = [(child, child) for child in root.query_tree().children]  # (window, its root child)
        seen = 0
        for _depth in range(MAX_DEPTH):
            viewable = [(w, top) for w, top in level if _viewable(w)]
            seen += len(viewable)
            if not viewable or seen > MAX_WINDOWS:
                break
            owners = self._owners(display, [w.id for w, _ in viewable])
            deeper: list[tuple[Any, Any]] = []
            for window, top in viewable:
                if owners.get(window.id) in self._pids:
                    managed = window.get_full_property(wm_state, X.AnyPropertyType) is not None
                    found.append(top if managed else window)
                    if window.id == top.id and window.get_attributes().override_redirect:
                        popup = True
                else:
                    deeper.extend((child, top) for child in window.query_tree().children)
            level = deeper
        return tuple(found), popup

    def _owners(self, display: Xlib.display.Display, wids: list[int]) -> dict[int, int]:
        """Window id → owning client's PID, in one X-Resource request.

        The reply names each client once, by its resource base; a window belongs
        to the client whose base it shares outside the server's resource-id mask.
        """
        specs = [{"client": wid, "mask": res.LocalClientPIDMask} for wid in wids]
        reply = display.res_query_client_ids(specs)
        client_bits = ~int(display.display.info.resource_id_mask)
        pids = {
            int(item.spec.client) & client_bits: int(item.value[0])
            for item in reply.ids
            if item.spec.mask == res.LocalClientPIDMask and item.value
        }
        return {wid: pids[wid & client_bits] for wid in wids if wid & client_bits in pids}

    def _active_is_own(self, display: Xlib.display.Display) -> bool:
        root = display.screen().root
        prop = root.get_full_property(display.intern_atom("_NET_ACTIVE_WINDOW"), X.AnyPropertyType)
        if prop is None or prop.format != 32 or not len(prop.value) or not prop.value[0]:
            return False
        wid = int(prop.value[0])
        return self._owners(display, [wid]).get(wid) in self._pids


def _viewable(window: Any) -> bool:
    try:
        return bool(window.get_attributes().map_state == X.IsViewable)
    except Xlib.error.XError:
        return False


def _rect(root: Any, window: Any) -> Rect:
    geometry = window.get_geometry()
    origin = root.translate_coords(window, 0, 0)
    left, top = int(origin.x), int(origin.y)
    return (left, top, left + int(geometry.width), top + int(geometry.height))


__all__ = ["FULL_RESCAN_INTERVAL", "MAX_DEPTH", "RESCAN_INTERVAL", "OwnUiWatcher"]
