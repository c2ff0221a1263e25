"""What kind of session this is, and what one short connection to its X server finds (:func:`probe`).

Connecting to a display that does not answer could block; the probe runs in a
worker thread with a timeout (:func:`~agent.backends.xorg.connection.in_worker`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import Xlib.display
from Xlib import X

from agent.backends.xorg import connection
from agent.backends.xorg.connection import close_quietly, connect_error_text

#: Why a Wayland session is refused, and the fix.
WAYLAND_MESSAGE = (
    "optin cannot record a Wayland session: pynput and mss cannot see Wayland clients. "
    "Fix: log in to an X11 (Xorg) session."
)
#: What is wrong when DISPLAY is unset, and the fix.
NO_DISPLAY_MESSAGE = (
    "no X display: DISPLAY is not set. Fix: run optin inside an X11 desktop session, "
    "or try `optin demo`, which brings its own virtual display."
)


def session_type() -> str:
    """What kind of graphical session the environment describes: ``wayland``, ``x11`` or ``none``.

    Wayland wins over DISPLAY, because XWayland sets DISPLAY too but cannot see
    native Wayland clients.
    """
    if os.environ.get("WAYLAND_DISPLAY") or os.environ.get("XDG_SESSION_TYPE", "").lower() == "wayland":
        return "wayland"
    if os.environ.get("DISPLAY"):
        return "x11"
    return "none"


@dataclass(frozen=True)
class XProbe:
    """What one short connection to an X server found out.

    :ivar display: the display name that was tried.
    :ivar error: why connecting failed (None when connected).
    :ivar has_record: the RECORD extension is present (None when not connected).
    :ivar tray_owner: some client owns ``_NET_SYSTEM_TRAY_S<screen>`` (None when not connected).
    """

    display: str
    error: str | None = None
    vendor: str | None = None
    release: int | None = None
    has_record: bool | None = None
    has_xtest: bool | None = None
    tray_owner: bool | None = None

    @property
    def connected(self) -> bool:
        return self.error is None


def _tray_atom_name(display: Xlib.display.Display) -> str:
    return f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}"


def has_tray_owner(display: Xlib.display.Display) -> bool:
    atom = display.intern_atom(_tray_atom_name(display), only_if_exists=True)
    if atom == X.NONE:
        return False
    return bool(display.get_selection_owner(atom) != X.NONE)


def probe(display: str | None = None, timeout: float | None = None) -> XProbe:
    """Connect to ``display`` (default ``$DISPLAY``), look around, disconnect.

    Never raises for an unreachable display and never takes much longer than
    ``timeout`` seconds (default :data:`~agent.backends.xorg.connection.CONNECT_TIMEOUT`);
    failures are reported in :attr:`XProbe.error`.
    """
    if timeout is None:
        timeout = connection.CONNECT_TIMEOUT
    name = display if display is not None else os.environ.get("DISPLAY", "")
    if not name:
        return XProbe(display="", error="DISPLAY is not set")

    def look() -> XProbe:
        d = connection.connect(name, timeout)
        try:
            info = d.display.info
            return XProbe(
                display=name,
                vendor=str(info.vendor),
                release=int(info.release_number),
                has_record=d.has_extension("RECORD"),
                has_xtest=d.has_extension("XTEST"),
                tray_owner=has_tray_owner(d),
            )
        finally:
            close_quietly(d)

    try:
        return connection.in_worker(look, timeout)
    except Exception as exc:  # every failure is reported, none is raised
        return XProbe(display=name, error=connect_error_text(exc))


def no_record_message(name: str) -> str:
    """What is wrong when the server on DISPLAY=``name`` lacks RECORD, and the fix."""
    return (
        f"the X server on DISPLAY={name} has no RECORD extension, which keyboard and mouse "
        'capture need. Fix: enable it (Xorg: Section "Module" Load "record"; '
        "Xvfb: +extension RECORD)."
    )


__all__ = [
    "NO_DISPLAY_MESSAGE",
    "WAYLAND_MESSAGE",
    "XProbe",
    "has_tray_owner",
    "no_record_message",
    "probe",
    "session_type",
]
