"""The Windows backend: user32 for the focused window and its changes, pynput and mss for capture.

Written against the documented Win32 API and **not run on Windows by this
project's tests or CI** (docs/limitations.md).  The parts that do not touch the
OS (decoding UTF-16 buffers, turning a RECT into geometry, the session check,
which WinEvents matter) are plain functions tested on Linux.

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
  end of a move/resize or minimise.  :meth:`_WinEventWatcher.stop` posts
  ``WM_QUIT`` with ``PostThreadMessageW``.  No polling.
* Password fields are detected by :mod:`agent.backends.win32_uia` (UI
  Automation through comtypes); :func:`make_backend` returns its backend when
  comtypes is installed, and this module's :class:`Win32Backend` otherwise.
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

import ctypes
import importlib.util
import logging
import ntpath
import os
import sys
import threading
import time
from typing import Any

from agent.backends.base import (
    CLIPBOARD_TIMEOUT_S,
    MAX_PASTE_CHARS,
    WATCHER_STOP_TIMEOUT,
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


# --- documented constants (winuser.h, winnt.h, dwmapi.h) -------------------------------------

EVENT_SYSTEM_FOREGROUND = 0x0003
EVENT_SYSTEM_MOVESIZEEND = 0x000B
EVENT_SYSTEM_MINIMIZESTART = 0x0016
EVENT_SYSTEM_MINIMIZEEND = 0x0017
EVENT_OBJECT_NAMECHANGE = 0x800C
WINEVENT_OUTOFCONTEXT = 0x0000
OBJID_WINDOW = 0
CHILDID_SELF = 0
WM_QUIT = 0x0012
WM_USER = 0x0400
PM_NOREMOVE = 0x0000
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
DWMWA_EXTENDED_FRAME_BOUNDS = 9
UOI_FLAGS = 1
WSF_VISIBLE = 0x0001
DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2 = -4
PROCESS_PER_MONITOR_DPI_AWARE = 2
#: Where Windows parks a minimised window (``GetWindowRect`` of an iconic window).
MINIMIZED_ORIGIN = -32000
CF_UNICODETEXT = 13
SPI_GETSCREENSAVERRUNNING = 0x0072
# wtsapi32.h: WTS_INFO_CLASS.WTSSessionInfoEx, WTS_CURRENT_SESSION, WTSINFOEX_LEVEL1_W.SessionFlags
WTS_SESSION_INFO_EX = 25
WTS_CURRENT_SESSION = 0xFFFFFFFF
WTS_SESSIONSTATE_LOCK = 0
WTS_SESSIONSTATE_UNLOCK = 1
WTS_SESSIONSTATE_UNKNOWN = 0xFFFFFFFF

#: Seconds between two tries to open the clipboard while another process has it open.
CLIPBOARD_RETRY_S = 0.01
#: Most bytes of ``CF_UNICODETEXT`` copied: enough UTF-16 for :data:`MAX_PASTE_CHARS` characters
#: (each at most a surrogate pair) plus one code unit, so a longer text is always seen as too long.
CLIPBOARD_READ_LIMIT = 2 * (2 * MAX_PASTE_CHARS + 1)

#: (min, max) event ranges hooked by the focus watcher.
HOOKED_EVENTS = (
    (EVENT_SYSTEM_FOREGROUND, EVENT_SYSTEM_FOREGROUND),
    (EVENT_SYSTEM_MOVESIZEEND, EVENT_SYSTEM_MOVESIZEEND),
    (EVENT_SYSTEM_MINIMIZESTART, EVENT_SYSTEM_MINIMIZEEND),
    (EVENT_OBJECT_NAMECHANGE, EVENT_OBJECT_NAMECHANGE),
)

#: Longest window class name (WNDCLASS docs) and longest Win32 path, in UTF-16 code units.
MAX_CLASS_NAME = 256
MAX_LONG_PATH = 32768

#: Seconds to wait for the focus watcher thread to install its hooks.
WATCHER_START_TIMEOUT = 5.0

#: The executable that hosts UWP apps, and the class of the app's own window inside its frame.
UWP_FRAME_HOST = "applicationframehost.exe"
UWP_CORE_WINDOW_CLASS = "Windows.UI.Core.CoreWindow"

#: What to do to get password-field detection.
COMTYPES_FIX = "pip install 'comtypes>=1.2'"

#: Why the backend refuses to run anywhere but Windows, and the fix.
NOT_WINDOWS_MESSAGE = (
    "the win32 backend needs Windows (this is sys.platform={platform!r}). "
    "Fix: on Linux use the xorg backend, on macOS the darwin backend, "
    "or set OPTIN_BACKEND=fake for a dry run without capture."
)


# --- pure logic (tested on every OS) ----------------------------------------------------------


def decode_utf16(raw: bytes, units: int | None = None) -> str:
    """Text from a UTF-16LE buffer as a ``...W`` function filled it.

    :param units: code units the function reported (its return value); None
        means up to the first NUL.  Never reads past the buffer or past a NUL.

    Surrogate pairs (emoji, rare CJK) decode to one character; an unpaired
    surrogate, which Windows allows in titles, becomes U+FFFD so the result can
    always be encoded as UTF-8 later.
    """
    limit = len(raw) // 2
    if units is not None:
        limit = max(0, min(limit, units))
    data = raw[: 2 * limit]
    for i in range(0, len(data), 2):
        if data[i] == 0 and data[i + 1] == 0:
            data = data[:i]
            break
    return data.decode("utf-16-le", "replace")


def exe_name(image_path: str | None) -> str | None:
    """The file name of a Windows image path (``C:\\...\\firefox.exe`` → ``firefox.exe``); None if empty."""
    if not image_path:
        return None
    return ntpath.basename(image_path) or None


def rect_geometry(
    rect: tuple[int, int, int, int] | None, *, minimized: bool = False
) -> tuple[int, int, int, int] | None:
    """``(x, y, width, height)`` from a RECT ``(left, top, right, bottom)``.

    None when the window is minimised (Windows parks it at -32000, -32000), when
    there is no rectangle, or when it is empty.
    """
    if rect is None or minimized:
        return None
    left, top, right, bottom = (int(v) for v in rect)
    if left <= MINIMIZED_ORIGIN and top <= MINIMIZED_ORIGIN:
        return None
    width, height = right - left, bottom - top
    if width <= 0 or height <= 0:
        return None
    return left, top, width, height


def window_focus_from_win32(
    t_ns: int,
    *,
    title: str | None,
    class_name: str | None,
    pid: int | None,
    image_path: str | None,
    rect: tuple[int, int, int, int] | None,
    minimized: bool = False,
) -> WindowFocus:
    """A :class:`WindowFocus` from what user32/kernel32 answered about the foreground window.

    ``app_class`` is the executable's file name (the stable identity of the
    application), else the window class name.  A pid of 0 (the idle process,
    or the call failed) becomes None.
    """
    geometry = rect_geometry(rect, minimized=minimized)
    x, y, width, height = geometry if geometry is not None else (None, None, None, None)
    return WindowFocus(
        t_ns=t_ns,
        title=title,
        app_class=exe_name(image_path) or class_name or None,
        pid=pid or None,
        x=x,
        y=y,
        width=width,
        height=height,
    )


def is_focus_event(
    event: int, hwnd: int | None, id_object: int, id_child: int, foreground: int | None
) -> bool:
    """Whether a WinEvent may change what the focus watcher reports.

    A new foreground window always does; a name change only when it is the
    foreground window's own title (``OBJID_WINDOW``/``CHILDID_SELF``), not one of
    the many controls that rename themselves; a move/resize or minimise only
    for the foreground window.
    """
    if event == EVENT_SYSTEM_FOREGROUND:
        return True
    if not hwnd or hwnd != foreground:
        return False
    if event == EVENT_OBJECT_NAMECHANGE:
        return id_object == OBJID_WINDOW and id_child == CHILDID_SELF
    return event in (EVENT_SYSTEM_MOVESIZEEND, EVENT_SYSTEM_MINIMIZESTART, EVENT_SYSTEM_MINIMIZEEND)


def paste_text(raw: bytes | None) -> str | None:
    """The pasted text from a copy of ``CF_UNICODETEXT`` (UTF-16LE, NUL-terminated, at most
    :data:`CLIPBOARD_READ_LIMIT` bytes); None when there is none, it is empty, or it is longer
    than :data:`MAX_PASTE_CHARS` characters (a cut-off copy always is)."""
    if raw is None:
        return None
    text = decode_utf16(raw)
    if not text or len(text) > MAX_PASTE_CHARS:
        return None
    return text


def idle_seconds_from_ticks(now_ms: int, last_input_ms: int) -> float:
    """Seconds since the last input from ``GetTickCount()`` and ``LASTINPUTINFO.dwTime``.

    Both are 32-bit millisecond counters that wrap every 49.7 days; their
    difference modulo 2**32 is right across a wrap.  A last input that looks
    later than now (it happened between the two calls) is 0.
    """
    elapsed = (int(now_ms) - int(last_input_ms)) & 0xFFFFFFFF
    if elapsed >= 0x80000000:  # "negative": input arrived after the tick count was read
        return 0.0
    return elapsed / 1000.0


def lock_state(session_flags: int | None, screensaver_running: bool | None) -> bool | None:
    """Whether the screen is locked or blanked, from what Windows answered (None: cannot tell).

    :param session_flags: ``WTSINFOEX_LEVEL1_W.SessionFlags`` of this session
        (``WTS_SESSIONSTATE_LOCK``, ``..._UNLOCK`` or ``..._UNKNOWN``, which may come
        signed: -1); None when the query failed.
    :param screensaver_running: ``SPI_GETSCREENSAVERRUNNING``; None when the query failed.
    """
    if screensaver_running:
        return True
    flags = None if session_flags is None else int(session_flags) & 0xFFFFFFFF
    if flags == WTS_SESSIONSTATE_LOCK:
        return True
    if flags == WTS_SESSIONSTATE_UNLOCK:
        return False
    return None


def session_problem(session_id: int | None, station_visible: bool | None) -> str | None:
    """What is wrong with this logon session for capture (None: nothing, or cannot tell).

    :param session_id: ``ProcessIdToSessionId`` of this process (0 is the
        services session, which has no desktop a user sees).
    :param station_visible: the ``WSF_VISIBLE`` flag of this process's window station.
    """
    if session_id == 0:
        return (
            "optin runs in session 0 (as a Windows service), where no user's desktop, keyboard or "
            "screen can be seen. Fix: start optin from the signed-in user's desktop (Start menu, "
            "a terminal, or a logon task that runs only when the user is logged on)."
        )
    if station_visible is False:
        return (
            "optin runs in a non-interactive window station (a service or scheduled task without "
            "the desktop), where no user's desktop can be seen. Fix: start optin from the "
            "signed-in user's desktop."
        )
    return None


# --- the Windows API ------------------------------------------------------------------------


class _Api:
    """user32, kernel32 and dwmapi functions, declared with their documented signatures."""

    user32: Any
    kernel32: Any
    dwmapi: Any
    shcore: Any
    wtsapi32: Any
    MSG: Any
    RECT: Any
    DWORD: Any
    BOOL: Any
    WINEVENTPROC: Any
    USEROBJECTFLAGS: Any
    LASTINPUTINFO: Any
    WTSINFOEXW: Any

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise BackendUnavailable(NOT_WINDOWS_MESSAGE.format(platform=sys.platform))
        try:
            self._load()
        except (AttributeError, OSError) as exc:
            msg = (
                f"the win32 backend cannot load the Windows API ({type(exc).__name__}: {exc}). "
                "Fix: run optin on Windows 10 or later, "
                "or set OPTIN_BACKEND=fake for a dry run without capture."
            )
            raise BackendUnavailable(msg) from exc

    def _load(self) -> None:
        if sys.platform != "win32":  # for mypy: everything below is Windows-only
            return
        from ctypes import wintypes

        self.MSG = wintypes.MSG
        self.RECT = wintypes.RECT
        self.DWORD = wintypes.DWORD

        class USEROBJECTFLAGS(ctypes.Structure):
            _fields_ = [
                ("fInherit", wintypes.BOOL),
                ("fReserved", wintypes.BOOL),
                ("dwFlags", wintypes.DWORD),
            ]

        self.USEROBJECTFLAGS = USEROBJECTFLAGS
        self.BOOL = wintypes.BOOL

        class LASTINPUTINFO(ctypes.Structure):
            _fields_ = [("cbSize", wintypes.UINT), ("dwTime", wintypes.DWORD)]

        class WTSINFOEX_LEVEL1_W(ctypes.Structure):
            _fields_ = [
                ("SessionId", wintypes.ULONG),
                ("SessionState", ctypes.c_int),
                ("SessionFlags", wintypes.LONG),
                ("WinStationName", wintypes.WCHAR * 33),  # WINSTATIONNAME_LENGTH + 1
                ("UserName", wintypes.WCHAR * 21),  # USERNAME_LENGTH + 1
                ("DomainName", wintypes.WCHAR * 18),  # DOMAIN_LENGTH + 1
                ("LogonTime", wintypes.LARGE_INTEGER),
                ("ConnectTime", wintypes.LARGE_INTEGER),
                ("DisconnectTime", wintypes.LARGE_INTEGER),
                ("LastInputTime", wintypes.LARGE_INTEGER),
                ("CurrentTime", wintypes.LARGE_INTEGER),
                ("IncomingBytes", wintypes.DWORD),
                ("OutgoingBytes", wintypes.DWORD),
                ("IncomingFrames", wintypes.DWORD),
                ("OutgoingFrames", wintypes.DWORD),
                ("IncomingCompressedBytes", wintypes.DWORD),
                ("OutgoingCompressedBytes", wintypes.DWORD),
            ]

        class WTSINFOEX_LEVEL_W(ctypes.Union):
            _fields_ = [("WTSInfoExLevel1", WTSINFOEX_LEVEL1_W)]

        class WTSINFOEXW(ctypes.Structure):
            _fields_ = [("Level", wintypes.DWORD), ("Data", WTSINFOEX_LEVEL_W)]

        self.LASTINPUTINFO = LASTINPUTINFO
        self.WTSINFOEXW = WTSINFOEXW
        self.WINEVENTPROC = ctypes.WINFUNCTYPE(
            None,
            wintypes.HANDLE,
            wintypes.DWORD,
            wintypes.HWND,
            wintypes.LONG,
            wintypes.LONG,
            wintypes.DWORD,
            wintypes.DWORD,
        )
        user32 = ctypes.WinDLL("user32", use_last_error=True)
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        hwnd, dword, uint, boolean = wintypes.HWND, wintypes.DWORD, wintypes.UINT, wintypes.BOOL
        msg_p = ctypes.POINTER(wintypes.MSG)
        protos: list[tuple[Any, str, Any, list[Any]]] = [
            (user32, "GetForegroundWindow", hwnd, []),
            (user32, "GetWindowTextLengthW", ctypes.c_int, [hwnd]),
            (user32, "GetWindowTextW", ctypes.c_int, [hwnd, ctypes.c_void_p, ctypes.c_int]),
            (user32, "GetClassNameW", ctypes.c_int, [hwnd, ctypes.c_void_p, ctypes.c_int]),
            (user32, "GetWindowRect", boolean, [hwnd, ctypes.POINTER(wintypes.RECT)]),
            (user32, "IsIconic", boolean, [hwnd]),
            (user32, "GetWindowThreadProcessId", dword, [hwnd, ctypes.POINTER(dword)]),
            (user32, "FindWindowW", hwnd, [wintypes.LPCWSTR, wintypes.LPCWSTR]),
            (user32, "FindWindowExW", hwnd, [hwnd, hwnd, wintypes.LPCWSTR, wintypes.LPCWSTR]),
            (
                user32,
                "SetWinEventHook",
                wintypes.HANDLE,
                [dword, dword, wintypes.HMODULE, self.WINEVENTPROC, dword, dword, dword],
            ),
            (user32, "UnhookWinEvent", boolean, [wintypes.HANDLE]),
            (user32, "GetMessageW", boolean, [msg_p, hwnd, uint, uint]),
            (user32, "PeekMessageW", boolean, [msg_p, hwnd, uint, uint, uint]),
            (user32, "TranslateMessage", boolean, [msg_p]),
            (user32, "DispatchMessageW", ctypes.c_ssize_t, [msg_p]),
            (user32, "PostThreadMessageW", boolean, [dword, uint, wintypes.WPARAM, wintypes.LPARAM]),
            (user32, "GetProcessWindowStation", wintypes.HANDLE, []),
            (
                user32,
                "GetUserObjectInformationW",
                boolean,
                [wintypes.HANDLE, ctypes.c_int, ctypes.c_void_p, dword, ctypes.POINTER(dword)],
            ),
            (kernel32, "GetCurrentThreadId", dword, []),
            (kernel32, "GetCurrentProcessId", dword, []),
            (kernel32, "ProcessIdToSessionId", boolean, [dword, ctypes.POINTER(dword)]),
            (kernel32, "OpenProcess", wintypes.HANDLE, [dword, boolean, dword]),
            (
                kernel32,
                "QueryFullProcessImageNameW",
                boolean,
                [wintypes.HANDLE, dword, ctypes.c_void_p, ctypes.POINTER(dword)],
            ),
            (kernel32, "CloseHandle", boolean, [wintypes.HANDLE]),
            (user32, "OpenClipboard", boolean, [hwnd]),
            (user32, "CloseClipboard", boolean, []),
            (user32, "IsClipboardFormatAvailable", boolean, [uint]),
            (user32, "GetClipboardData", wintypes.HANDLE, [uint]),
            (kernel32, "GlobalLock", ctypes.c_void_p, [wintypes.HGLOBAL]),
            (kernel32, "GlobalUnlock", boolean, [wintypes.HGLOBAL]),
            (kernel32, "GlobalSize", ctypes.c_size_t, [wintypes.HGLOBAL]),
            (user32, "GetLastInputInfo", boolean, [ctypes.POINTER(LASTINPUTINFO)]),
            (kernel32, "GetTickCount", dword, []),
            (user32, "SystemParametersInfoW", boolean, [uint, uint, ctypes.c_void_p, uint]),
        ]
        for dll, name, restype, argtypes in protos:
            fn = getattr(dll, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self.user32, self.kernel32 = user32, kernel32
        try:  # Windows 10 1703+
            user32.SetProcessDpiAwarenessContext.restype = boolean
            user32.SetProcessDpiAwarenessContext.argtypes = [wintypes.HANDLE]
        except AttributeError:
            logger.debug("SetProcessDpiAwarenessContext is not available")
        try:
            self.dwmapi = ctypes.WinDLL("dwmapi")
            self.dwmapi.DwmGetWindowAttribute.restype = ctypes.c_long  # HRESULT, checked by hand
            self.dwmapi.DwmGetWindowAttribute.argtypes = [hwnd, dword, ctypes.c_void_p, dword]
        except (AttributeError, OSError):
            self.dwmapi = None
        try:
            self.shcore = ctypes.WinDLL("shcore")  # Windows 8.1+
        except OSError:
            self.shcore = None
        try:
            wtsapi32 = ctypes.WinDLL("wtsapi32")
            wtsapi32.WTSQuerySessionInformationW.restype = boolean
            wtsapi32.WTSQuerySessionInformationW.argtypes = [
                wintypes.HANDLE,
                dword,
                ctypes.c_int,
                ctypes.POINTER(ctypes.c_void_p),
                ctypes.POINTER(dword),
            ]
            wtsapi32.WTSFreeMemory.restype = None
            wtsapi32.WTSFreeMemory.argtypes = [ctypes.c_void_p]
            self.wtsapi32 = wtsapi32
        except (AttributeError, OSError):
            self.wtsapi32 = None

    # small wrappers ------------------------------------------------------------------------

    def window_text(self, hwnd: int) -> str:
        length = int(self.user32.GetWindowTextLengthW(hwnd))
        if length <= 0:
            return ""
        buf = (ctypes.c_uint16 * (length + 1))()
        copied = int(self.user32.GetWindowTextW(hwnd, buf, length + 1))
        return decode_utf16(bytes(buf), copied)

    def class_name(self, hwnd: int) -> str | None:
        buf = (ctypes.c_uint16 * MAX_CLASS_NAME)()
        copied = int(self.user32.GetClassNameW(hwnd, buf, MAX_CLASS_NAME))
        return decode_utf16(bytes(buf), copied) if copied > 0 else None

    def window_pid(self, hwnd: int) -> int | None:
        pid = self.DWORD(0)
        self.user32.GetWindowThreadProcessId(hwnd, ctypes.byref(pid))
        return int(pid.value) or None

    def image_path(self, pid: int | None) -> str | None:
        """The process's executable path; None when access is denied (e.g. protected processes)."""
        if not pid:
            return None
        handle = self.kernel32.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:
            return None
        try:
            buf = (ctypes.c_uint16 * MAX_LONG_PATH)()
            size = self.DWORD(MAX_LONG_PATH)
            if not self.kernel32.QueryFullProcessImageNameW(handle, 0, buf, ctypes.byref(size)):
                return None
            return decode_utf16(bytes(buf), int(size.value))
        finally:
            self.kernel32.CloseHandle(handle)

    def frame_rect(self, hwnd: int) -> tuple[int, int, int, int] | None:
        rect = self.RECT()
        if self.dwmapi is not None:
            hr = self.dwmapi.DwmGetWindowAttribute(
                hwnd, DWMWA_EXTENDED_FRAME_BOUNDS, ctypes.byref(rect), ctypes.sizeof(rect)
            )
            if hr == 0:
                return int(rect.left), int(rect.top), int(rect.right), int(rect.bottom)
        if self.user32.GetWindowRect(hwnd, ctypes.byref(rect)):
            return int(rect.left), int(rect.top), int(rect.right), int(rect.bottom)
        return None

    def session_id(self) -> int | None:
        sid = self.DWORD(0)
        if not self.kernel32.ProcessIdToSessionId(self.kernel32.GetCurrentProcessId(), ctypes.byref(sid)):
            return None
        return int(sid.value)

    def station_visible(self) -> bool | None:
        station = self.user32.GetProcessWindowStation()
        if not station:
            return None
        flags = self.USEROBJECTFLAGS()
        needed = self.DWORD(0)
        if not self.user32.GetUserObjectInformationW(
            station, UOI_FLAGS, ctypes.byref(flags), ctypes.sizeof(flags), ctypes.byref(needed)
        ):
            return None
        return bool(flags.dwFlags & WSF_VISIBLE)

    def clipboard_bytes(self, deadline: float) -> bytes | None:
        """A copy of the clipboard's ``CF_UNICODETEXT`` (at most :data:`CLIPBOARD_READ_LIMIT` bytes);
        None when there is no text or the clipboard stayed open elsewhere until ``deadline``
        (``time.monotonic()``).  Runs on a :class:`TimedRead` thread: ``GetClipboardData`` can
        wait for the owner to render delayed data."""
        while not self.user32.OpenClipboard(None):
            if time.monotonic() >= deadline:
                return None
            time.sleep(CLIPBOARD_RETRY_S)
        try:
            if not self.user32.IsClipboardFormatAvailable(CF_UNICODETEXT):
                return None
            handle = self.user32.GetClipboardData(CF_UNICODETEXT)
            if not handle:
                return None
            size = min(int(self.kernel32.GlobalSize(handle)), CLIPBOARD_READ_LIMIT)
            pointer = self.kernel32.GlobalLock(handle)
            if not pointer:
                return None
            try:
                return ctypes.string_at(pointer, size)
            finally:
                self.kernel32.GlobalUnlock(handle)
        finally:
            self.user32.CloseClipboard()

    def last_input_ticks(self) -> int | None:
        """``LASTINPUTINFO.dwTime``: the tick count at this session's last input; None on failure."""
        info = self.LASTINPUTINFO()
        info.cbSize = ctypes.sizeof(info)
        if not self.user32.GetLastInputInfo(ctypes.byref(info)):
            return None
        return int(info.dwTime)

    def tick_count(self) -> int:
        return int(self.kernel32.GetTickCount())

    def session_flags(self) -> int | None:
        """``WTSINFOEX_LEVEL1_W.SessionFlags`` of this session; None when it cannot be asked."""
        if self.wtsapi32 is None:
            return None
        buffer = ctypes.c_void_p()
        size = self.DWORD(0)
        if not self.wtsapi32.WTSQuerySessionInformationW(
            None, WTS_CURRENT_SESSION, WTS_SESSION_INFO_EX, ctypes.byref(buffer), ctypes.byref(size)
        ):
            return None
        try:
            if not buffer.value or size.value < ctypes.sizeof(self.WTSINFOEXW):
                return None
            info = ctypes.cast(buffer, ctypes.POINTER(self.WTSINFOEXW)).contents
            if int(info.Level) != 1:
                return None
            return int(info.Data.WTSInfoExLevel1.SessionFlags)
        finally:
            self.wtsapi32.WTSFreeMemory(buffer)

    def screensaver_running(self) -> bool | None:
        running = self.BOOL(0)
        if not self.user32.SystemParametersInfoW(SPI_GETSCREENSAVERRUNNING, 0, ctypes.byref(running), 0):
            return None
        return bool(running.value)

    def make_dpi_aware(self) -> None:
        """Per-monitor DPI awareness, best effort (it fails harmlessly when already set)."""
        fn = getattr(self.user32, "SetProcessDpiAwarenessContext", None)
        if fn is not None and fn(DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2):
            return
        if self.shcore is not None:
            self.shcore.SetProcessDpiAwareness(PROCESS_PER_MONITOR_DPI_AWARE)

    def read_focus(self) -> tuple[int | None, WindowFocus | None]:
        """``(hwnd, focus)`` of the foreground window; both None when no window has the focus."""
        t_ns = now_ns()
        hwnd = self.user32.GetForegroundWindow()
        if not hwnd:
            return None, None
        pid = self.window_pid(hwnd)
        image = self.image_path(pid)
        if (exe_name(image) or "").lower() == UWP_FRAME_HOST:
            child = self.user32.FindWindowExW(hwnd, None, UWP_CORE_WINDOW_CLASS, None)
            child_pid = self.window_pid(child) if child else None
            if child_pid and child_pid != pid:
                pid, image = child_pid, self.image_path(child_pid)
        # Our own windows (the tray's) would answer WM_GETTEXT on our own threads: never ask them.
        title = self.window_text(hwnd) if pid != os.getpid() else None
        focus = window_focus_from_win32(
            t_ns,
            title=title,
            class_name=self.class_name(hwnd),
            pid=pid,
            image_path=image,
            rect=self.frame_rect(hwnd),
            minimized=bool(self.user32.IsIconic(hwnd)),
        )
        return int(hwnd), focus


