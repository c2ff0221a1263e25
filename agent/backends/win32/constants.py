"""Documented Win32 constants (winuser.h, winnt.h, dwmapi.h, wtsapi32.h) and the backend's own limits."""

from __future__ import annotations

from agent.backends.base import MAX_PASTE_CHARS

# --- documented constants (winuser.h, winnt.h, dwmapi.h) -------------------------------------

EVENT_SYSTEM_FOREGROUND = 0x0003
EVENT_SYSTEM_MOVESIZEEND = 0x000B
EVENT_SYSTEM_MINIMIZESTART = 0x0016
EVENT_SYSTEM_MINIMIZEEND = 0x0017
EVENT_OBJECT_NAMECHANGE = 0x800C
WINEVENT_OUTOFCONTEXT = 0x0000
OBJID_WINDOW = 0
GA_ROOT = 2  # GetAncestor: the top-level window
GA_ROOTOWNER = 3  # GetAncestor: the end of the owner chain
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
