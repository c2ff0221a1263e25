"""The native side: C functions through ctypes (:class:`Native`) and the pyobjc modules (:class:`Cocoa`)."""

from __future__ import annotations

import ctypes
import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from agent.backends.darwin.constants import (
    APPLICATION_SERVICES,
    CARBON,
    CORE_GRAPHICS,
    IOKIT,
    K_CG_NULL_WINDOW_ID,
    K_IOHID_REQUEST_TYPE_LISTEN_EVENT,
    OWNER_PID,
    WINDOW_LIST_OPTIONS,
    WINDOW_NUMBER,
)
from agent.backends.darwin.interpret import (
    Permissions,
    _number,
    focus_from_window_info,
    idle_from_event_source,
    locked_from_session,
    paste_text,
    pick_front_window,
    pick_windows_of,
)
from agent.events import WindowFocus, now_ns

logger = logging.getLogger(__name__)


def c_function(path: str, name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any] | None:
    """``name`` from the framework at ``path``; None when the framework or the symbol is missing."""
    try:
        library = ctypes.CDLL(path)
        fn = getattr(library, name)
    except (OSError, AttributeError):
        return None
    fn.restype = restype
    fn.argtypes = argtypes
    result: Callable[..., Any] = fn
    return result


class Native:
    """The C functions this backend calls through ctypes, each None when this macOS lacks it."""

    def __init__(self) -> None:
        # Boolean is an unsigned char; CGPreflightScreenCaptureAccess returns a C bool.
        self.ax_is_process_trusted = c_function(
            APPLICATION_SERVICES, "AXIsProcessTrusted", ctypes.c_ubyte, []
        )
        self.iohid_check_access = c_function(IOKIT, "IOHIDCheckAccess", ctypes.c_uint32, [ctypes.c_uint32])
        self.preflight_screen_capture = c_function(
            CORE_GRAPHICS, "CGPreflightScreenCaptureAccess", ctypes.c_bool, []
        )
        self.is_secure_event_input_enabled = c_function(
            CARBON, "IsSecureEventInputEnabled", ctypes.c_ubyte, []
        )
        # Carbon does not document IsSecureEventInputEnabled as thread safe: serialise the calls.
        self.secure_input_lock = threading.Lock()

    def permissions(self) -> Permissions:
        def ask(fn: Callable[..., Any] | None, *args: Any) -> Any:
            return None if fn is None else fn(*args)

        trusted = ask(self.ax_is_process_trusted)
        listen = ask(self.iohid_check_access, K_IOHID_REQUEST_TYPE_LISTEN_EVENT)
        screen = ask(self.preflight_screen_capture)
        return Permissions(
            accessibility=None if trusted is None else bool(trusted),
            input_monitoring=None if listen is None else int(listen),
            screen_recording=None if screen is None else bool(screen),
        )

    def secure_input(self) -> bool | None:
        fn = self.is_secure_event_input_enabled
        if fn is None:
            return None
        with self.secure_input_lock:
            return bool(fn())


