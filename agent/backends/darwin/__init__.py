"""The macOS backend: Quartz window list, permission checks, secure input; pynput and mss for capture.

Written against Apple's documented APIs and **run on macOS only by the GitHub Actions smoke
test** (.github/workflows/ci.yml, tests/platform), which this project's own CI cannot run
(docs/limitations.md).  The parts that do not touch the
OS (choosing the front window, turning a window-list entry into a
:class:`~agent.events.WindowFocus`, turning permission answers into one message,
the polling focus watcher) are plain code tested on Linux.

This package module holds :class:`DarwinBackend` and :func:`make_backend`; the
parts live in their own modules: :mod:`~agent.backends.darwin.constants`
(framework paths, documented constants, messages),
:mod:`~agent.backends.darwin.interpret` (the pure functions),
:mod:`~agent.backends.darwin.native` (ctypes and pyobjc calls),
:mod:`~agent.backends.darwin.focus` (the polling focus watcher) and, for the UI element under
an action, :mod:`~agent.backends.darwin.ax_model` (pure), :mod:`~agent.backends.darwin.ax_native`
(AX and CoreFoundation through ctypes) and :mod:`~agent.backends.darwin.ax_elements` (the finder).

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
* The UI element under a press or with the keyboard focus: the AX API
  (``AXUIElementCopyElementAtPosition`` and ``kAXFocusedUIElementAttribute`` of the system-wide
  element), see :mod:`~agent.backends.darwin.ax_elements`.
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

import logging
import os
import sys
from collections.abc import Callable

from agent.backends.base import (
    CLIPBOARD_TIMEOUT_S,
    Backend,
    DoctorCheck,
    TimedRead,
)
from agent.backends.darwin.constants import (
    FOCUS_POLL_INTERVAL,
    NOT_MACOS_MESSAGE,
    PYOBJC_FIX,
    SCREEN_IS_LOCKED,
)
from agent.backends.darwin.focus import PollingFocusWatcher
from agent.backends.darwin.interpret import (
    Permissions,
    bounds_geometry,
    focus_from_window_info,
    gui_session_problem,
    idle_from_event_source,
    locked_from_session,
    paste_text,
    permission_problem,
    pick_front_window,
    responsible_app,
)
from agent.backends.darwin.native import Cocoa, Native
from agent.capture import EventSink, Hooks
from agent.capture.element_lookup import ElementLookup, LookupResult, WindowCheck
from agent.errors import BackendUnavailable, EnvironmentProblem
from agent.events import WindowFocus

logger = logging.getLogger(__name__)

# --- the backend ----------------------------------------------------------------------------


class DarwinBackend(Backend):
    """macOS through Quartz and AppKit (pyobjc) and a few C calls, with pynput hooks and an mss grabber."""

    NAME = "darwin"
    HAS_ACTIVE_WINDOW = True
    HAS_FOCUS_EVENTS = False  # polled every FOCUS_POLL_INTERVAL s; see the module docstring
    HAS_WINDOW_TITLES = True  # needs Screen Recording, which check_environment requires
    HAS_TRAY_DETECTION = True  # the menu bar exists in every desktop session
    HAS_SECURE_INPUT_DETECTION = True
    ELEMENT_API = "ax"

    def __init__(self, cocoa: Cocoa, native: Native | None = None) -> None:
        self._cocoa = cocoa
        self._native = native if native is not None else Native()
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

    def element_lookup(
        self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
    ) -> ElementLookup | None:
        """A worker over :class:`~agent.backends.darwin.ax_elements.AxElementFinder` (AX, made on
        the worker's thread), judging windows from the window server's list; macOS has no
        accessibility switch, and the Accessibility permission it needs is the one
        :meth:`check_environment` requires."""
        from agent.backends.darwin.ax_elements import finder_factory

        return ElementLookup(on_result, finder_factory(self._cocoa.windows_of), allow=allow)

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
    return DarwinBackend(Cocoa())


__all__ = [
    "FOCUS_POLL_INTERVAL",
    "NOT_MACOS_MESSAGE",
    "PYOBJC_FIX",
    "SCREEN_IS_LOCKED",
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
