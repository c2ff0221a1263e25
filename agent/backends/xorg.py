"""The X11 (Xorg) backend: python-xlib for windows, pynput and mss for capture.

Pitfalls this module handles (see docs and the platform lab notes):

* pynput's X listener needs the RECORD extension; without it the listener
  thread dies and ``Listener.wait()`` hangs forever.  :func:`probe` checks the
  extension with python-xlib first, and this module never imports pynput at
  import time (importing pynput with no DISPLAY raises).
* Connecting to a display that does not answer could block; every connection
  made to *check* a display runs in a worker thread with a timeout.
* The focused window comes from ``_NET_ACTIVE_WINDOW`` on the root window; with
  no window manager that property is missing and ``GetInputFocus`` is used.
* Titles are read with ``AnyPropertyType`` and decoded as UTF-8: xdotool and
  others write UTF-8 into properties typed ``STRING``, and xterm sets only
  ``WM_NAME``.  (A ``STRING`` that is not valid UTF-8 is Latin-1, as ICCCM says.)
* Focus changes arrive as ``PropertyNotify`` on the root window; title changes
  as ``PropertyNotify`` on the active window.
* The clipboard is read as ICCCM says: ``ConvertSelection`` to an unmapped
  window of a connection made for that one read, then wait for the owner's
  ``SelectionNotify`` with ``select()`` and a deadline (an owner may never
  answer; python-xlib has no timeout of its own).  See :func:`read_selection`.

Window titles and clipboard text are captured content: this module never logs
them or puts them in an exception message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import Xlib.display
import Xlib.error
from Xlib import X, Xatom
from Xlib.ext import screensaver
from Xlib.support import connect as xconnect

from agent.backends.base import CLIPBOARD_TIMEOUT_S, MAX_PASTE_CHARS, Backend, FocusEmitter
from agent.capture import EventSink, Hooks, OwnUi
from agent.errors import EnvironmentProblem
from agent.events import WindowFocus, now_ns

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds to wait for an X server to accept a connection before giving up.
CONNECT_TIMEOUT = 3.0

#: Seconds between focus polls when no window manager publishes ``_NET_ACTIVE_WINDOW``.
NO_WM_POLL_INTERVAL = 0.25

#: Why a Wayland session is refused, and the fix.
WAYLAND_MESSAGE = (
    "optin cannot record a Wayland session: pynput and mss cannot see Wayland clients. "
    "Fix: log in to an X11 (Xorg) session."
)
#: What is wrong when DISPLAY is unset, and the fix.
NO_DISPLAY_MESSAGE = (
    "no X display: DISPLAY is not set. Fix: run optin inside an X11 desktop session, "
    "or try `optin demo`, which brings its own virtual display."
)


def session_type() -> str:
    """What kind of graphical session the environment describes: ``wayland``, ``x11`` or ``none``.

    Wayland wins over DISPLAY, because XWayland sets DISPLAY too but cannot see
    native Wayland clients.
    """
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return "wayland"
    if os.environ.get("DISPLAY"):
        return "x11"
    return "none"


@dataclass(frozen=True)
class XProbe:
    """What one short connection to an X server found out.

    :ivar display: the display name that was tried.
    :ivar error: why connecting failed (None when connected).
    :ivar has_record: the RECORD extension is present (None when not connected).
    :ivar tray_owner: some client owns ``_NET_SYSTEM_TRAY_S<screen>`` (None when not connected).
    """

    display: str
    error: str | None = None
    vendor: str | None = None
    release: int | None = None
    has_record: bool | None = None
    has_xtest: bool | None = None
    tray_owner: bool | None = None

    @property
    def connected(self) -> bool:
        return self.error is None


def _connect_error_text(exc: BaseException) -> str:
    if isinstance(exc, Xlib.error.DisplayConnectionError):
        reason = exc.msg.decode("utf-8", "replace") if isinstance(exc.msg, bytes) else str(exc.msg)
        return reason.strip()
    if isinstance(exc, Xlib.error.DisplayNameError):
        return "not a valid display name"
    if isinstance(exc, TimeoutError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip()


def _in_worker(fn: Callable[[], _T], timeout: float, cleanup: Callable[[_T], None] | None = None) -> _T:
    """Run ``fn()`` in a daemon thread and wait at most ``timeout`` seconds.

    Returns ``fn``'s result or raises its exception; raises :class:`TimeoutError`
    if it did not finish.  A result that arrives after the deadline is passed to
    ``cleanup`` (e.g. to close a late connection) instead of being leaked.
    """
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the caller below
            with lock:
                box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                late = True
            else:
                box["value"] = value
                late = False
        if late and cleanup is not None:
            cleanup(value)

    worker = threading.Thread(target=target, name="optin-xconnect", daemon=True)
    worker.start()
    worker.join(timeout)
    with lock:
        if "error" in box:
            raise box["error"]
        if "value" in box:
            result: _T = box["value"]
            return result
        box["abandoned"] = True
    msg = f"no answer within {timeout:g} s"
    raise TimeoutError(msg)


def _preflight(name: str, timeout: float) -> None:
    """Check that something listens where python-xlib will connect, with our own sockets.

    python-xlib leaves its socket unclosed when a connection fails (a
    ResourceWarning) and has no connect timeout; this probe has both.

    :raises Xlib.error.DisplayError: bad name, or nothing listens.
    """
    _, protocol, host, dno, _ = xconnect.get_display(name)
    addresses: list[tuple[socket.AddressFamily, Any]] = []
    if protocol == "tcp" or (protocol != "unix" and host and host != "unix"):
        addresses.append((socket.AF_INET, (host, 6000 + dno)))
    else:
        path = f"/tmp/.X11-unix/X{dno}"  # noqa: S108 - the X11 socket directory is fixed
        addresses.append((socket.AF_UNIX, path if Path(path).exists() else "\0" + path))
        if not protocol and not host:  # python-xlib falls back to TCP on localhost
            addresses.append((socket.AF_INET, ("", 6000 + dno)))
    reason = "nothing listens there"
    for family, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                continue
            return
    raise Xlib.error.DisplayConnectionError(name, reason)


def _connect(name: str, timeout: float) -> Xlib.display.Display:
    _preflight(name, timeout)
    return Xlib.display.Display(name)


def _close_quietly(display: Any) -> None:
    try:
        display.close()
    except Exception:  # closing a dead connection may fail in many ways
        logger.debug("closing an X connection failed", exc_info=True)


def _open_display(name: str, timeout: float | None = None) -> Xlib.display.Display:
    """Connect to ``name`` within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`).

    :raises EnvironmentProblem: the server refused, does not exist or did not answer.
    """
    if timeout is None:
        timeout = CONNECT_TIMEOUT
    try:
        display: Xlib.display.Display = _in_worker(
            lambda: _connect(name, timeout), timeout, cleanup=_close_quietly
        )
    except Exception as exc:
        raise EnvironmentProblem(connect_message(name, _connect_error_text(exc))) from exc
    return display


def connect_message(name: str, reason: str) -> str:
    """What is wrong when DISPLAY=``name`` cannot be reached (``reason``), and the fix."""
    return (
        f"cannot connect to the X display DISPLAY={name} ({reason}). Fix: check that the X server is "
        "running and that DISPLAY (and XAUTHORITY) are right, or try `optin demo`, which brings its "
        "own virtual display."
    )


def _tray_atom_name(display: Xlib.display.Display) -> str:
    return f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}"


def _has_tray_owner(display: Xlib.display.Display) -> bool:
    atom = display.intern_atom(_tray_atom_name(display), only_if_exists=True)
    if atom == X.NONE:
        return False
    return bool(display.get_selection_owner(atom) != X.NONE)


def probe(display: str | None = None, timeout: float | None = None) -> XProbe:
    """Connect to ``display`` (default ``$DISPLAY``), look around, disconnect.

    Never raises for an unreachable display and never takes much longer than
    ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`); failures are reported
    in :attr:`XProbe.error`.
    """
    if timeout is None:
        timeout = CONNECT_TIMEOUT
    name = display if display is not None else os.environ.get("DISPLAY", "")
    if not name:
        return XProbe(display="", error="DISPLAY is not set")

    def look() -> XProbe:
        d = _connect(name, timeout)
        try:
            info = d.display.info
            return XProbe(
                display=name,
                vendor=str(info.vendor),
                release=int(info.release_number),
                has_record=d.has_extension("RECORD"),
                has_xtest=d.has_extension("XTEST"),
                tray_owner=_has_tray_owner(d),
            )
        finally:
            _close_quietly(d)

    try:
        return _in_worker(look, timeout)
    except Exception as exc:  # every failure is reported, none is raised
        return XProbe(display=name, error=_connect_error_text(exc))


def no_record_message(name: str) -> str:
    """What is wrong when the server on DISPLAY=``name`` lacks RECORD, and the fix."""
    return (
        f"the X server on DISPLAY={name} has no RECORD extension, which keyboard and mouse "
        'capture need. Fix: enable it (Xorg: Section "Module" Load "record"; '
        "Xvfb: +extension RECORD)."
    )


# --- reading windows -------------------------------------------------------------------------


class _Atoms:
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


def _top_level(display: Xlib.display.Display, root: Any, window: Any, atoms: _Atoms) -> int | None:
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


def _active_window_id(display: Xlib.display.Display, root: Any, atoms: _Atoms) -> tuple[int | None, bool]:
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


def _describe(display: Xlib.display.Display, root: Any, wid: int, atoms: _Atoms, t_ns: int) -> WindowFocus:
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


def _read_focus(display: Xlib.display.Display, atoms: _Atoms) -> tuple[int | None, WindowFocus | None, bool]:
    """``(window id, focus, ewmh)``; id and focus are None when nothing has focus.

    :raises Xlib.error.XError: a window vanished while being looked at.
    """
    t_ns = now_ns()
    root = display.screen().root
    wid, ewmh = _active_window_id(display, root, atoms)
    if wid is None:
        return None, None, ewmh
    return wid, _describe(display, root, wid, atoms, t_ns), ewmh


# --- the focus watcher -----------------------------------------------------------------------


def _ignore_x_error(err: Any, request: Any) -> None:
    # Asynchronous errors (a window vanished before we changed its event mask) are expected.
    logger.debug("ignored X error %s", type(err).__name__)


class _FocusWatcher:
    """Emits :class:`WindowFocus` when the active window or its title changes.

    Uses its own X connection, owned by the ``optin-focus`` thread once started.
    """

    def __init__(self, display_name: str, sink: EventSink) -> None:
        self._display_name = display_name
        self._emitter = FocusEmitter(sink)
        self._stopping = self._emitter.stopping
        self._thread: threading.Thread | None = None
        self._display: Xlib.display.Display | None = None
        self._pipe: tuple[int, int] | None = None
        self._atoms: _Atoms | None = None
        self._watched: int | None = None
        self._ewmh = False

    # Hooks protocol

    def start(self) -> None:
        """Connect, emit the current window, and watch for changes.

        :raises EnvironmentProblem: the X display cannot be reached.
        """
        if self.is_alive():
            return
        if self._pipe is not None:  # left over from a stop() called on the watcher thread itself
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        display = _open_display(self._display_name)
        pipe = os.pipe()
        self._display, self._pipe = display, pipe
        self._watched, self._ewmh = None, False
        self._emitter.reset()
        try:
            display.set_error_handler(_ignore_x_error)
            self._atoms = _Atoms(display)
            display.screen().root.change_attributes(event_mask=X.PropertyChangeMask)
            self._refresh()  # the initial event, delivered before start() returns
            self._thread = threading.Thread(target=self._run, name="optin-focus", daemon=True)
            self._thread.start()
        except BaseException:
            self._display, self._pipe = None, None
            _close_quietly(display)
            for fd in pipe:
                os.close(fd)
            raise

    def stop(self) -> None:
        """Stop watching; returns promptly, after which no event is delivered."""
        self._emitter.stop()
        pipe, thread = self._pipe, self._thread
        if pipe is not None:
            try:
                os.write(pipe[1], b"x")
            except OSError:
                logger.debug("focus watcher wake-up pipe already closed")
        if thread is None or thread is threading.current_thread():
            return  # never started, or stop() was called from the sink: the loop ends by itself
        thread.join(timeout=2.0)
        if thread.is_alive():
            logger.warning("focus watcher thread did not stop within 2 s")
            return
        self._thread = None
        if pipe is not None:
            for fd in pipe:
                os.close(fd)
            self._pipe = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # internals (run on the watcher thread after start)

    def _run(self) -> None:
        display, pipe = self._display, self._pipe
        if display is None or pipe is None:
            return
        try:
            fd = display.fileno()
            while not self._stopping.is_set():
                if self._drain(display):
                    self._refresh()
                if display.pending_events():
                    continue  # the refresh's round trips queued events: select() cannot see them
                readable, _, _ = select.select([fd, pipe[0]], [], [], NO_WM_POLL_INTERVAL)
                if not readable and not self._ewmh:
                    self._refresh()  # no window manager: nothing tells us, so look
        except Xlib.error.ConnectionClosedError:
            if not self._stopping.is_set():
                logger.error("focus watcher lost the X connection to DISPLAY=%s", self._display_name)
        except Exception as exc:  # logged by type only: a message could carry captured content
            logger.error("focus watcher stopped by an unexpected %s", type(exc).__name__)
        finally:
            self._display = None
            _close_quietly(display)

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
            wid, focus, ewmh = _read_focus(display, atoms)
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
            old.change_attributes(event_mask=X.NoEventMask, onerror=_ignore_x_error)
        if wid is not None:
            new = display.create_resource_object("window", wid)
            new.change_attributes(event_mask=X.PropertyChangeMask, onerror=_ignore_x_error)
        self._watched = wid
        display.flush()


# --- the clipboard ---------------------------------------------------------------------------

#: X selection name for each ``source`` of :meth:`XorgBackend.read_clipboard`.
SELECTIONS = {"clipboard": "CLIPBOARD", "primary": "PRIMARY"}

#: The property of the helper window that the selection owner writes the text into.
SELECTION_PROPERTY = "OPTIN_SELECTION"

#: Longest UTF-8 encoding of :data:`MAX_PASTE_CHARS` characters, plus a trailing NUL.
MAX_PASTE_BYTES = 4 * MAX_PASTE_CHARS + 1


def decode_selection(raw: bytes, utf8: bool) -> str | None:
    """The text of a converted selection (``UTF8_STRING`` if ``utf8``, else ICCCM ``STRING``, Latin-1).

    None when it is empty or longer than :data:`MAX_PASTE_CHARS` characters.  One
    trailing NUL (some owners count the C terminator) is dropped; invalid UTF-8
    becomes U+FFFD.
    """
    text = raw.decode("utf-8", "replace") if utf8 else raw.decode("latin-1")
    if text.endswith("\0"):
        text = text[:-1]
    if not text or len(text) > MAX_PASTE_CHARS:
        return None
    return text


def _wait_event(display: Xlib.display.Display, wanted: Callable[[Any], bool], deadline: float) -> Any | None:
    """The first event ``wanted`` accepts (others are dropped); None if none came before ``deadline``
    (``time.monotonic()``)."""
    fd = display.fileno()
    while True:
        while display.pending_events():
            event = display.next_event()
            if wanted(event):
                return event
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None


def _window_id(value: Any) -> int:
    return int(getattr(value, "id", value))


class _SelectionReader:
    """One conversion of a selection into property :attr:`prop` of an unmapped :attr:`window`.

    :param types: the acceptable property types, each mapped to "is UTF-8".
    """

    def __init__(
        self, display: Xlib.display.Display, window: Any, prop: int, types: dict[int, bool], incr: int
    ) -> None:
        self.display, self.window, self.prop = display, window, prop
        self.types, self.incr = types, incr

    def take(self, deadline: float) -> str | None:
        """Read and delete the converted text once the owner said it is there.

        :returns: None for another type or format than asked for, more than
            :data:`MAX_PASTE_BYTES`, an INCR transfer not done by ``deadline``, or
            text :func:`decode_selection` refuses.
        """
        window, prop = self.window, self.prop
        head = window.get_property(prop, X.AnyPropertyType, 0, 0)  # type and size, no data
        if head is None:
            return None
        if int(head.property_type) == self.incr:
            return self._take_incr(deadline)
        utf8 = self.types.get(int(head.property_type))
        size = int(head.bytes_after)
        if utf8 is None or head.format != 8 or size > MAX_PASTE_BYTES:
            window.delete_property(prop)
            return None
        full = window.get_property(prop, X.AnyPropertyType, 0, (size + 3) // 4, delete=True)
        if full is None or full.format != 8:
            return None
        return decode_selection(bytes(full.value), utf8)

    def _take_incr(self, deadline: float) -> str | None:
        """ICCCM INCR: the owner writes the text in chunks, each after we deleted the previous one,
        and ends with an empty chunk.  Given up (None) once more than :data:`MAX_PASTE_BYTES` are
        announced or sent, or at ``deadline``: our window goes with the connection, and the owner
        stops when it finds it gone.  (Tk sends every text over 4000 bytes this way.)"""
        window, prop = self.window, self.prop
        announced = window.get_property(prop, self.incr, 0, 1)
        ok = announced is not None and announced.format == 32 and len(announced.value) > 0
        size = int(announced.value[0]) if ok else 0
        if size > MAX_PASTE_BYTES:  # (a lower bound; the chunks are counted too)
            return None  # not started: that takes deleting the property
        window.delete_property(prop)  # starts the transfer
        window_id = _window_id(window)

        def new_chunk(event: Any) -> bool:
            return bool(
                event.type == X.PropertyNotify
                and _window_id(event.window) == window_id
                and int(event.atom) == prop
                and event.state == X.PropertyNewValue
            )

        chunks: list[bytes] = []
        total = 0
        utf8: bool | None = None
        while True:
            self.display.flush()
            if _wait_event(self.display, new_chunk, deadline) is None:
                return None
            head = window.get_property(prop, X.AnyPropertyType, 0, 0)
            if head is None:
                continue  # a notification for a chunk we already took
            size = int(head.bytes_after)
            kind = self.types.get(int(head.property_type))
            if kind is None or head.format != 8 or total + size > MAX_PASTE_BYTES:
                return None
            if size == 0:  # the end
                window.delete_property(prop)
                self.display.flush()
                break
            chunk = window.get_property(prop, X.AnyPropertyType, 0, (size + 3) // 4, delete=True)
            if chunk is None or chunk.format != 8:
                return None
            chunks.append(bytes(chunk.value))
            total += size
            utf8 = kind if utf8 is None else utf8
        return None if utf8 is None else decode_selection(b"".join(chunks), utf8)


def read_selection(
    display_name: str, selection: str = "CLIPBOARD", timeout: float = CLIPBOARD_TIMEOUT_S
) -> str | None:
    """The text in X selection ``selection`` (``CLIPBOARD`` or ``PRIMARY``) on ``display_name``.

    Opens a connection for this one read (python-xlib connections are not shared
    across threads, and a late answer to an abandoned request then cannot be
    mistaken for the next one), creates an unmapped window, asks the owner to
    convert the selection to ``UTF8_STRING`` (``STRING`` if it refuses) into a
    property of that window, and waits for its ``SelectionNotify``.  Closing the
    connection destroys the window.

    Large texts come as an ICCCM INCR transfer (Tk sends anything over 4000
    bytes that way; measured); it is followed up to :data:`MAX_PASTE_BYTES` and
    within the same deadline.

    :returns: the text; None when there is no owner, it refuses or sends no
        text, the text is empty or over :data:`MAX_PASTE_CHARS`, or the whole
        read does not end within ``timeout`` seconds.
    :raises Exception: X errors and connection failures (the backend turns them into None).
    """
    deadline = time.monotonic() + timeout
    display = _open_display(display_name, timeout)
    try:
        display.set_error_handler(_ignore_x_error)
        sel = Xatom.PRIMARY if selection == "PRIMARY" else display.intern_atom(selection)
        if display.get_selection_owner(sel) == X.NONE:
            return None
        utf8_string = display.intern_atom("UTF8_STRING")
        prop = display.intern_atom(SELECTION_PROPERTY)
        root = display.screen().root
        # PropertyChangeMask from the start: an INCR transfer is driven by property notifications
        window = root.create_window(0, 0, 1, 1, 0, X.CopyFromParent, event_mask=X.PropertyChangeMask)
        reader = _SelectionReader(
            display, window, prop, {utf8_string: True, Xatom.STRING: False}, display.intern_atom("INCR")
        )
        window_id = _window_id(window)

        def answered(event: Any) -> bool:
            return bool(
                event.type == X.SelectionNotify
                and _window_id(event.requestor) == window_id
                and int(event.selection) == sel
            )

        for target in (utf8_string, Xatom.STRING):
            window.convert_selection(sel, target, prop, X.CurrentTime)
            display.flush()
            event = _wait_event(display, answered, deadline)
            if event is None:
                return None  # the owner did not answer in time
            if int(event.property) != X.NONE:
                return reader.take(deadline)
        return None  # refused both targets: not text
    finally:
        _close_quietly(display)


# --- the backend -----------------------------------------------------------------------------


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
    HAS_SECURE_INPUT_DETECTION = False
    HAS_OWN_UI_DETECTION = True

    def __init__(self, display: str | None = None) -> None:
        self._display_name = display
        self._lock = threading.Lock()
        self._conn: Xlib.display.Display | None = None
        self._atoms: _Atoms | None = None

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
                _, focus, _ = _read_focus(display, atoms)
            except Xlib.error.XError:
                return None
            except Xlib.error.ConnectionClosedError as exc:
                self._drop_connection()
                msg = f"lost the connection to the X display DISPLAY={self.display_name}. Fix: restart optin."
                raise EnvironmentProblem(msg) from exc
            return focus

    def focus_watcher(self, sink: EventSink) -> Hooks:
        return _FocusWatcher(self.display_name, sink)

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
                        windows.append(_describe(display, root, wid, atoms, t_ns))
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
        from agent.backends.xorg_own_ui import OwnUiWatcher

        return OwnUiWatcher(self.display_name, pids)

    def tray_host_available(self) -> bool | None:
        with self._lock:
            try:
                display, _ = self._connection()
                return _has_tray_owner(display)
            except EnvironmentProblem:
                return None
            except Xlib.error.ConnectionClosedError:
                self._drop_connection()
                return None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _connection(self) -> tuple[Xlib.display.Display, _Atoms]:
        if self._conn is None or self._atoms is None:
            name = self.display_name
            if not name:
                raise EnvironmentProblem(NO_DISPLAY_MESSAGE)
            conn = _open_display(name)
            try:
                conn.set_error_handler(_ignore_x_error)
                self._atoms = _Atoms(conn)
            except Exception:
                _close_quietly(conn)
                raise
            self._conn = conn
        return self._conn, self._atoms

    def _drop_connection(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
        self._conn = None
        self._atoms = None


def make_backend() -> XorgBackend:
    """Entry point used by :func:`agent.backends.select_backend`."""
    return XorgBackend()


__all__ = [
    "CONNECT_TIMEOUT",
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
