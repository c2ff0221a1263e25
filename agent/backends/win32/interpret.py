"""Turning Windows API answers into optin's values: plain functions, no Windows API (tested on every OS)."""

from __future__ import annotations

import ntpath

from agent.backends.base import MAX_PASTE_CHARS
from agent.backends.win32.constants import (
    CHILDID_SELF,
    EVENT_OBJECT_NAMECHANGE,
    EVENT_SYSTEM_FOREGROUND,
    EVENT_SYSTEM_MINIMIZEEND,
    EVENT_SYSTEM_MINIMIZESTART,
    EVENT_SYSTEM_MOVESIZEEND,
    MINIMIZED_ORIGIN,
    OBJID_WINDOW,
    WTS_SESSIONSTATE_LOCK,
    WTS_SESSIONSTATE_UNLOCK,
)
from agent.events import WindowFocus


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
