"""The macOS backend: Quartz window list, permission checks, secure input; pynput and mss for capture.

Written against Apple's documented APIs and **not run on macOS by this
project's tests or CI** (docs/limitations.md).  The parts that do not touch the
OS (choosing the front window, turning a window-list entry into a
:class:`~agent.events.WindowFocus`, turning permission answers into one message,
the polling focus watcher) are plain code tested on Linux.

How it works:

* The focused window comes from ``CGWindowListCopyWindowInfo(
  kCGWindowListOptionOnScreenOnly | kCGWindowListExcludeDesktopElements,
  kCGNullWindowID)``, which asks the window server directly and lists windows
  front to back: the front application's first normal window (``kCGWindowLayer``
  0) gives ``kCGWindowOwnerPID``, ``kCGWindowBounds`` (points, top-left origin)
  and ``kCGWindowName`` (present only with Screen Recording permission on
  macOS 10.15+).  ``app_class`` is the bundle identifier (``com.apple.Safari``;
  not localised, unlike the application name), else ``kCGWindowOwnerName``.
* ``NSWorkspace`` knows the frontmost application even when it has no window,
  but its answers only change when the *main* run loop turns (Apple's
  NSRunningApplication and NSWorkspace.runningApplications docs); in a process
  whose main thread does not run one (command line, tests) they go stale.  So
  the front application is taken from NSWorkspace only while the main run loop
  is running (``CFRunLoopCopyCurrentMode(CFRunLoopGetMain())`` is not NULL),
  and from the window order otherwise.
* Focus is **polled** every :data:`FOCUS_POLL_INTERVAL` seconds
  (``HAS_FOCUS_EVENTS = False``).  ``NSWorkspaceDidActivateApplicationNotification``
  is delivered on the main thread's run loop, which belongs to the tray (pystray
  runs AppKit there) and does not run at all without it; and no NSWorkspace
  notification reports a title change (that would take an AXObserver per
  application, each on a run loop).  A poll of the window list costs a few
  milliseconds and sees both.
* Permissions (System Settings › Privacy & Security): Accessibility
  (``AXIsProcessTrusted``), Input Monitoring (``IOHIDCheckAccess(
  kIOHIDRequestTypeListenEvent)``, macOS 10.15+) and Screen Recording
  (``CGPreflightScreenCaptureAccess``, 10.15+).  None of these checks prompts the user.
* Secure input: ``IsSecureEventInputEnabled`` (Carbon/HIToolbox, TN2150) is true
  while any application has secure event input on, e.g. a focused password
  field or Terminal's Secure Keyboard Entry.  macOS then withholds key events
  from event taps anyway.
* Pasted text: ``NSPasteboard.generalPasteboard().stringForType_(
  NSPasteboardTypeString)``, on a short-lived thread (:class:`TimedRead`): an
  application that promised the data renders it on demand and may hang.  macOS
  has no primary selection.
* Idle time: ``CGEventSourceSecondsSinceLastEventType(
  kCGEventSourceStateHIDSystemState, kCGAnyInputEventType)``, the seconds since
  the last keyboard, mouse or trackpad event the HID system saw.
* Locked: ``CGSSessionScreenIsLocked`` in ``CGSessionCopyCurrentDictionary()``
  (present and true while the login window covers the session; undocumented but
  long-standing), or the main display asleep (``CGDisplayIsAsleep``).  A screen
  saver running without a password is not seen.

The C functions are called through ctypes; pyobjc (``Quartz``, ``AppKit``,
``CoreFoundation``) is needed for the window list and NSWorkspace.  Window
titles are captured content: this module never logs them or puts them in an
exception message; nor the clipboard text.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from agent.backends.base import (
    CLIPBOARD_TIMEOUT_S,
    MAX_PASTE_CHARS,
    Backend,
    DoctorCheck,
    FocusEmitter,
    TimedRead,
    join_watcher,
)
from agent.capture import EventSink, Hooks
from agent.errors import BackendUnavailable, EnvironmentProblem
from agent.events import WindowFocus, now_ns

logger = logging.getLogger(__name__)


#: Framework binaries; ``dlopen`` finds them in the dyld shared cache on macOS 11+.
CARBON = "/System/Library/Frameworks/Carbon.framework/Carbon"
APPLICATION_SERVICES = "/System/Library/Frameworks/ApplicationServices.framework/ApplicationServices"
CORE_GRAPHICS = "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
IOKIT = "/System/Library/Frameworks/IOKit.framework/IOKit"

# IOKit/hidsystem/IOHIDLib.h (macOS 10.15+)
K_IOHID_REQUEST_TYPE_LISTEN_EVENT = 1
K_IOHID_ACCESS_TYPE_GRANTED = 0
K_IOHID_ACCESS_TYPE_DENIED = 1
K_IOHID_ACCESS_TYPE_UNKNOWN = 2

# CoreGraphics/CGWindow.h
K_CG_WINDOW_LIST_OPTION_ON_SCREEN_ONLY = 1 << 0
K_CG_WINDOW_LIST_EXCLUDE_DESKTOP_ELEMENTS = 1 << 4
K_CG_NULL_WINDOW_ID = 0
#: Options for the window list: what is on screen, without the desktop's own windows.
WINDOW_LIST_OPTIONS = K_CG_WINDOW_LIST_OPTION_ON_SCREEN_ONLY | K_CG_WINDOW_LIST_EXCLUDE_DESKTOP_ELEMENTS

# Keys of a window-list entry (their CFString values are these names).
OWNER_PID = "kCGWindowOwnerPID"
OWNER_NAME = "kCGWindowOwnerName"
WINDOW_NAME = "kCGWindowName"
WINDOW_BOUNDS = "kCGWindowBounds"
WINDOW_LAYER = "kCGWindowLayer"
WINDOW_ALPHA = "kCGWindowAlpha"

#: Seconds between two looks at the window list by the focus watcher.
FOCUS_POLL_INTERVAL = 0.25

#: Key of ``CGSessionCopyCurrentDictionary()`` present (and true) while the screen is locked.
SCREEN_IS_LOCKED = "CGSSessionScreenIsLocked"

#: What to install when pyobjc is missing (pynput installs the same on macOS).
PYOBJC_FIX = "pip install 'pyobjc-framework-Quartz>=8' 'pyobjc-framework-Cocoa>=8'"

#: Why the backend refuses to run anywhere but macOS, and the fix.
NOT_MACOS_MESSAGE = (
    "the darwin backend needs macOS (this is sys.platform={platform!r}). "
    "Fix: on Linux use the xorg backend, on Windows the win32 backend, "
    "or set OPTIN_BACKEND=fake for a dry run without capture."
)

#: Where the privacy switches are (and were, before macOS 13).
SETTINGS_PATH = (
    "System Settings › Privacy & Security "
    "(macOS 12 and earlier: System Preferences › Security & Privacy › Privacy)"
)

#: The app that macOS holds responsible for a process started from a terminal, by ``TERM_PROGRAM``.
TERMINAL_APPS = {
    "Apple_Terminal": "Terminal",
    "iTerm.app": "iTerm",
    "vscode": "Visual Studio Code",
    "WezTerm": "WezTerm",
    "ghostty": "Ghostty",
    "Hyper": "Hyper",
    "WarpTerminal": "Warp",
}


# --- pure logic (tested on every OS) ----------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def bounds_geometry(bounds: Mapping[str, Any] | None) -> tuple[int, int, int, int] | None:
    """``(x, y, width, height)`` from ``kCGWindowBounds`` (a CGRect dictionary); None if incomplete."""
    if not bounds:
        return None
    values = [_number(bounds.get(key)) for key in ("X", "Y", "Width", "Height")]
    if any(v is None for v in values):
        return None
    x, y, width, height = (round(v) for v in values if v is not None)
    return x, y, width, height


def _is_normal_window(window: Mapping[str, Any]) -> bool:
    """A document/app window that is actually visible: layer 0, not transparent, not empty."""
    if _number(window.get(WINDOW_LAYER)) != 0:
        return False
    alpha = _number(window.get(WINDOW_ALPHA))
    if alpha is not None and alpha <= 0:
        return False
    geometry = bounds_geometry(window.get(WINDOW_BOUNDS))
    return geometry is not None and geometry[2] > 1 and geometry[3] > 1


def pick_front_window(
    windows: Sequence[Mapping[str, Any]], front_pid: int | None = None
) -> Mapping[str, Any] | None:
    """The focused window from a window list ordered front to back.

    :param front_pid: the frontmost application's pid when known: its first
        normal window is chosen, and None is returned when it has none (an
        application can be frontmost with no window).  When None, the first
        normal window of any application is chosen.
    """
    for window in windows:
        if not _is_normal_window(window):
            continue
        if front_pid is None or _number(window.get(OWNER_PID)) == front_pid:
            return window
    return None


def focus_from_window_info(
    t_ns: int,
    window: Mapping[str, Any] | None,
    *,
    pid: int | None = None,
    app_class: str | None = None,
) -> WindowFocus | None:
    """A :class:`WindowFocus` from a window-list entry (None: the front application has no window).

    :param pid: the frontmost application's pid, used when ``window`` is None.
    :param app_class: the application's bundle identifier; else the entry's
        ``kCGWindowOwnerName`` is used.
    :returns: None when there is neither a window nor a pid.
    """
    if window is None:
        if pid is None:
            return None
        return WindowFocus(t_ns=t_ns, title=None, app_class=app_class, pid=pid)
    owner = _number(window.get(OWNER_PID))
    name = window.get(WINDOW_NAME)
    owner_name = window.get(OWNER_NAME)
    geometry = bounds_geometry(window.get(WINDOW_BOUNDS))
    x, y, width, height = geometry if geometry is not None else (None, None, None, None)
    return WindowFocus(
        t_ns=t_ns,
        title=str(name) if name is not None else None,  # missing without Screen Recording permission
        app_class=app_class or (str(owner_name) if owner_name else None),
        pid=int(owner) if owner is not None else pid,
        x=x,
        y=y,
        width=width,
        height=height,
    )


@dataclass(frozen=True)
class Permissions:
    """What macOS answered about the privacy permissions capture needs (None: cannot tell).

    :ivar accessibility: ``AXIsProcessTrusted()``.
    :ivar input_monitoring: ``IOHIDCheckAccess(kIOHIDRequestTypeListenEvent)``:
        0 granted, 1 denied, 2 not decided yet (None before macOS 10.15).
    :ivar screen_recording: ``CGPreflightScreenCaptureAccess()`` (None before macOS 10.15).
    """

    accessibility: bool | None
    input_monitoring: int | None
    screen_recording: bool | None


def responsible_app(env: Mapping[str, str]) -> str:
    """The app that macOS asks permissions for when optin runs in it (from ``TERM_PROGRAM``)."""
    app = TERMINAL_APPS.get(env.get("TERM_PROGRAM", ""))
    if app is not None:
        return app
    return "the app that starts optin (your terminal app, or Python)"


def permission_problem(permissions: Permissions, app: str) -> str | None:
    """One message naming every missing permission and the fix; None when nothing is known to be missing.

    An answer of None (the API does not exist on this macOS) is not a problem:
    older systems have no such permission.  Input Monitoring that was never
    decided counts as missing: the user has to switch it on.
    """
    missing: list[str] = []
    if permissions.accessibility is False:
        missing.append("Accessibility (keyboard and mouse hooks)")
    if permissions.input_monitoring in (K_IOHID_ACCESS_TYPE_DENIED, K_IOHID_ACCESS_TYPE_UNKNOWN):
        missing.append("Input Monitoring (key events)")
    if permissions.screen_recording is False:
        missing.append("Screen Recording (screenshots and window titles)")
    if not missing:
        return None
    panes = ", ".join(item.split(" (", 1)[0] for item in missing)
    return (
        f"macOS has not allowed optin: {'; '.join(missing)}. "
        f"Fix: open {SETTINGS_PATH}; under each of {panes}, add {app} (with +) and switch it on; "
        f"then quit {app} completely and start optin again."
    )


def gui_session_problem(has_session: bool, on_console: bool | None) -> str | None:
    """What is wrong with this login session for capture (None: nothing, or cannot tell).

    :param has_session: ``CGSessionCopyCurrentDictionary()`` returned a dictionary
        (it returns NULL outside a window-server session, e.g. over SSH).
    :param on_console: its ``kCGSessionOnConsoleKey``.
    """
    if not has_session:
        return (
            "optin is not running in a macOS desktop session (e.g. it was started over SSH or as a "
            "launch daemon), so it cannot see windows, keys or the screen. Fix: start optin from a "
            "terminal on the Mac's own desktop, logged in as the volunteer."
        )
    if on_console is False:
        return (
            "this macOS session is not the one on screen (another user is in front after fast user "
            "switching). Fix: switch back to this user, then start optin again."
        )
    return None


def paste_text(value: object) -> str | None:
    """The pasted text from ``stringForType_`` (an NSString, or None when the pasteboard has no
    text); None when empty or longer than :data:`MAX_PASTE_CHARS` characters."""
    if value is None:
        return None
    text = str(value)
    if not text or len(text) > MAX_PASTE_CHARS:
        return None
    return text


def idle_from_event_source(seconds: object) -> float | None:
    """``CGEventSourceSecondsSinceLastEventType``'s answer as seconds; None when it is not a
    finite number.  A negative answer (clock adjustments) is 0."""
    value = _number(seconds)
    if value is None or not math.isfinite(value):
        return None
    return max(0.0, value)


def locked_from_session(info: Mapping[str, Any] | None, display_asleep: bool | None = None) -> bool | None:
    """Whether the screen is locked or blanked, from ``CGSessionCopyCurrentDictionary()``
    (None: no window-server session) and ``CGDisplayIsAsleep`` of the main display.

    The lock key is only present while locked, so a session without it is unlocked.
    """
    if display_asleep:
        return True
    if info is None:
        return None
    return bool(info.get(SCREEN_IS_LOCKED, False))


class PollingFocusWatcher:
    """Emits :class:`WindowFocus` when what ``read()`` answers changes, looking every ``interval`` seconds.

    Emits the current window on :meth:`start` (on the caller's thread, before
    it returns), then from the ``optin-focus`` thread.  Identical consecutive
    values are not repeated; "no window" is a WindowFocus with every field None.

    :param read: the focused window now (None: no window has the focus).
    """

    def __init__(
        self,
        read: Callable[[], WindowFocus | None],
        sink: EventSink,
        interval: float = FOCUS_POLL_INTERVAL,
    ) -> None:
        self._read = read
        self._interval = interval
        self._emitter = FocusEmitter(sink)
        self._stopping = self._emitter.stopping
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        """Emit the current window and start polling.

        :raises Exception: whatever the first ``read()`` raised.
        """
        if self.is_alive():
            return
        self._emitter.reset()
        self._failing = False
        self._refresh()
        thread = threading.Thread(target=self._run, name="optin-focus", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop polling; returns promptly, after which no event is delivered."""
        self._emitter.stop()
        if join_watcher(self._thread):
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._refresh()
            except Exception as exc:  # logged by type only: a message could carry captured content
                if not self._failing:
                    logger.warning("reading the focused window failed (%s); still trying", type(exc).__name__)
                self._failing = True
            else:
                self._failing = False

    def _refresh(self) -> None:
        self._emitter.emit(self._read())