# --- the focus watcher ----------------------------------------------------------------------


class _WinEventWatcher:
    """Emits :class:`WindowFocus` when the foreground window, its title or its frame changes.

    Owns the ``optin-focus`` thread: it installs the WinEvent hooks, emits the
    current window, and runs the message loop that delivers the hooks'
    callbacks, until :meth:`stop` posts ``WM_QUIT`` to it.
    """

    def __init__(self, api: _Api, sink: EventSink) -> None:
        self._api = api
        self._emitter = FocusEmitter(sink)
        self._stopping = self._emitter.stopping
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._error: str | None = None
        self._proc: Any = None  # the ctypes callback: must live as long as the hooks

    def start(self) -> None:
        """Install the hooks on a new thread and emit the current window before returning.

        :raises EnvironmentProblem: the hooks could not be installed.
        """
        if self.is_alive():
            return
        self._emitter.reset()
        self._ready.clear()
        self._error, self._thread_id = None, None
        thread = threading.Thread(target=self._run, name="optin-focus", daemon=True)
        self._thread = thread
        thread.start()
        if not self._ready.wait(WATCHER_START_TIMEOUT):
            self.stop()
            msg = (
                f"the Windows focus watcher did not start within {WATCHER_START_TIMEOUT:g} s. "
                "Fix: restart optin; if it happens again, run `optin doctor` and report it."
            )
            raise EnvironmentProblem(msg)
        if self._error is not None:
            thread.join(WATCHER_STOP_TIMEOUT)
            self._thread = None
            raise EnvironmentProblem(self._error)

    def stop(self) -> None:
        """Stop watching; returns promptly, after which no event is delivered."""
        self._emitter.stop()
        thread, thread_id = self._thread, self._thread_id
        if thread_id is not None and not self._api.user32.PostThreadMessageW(thread_id, WM_QUIT, 0, 0):
            logger.debug("could not post WM_QUIT to the focus watcher (already gone?)")
        if thread is not None and join_watcher(thread):
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # on the watcher thread ------------------------------------------------------------------

    def _run(self) -> None:
        api = self._api
        hooks: list[int] = []
        try:
            msg = api.MSG()
            # Any user32 message call creates this thread's queue, so PostThreadMessageW can reach it.
            api.user32.PeekMessageW(ctypes.byref(msg), None, WM_USER, WM_USER, PM_NOREMOVE)
            self._thread_id = int(api.kernel32.GetCurrentThreadId())
            self._proc = api.WINEVENTPROC(self._on_event)
            for low, high in HOOKED_EVENTS:
                hook = api.user32.SetWinEventHook(low, high, None, self._proc, 0, 0, WINEVENT_OUTOFCONTEXT)
                if not hook:
                    self._error = (
                        f"SetWinEventHook failed for event 0x{low:04X}; optin cannot follow the focused "
                        "window. Fix: run optin in the signed-in user's desktop session."
                    )
                    return
                hooks.append(hook)
            self._refresh()  # the initial event, delivered before start() returns
            self._ready.set()
            while not self._stopping.is_set():
                got = api.user32.GetMessageW(ctypes.byref(msg), None, 0, 0)
                if got in (0, -1):  # WM_QUIT, or an error
                    break
                api.user32.TranslateMessage(ctypes.byref(msg))
                api.user32.DispatchMessageW(ctypes.byref(msg))
        except Exception as exc:  # logged by type only: a message could carry captured content
            logger.error("focus watcher stopped by an unexpected %s", type(exc).__name__)
            if self._error is None and not self._ready.is_set():
                self._error = f"the Windows focus watcher failed to start ({type(exc).__name__})."
        finally:
            for hook in hooks:
                api.user32.UnhookWinEvent(hook)
            self._ready.set()

    def _on_event(  # noqa: PLR0917 - the documented WinEventProc signature
        self, hook: Any, event: int, hwnd: Any, id_object: int, id_child: int, thread: int, time_ms: int
    ) -> None:
        try:
            if self._stopping.is_set():
                return
            foreground = self._api.user32.GetForegroundWindow()
            if is_focus_event(event, hwnd, id_object, id_child, foreground):
                self._refresh()
        except Exception as exc:  # never let an exception escape into ctypes (it prints it)
            logger.error("focus watcher callback failed with %s", type(exc).__name__)

    def _refresh(self) -> None:
        _, focus = self._api.read_focus()
        self._emitter.emit(focus)


