"""Keys typed into a password field or under secure input are never recorded (where the OS tells).

The OS question (:meth:`agent.backends.base.Backend.secure_input_active`) may
block, so it is asked on this module's own thread, a few times a second and at
once when the focus changes; the answer is published as one boolean that the
hook sink reads in O(1) (:attr:`SecureInputWatch.active`).

While it is True the recorder leaves every key press and release out; the
watcher emits a ``secure_input`` marker when it turns on and when it turns off
(with how many keys were left out), so a researcher sees the gap and its
length, never what was typed.  "Cannot tell" (None) keeps the last definite
answer: a slow query in the middle of a password must not unmask it.  The first
keys typed after focusing a password field, before the next query (at most
``interval`` seconds), are the known gap; docs/limitations.md says so.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.capture import EventSink
from agent.events import Marker, now_ns

logger = logging.getLogger(__name__)

#: Seconds between questions to the OS.
INTERVAL = 0.1


class SecureInputWatch:
    """Asks ``query`` every ``interval`` seconds (and on :meth:`poke`) and publishes :attr:`active`.

    :param query: the backend's ``secure_input_active``: True, False, or None (cannot tell).
    :param sink: receives the ``secure_input`` markers.
    """

    def __init__(
        self, query: Callable[[], bool | None], sink: EventSink, *, interval: float = INTERVAL
    ) -> None:
        self._query = query
        self._sink = sink
        self._interval = interval
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optin-secure-input", daemon=True)
        self._active = False
        self._left_out = 0
        self._count_lock = threading.Lock()

    # -- hook threads: O(1) -------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether keys now go to a password field or secure input."""
        return self._active

    def left_out(self) -> None:
        """Count a key event left out while :attr:`active`."""
        with self._count_lock:
            self._left_out += 1

    def poke(self) -> None:
        """Ask again now (the focus changed)."""
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Ask once before returning (keys typed right away are judged), then keep asking."""
        self._update()
        self._thread.start()

    def stop(self) -> None:
        """Stop asking; a gap still open is closed with its marker (capture stops inside it)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._active:
            self._turn_off(at_stop=True)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the watcher thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stopping.is_set():
                self._update()

    def _update(self) -> None:
        try:
            answer = self._query()
        except Exception as exc:  # the contract says never raises; a backend bug must not stop capture
            logger.warning("the secure-input query failed (%s)", type(exc).__name__)
            answer = None
        if answer is None or answer == self._active:
            return
        if answer:
            self._active = True
            self._sink(Marker(now_ns(), "secure_input", {"active": True}))
            return
        self._turn_off(at_stop=False)

    def _turn_off(self, *, at_stop: bool) -> None:
        self._active = False
        with self._count_lock:
            left_out, self._left_out = self._left_out, 0
        detail = {"active": False, "keys_left_out": left_out} | ({"at_stop": True} if at_stop else {})
        self._sink(Marker(now_ns(), "secure_input", detail))


__all__ = ["INTERVAL", "SecureInputWatch"]