class Cocoa:
    """The pyobjc modules this backend uses, imported when the backend is made.

    :raises ImportError: pyobjc is not installed.
    """

    def __init__(self) -> None:
        self.objc: ModuleType = importlib.import_module("objc")
        self.quartz: ModuleType = importlib.import_module("Quartz")
        self.appkit: ModuleType = importlib.import_module("AppKit")
        self.cf: ModuleType = importlib.import_module("CoreFoundation")

    def window_list(self) -> list[dict[str, Any]]:
        raw = self.quartz.CGWindowListCopyWindowInfo(WINDOW_LIST_OPTIONS, K_CG_NULL_WINDOW_ID)
        return [dict(entry) for entry in (raw or ())]

    def front_pid(self) -> int | None:
        """The frontmost application's pid from NSWorkspace, only while its answer is fresh."""
        try:
            mode = self.cf.CFRunLoopCopyCurrentMode(self.cf.CFRunLoopGetMain())
            if mode is None:
                return None  # the main run loop is not running: NSWorkspace would answer stale data
            # runningApplications may be called from any thread (NSWorkspace docs).
            for app in self.appkit.NSWorkspace.sharedWorkspace().runningApplications():
                if app.isActive():
                    return int(app.processIdentifier())
        except Exception as exc:  # fall back to the window order
            logger.debug("NSWorkspace could not tell the front application (%s)", type(exc).__name__)
        return None

    def bundle_id(self, pid: int | None) -> str | None:
        if pid is None:
            return None
        app = self.appkit.NSRunningApplication.runningApplicationWithProcessIdentifier_(pid)
        ident = app.bundleIdentifier() if app is not None else None
        return str(ident) if ident else None

    def read_focus(self) -> WindowFocus | None:
        with self.objc.autorelease_pool():
            t_ns = now_ns()
            windows = self.window_list()
            front = self.front_pid()
            window = pick_front_window(windows, front)
            owner = _number(window.get(OWNER_PID)) if window is not None else None
            pid = int(owner) if owner is not None else front
            return focus_from_window_info(t_ns, window, pid=pid, app_class=self.bundle_id(pid))

    def windows_of(
        self, pid: int, at: tuple[float, float] | None = None
    ) -> list[tuple[int | None, WindowFocus]]:
        """``(window number, focus)`` of the windows of ``pid`` an element lookup at point ``at``
        (points; None: the focus) is judged by (:func:`pick_windows_of`), each as the focus
        watcher reports a window (title, bundle identifier, pid, bounds); one without a window
        number (pid and bundle identifier only) when the process has no window on screen."""
        with self.objc.autorelease_pool():
            t_ns = now_ns()
            app_class = self.bundle_id(pid)
            found: list[tuple[int | None, WindowFocus]] = []
            for window in pick_windows_of(self.window_list(), pid, at):
                focus = focus_from_window_info(t_ns, window, pid=pid, app_class=app_class)
                number = _number(window.get(WINDOW_NUMBER))
                if focus is not None:
                    found.append((int(number) if number is not None else None, focus))
            return found or [(None, WindowFocus(t_ns=t_ns, title=None, app_class=app_class, pid=pid))]

    def pasteboard_text(self) -> str | None:
        """The general pasteboard's plain text (``NSPasteboardTypeString``), capped by :func:`paste_text`."""
        with self.objc.autorelease_pool():
            board = self.appkit.NSPasteboard.generalPasteboard()
            return paste_text(board.stringForType_(self.appkit.NSPasteboardTypeString))

    def idle_seconds(self) -> float | None:
        with self.objc.autorelease_pool():
            seconds = self.quartz.CGEventSourceSecondsSinceLastEventType(
                self.quartz.kCGEventSourceStateHIDSystemState, self.quartz.kCGAnyInputEventType
            )
            return idle_from_event_source(seconds)

    def screen_locked(self) -> bool | None:
        with self.objc.autorelease_pool():
            try:
                asleep: bool | None = bool(self.quartz.CGDisplayIsAsleep(self.quartz.CGMainDisplayID()))
            except Exception as exc:  # not fatal: the session dictionary still tells about the lock
                logger.debug("CGDisplayIsAsleep failed (%s)", type(exc).__name__)
                asleep = None
            info = self.quartz.CGSessionCopyCurrentDictionary()
            return locked_from_session(None if info is None else dict(info), asleep)

    def session(self) -> tuple[bool, bool | None]:
        """``(has_session, on_console)`` from ``CGSessionCopyCurrentDictionary``."""
        with self.objc.autorelease_pool():
            info = self.quartz.CGSessionCopyCurrentDictionary()
            if info is None:
                return False, None
            value = info.get(self.quartz.kCGSessionOnConsoleKey)
            return True, (None if value is None else bool(value))


__all__ = ["Cocoa", "Native", "c_function"]
