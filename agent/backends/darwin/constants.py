"""Framework paths, documented Quartz/IOKit constants and window-list keys, and the backend's messages."""

from __future__ import annotations

#: Framework binaries; ``dlopen`` finds them in the dyld shared cache on macOS 11+.
CARBON = "/System/Library/Frameworks/Carbon.framework/Carbon"
APPLICATION_SERVICES = "/System/Library/Frameworks/ApplicationServices.framework/ApplicationServices"
CORE_GRAPHICS = "/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics"
IOKIT = "/System/Library/Frameworks/IOKit.framework/IOKit"
CORE_FOUNDATION = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"
#: libproc's proc_pidpath and proc_name are exported by libSystem.
LIBSYSTEM = "/usr/lib/libSystem.B.dylib"

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
WINDOW_NUMBER = "kCGWindowNumber"

#: Pixels of the recording per screen point, for element bounds and lookup points.  The recording's
#: coordinates are points on macOS: pynput reports pointer positions in points, the window list's
#: bounds are points, and mss grabs frames at nominal resolution (``kCGWindowImageNominalResolution``
#: in its ``IMAGE_OPTIONS``), so a frame's pixel is a point (docs/limitations.md).  Element bounds,
#: which AX reports in points, are multiplied by this to stay in the frames' pixels; were frames
#: grabbed at the backing resolution, it would be the screen's ``backingScaleFactor``.
RECORDING_PIXELS_PER_POINT = 1.0

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
