"""The screen watcher on X11 DAMAGE, on a real X server: a still screen costs no grab, a change
costs a grab of where it changed, the kept frame is exact, and anything odd means polling.

Each test runs a real :class:`ScreenWatch` with a real :class:`MssGrabber` and a real
:class:`DamageChanges` on the private desktop (the ``xdisplay`` fixture); changes are made with
xdotool, xterm and python-xlib windows.  "Exact" is checked against a fresh whole grab with mss,
byte for byte, waiting (bounded) until the watcher has caught up.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import mss
import pytest
import Xlib.error
from Xlib import Xatom
from Xlib import display as xlib_display
from Xlib.ext import damage

from agent.backends.virtual_display import VirtualDisplay, stop_process
from agent.backends.xorg.damage import DamageChanges, DamageUnavailable, fix_error_classes
from agent.capture.screen import MssGrabber, ScreenWatch
from agent.events import Event, Frame, now_ns
from tests.display.conftest import need_tools
from tests.tools import wait_until

pytestmark = pytest.mark.display


class BoxGrabber(MssGrabber):
    """The real mss grabber, remembering the size of every part it grabbed."""

    def __init__(self, display: str | None = None) -> None:
        super().__init__(display)
        self.boxes: list[tuple[int, int]] = []

    def grab_box(self, left: int, top: int, width: int, height: int) -> bytes | bytearray:
        self.boxes.append((width, height))
        return super().grab_box(left, top, width, height)


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    @property
    def frames(self) -> list[Frame]:
        return [e for e in self.events if isinstance(e, Frame)]


@contextmanager
def watching(display: str, **kwargs: Any) -> Iterator[tuple[ScreenWatch, BoxGrabber, DamageChanges]]:
    grabber = BoxGrabber(display)
    changes = DamageChanges(display)
    sink = Sink()
    watch = ScreenWatch(grabber, sink, changes=changes, **kwargs)
    watch.start()
    try:
        assert wait_until(lambda: sink.frames, 10.0), "no start frame within 10 s"
        yield watch, grabber, changes
    finally:
        watch.stop()
    assert not changes.is_alive()


def whole_grab(display: str) -> bytes:
    with mss.MSS(display=display) as m:
        return bytes(m.grab(m.monitors[0]).raw)


def kept_frame(watch: ScreenWatch) -> bytes:
    shot = watch._current
    assert shot is not None
    return bytes(shot.pixels)


def frame_is_exact(watch: ScreenWatch, display: str, timeout: float = 10.0) -> bool:
    """Whether the kept frame equals a fresh whole grab (waiting up to ``timeout`` s for the watcher;
    the screen must be still by then)."""
    return bool(wait_until(lambda: kept_frame(watch) == whole_grab(display), timeout, 0.1))


@contextmanager
def xterm(vd: VirtualDisplay, geometry: str = "40x8+200+200") -> Iterator[str]:
    """An xterm with a unique title, focused: yields its title."""
    title = f"damage-{uuid.uuid4().hex[:8]}"
    proc = vd.spawn(["xterm", "-T", title, "-geometry", geometry, "+bc", "-e", "cat"])
    try:
        assert wait_until(lambda: vd.search(title), 10.0), "xterm did not map"
        vd.xdotool("search", "--sync", "--name", f"^{title}$", "windowactivate", "--sync")
        yield title
    finally:
        stop_process(proc)


def test_a_still_screen_takes_no_grab(xdisplay: VirtualDisplay) -> None:
    with xterm(xdisplay), watching(xdisplay.display) as (watch, _, changes):
        assert watch.reports_changes
        assert frame_is_exact(watch, xdisplay.display)  # still now
        grabs = watch.grabs
        time.sleep(3.0)
        assert watch.grabs == grabs, f"{watch.grabs - grabs} grabs of a still screen"
        assert changes.is_alive() and watch.fallbacks == 0


def test_a_typed_key_grabs_a_small_region_and_the_frame_is_exact(xdisplay: VirtualDisplay) -> None:
    with xterm(xdisplay) as title, watching(xdisplay.display) as (watch, grabber, _):
        assert frame_is_exact(watch, xdisplay.display)
        regions = watch.region_grabs
        grabber.boxes.clear()
        watch.action(now_ns(), "key")
        xdisplay.xdotool("search", "--name", f"^{title}$", "windowactivate", "--sync", "type", "x")
        assert wait_until(lambda: watch.region_grabs > regions, 5.0), "the key's echo was not grabbed"
        assert frame_is_exact(watch, xdisplay.display)
        assert grabber.boxes, "no part grabbed"
        assert all(w * h <= 64 * 64 for w, h in grabber.boxes), grabber.boxes  # a character and the caret
        assert watch.fallbacks == 0 and watch.failures == 0


def test_a_moved_window_is_exact(xdisplay: VirtualDisplay) -> None:
    with xterm(xdisplay) as title, watching(xdisplay.display) as (watch, _, _):
        grabs = watch.grabs
        for x, y in ((300, 260), (520, 140), (60, 400)):
            xdisplay.xdotool("search", "--name", f"^{title}$", "windowmove", "--sync", str(x), str(y))
            assert frame_is_exact(watch, xdisplay.display), f"after the move to {x},{y}"
        assert watch.grabs > grabs and watch.fallbacks == 0


def test_an_override_redirect_window_is_exact(xdisplay: VirtualDisplay) -> None:
    """Menus, tooltips and notifications are override-redirect: no window manager sees them."""
    conn = xlib_display.Display(xdisplay.display)
    try:
        with watching(xdisplay.display) as (watch, _, _):
            screen = conn.screen()
            window = screen.root.create_window(
                150, 120, 180, 90, 0, screen.root_depth, override_redirect=1, background_pixel=0xC03020
            )
            window.map()
            conn.sync()
            assert frame_is_exact(watch, xdisplay.display), "after mapping"
            gc = window.create_gc(foreground=0x20C040)
            window.fill_rectangle(gc, 10, 10, 60, 30)
            conn.sync()
            assert frame_is_exact(watch, xdisplay.display), "after drawing"
            window.unmap()
            conn.sync()
            assert frame_is_exact(watch, xdisplay.display), "after unmapping"
            window.destroy()
            conn.sync()
            assert watch.fallbacks == 0 and watch.region_grabs > 0
    finally:
        conn.close()


def test_after_a_storm_the_frame_is_exact(xdisplay: VirtualDisplay) -> None:
    """Thousands of small changes while the watcher subtracts and grabs: none is lost (the
    subtract and the events that cross it are split by sequence number)."""
    conn = xlib_display.Display(xdisplay.display)
    try:
        with watching(xdisplay.display, max_fps=20.0, idle_fps=20.0) as (watch, _, changes):
            screen = conn.screen()
            window = screen.root.create_window(
                40, 60, 400, 300, 0, screen.root_depth, override_redirect=1, background_pixel=0
            )
            window.map()
            conn.sync()
            gcs = [window.create_gc(foreground=c) for c in (0xFF0000, 0x00FF00, 0x0000FF, 0xFFFFFF)]
            end = time.monotonic() + 3.0
            i = 0
            while time.monotonic() < end:
                window.fill_rectangle(gcs[i % 4], (i * 37) % 380, (i * 53) % 280, 20, 20)
                i += 1
                if i % 50 == 0:
                    conn.sync()
            conn.sync()
            assert frame_is_exact(watch, xdisplay.display), f"after {i} rectangles"
            assert changes.events > 0 and watch.region_grabs > 0 and watch.fallbacks == 0
            window.destroy()
            conn.sync()
            assert frame_is_exact(watch, xdisplay.display), "after the window went"
    finally:
        conn.close()


def test_pre_action_frame_of_a_still_screen_is_current(xdisplay: VirtualDisplay) -> None:
    """An action on a still screen: the kept frame is the screen then (staleness 0)."""
    with xterm(xdisplay), watching(xdisplay.display) as (watch, _, _):
        assert frame_is_exact(watch, xdisplay.display)
        time.sleep(0.6)  # the start's settle window is over
        watch.action(now_ns(), "click")
        assert wait_until(lambda: watch.skews_ns, 5.0)
        assert watch.skews_ns[-1] == 0


def test_stop_ends_the_listener_and_closes_its_connection(xdisplay: VirtualDisplay) -> None:
    """Pause and stop mean now: nothing of the damage source outlives stop()."""
    with watching(xdisplay.display) as (watch, _, changes):
        assert changes.is_alive()
    assert not watch.is_alive() and not changes.is_alive()
    assert not [t for t in threading.enumerate() if t.name == "optin-damage"]


def test_a_stopped_watcher_and_its_frames_are_freed_at_once(xdisplay: VirtualDisplay) -> None:
    """Each pause stops a watcher and each resume makes a new one: the stopped one, and its frame
    buffers (8 MB each at 1080p), must go when the recorder lets go of it, not when the garbage
    collector's full pass finds the cycle through python-xlib's display and the listener's error
    handler (the hour's soak saw +16 MB a pause, given back every fourth)."""
    import gc
    import weakref

    def watched() -> tuple[weakref.ref[ScreenWatch], weakref.ref[DamageChanges]]:
        with watching(xdisplay.display) as (watch, _, changes):  # a frame stored, a kept frame
            watch.action(now_ns(), "click")
            assert changes.is_alive() and watch._current is not None
        return weakref.ref(watch), weakref.ref(changes)

    gc.collect()
    gc.disable()
    try:
        watch, _changes = watched()
        assert watch() is None, "a stopped watcher is kept alive (by a reference cycle)"
    finally:
        gc.enable()
    stopped = ScreenWatch(MssGrabber(xdisplay.display), Sink())
    stopped.start()
    stopped.stop()
    assert stopped._current is None and stopped._stored is None  # and one still referred to holds no frame


def test_a_closed_listener_connection_means_polling_not_a_hang(
    xdisplay: VirtualDisplay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.capture.screen")
    with watching(xdisplay.display, idle_fps=20.0, max_fps=20.0) as (watch, _, changes):
        display = changes._display
        assert display is not None
        display.display.socket.shutdown(socket.SHUT_RDWR)  # the server "went away" under it
        assert wait_until(lambda: not watch.reports_changes, 10.0), "the watcher did not notice"
        grabs = watch.grabs
        assert wait_until(lambda: watch.grabs >= grabs + 5, 10.0), "the watcher does not poll"
        assert watch.fallbacks == 1 and watch.is_alive()
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 10.0  # stop() did not hang on the dead connection
    fallbacks = [r for r in caplog.records if "polling the whole screen instead" in r.getMessage()]
    assert len(fallbacks) == 1


def test_a_change_the_display_did_not_report_means_polling(xdisplay: VirtualDisplay) -> None:
    """The verification grab: damage taken from a second, still server while the grabbed screen
    changes (as GL or video overlays can change a real one unreported) -> the grab is stored and
    the watcher polls from then on."""
    with bare_xvfb() as other:
        grabber = BoxGrabber(xdisplay.display)
        sink = Sink()
        watch = ScreenWatch(grabber, sink, changes=DamageChanges(other), verify_s=0.3)
        conn = xlib_display.Display(xdisplay.display)
        watch.start()
        try:
            assert wait_until(lambda: sink.frames, 10.0)
            assert watch.reports_changes and watch.fallbacks == 0
            screen = conn.screen()
            window = screen.root.create_window(
                10, 10, 120, 80, 0, screen.root_depth, override_redirect=1, background_pixel=0x3050F0
            )
            window.map()
            conn.sync()
            assert wait_until(lambda: watch.fallbacks == 1, 10.0), (
                f"the verification grab missed it: {watch.verifications} verifications, {watch.grabs} grabs, "
                f"{watch.failures} failures, changes {watch.reports_changes}"
            )
            assert not watch.reports_changes and watch.verifications >= 1
            assert wait_until(lambda: [f for f in sink.frames if f.reason == "keyframe"], 10.0)
            window.destroy()
            conn.sync()
        finally:
            watch.stop()
            conn.close()


@contextmanager
def bare_xvfb(*args: str) -> Iterator[str]:
    """A second bare Xvfb (no window manager) with extra arguments; yields its display name."""
    need_tools()
    r, w = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(w), "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset", *args],
        pass_fds=(w,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 10.0)
        number = os.read(r, 16).decode().strip() if ready else ""
        assert number, "the second Xvfb did not start"
        assert wait_until(lambda: _answers(f":{number}"), 10.0), "the second Xvfb does not answer"
        yield f":{number}"
    finally:
        stop_process(proc)
        os.close(r)


def _answers(name: str) -> bool:
    try:
        xlib_display.Display(name).close()
    except Exception:  # not ready yet
        return False
    return True


def test_no_damage_extension_means_polling(
    xdisplay: VirtualDisplay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="agent.capture.screen")
    with bare_xvfb("-extension", "DAMAGE") as name:
        changes = DamageChanges(name)
        with pytest.raises(DamageUnavailable, match="no DAMAGE extension"):
            changes.start(lambda t: None)
        sink = Sink()
        watch = ScreenWatch(MssGrabber(name), sink, changes=DamageChanges(name), max_fps=20.0, idle_fps=20.0)
        watch.start()
        try:
            assert wait_until(lambda: sink.frames, 10.0)
            grabs = watch.grabs
            assert wait_until(lambda: watch.grabs >= grabs + 5, 10.0), "the watcher does not poll"
            assert not watch.reports_changes and watch.fallbacks == 1
        finally:
            watch.stop()
    messages = [
        r.getMessage() for r in caplog.records if "polling the whole screen instead" in r.getMessage()
    ]
    why = "the display does not report changes (DamageUnavailable)"
    assert messages == [f"screen changes: {why}; polling the whole screen instead"]


def test_core_errors_parse_as_core_errors_after_the_fix(xdisplay: VirtualDisplay) -> None:
    """python-xlib #259: with DAMAGE and RANDR loaded, BadValue parsed as a RANDR error and raised
    AttributeError; after :func:`fix_error_classes` it is BadValue again (and BadRequest too)."""
    conn = xlib_display.Display(xdisplay.display)
    try:
        fix_error_classes(conn)
        root = conn.screen().root
        atom = conn.intern_atom("OPTIN_DAMAGE_TEST")
        root.change_property(atom, Xatom.STRING, 8, b"ab")
        conn.sync()
        with pytest.raises(Xlib.error.BadValue):
            root.get_property(atom, Xatom.STRING, 1000, 1)  # an offset past the end: BadValue
        errors: list[Any] = []
        conn.set_error_handler(lambda err, request: errors.append(err))
        root.damage_create(damage.DamageReportDeltaRectangles)  # before QueryVersion: BadRequest
        conn.sync()
        assert [type(e) for e in errors] == [Xlib.error.BadRequest]
        root.delete_property(atom)
        conn.sync()
    finally:
        conn.close()


def test_p3_stop_under_a_damage_storm_ends_everything(xdisplay: VirtualDisplay) -> None:
    """A client drawing without pause (a video, a hostile program) cannot hold pause or stop up:
    the watcher, its listener and its connection are gone when stop() returns."""
    stop_drawing = threading.Event()

    def draw() -> None:
        conn = xlib_display.Display(xdisplay.display)
        try:
            screen = conn.screen()
            window = screen.root.create_window(
                600, 300, 200, 200, 0, screen.root_depth, override_redirect=1, background_pixel=0
            )
            window.map()
            gcs = [window.create_gc(foreground=c) for c in (0xFF00FF, 0x00FFFF)]
            i = 0
            while not stop_drawing.is_set():
                window.fill_rectangle(gcs[i % 2], (i * 7) % 190, (i * 11) % 190, 10, 10)
                i += 1
                if i % 20 == 0:
                    conn.sync()
            window.destroy()
            conn.sync()
        finally:
            conn.close()

    drawer = threading.Thread(target=draw, daemon=True)
    grabber = BoxGrabber(xdisplay.display)
    changes = DamageChanges(xdisplay.display)
    sink = Sink()
    watch = ScreenWatch(grabber, sink, changes=changes, max_fps=20.0, idle_fps=20.0)
    watch.start()
    drawer.start()
    took = -1.0
    try:
        assert wait_until(lambda: watch.region_grabs >= 10, 10.0), "the storm was not grabbed"
        t0 = time.monotonic()
        watch.stop()
        took = time.monotonic() - t0
    finally:
        if took < 0:
            watch.stop()
        stop_drawing.set()
        drawer.join(5)
    assert took < 5.0, f"stop() took {took:.1f} s under a storm"  # "does not hang"; timing: benchmarks
    assert not watch.is_alive() and not changes.is_alive() and changes._display is None
    assert not [
        t for t in threading.enumerate() if t.name in ("optin-damage", "optin-screen", "optin-encoder")
    ]
    grabs = watch.grabs
    time.sleep(0.3)
    assert watch.grabs == grabs  # nothing grabs after stop (P3)
