"""Calls whose form differs by OS, in one place, with a branch for each platform optin runs on.

Modules above :mod:`agent.backends` call these instead of ``signal``, ``fcntl`` and
friends directly, so the rest of the code reads the same on Linux, macOS and Windows.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: The signals that end optin's long-running commands; on Windows only SIGINT and SIGTERM exist.
ENDING_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)
)


@contextlib.contextmanager
def signals_held(signals: tuple[signal.Signals, ...] = ENDING_SIGNALS) -> Iterator[None]:
    """Run the Python handlers of ``signals`` that arrive inside only on leaving, in arrival order.

    For a step a handler that raises must not cut in two: start a child process and
    record it, so that whoever stops it on the way out knows it exists.  The signal
    mask is left alone (a child would inherit a blocked one); the handlers are swapped
    for a recorder instead.  Handlers only run on the main thread: elsewhere this does
    nothing.  Signals left at their default action (end the process) are not held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    saved = {}
    for sig in signals:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum in arrived:
            signal.raise_signal(signum)


__all__ = ["ENDING_SIGNALS", "signals_held"]
