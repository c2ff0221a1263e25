"""Keys typed into a password field or under secure input are never recorded (where the OS tells).

The OS question (:meth:`agent.backends.base.Backend.secure_input_active`) may
block, so it is asked on this module's own thread, a few times a second and at
once when the focus changes; the answer is published as one boolean that the
hook sink reads in O(1) (:attr:`SecureInputWatch.active`).

While it is True the recorder leaves every key press and release out; the
watcher emits a ``secure_input`` marker when it turns on and when it turns off
(with how many keys were left out), so a researcher sees the gap and its
length, never what was typed.  "Cannot tell" (None) keeps the last definite
answer: a slow query in the middle of a password must not unmask it.

Where the OS reports focus late (Linux: AT-SPI focus events come 5-42 ms after the click or Tab
that moves it), the watch is made with ``settle_s``: after anything that may move the focus
(:meth:`SecureInputWatch.poke`: a click, a window change, Tab, Enter, a shortcut) the focus is
*unknown* until a query that began ``settle_s`` later has answered, and key events are held
meanwhile (:meth:`SecureInputWatch.admit`): released in order when the answer is "no password
field", left out and counted when it is one, and left out too when no answer comes within
``hold_s`` (fail closed).  So the first key typed right after clicking into a password field is
judged like the others.  Without ``settle_s`` (the OS tells at once) nothing is held, and the first
keys typed after focusing a password field, before the next query (at most ``interval``
seconds), are the known gap; docs/limitations.md says so.

Where the question is dear (``settle_s``: on Linux each one is a round trip to the AT-SPI lookup
process), the watch stops asking after ``idle_s`` without a key, a click or a focus change, so an
idle desktop costs nothing.  A key whose last question began more than ``fresh_s`` ago is then
held like a key after a click, until the OS has been asked afresh: a password field that took the
focus by itself while nobody typed is caught at the first key, not ``interval`` later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from agent.capture import EventSink
from agent.events import Event, Marker, now_ns

logger = logging.getLogger(__name__)

#: Seconds between questions to the OS.
INTERVAL = 0.1
#: Longest a key is held while the focus is unknown (then it is left out: fail closed).
HOLD_S = 0.5
#: Most key events held at once (more are left out, counted).
MAX_HELD = 512
#: With ``settle_s``: no more questions after this long without a key, click or focus change.
IDLE_S = 2.0
#: With ``settle_s``: a key whose last question began longer ago than this is held until asked afresh.
FRESH_S = 0.3


class SecureInputWatch:
    """Asks ``query`` every ``interval`` seconds (and on :meth:`poke`) and publishes :attr:`active`.

    :param query: the backend's ``secure_input_active``: True, False, or None (cannot tell).
    :param sink: receives the ``secure_input`` markers.
    :param settle_s: the OS tells of a focus change this late (see the module docstring); with it,
        the watch also stops asking after ``idle_s`` without input and holds a key whose last
        question began more than ``fresh_s`` ago until it is asked afresh.
    """

    def __init__(
        self,
        query: Callable[[], bool | None],
        sink: EventSink,
        *,
        interval: float = INTERVAL,
        settle_s: float | None = None,
        hold_s: float = HOLD_S,
        idle_s: float = IDLE_S,
        fresh_s: float = FRESH_S,
    ) -> None:
        self._query = query
        self._sink = sink
        self._interval = interval
        self._settle_s = settle_s
        self._hold_s = hold_s
        self._idle_s = idle_s
        self._fresh_s = fresh_s
        self._asked_at = float("-inf")  # monotonic time the latest question began
        self._input_at = time.monotonic()  # ... and the latest key, click or focus change came
        self._gate = threading.Lock()  # admit() and the verdicts: held keys keep their order
        self._unknown_since: float | None = None  # monotonic time of the poke the focus is unknown since
        self._held: list[tuple[Event, Callable[[Event], None]]] = []
        #: Key events released after a hold, and how long the longest hold took (seconds).
        self.released = 0
        self.longest_hold_s = 0.0
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
        """The focus may have moved: ask again now (with ``settle_s``: the focus is unknown, and
        keys are held, until a query that began ``settle_s`` from now has answered)."""
        if self._settle_s is not None:
            with self._gate:
                self._input_at = time.monotonic()
                if self._unknown_since is None:
                    self._unknown_since = self._input_at
        self._wake.set()

    def admit(self, event: Event, put: Callable[[Event], None]) -> None:
        """A key event: ``put`` it now, hold it while the focus is unknown, or leave it out (a
        password field has the focus).  O(1) under a lock no I/O is done under."""
        with self._gate:
            if self._settle_s is not None:
                now = self._input_at = time.monotonic()
                if self._unknown_since is None and now - self._asked_at > self._fresh_s:
                    # not asked lately (an idle watch): a question beginning now decides this key
                    self._unknown_since = now - self._settle_s
                    self._wake.set()
            if self._unknown_since is not None:  # judged once the focus is known, whatever it was
                if len(self._held) < MAX_HELD:
                    self._held.append((event, put))
                else:
                    self.left_out()
            elif self._active:
                self.left_out()
            else:
                put(event)

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Ask once before returning (keys typed right away are judged), then keep asking."""
        self._update()
        self._thread.start()

    def stop(self) -> None:
        """Stop asking; a gap still open is closed with its marker (capture stops inside it).
        Keys still held are left out (their field was never judged)."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with self._gate:
            for _ in self._held:
                self.left_out()
            held, self._held = self._held, []
            self._unknown_since = None
            if held and not self._active:  # keys whose field was never judged: a gap like any other
                self._active = True
                self._sink(Marker(now_ns(), "secure_input", {"active": True}))
            if self._active:
                self._turn_off(at_stop=True)
        if self._settle_s is not None:
            logger.info(
                "secure input: %d keys held until the focus was known, longest hold %.0f ms",
                self.released,
                self.longest_hold_s * 1000,
            )

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # -- the watcher thread -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            since = self._unknown_since
            if since is not None and self._settle_s is not None:
                # let the focus settle first; asked again soon while it is still unknown
                self._stopping.wait(max(since + self._settle_s - time.monotonic(), 0.01))
            elif self._settle_s is not None and time.monotonic() - self._input_at > self._idle_s:
                self._wake.wait()  # idle: asked again at the next key, click or focus change
            else:
                self._wake.wait(self._interval)
            self._wake.clear()
            if not self._stopping.is_set():
                self._update()

    def _update(self) -> None:
        asked = self._asked_at = time.monotonic()
        try:
            answer = self._query()
        except Exception as exc:  # the contract says never raises; a backend bug must not stop capture
            logger.warning("the secure-input query failed (%s)", type(exc).__name__)
            answer = None
        with self._gate:
            since = self._unknown_since
            # only a definite answer to a query that began once the focus had settled decides
            settled = (
                answer is not None
                and since is not None
                and self._settle_s is not None
                and asked >= since + self._settle_s
            )
            if since is not None and answer is None and time.monotonic() - since > self._hold_s:
                self._give_up()
                return
            if answer is not None and answer != self._active:
                if answer:
                    self._active = True
                    self._sink(Marker(now_ns(), "secure_input", {"active": True}))
                else:
                    self._turn_off(at_stop=False)
            if settled:
                self._settle(asked, since)

    def _give_up(self) -> None:
        """No answer came within ``hold_s`` (the caller holds the gate): the keys held are left out
        (fail closed), as a gap with its marker pair when there were any; the next poke asks afresh."""
        held, self._held = self._held, []
        self._unknown_since = None
        if not held:
            return
        for _ in held:
            self.left_out()
        if not self._active:  # inside a password gap already: counted in it
            self._sink(Marker(now_ns(), "secure_input", {"active": True}))
            self._turn_off(at_stop=False)

    def _settle(self, asked: float, since: float | None) -> None:
        """The focus is known (the caller holds the gate): the keys held go out in order, or are
        left out under a password field."""
        held, self._held = self._held, []
        if since is not None:
            self.longest_hold_s = max(self.longest_hold_s, time.monotonic() - since)
        if self._unknown_since is not None and self._unknown_since <= asked:
            self._unknown_since = None
        for event, put in held:
            if self._active:
                self.left_out()
            else:
                put(event)
                self.released += 1

    def _turn_off(self, *, at_stop: bool) -> None:
        self._active = False
        with self._count_lock:
            left_out, self._left_out = self._left_out, 0
        detail = {"active": False, "keys_left_out": left_out} | ({"at_stop": True} if at_stop else {})
        self._sink(Marker(now_ns(), "secure_input", detail))


__all__ = ["FRESH_S", "HOLD_S", "IDLE_S", "INTERVAL", "MAX_HELD", "SecureInputWatch"]
