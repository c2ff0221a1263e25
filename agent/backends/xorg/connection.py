"""Connections to an X server that cannot hang: a socket preflight, a worker thread with a timeout.

python-xlib has no connect timeout and leaves its socket unclosed when a
connection fails; every connection this backend makes goes through
:func:`open_display` (or :func:`connect` inside :func:`in_worker`), which has both.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import Xlib.display
import Xlib.error
from Xlib.support import connect as xconnect

from agent.errors import EnvironmentProblem

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds to wait for an X server to accept a connection before giving up.
CONNECT_TIMEOUT = 3.0


def connect_error_text(exc: BaseException) -> str:
    if isinstance(exc, Xlib.error.DisplayConnectionError):
        reason = exc.msg.decode("utf-8", "replace") if isinstance(exc.msg, bytes) else str(exc.msg)
        return reason.strip()
    if isinstance(exc, Xlib.error.DisplayNameError):
        return "not a valid display name"
    if isinstance(exc, TimeoutError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".strip()


def in_worker(fn: Callable[[], _T], timeout: float, cleanup: Callable[[_T], None] | None = None) -> _T:
    """Run ``fn()`` in a daemon thread and wait at most ``timeout`` seconds.

    Returns ``fn``'s result or raises its exception; raises :class:`TimeoutError`
    if it did not finish.  A result that arrives after the deadline is passed to
    ``cleanup`` (e.g. to close a late connection) instead of being leaked.
    """
    lock = threading.Lock()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            value = fn()
        except BaseException as exc:  # handed to the caller below
            with lock:
                box["error"] = exc
            return
        with lock:
            if box.get("abandoned"):
                late = True
            else:
                box["value"] = value
                late = False
        if late and cleanup is not None:
            cleanup(value)

    worker = threading.Thread(target=target, name="optin-xconnect", daemon=True)
    worker.start()
    worker.join(timeout)
    with lock:
        if "error" in box:
            raise box["error"]
        if "value" in box:
            result: _T = box["value"]
            return result
        box["abandoned"] = True
    msg = f"no answer within {timeout:g} s"
    raise TimeoutError(msg)


def _preflight(name: str, timeout: float) -> None:
    """Check that something listens where python-xlib will connect, with our own sockets.

    python-xlib leaves its socket unclosed when a connection fails (a
    ResourceWarning) and has no connect timeout; this probe has both.

    :raises Xlib.error.DisplayError: bad name, or nothing listens.
    """
    _, protocol, host, dno, _ = xconnect.get_display(name)
    addresses: list[tuple[socket.AddressFamily, Any]] = []
    if protocol == "tcp" or (protocol != "unix" and host and host != "unix"):
        addresses.append((socket.AF_INET, (host, 6000 + dno)))
    else:
        if sys.platform != "win32":  # an X server's local socket is a Unix socket (none on Windows)
            path = f"/tmp/.X11-unix/X{dno}"  # noqa: S108 - the X11 socket directory is fixed
            addresses.append((socket.AF_UNIX, path if Path(path).exists() else "\0" + path))
        if not protocol and not host:  # python-xlib falls back to TCP on localhost
            addresses.append((socket.AF_INET, ("", 6000 + dno)))
    reason = "nothing listens there"
    for family, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            try:
                sock.connect(address)
            except OSError as exc:
                reason = exc.strerror or type(exc).__name__
                continue
            return
    raise Xlib.error.DisplayConnectionError(name, reason)


def connect(name: str, timeout: float) -> Xlib.display.Display:
    _preflight(name, timeout)
    return Xlib.display.Display(name)


def close_quietly(display: Any) -> None:
    try:
        display.close()
    except Exception:  # closing a dead connection may fail in many ways
        logger.debug("closing an X connection failed", exc_info=True)


def open_display(name: str, timeout: float | None = None) -> Xlib.display.Display:
    """Connect to ``name`` within ``timeout`` seconds (default :data:`CONNECT_TIMEOUT`).

    :raises EnvironmentProblem: the server refused, does not exist or did not answer.
    """
    if timeout is None:
        timeout = CONNECT_TIMEOUT
    try:
        display: Xlib.display.Display = in_worker(
            lambda: connect(name, timeout), timeout, cleanup=close_quietly
        )
    except Exception as exc:
        raise EnvironmentProblem(connect_message(name, connect_error_text(exc))) from exc
    return display


def connect_message(name: str, reason: str) -> str:
    """What is wrong when DISPLAY=``name`` cannot be reached (``reason``), and the fix."""
    return (
        f"cannot connect to the X display DISPLAY={name} ({reason}). Fix: check that the X server is "
        "running and that DISPLAY (and XAUTHORITY) are right, or try `optin demo`, which brings its "
        "own virtual display."
    )


def ignore_x_error(err: Any, request: Any) -> None:
    # Asynchronous errors (a window vanished before we changed its event mask) are expected.
    logger.debug("ignored X error %s", type(err).__name__)


__all__ = [
    "CONNECT_TIMEOUT",
    "close_quietly",
    "connect",
    "connect_error_text",
    "connect_message",
    "ignore_x_error",
    "in_worker",
    "open_display",
]
