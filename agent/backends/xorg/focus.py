"""The X11 focus watcher: a :class:`WindowFocus` whenever the active window or its title changes.

Focus changes arrive as ``PropertyNotify`` on the root window; title changes
as ``PropertyNotify`` on the active window.  Without a window manager nothing
tells us, so the watcher polls every :data:`NO_WM_POLL_INTERVAL` seconds.
"""

from __future__ import annotations

import Xlib.display
import Xlib.error
from Xlib import X

from agent.backends.base import FocusEmitter
from agent.backends.xorg.connection import ignore_x_error
from agent.backends.xorg.watcher import WatcherThread
from agent.backends.xorg.windows import Atoms, read_focus
from agent.capture import EventSink

#: Seconds between focus polls when no window manager publishes ``_NET_ACTIVE_WINDOW``.
NO_WM_POLL_INTERVAL = 0.25


class FocusWatcher(WatcherThread):
    """Emits :class:`WindowFocus` when the active window or its title changes.

    Uses its own X connection, owned by the ``optin-focus`` thread once started.
    """

    THREAD_NAME = "optin-focus"
    WHAT = "focus watcher"

    def __init__(self, display_name: str, sink: EventSink) -> None:
        self._emitter = FocusEmitter(sink)
        super().__init__(display_name, self._emitter.stopping)
        self._atoms: Atoms | None = None
        self._watched: int | None = None
        self._ewmh = False

    # Hooks protocol: start() connects, emits the current window and watches for changes;
    # stop() returns promptly, after which no event is delivered (see WatcherThread).

    def _reset(self) -> None:
        self._watched, self._ewmh = None, False
        self._emitter.reset()

    def _signal_stop(self) -> None:
        self._emitter.stop()

    def _prepare(self, display: Xlib.display.Display) -> None:
        self._atoms = Atoms(display)
        display.screen().root.change_attributes(event_mask=X.PropertyChangeMask)
        self._refresh()  # the initial event, delivered before start() returns

    # internals (run on the watcher thread after start)

    def _loop(self, display: Xlib.display.Display) -> None:
        fd = display.fileno()
        while not self._stopping.is_set():
            if self._drain(display):
                self._refresh()
            if display.pending_events():
                continue  # the refresh's round trips queued events: select() cannot see them
            if not self._wait(fd, NO_WM_POLL_INTERVAL) and not self._ewmh:
                self._refresh()  # no window manager: nothing tells us, so look

    def _drain(self, display: Xlib.display.Display) -> bool:
        """Handle queued events; True if the focus or the focused window's title may have changed."""
        atoms = self._atoms
        if atoms is None:
            return False
        root_id = display.screen().root.id
        changed = False
        while display.pending_events():
            event = display.next_event()
            if event.type != X.PropertyNotify:
                continue
            if event.window.id == root_id and event.atom == atoms.net_active_window:
                self._ewmh = True
                changed = True
            elif event.window.id == self._watched and event.atom in atoms.window_props:
                changed = True
        return changed

    def _refresh(self) -> None:
        display, atoms = self._display, self._atoms
        if display is None or atoms is None:
            return
        try:
            wid, focus, ewmh = read_focus(display, atoms)
        except Xlib.error.XError:
            return  # the window vanished mid-query; the change that follows brings a new event
        self._ewmh = self._ewmh or ewmh
        if wid != self._watched:
            self._watch(display, wid)
        self._emitter.emit(focus)

    def _watch(self, display: Xlib.display.Display, wid: int | None) -> None:
        """Move the PropertyChangeMask from the previously watched window to ``wid``."""
        if self._watched is not None:
            old = display.create_resource_object("window", self._watched)
            old.change_attributes(event_mask=X.NoEventMask, onerror=ignore_x_error)
        if wid is not None:
            new = display.create_resource_object("window", wid)
            new.change_attributes(event_mask=X.PropertyChangeMask, onerror=ignore_x_error)
        self._watched = wid
        display.flush()


__all__ = ["NO_WM_POLL_INTERVAL", "FocusWatcher"]
