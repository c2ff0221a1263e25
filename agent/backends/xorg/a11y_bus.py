"""Switching accessibility on while optin needs it, and telling whether it can work.

GTK applications always join the accessibility (AT-SPI) bus; Firefox joins only
while ``org.a11y.Status.IsEnabled`` is true (measured: within 3 s, no restart).
:func:`enable` sets that property on the session bus and returns the old value,
which :func:`restore` puts back.  :func:`typelib_present` and :func:`bus_status`
are for ``optin doctor``.  Every D-Bus call has a timeout; a connection is
opened for each use and closed after (the session bus address is read from
the environment each time, never a process-wide shared connection).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from agent.backends.xorg.connection import in_worker

logger = logging.getLogger(__name__)

BUS_NAME = "org.a11y.Bus"
BUS_PATH = "/org/a11y/bus"
STATUS_INTERFACE = "org.a11y.Status"
#: Milliseconds any one D-Bus call here may take.
CALL_TIMEOUT_MS = 1000

INSTALL_FIX = "apt-get install gir1.2-atspi-2.0 at-spi2-core"


def typelib_present() -> bool:
    """Whether PyGObject and the ``Atspi-2.0`` typelib (gir1.2-atspi-2.0) can be loaded."""
    try:
        import gi

        gi.require_version("Atspi", "2.0")
    except (ImportError, ValueError):
        return False
    return True


def _session_bus() -> Any:
    """A new connection to the session bus of ``$DBUS_SESSION_BUS_ADDRESS``.

    :raises OSError: no address, or the bus cannot be reached.
    """
    address = os.environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if not address:
        msg = "DBUS_SESSION_BUS_ADDRESS is not set"
        raise OSError(msg)
    from gi.repository import Gio, GLib

    flags = Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION

    def connect() -> Any:
        return Gio.DBusConnection.new_for_address_sync(address, flags, None, None)

    def close(late: Any) -> None:
        late.close_sync(None)

    try:  # Gio has no connect timeout: a bus that accepts and never answers would hang here
        return in_worker(connect, CALL_TIMEOUT_MS / 1000, cleanup=close)
    except GLib.Error as exc:
        raise OSError(exc.message) from None


#: (bus name, object path, interface) of the launcher's properties and of the bus daemon.
_PROPERTIES = (BUS_NAME, BUS_PATH, "org.freedesktop.DBus.Properties")
_DBUS = ("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus")


def _call(bus: Any, target: tuple[str, str, str], method: str, args: Any, reply: str | None) -> Any:
    from gi.repository import Gio, GLib

    dest, path, iface = target

    try:
        result = bus.call_sync(
            dest,
            path,
            iface,
            method,
            args,
            GLib.VariantType.new(reply) if reply else None,
            Gio.DBusCallFlags.NONE,
            CALL_TIMEOUT_MS,
            None,
        )
    except GLib.Error as exc:
        raise OSError(exc.message) from None
    return result.unpack() if result is not None else None


def _get_enabled(bus: Any) -> bool:
    from gi.repository import GLib

    args = GLib.Variant("(ss)", (STATUS_INTERFACE, "IsEnabled"))
    (value,) = _call(bus, _PROPERTIES, "Get", args, "(v)")
    return bool(value)


def _set_enabled(bus: Any, value: bool) -> None:
    from gi.repository import GLib

    args = GLib.Variant("(ssv)", (STATUS_INTERFACE, "IsEnabled", GLib.Variant("b", value)))
    _call(bus, _PROPERTIES, "Set", args, None)


def is_enabled() -> bool | None:
    """``IsEnabled`` now; None when the session bus or the launcher cannot be asked."""
    try:
        bus = _session_bus()
    except OSError:
        return None
    try:
        return _get_enabled(bus)
    except OSError:
        return None
    finally:
        bus.close_sync(None)


def enable() -> bool | None:
    """Set ``IsEnabled`` true; return the value before (None: could not; nothing changed).

    Never raises: accessibility is an extra, recording goes on without it.
    """
    try:
        bus = _session_bus()
    except OSError as exc:
        logger.info("accessibility not switched on: no session bus (%s)", type(exc).__name__)
        return None
    try:
        before = _get_enabled(bus)
        if not before:
            _set_enabled(bus, True)
    except OSError:
        logger.info("accessibility not switched on: the accessibility bus launcher did not answer")
        return None
    finally:
        bus.close_sync(None)
    return before


def restore(before: bool | None) -> None:
    """Put back what :func:`enable` found (nothing when it found nothing or it was already on)."""
    if before is None or before:
        return
    try:
        bus = _session_bus()
    except OSError:
        logger.info("accessibility setting not restored: no session bus")
        return
    try:
        _set_enabled(bus, before)
    except OSError:
        logger.info("accessibility setting not restored: the accessibility bus launcher did not answer")
    finally:
        bus.close_sync(None)


def bus_status() -> tuple[bool, str]:
    """``(reachable, what was found)``: can the accessibility bus be had on this session bus?

    Asks without starting anything: the launcher running (``NameHasOwner``) or startable on
    demand (``ListActivatableNames``).
    """
    try:
        bus = _session_bus()
    except OSError as exc:
        return False, f"no session bus ({exc})"
    try:
        from gi.repository import GLib

        (running,) = _call(bus, _DBUS, "NameHasOwner", GLib.Variant("(s)", (BUS_NAME,)), "(b)")
        if running:
            return True, f"the accessibility bus launcher ({BUS_NAME}) runs on the session bus"
        (names,) = _call(bus, _DBUS, "ListActivatableNames", None, "(as)")
        if BUS_NAME in names:
            return True, f"the accessibility bus launcher ({BUS_NAME}) starts on demand"
        return False, f"nothing provides {BUS_NAME} on the session bus (at-spi2-core not installed?)"
    except OSError as exc:
        return False, f"the session bus did not answer ({exc})"
    finally:
        bus.close_sync(None)


__all__ = ["INSTALL_FIX", "bus_status", "enable", "is_enabled", "restore", "typelib_present"]
