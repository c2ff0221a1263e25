"""Keyboard and pointer hooks through pynput.

Every callback does O(1) work: take the clock, build one event record, hand it
to the sink (which puts it on a bounded queue and counts drops).  No I/O, no
logging, no locks beyond the queue's.  Import this module only after the
backend has checked the environment: importing pynput without a display raises,
and pynput's X listener hangs forever without the RECORD extension.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.capture import EventSink
from agent.errors import EnvironmentProblem
from agent.events import (
    ButtonPress,
    ButtonRelease,
    KeyPress,
    KeyRelease,
    PointerMove,
    Scroll,
    now_ns,
)
from agent.keyboard.names import MODIFIER_KEYS

#: What usually keeps pynput's listeners from starting, by OS.
_LISTENER_HINT = {
    "darwin": "has this app Accessibility and Input Monitoring permission?",
    "win32": "is this an interactive desktop session?",
}.get(sys.platform, "is the X RECORD extension available?")

#: How long to wait for a listener to report ready before giving up.
START_TIMEOUT_S = 5.0
#: How long to wait for a stopped listener's thread to end.
STOP_TIMEOUT_S = 2.0


def key_fields(key: Any) -> tuple[str | None, str | None, int | None]:
    """``(char, name, vk)`` of a pynput key (``Key`` member, ``KeyCode`` or None)."""
    if key is None:
        return None, None, None
    name = getattr(key, "name", None)
    if name is not None:  # a special key: Key.enter, Key.shift ...
        code = getattr(key, "value", None)
        return None, str(name), getattr(code, "vk", None)
    return getattr(key, "char", None), None, getattr(key, "vk", None)


class PynputHooks:
    """pynput keyboard and/or mouse listeners feeding one sink.

    :param sink: called with every event; must be O(1) and never block.
    :param pointer: start the mouse listener (the pointer scope).
    :param keyboard: start the keyboard listener (the keyboard scope).
    :param after_stop: called with each listener right after ``listener.stop()``;
        a backend uses it to unblock a listener that would otherwise wait for
        the next OS event before its thread ends (pynput on X11).
    """

    def __init__(
        self,
        sink: EventSink,
        *,
        pointer: bool = True,
        keyboard: bool = True,
        after_stop: Callable[[Any], None] | None = None,
    ) -> None:
        if not (pointer or keyboard):
            msg = "input hooks need the pointer or the keyboard scope; got neither"
            raise ValueError(msg)
        self._sink = sink
        self._pointer = pointer
        self._keyboard = keyboard
        self._after_stop = after_stop
        self._held: dict[str, int] = {}
        self._listeners: list[Any] = []
        self._live = False

    # -- callbacks (hook threads: O(1), no I/O) -------------------------------------------------

    def _modifiers(self) -> tuple[str, ...]:
        return tuple(sorted(m for m, n in self._held.items() if n > 0))

    def _on_press(self, key: Any) -> None:
        if not self._live:
            return
        t = now_ns()
        char, name, vk = key_fields(key)
        mod = MODIFIER_KEYS.get(name or "")
        mods = self._modifiers()
        if mod is not None:
            self._held[mod] = self._held.get(mod, 0) + 1
        self._sink(KeyPress(t, char, name, vk, mods))

    def _on_release(self, key: Any) -> None:
        if not self._live:
            return
        t = now_ns()
        char, name, vk = key_fields(key)
        mod = MODIFIER_KEYS.get(name or "")
        if mod is not None and self._held.get(mod, 0) > 0:
            self._held[mod] -= 1
        self._sink(KeyRelease(t, char, name, vk, self._modifiers()))

    def _on_move(self, x: int, y: int) -> None:
        if self._live:
            self._sink(PointerMove(now_ns(), int(x), int(y)))

    def _on_click(self, x: int, y: int, button: Any, pressed: bool) -> None:
        if not self._live:
            return
        t = now_ns()
        name = str(getattr(button, "name", button))
        cls = ButtonPress if pressed else ButtonRelease
        self._sink(cls(t, int(x), int(y), name))

    def _on_scroll(self, x: int, y: int, dx: int, dy: int) -> None:
        if self._live:
            self._sink(Scroll(now_ns(), int(x), int(y), int(dx), int(dy)))

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start both listeners and wait until they receive events.

        :raises EnvironmentProblem: a listener died or did not become ready.
        """
        from pynput import keyboard, mouse

        self._held = {}
        self._listeners = []
        if self._keyboard:
            kb = keyboard.Listener(on_press=self._on_press, on_release=self._on_release)
            kb.name = "optin-keyboard"
            self._listeners.append(kb)
        if self._pointer:
            ms = mouse.Listener(on_move=self._on_move, on_click=self._on_click, on_scroll=self._on_scroll)
            ms.name = "optin-mouse"
            self._listeners.append(ms)
        self._live = True
        for listener in self._listeners:
            listener.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for listener in self._listeners:
            # pynput's own wait() blocks forever when the listener thread dies (no RECORD),
            # so poll its readiness flag and its liveness instead.
            while not getattr(listener, "_ready", True):
                if not listener.is_alive() or time.monotonic() > deadline:
                    self.stop()
                    msg = f"the keyboard/mouse listener did not start ({_LISTENER_HINT}; run: optin doctor)"
                    raise EnvironmentProblem(msg)
                time.sleep(0.005)

    def stop(self) -> None:
        """Stop the listeners; once this returns no event reaches the sink.

        A listener that never became ready is not asked to stop: pynput's
        ``stop()`` would wait for its readiness forever.  Its thread is a daemon
        that has died or will; the closed flag discards anything it delivers.
        """
        self._live = False
        ready = [lsn for lsn in self._listeners if getattr(lsn, "_ready", True) and lsn.is_alive()]
        for listener in ready:
            listener.stop()
            if self._after_stop is not None:
                self._after_stop(listener)
        for listener in ready:
            if listener is not threading.current_thread():
                listener.join(timeout=STOP_TIMEOUT_S)
        self._listeners = []

    def is_alive(self) -> bool:
        return self._live and all(listener.is_alive() for listener in self._listeners)
