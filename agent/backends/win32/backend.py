"""The Windows backend without UI Automation (:class:`Win32Backend`); see :mod:`agent.backends.win32`."""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
import time

from agent.backends.base import CLIPBOARD_TIMEOUT_S, Backend, DoctorCheck, TimedRead
from agent.backends.win32.api import Api
from agent.backends.win32.constants import COMTYPES_FIX, NOT_WINDOWS_MESSAGE
from agent.backends.win32.focus import WinEventWatcher
from agent.backends.win32.interpret import idle_seconds_from_ticks, lock_state, paste_text, session_problem
from agent.capture import EventSink, Hooks
from agent.errors import EnvironmentProblem
from agent.events import WindowFocus

logger = logging.getLogger(__name__)


class Win32Backend(Backend):
    """Windows through ctypes (user32, kernel32, dwmapi), with pynput hooks and an mss grabber.

    Use :func:`make_backend`; it returns :class:`agent.backends.win32.uia.Win32UiaBackend`
    when comtypes is installed, so password fields can be detected.
    """

    NAME = "win32"
    HAS_ACTIVE_WINDOW = True
    HAS_FOCUS_EVENTS = True
    HAS_WINDOW_TITLES = True
    HAS_TRAY_DETECTION = False  # a taskbar says True; its absence does not prove there is no tray
    HAS_SECURE_INPUT_DETECTION = False

    #: Why password fields cannot be detected, and the fix (None when they can).
    secure_input_note: str | None = f"comtypes is not installed. Fix: {COMTYPES_FIX}"

    def __init__(self, api: Api | None = None) -> None:
        self._api = api if api is not None else Api()
        self._lock = threading.Lock()
        self._clipboard = TimedRead("optin-clipboard-read")

    def check_environment(self) -> None:
        if sys.platform != "win32":
            raise EnvironmentProblem(NOT_WINDOWS_MESSAGE.format(platform=sys.platform))
        problem = session_problem(self._api.session_id(), self._api.station_visible())
        if problem is not None:
            raise EnvironmentProblem(problem)

    def doctor_checks(self) -> list[DoctorCheck]:
        """The interactive desktop session, and the taskbar's notification area."""
        if sys.platform != "win32":
            return [DoctorCheck("display", NOT_WINDOWS_MESSAGE.format(platform=sys.platform), "")]
        session = session_problem(self._api.session_id(), self._api.station_visible())
        taskbar = self.tray_host_available()
        tray = (
            DoctorCheck("tray", None, "the taskbar's notification area shows optin's icon")
            if taskbar
            else DoctorCheck(
                "tray", None, "no taskbar (Shell_TrayWnd): another shell may host the icon", known=False
            )
        )
        return [DoctorCheck("display", session, "an interactive Windows desktop session"), tray]

    def active_window(self) -> WindowFocus | None:
        """The foreground window now; None if no window has the focus (e.g. the secure desktop)."""
        with self._lock:
            _, focus = self._api.read_focus()
        return focus

    def focus_watcher(self, sink: EventSink) -> Hooks:
        return WinEventWatcher(self._api, sink)

    def tray_host_available(self) -> bool | None:
        """True when the taskbar (``Shell_TrayWnd``) exists; None otherwise (another shell may host icons)."""
        return True if self._api.user32.FindWindowW("Shell_TrayWnd", None) else None

    def secure_input_active(self) -> bool | None:
        """Whether the element with the keyboard focus is a password field; None: cannot tell.

        Always None without comtypes (see :class:`agent.backends.win32.uia.Win32UiaBackend`).
        """
        return None

    def read_clipboard(self, source: str = "clipboard") -> str | None:
        """The clipboard's ``CF_UNICODETEXT`` (see :func:`paste_text`); None for ``"primary"``
        (Windows has no primary selection), on any error, or after ``CLIPBOARD_TIMEOUT_S``."""
        if source != "clipboard":
            return None
        deadline = time.monotonic() + CLIPBOARD_TIMEOUT_S
        try:
            raw = self._clipboard.call(lambda: self._api.clipboard_bytes(deadline), CLIPBOARD_TIMEOUT_S)
        except Exception as exc:  # logged by type only: never the text
            logger.debug("reading the clipboard failed (%s)", type(exc).__name__)
            return None
        return paste_text(raw)

    def idle_seconds(self) -> float | None:
        """Seconds since this session's last keyboard or mouse input (``GetLastInputInfo``)."""
        try:
            last = self._api.last_input_ticks()
            now = self._api.tick_count()  # after the last input: the difference is not negative
        except Exception as exc:
            logger.debug("GetLastInputInfo failed (%s)", type(exc).__name__)
            return None
        return None if last is None else idle_seconds_from_ticks(now, last)

    def screen_locked(self) -> bool | None:
        """True while the session is locked or the screen saver runs; see :func:`lock_state`."""
        try:
            flags = self._api.session_flags()
        except Exception as exc:
            logger.debug("WTSQuerySessionInformationW failed (%s)", type(exc).__name__)
            flags = None
        try:
            saver = self._api.screensaver_running()
        except Exception as exc:
            logger.debug("SPI_GETSCREENSAVERRUNNING failed (%s)", type(exc).__name__)
            saver = None
        return lock_state(flags, saver)


def comtypes_available() -> bool:
    """Whether comtypes can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("comtypes") is not None
    except (ImportError, ValueError):
        return False


__all__ = ["Win32Backend", "comtypes_available"]
