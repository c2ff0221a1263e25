"""End to end on a real X display: xdotool drives real input, the real hooks record it,
the encrypted store holds exactly what was done, and no plaintext reaches the disk."""

from __future__ import annotations

import io
import itertools
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from agent.backends import select_backend
from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.capture.screen import ACTION_REASONS
from agent.control import Recorder
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    Marker,
    PointerMove,
    Scroll,
    WindowFocus,
)
from agent.store import keys
from agent.store.reader import read_session
from tests.tools import Consented

CANARY = "zq7canary"  # typed, and used as a window title


def _typed(events: list[Event]) -> str:
    return "".join(e.char or (" " if e.name == "space" else "") for e in events if isinstance(e, KeyPress))


def _record(xdisplay: VirtualDisplay, consented: Consented, script: Callable[[], object]) -> list[Event]:
    d, study = consented
    rec = Recorder(d, select_backend("xorg"), study)
    rec.start()
    try:
        script()
        time.sleep(0.6)  # let hooks and the grabber deliver
    finally:
        rec.stop()
    assert rec.state == "stopped", rec.error
    assert rec.session_id is not None
    return read_session(d, rec.session_id, keys.load_identity(d)).events


def test_real_input_is_recorded_exactly(xdisplay: VirtualDisplay, consented: Consented) -> None:
    term = xdisplay.spawn(["xterm", "-T", "e2e-recording", "-geometry", "80x20+50+50"])
    try:
        assert wait_for(lambda: bool(xdisplay.search("e2e-recording")), 10)
        wid = xdisplay.search("e2e-recording")[0]

        def script() -> None:
            xdisplay.xdotool("windowactivate", "--sync", wid)
            xdisplay.xdotool("mousemove", "--sync", "321", "234")
            xdisplay.xdotool("click", "1")
            xdisplay.xdotool("type", "--delay", "15", "hello world")
            xdisplay.xdotool("key", "ctrl+a")
            xdisplay.xdotool("click", "5")
            xdisplay.xdotool("mousemove", "--sync", "400", "300")
            xdisplay.xdotool("click", "3")

        events = _record(xdisplay, consented, script)
    finally:
        term.terminate()
        term.wait()

    kinds = [e.KIND for e in events]
    assert kinds[0] == "marker" and isinstance(events[0], Marker) and events[0].marker == "session_start"
    assert isinstance(events[-1], Marker) and events[-1].marker == "session_stop"
    assert events[-1].detail["dropped"] == 0
    # one monotonic clock: each hook thread's events are in time order, inside the session
    for family in ((PointerMove, ButtonPress, ButtonRelease, Scroll), (KeyPress,)):
        t = [e.t_ns for e in events if isinstance(e, family)]
        assert t == sorted(t)
        assert events[0].t_ns <= t[0] and t[-1] <= events[-1].t_ns
    assert events[0].detail["wall_ns"] > 1_700_000_000 * 10**9

    presses = [e for e in events if isinstance(e, ButtonPress)]
    releases = [e for e in events if isinstance(e, ButtonRelease)]
    assert [(p.x, p.y, p.button) for p in presses] == [(321, 234, "left"), (400, 300, "right")]
    assert [(r.x, r.y, r.button) for r in releases] == [(321, 234, "left"), (400, 300, "right")]
    assert any(isinstance(e, PointerMove) and (e.x, e.y) == (400, 300) for e in events)
    scrolls = [e for e in events if isinstance(e, Scroll)]
    assert [(s.dx, s.dy) for s in scrolls] == [(0, -1)]
    assert _typed(events).startswith("hello worlda")
    ctrl_a = next(e for e in events if isinstance(e, KeyPress) and e.char == "a" and e.modifiers)
    assert ctrl_a.modifiers == ("ctrl",)

    frames = sorted((e for e in events if isinstance(e, Frame)), key=lambda f: f.t_ns)
    assert frames[0].reason == "start" and len(frames) >= 2  # typing changed the screen
    assert {f.reason for f in frames} <= set(ACTION_REASONS) | {"start", "settled", "keyframe"}
    images = [Image.open(io.BytesIO(f.data)) for f in frames]
    assert all(
        image.size == (f.width, f.height) == (xdisplay.width, xdisplay.height)
        for image, f in zip(images, frames, strict=True)
    )
    pixels = [image.convert("RGB").tobytes() for image in images]
    assert all(a != b for a, b in itertools.pairwise(pixels)), "the same screen was stored twice in a row"

    focus = [e for e in events if isinstance(e, WindowFocus)]
    assert any(f.title == "e2e-recording" and f.app_class == "XTerm" for f in focus)


def test_no_plaintext_of_typed_text_or_titles_on_disk(
    xdisplay: VirtualDisplay, consented: Consented, optin_home: Path
) -> None:
    term = xdisplay.spawn(["xterm", "-T", f"title {CANARY}", "-geometry", "80x20+50+50"])
    try:
        assert wait_for(lambda: bool(xdisplay.search(f"title {CANARY}")), 10)
        wid = xdisplay.search(f"title {CANARY}")[0]

        def script() -> None:
            xdisplay.xdotool("windowactivate", "--sync", wid)
            xdisplay.xdotool("type", "--delay", "10", f"{CANARY} {CANARY}")
            xdisplay.xdotool("click", "1")

        events = _record(xdisplay, consented, script)
    finally:
        term.terminate()
        term.wait()
    assert CANARY in _typed(events)  # it was captured...
    assert any(isinstance(e, WindowFocus) and e.title and CANARY in e.title for e in events)
    needles = [CANARY.encode(), CANARY.encode("utf-16-le"), CANARY[::-1].encode()]
    scanned = 0
    for path in optin_home.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            scanned += len(blob)
            for needle in needles:
                assert needle not in blob, f"plaintext canary found in {path.relative_to(optin_home)}"
    assert scanned > 10_000  # ...and the store really was written and scanned
