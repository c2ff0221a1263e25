"""The Windows API: user32, kernel32, dwmapi, shcore and wtsapi32 through ctypes, declared with their
documented signatures.  Loads only on Windows (:class:`Api` refuses elsewhere)."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import time
from typing import Any

from agent.backends.win32.constants import (
    CF_UNICODETEXT,
    CLIPBOARD_READ_LIMIT,
    CLIPBOARD_RETRY_S,
    DPI_AWARENESS_CONTEXT_PER_MONITOR_AWARE_V2,
    DWMWA_EXTENDED_FRAME_BOUNDS,
    GA_ROOT,
    GA_ROOTOWNER,
    MAX_CLASS_NAME,
    MAX_LONG_PATH,
    NOT_WINDOWS_MESSAGE,
    PROCESS_PER_MONITOR_DPI_AWARE,
    PROCESS_QUERY_LIMITED_INFORMATION,
    SPI_GETSCREENSAVERRUNNING,
    UOI_FLAGS,
    UWP_CORE_WINDOW_CLASS,
    UWP_FRAME_HOST,
    WSF_VISIBLE,
    WTS_CURRENT_SESSION,
    WTS_SESSION_INFO_EX,
)
from agent.backends.win32.interpret import decode_utf16, exe_name, window_focus_from_win32
from agent.errors import BackendUnavailable
from agent.events import WindowFocus, now_ns

logger = logging.getLogger(__name__)


class Api:
    """user32, kernel32 and dwmapi functions, declared with their documented signatures."""

    user32: Any
    kernel32: Any
    dwmapi: Any
    shcore: Any
    wtsapi32: Any
    MSG: Any
    POINT: Any
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
        self.POINT = wintypes.POINT
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
            (user32, "GetAncestor", hwnd, [hwnd, uint]),
            (user32, "WindowFromPoint", hwnd, [wintypes.POINT]),
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

    def process_name(self, pid: int | None) -> str | None:
        """The process's executable file name (``notepad.exe``); None when it cannot be read."""
        return exe_name(self.image_path(pid))

    def root_window(self, hwnd: int) -> int | None:
        """The top-level window of window ``hwnd`` (``GetAncestor(GA_ROOT)``, which sends no
        message); None when there is none."""
        root = self.user32.GetAncestor(hwnd, GA_ROOT)
        return int(root) if root else None

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
        return int(hwnd), self.describe_window(int(hwnd), t_ns)

    def describe_window(self, hwnd: int, t_ns: int | None = None) -> WindowFocus:
        """What the focus watcher reports of top-level window ``hwnd``: title, executable, pid
        (a UWP app's own, not its frame host's) and frame.  Sends no message to another process."""
        t_ns = now_ns() if t_ns is None else t_ns
        pid = self.window_pid(hwnd)
        image = self.image_path(pid)
        if (exe_name(image) or "").lower() == UWP_FRAME_HOST:
            child = self.user32.FindWindowExW(hwnd, None, UWP_CORE_WINDOW_CLASS, None)
            child_pid = self.window_pid(child) if child else None
            if child_pid and child_pid != pid:
                pid, image = child_pid, self.image_path(child_pid)
        # Our own windows (the tray's) would answer WM_GETTEXT on our own threads: never ask them.
        title = self.window_text(hwnd) if pid != os.getpid() else None
        return window_focus_from_win32(
            t_ns,
            title=title,
            class_name=self.class_name(hwnd),
            pid=pid,
            image_path=image,
            rect=self.frame_rect(hwnd),
            minimized=bool(self.user32.IsIconic(hwnd)),
        )

    def window_at(self, x: int, y: int) -> int | None:
        """The top-level window at screen point (``x``, ``y``): ``WindowFromPoint``, then
        :meth:`root_window`; None when there is none.  ``WindowFromPoint`` sends ``WM_NCHITTEST``
        only to the calling thread's own windows (as Wine and ReactOS implement it; another
        thread's window is hit-tested by its rectangles), so a hung application cannot hold it."""
        hwnd = self.user32.WindowFromPoint(self.POINT(x, y))
        return self.root_window(int(hwnd)) if hwnd else None

    def foreground_window(self) -> int | None:
        hwnd = self.user32.GetForegroundWindow()
        return int(hwnd) if hwnd else None

    def root_owner(self, hwnd: int) -> int | None:
        """The window that owns top-level window ``hwnd`` at the end of the owner chain (a menu's or
        a dialog's main window; ``GetAncestor(GA_ROOTOWNER)``); None when there is none."""
        owner = self.user32.GetAncestor(hwnd, GA_ROOTOWNER)
        return int(owner) if owner else None


__all__ = ["Api"]
