"""Turning macOS answers into optin's values: plain functions, no framework calls (tested on every OS)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.backends.base import MAX_PASTE_CHARS
from agent.backends.darwin.constants import (
    K_IOHID_ACCESS_TYPE_DENIED,
    K_IOHID_ACCESS_TYPE_UNKNOWN,
    OWNER_NAME,
    OWNER_PID,
    SCREEN_IS_LOCKED,
    SETTINGS_PATH,
    TERMINAL_APPS,
    WINDOW_ALPHA,
    WINDOW_BOUNDS,
    WINDOW_LAYER,
    WINDOW_NAME,
)
from agent.events import WindowFocus


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


def _contains(window: Mapping[str, Any], at: tuple[float, float]) -> bool:
    alpha = _number(window.get(WINDOW_ALPHA))
    if alpha is not None and alpha <= 0:
        return False
    geometry = bounds_geometry(window.get(WINDOW_BOUNDS))
    if geometry is None:
        return False
    x, y, width, height = geometry
    return 0 <= at[0] - x < width and 0 <= at[1] - y < height


def pick_windows_of(
    windows: Sequence[Mapping[str, Any]], pid: int, at: tuple[float, float] | None = None
) -> list[Mapping[str, Any]]:
    """The windows of process ``pid`` an element lookup is judged by, from a window list ordered
    front to back: the first of its windows that contains point ``at`` (points; any layer: a
    menu, a popover, a sheet), then its front normal window (:func:`pick_front_window`: the
    window a menu or popover belongs to), each once; at most two, none when it has no window."""
    mine = [window for window in windows if _number(window.get(OWNER_PID)) == pid]
    picked: list[Mapping[str, Any]] = []
    if at is not None:
        for window in mine:
            if _contains(window, at):
                picked.append(window)
                break
    front = pick_front_window(mine, pid)
    if front is not None and all(front is not window for window in picked):
        picked.append(front)
    return picked


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