# --- the native side ------------------------------------------------------------------------


def _c_function(path: str, name: str, restype: Any, argtypes: list[Any]) -> Callable[..., Any] | None:
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


class _Native:
    """The C functions this backend calls through ctypes, each None when this macOS lacks it."""

    def __init__(self) -> None:
        # Boolean is an unsigned char; CGPreflightScreenCaptureAccess returns a C bool.
        self.ax_is_process_trusted = _c_function(
            APPLICATION_SERVICES, "AXIsProcessTrusted", ctypes.c_ubyte, []
        )
        self.iohid_check_access = _c_function(IOKIT, "IOHIDCheckAccess", ctypes.c_uint32, [ctypes.c_uint32])
        self.preflight_screen_capture = _c_function(
            CORE_GRAPHICS, "CGPreflightScreenCaptureAccess", ctypes.c_bool, []
        )
        self.is_secure_event_input_enabled = _c_function(
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


class _Cocoa:
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


# --- the backend ----------------------------------------------------------------------------


class DarwinBackend(Backend):
    """macOS through Quartz and AppKit (pyobjc) and a few C calls, with pynput hooks and an mss grabber."""

    NAME = "darwin"
    HAS_ACTIVE_WINDOW = True
    HAS_FOCUS_EVENTS = False  # polled every FOCUS_POLL_INTERVAL s; see the module docstring
    HAS_WINDOW_TITLES = True  # needs Screen Recording, which check_environment requires
    HAS_TRAY_DETECTION = True  # the menu bar exists in every desktop session
    HAS_SECURE_INPUT_DETECTION = True

    def __init__(self, cocoa: _Cocoa, native: _Native | None = None) -> None:
        self._cocoa = cocoa
        self._native = native if native is not None else _Native()
        self._clipboard = TimedRead("optin-clipboard-read")

    def check_environment(self) -> None:
        if sys.platform != "darwin":
            raise EnvironmentProblem(NOT_MACOS_MESSAGE.format(platform=sys.platform))
        problem = gui_session_problem(*self._cocoa.session())
        if problem is None:
            problem = permission_problem(self._native.permissions(), responsible_app(os.environ))
        if problem is not None:
            raise EnvironmentProblem(problem)

    def doctor_checks(self) -> list[DoctorCheck]:
        """The login session, the three privacy permissions, and the menu bar (always there)."""
        if sys.platform != "darwin":
            return [DoctorCheck("display", NOT_MACOS_MESSAGE.format(platform=sys.platform), "")]
        session = gui_session_problem(*self._cocoa.session())
        permissions = permission_problem(self._native.permissions(), responsible_app(os.environ))
        return [
            DoctorCheck("display", session, "a macOS desktop session, on screen"),
            DoctorCheck(
                "permissions", permissions, "Accessibility, Input Monitoring and Screen Recording allowed"
            ),
            DoctorCheck("tray", None, "the menu bar shows optin's icon"),
        ]

    def active_window(self) -> WindowFocus | None:
        """The front application's front window now; pid and app only when it has no window."""
        return self._cocoa.read_focus()

    def focus_watcher(self, sink: EventSink) -> Hooks:
        return PollingFocusWatcher(self.active_window, sink, FOCUS_POLL_INTERVAL)

    def tray_host_available(self) -> bool | None:
        """True in a desktop session (the menu bar hosts status items); None when there is none."""
        try:
            has_session, _ = self._cocoa.session()
        except Exception as exc:
            logger.debug("could not ask for the window-server session (%s)", type(exc).__name__)
            return None
        return True if has_session else None

    def secure_input_active(self) -> bool | None:
        """Whether secure event input is on (a password field has the focus somewhere); None: cannot tell.

        Never raises; fast (no inter-process call), safe from any thread.
        """
        try:
            return self._native.secure_input()
        except Exception as exc:
            logger.debug("IsSecureEventInputEnabled failed (%s)", type(exc).__name__)
            return None

    def read_clipboard(self, source: str = "clipboard") -> str | None:
        """The general pasteboard's plain text; None for ``"primary"`` (macOS has none), on any
        error, or after ``CLIPBOARD_TIMEOUT_S``."""
        if source != "clipboard":
            return None
        try:
            return self._clipboard.call(self._cocoa.pasteboard_text, CLIPBOARD_TIMEOUT_S)
        except Exception as exc:  # logged by type only: never the text
            logger.debug("reading the pasteboard failed (%s)", type(exc).__name__)
            return None

    def idle_seconds(self) -> float | None:
        """Seconds since the last keyboard, mouse or trackpad event (HID system state)."""
        try:
            return self._cocoa.idle_seconds()
        except Exception as exc:
            logger.debug("CGEventSourceSecondsSinceLastEventType failed (%s)", type(exc).__name__)
            return None

    def screen_locked(self) -> bool | None:
        """True while the session is locked or the main display sleeps; see :func:`locked_from_session`."""
        try:
            return self._cocoa.screen_locked()
        except Exception as exc:
            logger.debug("CGSessionCopyCurrentDictionary failed (%s)", type(exc).__name__)
            return None


def make_backend() -> DarwinBackend:
    """Entry point used by :func:`agent.backends.select_backend`.

    :raises agent.errors.BackendUnavailable: not on macOS.
    :raises ImportError: pyobjc is missing (the chooser turns it into the fix, :data:`PYOBJC_FIX`).
    """
    if sys.platform != "darwin":
        raise BackendUnavailable(NOT_MACOS_MESSAGE.format(platform=sys.platform))
    return DarwinBackend(_Cocoa())


__all__ = [
    "FOCUS_POLL_INTERVAL",
    "NOT_MACOS_MESSAGE",
    "PYOBJC_FIX",
    "DarwinBackend",
    "Permissions",
    "PollingFocusWatcher",
    "TimedRead",
    "bounds_geometry",
    "focus_from_window_info",
    "gui_session_problem",
    "idle_from_event_source",
    "locked_from_session",
    "make_backend",
    "paste_text",
    "permission_problem",
    "pick_front_window",
    "responsible_app",
]
