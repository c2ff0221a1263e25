"""Reading windows: the focused client window and its title, class, pid and geometry.

The focused window comes from ``_NET_ACTIVE_WINDOW`` on the root window; with
no window manager that property is missing and ``GetInputFocus`` is used.
Titles are read with ``AnyPropertyType`` and decoded as UTF-8: xdotool and
others write UTF-8 into properties typed ``STRING``, and xterm sets only
``WM_NAME``.  (A ``STRING`` that is not valid UTF-8 is Latin-1, as ICCCM says.)

Window titles are captured content: never logged, never in an exception message.
"""

from __future__ import annotations

from typing import Any

import Xlib.display
from Xlib import X, Xatom

from agent.events import WindowFocus, now_ns


class Atoms:
    """Atoms this module reads, interned once per connection."""

    def __init__(self, display: Xlib.display.Display) -> None:
        self.net_active_window = display.intern_atom("_NET_ACTIVE_WINDOW")
        self.net_wm_name = display.intern_atom("_NET_WM_NAME")
        self.net_wm_pid = display.intern_atom("_NET_WM_PID")
        self.net_client_list = display.intern_atom("_NET_CLIENT_LIST")
        self.net_client_list_stacking = display.intern_atom("_NET_CLIENT_LIST_STACKING")
        self.wm_name = Xatom.WM_NAME
        self.wm_class = Xatom.WM_CLASS
        #: Properties of the active window whose change means a new WindowFocus.
        self.window_props = frozenset({self.net_wm_name, self.wm_name, self.wm_class})


def _text_property(window: Any, atom: int) -> str | None:
    prop = window.get_full_property(atom, X.AnyPropertyType)
    if prop is None or prop.format != 8:
        return None
    raw = bytes(prop.value)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # ICCCM STRING is Latin-1; anything else undecodable gets replacement characters.
        text = raw.decode("latin-1") if prop.property_type == Xatom.STRING else raw.decode("utf-8", "replace")
    return text.rstrip("\0")


def _cardinal_property(window: Any, atom: int) -> int | None:
    prop = window.get_full_property(atom, X.AnyPropertyType)
    if prop is None or prop.format != 32 or len(prop.value) == 0:
        return None
    return int(prop.value[0])


def _top_level(display: Xlib.display.Display, root: Any, window: Any, atoms: Atoms) -> int | None:
    """The client window that contains ``window`` (the first ancestor with WM_CLASS)."""
    for _ in range(32):
        if window.id == root.id:
            return None
        if window.get_full_property(atoms.wm_class, X.AnyPropertyType) is not None:
            return int(window.id)
        parent = window.query_tree().parent
        if parent is None or parent == X.NONE:
            return None
        window = parent
    return None


def _active_window_id(display: Xlib.display.Display, root: Any, atoms: Atoms) -> tuple[int | None, bool]:
    """The focused client window, and whether a window manager told us (``_NET_ACTIVE_WINDOW``).

    :raises Xlib.error.XError: a window vanished while being looked at.
    """
    prop = root.get_full_property(atoms.net_active_window, X.AnyPropertyType)
    if prop is not None and prop.format == 32:
        wid = int(prop.value[0]) if len(prop.value) else 0
        return (wid or None), True
    focus = display.get_input_focus().focus
    if isinstance(focus, int):  # X.NONE or X.PointerRoot
        return None, False
    return _top_level(display, root, focus, atoms), False


def describe(display: Xlib.display.Display, root: Any, wid: int, atoms: Atoms, t_ns: int) -> WindowFocus:
    """Title, class, pid and root-relative geometry of window ``wid``.

    :raises Xlib.error.XError: the window vanished while being looked at.
    """
    window = display.create_resource_object("window", wid)
    title = _text_property(window, atoms.net_wm_name)
    if title is None:
        title = _text_property(window, atoms.wm_name)
    wm_class = _text_property(window, atoms.wm_class)
    parts = wm_class.split("\0") if wm_class is not None else []
    app_class = parts[1] if len(parts) >= 2 and parts[1] else None
    pid = _cardinal_property(window, atoms.net_wm_pid)
    geometry = window.get_geometry()
    origin = root.translate_coords(window, 0, 0)
    return WindowFocus(
        t_ns=t_ns,
        title=title,
        app_class=app_class,
        pid=pid,
        x=int(origin.x),
        y=int(origin.y),
        width=int(geometry.width),
        height=int(geometry.height),
    )


def read_focus(display: Xlib.display.Display, atoms: Atoms) -> tuple[int | None, WindowFocus | None, bool]:
    """``(window id, focus, ewmh)``; id and focus are None when nothing has focus.

    :raises Xlib.error.XError: a window vanished while being looked at.
    """
    t_ns = now_ns()
    root = display.screen().root
    wid, ewmh = _active_window_id(display, root, atoms)
    if wid is None:
        return None, None, ewmh
    return wid, describe(display, root, wid, atoms, t_ns), ewmh


__all__ = ["Atoms", "describe", "read_focus"]
