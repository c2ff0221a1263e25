"""The Windows backend: user32 for the focused window and its changes, pynput and mss for capture.

Written against the documented Win32 API and **run on Windows only by the GitHub Actions
smoke test** (.github/workflows/ci.yml, tests/platform), which this project's own CI cannot run
(docs/limitations.md).  The parts that do not touch the
OS (decoding UTF-16 buffers, turning a RECT into geometry, the session check,
which WinEvents matter) are plain functions tested on Linux.

This package module holds :func:`make_backend`; the parts live in their own
modules: :mod:`~agent.backends.win32.constants` (documented constants and
limits), :mod:`~agent.backends.win32.interpret` (the pure functions),
:mod:`~agent.backends.win32.api` (the ctypes declarations and calls),
:mod:`~agent.backends.win32.focus` (the WinEvent focus watcher),
:mod:`~agent.backends.win32.backend` (:class:`Win32Backend`),
:mod:`~agent.backends.win32.uia` (:class:`Win32UiaBackend`: password fields),
:mod:`~agent.backends.win32.uia_com` (UI Automation's COM set-up),
:mod:`~agent.backends.win32.uia_model` (the element lookup's pure half) and
:mod:`~agent.backends.win32.uia_elements` (the element lookup: the UI element at a point or
with the keyboard focus).

How it works:

* The focused window is ``GetForegroundWindow``; its title ``GetWindowTextW``
  (which never sends a message to another process, so a hung application cannot
  block us), its class ``GetClassNameW``, its process ``GetWindowThreadProcessId``
  and the process image ``QueryFullProcessImageNameW`` (only the file name is
  kept: a full path can name the user).  ``app_class`` is the executable name,
  e.g. ``firefox.exe``; a UWP app hosted by ``ApplicationFrameHost.exe`` is
  resolved to the process of its ``Windows.UI.Core.CoreWindow`` child.
* Geometry is ``DwmGetWindowAttribute(DWMWA_EXTENDED_FRAME_BOUNDS)`` (the visible
  frame, without the invisible resize borders), else ``GetWindowRect``; both in
  physical pixels because :func:`make_backend` makes the process per-monitor
  DPI aware (as mss does when it starts), so windows, pointer and frames share
  one coordinate space.  A minimised window has no geometry.
* Focus changes come from ``SetWinEventHook(..., WINEVENT_OUTOFCONTEXT)`` on a
  dedicated thread that runs a ``GetMessageW`` loop: ``EVENT_SYSTEM_FOREGROUND``,
  ``EVENT_OBJECT_NAMECHANGE`` of the foreground window (title changes), and the
  end of a move/resize or minimise.  :meth:`WinEventWatcher.stop` posts
  ``WM_QUIT`` with ``PostThreadMessageW``.  No polling.
* Password fields are detected by :mod:`agent.backends.win32.uia` (UI
  Automation through comtypes); :func:`make_backend` returns its backend when
  comtypes is installed, and this module's :class:`Win32Backend` otherwise.
* The UI element under a press or with the keyboard focus: UI Automation
  (``ElementFromPointBuildCache``, ``GetFocusedElementBuildCache``) on the element lookup's
  worker thread, with comtypes too; see :mod:`~agent.backends.win32.uia_elements`.
* Capture refuses to start outside an interactive desktop (session 0, i.e. a
  service, or a window station that is not visible).
* Pasted text is ``CF_UNICODETEXT`` from ``OpenClipboard``/``GetClipboardData``,
  read on a short-lived thread so a clipboard owner that hangs while rendering
  delayed data cannot hold the caller past ``CLIPBOARD_TIMEOUT_S``
  (:class:`TimedRead`).  ``OpenClipboard`` fails while another process has the
  clipboard open, so it is retried every :data:`CLIPBOARD_RETRY_S` seconds.
  Windows has no primary selection.
* Idle time is ``GetLastInputInfo`` against ``GetTickCount`` (both 32-bit
  milliseconds; the difference is taken modulo 2**32, so it survives the
  49.7-day wrap-around).  It covers this session's keyboard and mouse input
  only (not other sessions; injected input counts).
* "Locked" is the session's lock state from ``WTSQuerySessionInformationW(
  WTSSessionInfoEx)`` (``WTSINFOEX_LEVEL1_W.SessionFlags``; Windows 7 and Server
  2008 R2 report it reversed, and are not supported), or a running screen saver
  (``SystemParametersInfoW(SPI_GETSCREENSAVERRUNNING)``).  A display that is
  merely switched off by power management is not seen.

Window titles and clipboard text are captured content: this module never logs
them or puts them in an exception message.
"""

from __future__ import annotations

import logging

from agent.backends.base import TimedRead
from agent.backends.win32.api import Api
from agent.backends.win32.backend import Win32Backend, comtypes_available
from agent.backends.win32.constants import (
    CF_UNICODETEXT,
    CHILDID_SELF,
    CLIPBOARD_READ_LIMIT,
    COMTYPES_FIX,
    EVENT_OBJECT_NAMECHANGE,
    EVENT_SYSTEM_FOREGROUND,
    EVENT_SYSTEM_MINIMIZEEND,
    EVENT_SYSTEM_MINIMIZESTART,
    EVENT_SYSTEM_MOVESIZEEND,
    HOOKED_EVENTS,
    NOT_WINDOWS_MESSAGE,
    OBJID_WINDOW,
    WTS_SESSIONSTATE_LOCK,
    WTS_SESSIONSTATE_UNKNOWN,
    WTS_SESSIONSTATE_UNLOCK,
)
from agent.backends.win32.interpret import (
    decode_utf16,
    exe_name,
    idle_seconds_from_ticks,
    is_focus_event,
    lock_state,
    paste_text,
    rect_geometry,
    session_problem,
    window_focus_from_win32,
)
from agent.backends.win32.uia import Win32UiaBackend

logger = logging.getLogger(__name__)


def make_backend() -> Win32Backend:
    """Entry point used by :func:`agent.backends.select_backend`.

    :raises agent.errors.BackendUnavailable: not on Windows, or the Windows API cannot be loaded.
    """
    api = Api()
    api.make_dpi_aware()
    if comtypes_available():
        return Win32UiaBackend(api)
    logger.warning("password fields cannot be detected on Windows: %s", Win32Backend.secure_input_note)
    return Win32Backend(api)


__all__ = [
    "CF_UNICODETEXT",
    "CHILDID_SELF",
    "CLIPBOARD_READ_LIMIT",
    "COMTYPES_FIX",
    "EVENT_OBJECT_NAMECHANGE",
    "EVENT_SYSTEM_FOREGROUND",
    "EVENT_SYSTEM_MINIMIZEEND",
    "EVENT_SYSTEM_MINIMIZESTART",
    "EVENT_SYSTEM_MOVESIZEEND",
    "HOOKED_EVENTS",
    "NOT_WINDOWS_MESSAGE",
    "OBJID_WINDOW",
    "WTS_SESSIONSTATE_LOCK",
    "WTS_SESSIONSTATE_UNKNOWN",
    "WTS_SESSIONSTATE_UNLOCK",
    "TimedRead",
    "Win32Backend",
    "Win32UiaBackend",
    "comtypes_available",
    "decode_utf16",
    "exe_name",
    "idle_seconds_from_ticks",
    "is_focus_event",
    "lock_state",
    "make_backend",
    "paste_text",
    "rect_geometry",
    "session_problem",
    "window_focus_from_win32",
]
