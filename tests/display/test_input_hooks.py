"""The real pynput hooks on X: scopes minimise at the source, stop really stops (P3)."""

from __future__ import annotations

import threading
import time

from agent.backends import select_backend
from agent.backends.virtual_display import VirtualDisplay
from agent.events import Event, KeyPress, PointerMove


def _hook_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name in ("optin-keyboard", "optin-mouse"))


def test_stop_ends_the_listener_threads_before_returning(xdisplay: VirtualDisplay) -> None:
    got: list[Event] = []
    hooks = select_backend("xorg").input_hooks(got.append)
    hooks.start()
    assert _hook_threads() == ["optin-keyboard", "optin-mouse"]
    xdisplay.xdotool("mousemove", "--sync", "10", "10")
    time.sleep(0.2)
    hooks.stop()  # on an idle display: pynput alone would wait for the next input event
    assert _hook_threads() == []
    assert not hooks.is_alive()
    before = len(got)
    xdisplay.xdotool("mousemove", "--sync", "50", "60")
    xdisplay.xdotool("type", "nothing")
    time.sleep(0.3)
    assert len(got) == before  # nothing after stop


def test_only_consented_listeners_start(xdisplay: VirtualDisplay) -> None:
    got: list[Event] = []
    hooks = select_backend("xorg").input_hooks(got.append, pointer=True, keyboard=False)
    hooks.start()
    try:
        assert _hook_threads() == ["optin-mouse"]
        xdisplay.xdotool("mousemove", "--sync", "70", "80")
        xdisplay.xdotool("type", "secret")
        time.sleep(0.3)
    finally:
        hooks.stop()
    assert any(isinstance(e, PointerMove) and (e.x, e.y) == (70, 80) for e in got)
    assert not any(isinstance(e, KeyPress) for e in got)


def test_hooks_restart_after_stop(xdisplay: VirtualDisplay) -> None:
    got: list[Event] = []
    hooks = select_backend("xorg").input_hooks(got.append, pointer=False, keyboard=True)
    for word in ("ab", "cd"):
        hooks.start()
        xdisplay.xdotool("type", word)
        time.sleep(0.3)
        hooks.stop()
    assert "".join(e.char or "" for e in got if isinstance(e, KeyPress)) == "abcd"
