"""The X11 (Xorg) backend: python-xlib for windows, pynput and mss for capture.

This package module is the facade (:class:`XorgBackend`, :func:`make_backend`);
the parts live in their own modules:

* :mod:`~agent.backends.xorg.connection`: connections that cannot hang (a
  socket preflight and a worker thread with a timeout: python-xlib has neither).
* :mod:`~agent.backends.xorg.session`: Wayland, X11 or none; :func:`probe` (one
  short connection: RECORD, XTEST, a tray host).
* :mod:`~agent.backends.xorg.windows`: the focused window and its title, class,
  pid and geometry.
* :mod:`~agent.backends.xorg.watcher`: the thread skeleton (own connection,
  self-pipe, ``select``, stop-and-join) that both watchers share.
* :mod:`~agent.backends.xorg.focus`: the focus watcher.
* :mod:`~agent.backends.xorg.own_ui`: where optin's own windows are.
* :mod:`~agent.backends.xorg.damage`: where the screen changed (X DAMAGE on the root), so the
  screen watcher grabs only when and where something changed.
* :mod:`~agent.backends.xorg.selection`: the clipboard (ICCCM, INCR included).
* :mod:`~agent.backends.xorg.a11y` (with ``a11y_model``, ``a11y_xwindows``, ``a11y_lookup``,
  ``a11y_bus``): the accessible element at a point or with the focus, through AT-SPI2, in a
  worker with a time budget; accessibility switched on while needed and restored.

Pitfalls handled here: pynput's X listener needs the RECORD extension (without
it the listener thread dies and ``Listener.wait()`` hangs forever), so
:func:`probe` checks the extension with python-xlib first, and this package
never imports pynput at import time (importing pynput with no DISPLAY raises).
A stopped pynput listener is unblocked by :func:`unblock_record_listener`.

Window titles and clipboard text are captured content: this package never logs
them or puts them in an exception message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import Xlib.display
import Xlib.error
from Xlib import X
from Xlib.ext import screensaver

from agent.backends.base import CLIPBOARD_TIMEOUT_S, Backend
from agent.backends.xorg.connection import (
    CONNECT_TIMEOUT,
    close_quietly,
    connect_message,
    ignore_x_error,
    open_display,
)
from agent.backends.xorg.focus import FocusWatcher
from agent.backends.xorg.own_ui import OwnUiWatcher
from agent.backends.xorg.selection import MAX_PASTE_BYTES, SELECTIONS, decode_selection, read_selection
from agent.backends.xorg.session import (
    NO_DISPLAY_MESSAGE,
    WAYLAND_MESSAGE,
    XProbe,
    has_tray_owner,
    no_record_message,
    probe,
    session_type,
)
from agent.backends.xorg.windows import Atoms, describe, read_focus
from agent.capture import EventSink, Hooks, OwnUi, ScreenChanges
from agent.capture.element_lookup import ElementLookup, LookupResult, WindowCheck
from agent.capture.element_process import ProcessFinder
from agent.elements import result_of
from agent.errors import EnvironmentProblem
from agent.events import WindowFocus, now_ns

logger = logging.getLogger(__name__)


def unblock_record_listener(listener: Any) -> None:
    """End a stopped pynput X listener now instead of at the next input event.

    pynput 1.8 sends RecordDisableContext on the very connection its thread is
    blocked reading, so the thread only ends when the next key or pointer event
    arrives (measured: never within 4 s on an idle display).  The RECORD spec
    expects the disable on another connection; pynput keeps one
    (``_display_stop``), so send it there.  Measured: the thread ends in ~1.3 ms.
    Best effort: attribute names are pynput internals; without them, nothing.
    """
    display = getattr(listener, "_display_stop", None)
    context = getattr(listener, "_context", None)
    if display is None or context is None:
        return
    with contextlib.suppress(Exception):  # the listener may already have closed it
        display.record_disable_context(context)
        display.flush()


class XorgBackend(Backend):
    """X11 through python-xlib, with pynput hooks and an mss grabber.

    :param display: display name; None means ``$DISPLAY`` at the time of use.
    """

    NAME = "xorg"
    HAS_ACTIVE_WINDOW = True
    HAS_FOCUS_EVENTS = True
    HAS_WINDOW_TITLES = True
    HAS_TRAY_DETECTION = True
    HAS_SECURE_INPUT_DETECTION = True  # AT-SPI: a focused "password text" (secure_input_active)
    #: AT-SPI focus changes arrive 5-42 ms after the click or Tab that causes them (measured).
    SECURE_INPUT_SETTLE_S = 0.05
    HAS_OWN_UI_DETECTION = True
    ELEMENT_API = "atspi"

    def __init__(self, display: str | None = None) -> None:
        self._display_name = display
        self._lock = threading.Lock()
        self._conn: Xlib.display.Display | None = None
        self._atoms: Atoms | None = None
        self._focus_finder: ProcessFinder | None = None
        self._focus_unavailable = False

    @property
    def display_name(self) -> str:
        return self._display_name if self._display_name is not None else os.environ.get("DISPLAY", "")

    def check_environment(self) -> None:
        if session_type() == "wayland":
            raise EnvironmentProblem(WAYLAND_MESSAGE)
        name = self.display_name
        if not name:
            raise EnvironmentProblem(NO_DISPLAY_MESSAGE)
        found = probe(name)
        if found.error is not None:
            raise EnvironmentProblem(connect_message(name, found.error))
        if not found.has_record:
            raise EnvironmentProblem(no_record_message(name))

    def input_hooks(self, sink: EventSink, *, pointer: bool = True, keyboard: bool = True) -> Hooks:
        from agent.capture.input import PynputHooks  # imports pynput, which needs a display

        hooks: Hooks = PynputHooks(
            sink, pointer=pointer, keyboard=keyboard, after_stop=unblock_record_listener
        )
        return hooks

    def active_window(self) -> WindowFocus | None:
        """The focused window now; None if none has focus or it vanished mid-query.

        :raises EnvironmentProblem: the X display cannot be reached.
        """
        with self._lock:
            display, atoms = self._connection()
            try:
                _, focus, _ = read_focus(display, atoms)
            except Xlib.error.XError:
                return None
            except Xlib.error.ConnectionClosedError as exc:
                self._drop_connection()
                msg = f"lost the connection to the X display DISPLAY={self.display_name}. Fix: restart optin."
                raise EnvironmentProblem(msg) from exc
            return focus

    def focus_watcher(self, sink: EventSink) -> Hooks:
        return FocusWatcher(self.display_name, sink)

    def visible_windows(self) -> list[WindowFocus]:
        """Every mapped client window (``_NET_CLIENT_LIST_STACKING``, else ``_NET_CLIENT_LIST``)
        with title, class, pid and root geometry; [] without a window manager or on an X error."""
        with self._lock:
            try:
                display, atoms = self._connection()
                root = display.screen().root
                listed = root.get_full_property(atoms.net_client_list_stacking, X.AnyPropertyType)
                if listed is None:
                    listed = root.get_full_property(atoms.net_client_list, X.AnyPropertyType)
                wids = [int(w) for w in listed.value] if listed is not None and listed.format == 32 else []
                windows = []
                t_ns = now_ns()
                for wid in wids:
                    window = display.create_resource_object("window", wid)
                    try:
                        if window.get_attributes().map_state != X.IsViewable:
                            continue
                        windows.append(describe(display, root, wid, atoms, t_ns))
                    except Xlib.error.XError:
                        continue  # closed while being looked at
                return windows
            except (EnvironmentProblem, Xlib.error.XError):
                return []
            except Xlib.error.ConnectionClosedError:
                self._drop_connection()
                return []

    def screen_locked(self) -> bool | None:
        """True while the X screen saver is on (lockers such as xscreensaver, light-locker and
        xsecurelock turn it on); None without the MIT-SCREEN-SAVER extension."""
        info = self._screensaver_info()
        return None if info is None else bool(info.state == screensaver.StateOn)

    def idle_seconds(self) -> float | None:
        """The X server's time since the last input (MIT-SCREEN-SAVER), in seconds."""
        info = self._screensaver_info()
        return None if info is None else int(info.idle) / 1000.0

    def _screensaver_info(self) -> Any:
        with self._lock:
            try:
                display, _ = self._connection()
                if not display.has_extension(screensaver.extname):
                    return None
                return display.screen().root.screensaver_query_info()
            except (EnvironmentProblem, Xlib.error.XError):
                return None
            except Xlib.error.ConnectionClosedError:
                self._drop_connection()
                return None

    def read_clipboard(self, source: str = "clipboard") -> str | None:
        """The text of the ``CLIPBOARD`` (``source="clipboard"``) or ``PRIMARY`` (``"primary"``)
        selection; see :func:`read_selection`.  Never raises; the whole read, connection
        included, takes at most about :data:`~agent.backends.base.CLIPBOARD_TIMEOUT_S`."""
        selection = SELECTIONS.get(source)
        name = self.display_name
        if selection is None or not name:
            return None
        try:
            return read_selection(name, selection, CLIPBOARD_TIMEOUT_S)
        except Exception as exc:  # logged by type only: never the text
            logger.debug("reading the %s selection failed (%s)", selection, type(exc).__name__)
            return None

    def own_ui(self, pids: Iterable[int]) -> OwnUi:
        return OwnUiWatcher(self.display_name, pids)

    def secure_input_active(self) -> bool | None:
        """Whether a password field (AT-SPI role "password text") has the keyboard focus, asked of
        the lookup process.  False where accessibility is missing or the application is not on the
        bus (xterm): the text rules then apply (docs/limitations.md); None when the lookup failed
        or came late (cannot tell).  Only the focused control's role and states are used; nothing
        of it is stored.  Called from the secure-input watch's thread only."""
        finder = self._secure_finder()
        if finder is None:
            return False
        found = finder.focused_element()
        if found.element is not None:
            return found.element.is_password
        return False if result_of(found) in ("not_accessible", "no_element") else None

    def _secure_finder(self) -> ProcessFinder | None:
        if self._focus_finder is None and not self._focus_unavailable:
            from agent.backends.xorg.a11y import finder_factory
            from agent.capture.element_lookup import BUDGET_S

            try:
                self._focus_finder = finder_factory(self.display_name)(BUDGET_S / 2, BUDGET_S, None)
            except OSError:  # no AT-SPI here: asked once, not again
                self._focus_unavailable = True
        return self._focus_finder

    def element_lookup(
        self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
    ) -> ElementLookup | None:
        from agent.backends.xorg import a11y_bus
        from agent.backends.xorg.a11y import finder_factory

        return ElementLookup(on_result, finder_factory(self.display_name), switch=a11y_bus, allow=allow)

    def screen_changes(self) -> ScreenChanges | None:
        """X11 DAMAGE on the root window (:mod:`~agent.backends.xorg.damage`): the screen watcher
        grabs only when and where the screen changed; it polls if the server cannot tell."""
        from agent.backends.xorg.damage import screen_changes

        return screen_changes(self.display_name)

    def tray_host_available(self) -> bool | None:
        with self._lock:
            try:
                display, _ = self._connection()
                return has_tray_owner(display)
            except EnvironmentProblem:
                return None
            except Xlib.error.ConnectionClosedError:
                self._drop_connection()
                return None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()
        finder, self._focus_finder = self._focus_finder, None
        if finder is not None:
            finder.close()

    def _connection(self) -> tuple[Xlib.display.Display, Atoms]:
        if self._conn is None or self._atoms is None:
            name = self.display_name
            if not name:
                raise EnvironmentProblem(NO_DISPLAY_MESSAGE)
            conn = open_display(name)
            try:
                conn.set_error_handler(ignore_x_error)
                self._atoms = Atoms(conn)
            except Exception:
                close_quietly(conn)
                raise
            self._conn = conn
        return self._conn, self._atoms

    def _drop_connection(self) -> None:
        if self._conn is not None:
            close_quietly(self._conn)
        self._conn = None
        self._atoms = None


def make_backend() -> XorgBackend:
    """Entry point used by :func:`agent.backends.select_backend`."""
    return XorgBackend()


__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_PASTE_BYTES",
    "NO_DISPLAY_MESSAGE",
    "SELECTIONS",
    "WAYLAND_MESSAGE",
    "XProbe",
    "XorgBackend",
    "connect_message",
    "decode_selection",
    "make_backend",
    "no_record_message",
    "probe",
    "read_selection",
    "session_type",
]