# --- the backend ----------------------------------------------------------------------------


class Win32Backend(Backend):
    """Windows through ctypes (user32, kernel32, dwmapi), with pynput hooks and an mss grabber.

    Use :func:`make_backend`; it returns :class:`agent.backends.win32_uia.Win32UiaBackend`
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

    def __init__(self, api: _Api | None = None) -> None:
        self._api = api if api is not None else _Api()
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
        return _WinEventWatcher(self._api, sink)

    def tray_host_available(self) -> bool | None:
        """True when the taskbar (``Shell_TrayWnd``) exists; None otherwise (another shell may host icons)."""
        return True if self._api.user32.FindWindowW("Shell_TrayWnd", None) else None

    def secure_input_active(self) -> bool | None:
        """Whether the element with the keyboard focus is a password field; None: cannot tell.

        Always None without comtypes (see :class:`agent.backends.win32_uia.Win32UiaBackend`).
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


def make_backend() -> Win32Backend:
    """Entry point used by :func:`agent.backends.select_backend`.

    :raises agent.errors.BackendUnavailable: not on Windows, or the Windows API cannot be loaded.
    """
    api = _Api()
    api.make_dpi_aware()
    if comtypes_available():
        from agent.backends.win32_uia import Win32UiaBackend  # imports this module: not at the top

        return Win32UiaBackend(api)
    logger.warning("password fields cannot be detected on Windows: %s", Win32Backend.secure_input_note)
    return Win32Backend(api)


__all__ = [
    "COMTYPES_FIX",
    "NOT_WINDOWS_MESSAGE",
    "TimedRead",
    "Win32Backend",
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
