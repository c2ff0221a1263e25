"""Capture under load, and what the frames show, on a real X server (the ``xdisplay`` fixture).

Input is injected with XTEST straight from the test (python-xlib), so the real
X server produces real device events, the real RECORD-based hooks see them and
a real :class:`~agent.control.Recorder` (xorg backend) stores them encrypted.
Every check reads the sealed session back with the volunteer's key.

Synchronisation is by condition (a colour on the server's screen, a count the
recorder reached), never by sleeping for a guessed time; every process and
window a test starts is stopped in ``finally``; the recorder is always stopped.
"""

from __future__ import annotations

import io
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image
from Xlib import X
from Xlib import display as xlib_display
from Xlib.ext import xtest

from agent.backends import select_backend
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.capture.screen import action_reason
from agent.control import Recorder
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    FramePatch,
    Marker,
    PointerMove,
    WindowFocus,
    now_ns,
)
from agent.store import keys
from agent.store.reader import load_meta, read_session, session_dir
from agent.writer_loop import POINTER_HZ
from tests.tools import Consented

pytestmark = pytest.mark.display

RGB = tuple[int, int, int]
Rect = tuple[int, int, int, int]  # x, y, width, height

#: The synthetic pointer: rate, duration, and a click (press, 3 moves, release) every 100 moves.
GEN_HZ = 1000
GEN_SECONDS = 20.0
MIN_GEN_HZ = 900.0
CLICK_EVERY = 100
DRAG_MOVES = 3
#: Where it moves: empty desktop, clear of trayer (top edge, right-aligned, 32 px high).
AREA = (100, 100, 900, 600)  # x0, y0, width, height
PARK = (50, 750)  # off the path: the first generated move is a real motion

_NS = 1_000_000_000


# -- helpers -------------------------------------------------------------------------------------


class Tap:
    """Sees every event the capture sources hand to the recorder's sink.

    Installed before :meth:`Recorder.start`, which hands ``rec._sink`` to the
    hooks, the focus watcher and the screen watcher.  O(1) per event; an event
    is listed once the sink has returned (queued, or counted as dropped).
    """

    def __init__(self, rec: Recorder) -> None:
        from agent.frame_regions import Rebuilder

        self.events: list[Event] = []
        inner = rec._sink
        rebuilder = Rebuilder()  # frames come from the encoder thread alone, one at a time

        def sink(event: Event) -> None:
            inner(event)
            seen: Event | None = event
            if isinstance(event, (Frame, FramePatch)):  # listed as whole frames, as a reader sees them
                seen = rebuilder.frame(event)
            if seen is not None:
                self.events.append(seen)  # after: once seen here, the recorder has queued it

        rec._sink = sink  # type: ignore[method-assign]

    def of(self, cls: type) -> list[Any]:
        return [e for e in list(self.events) if isinstance(e, cls)]

    def count(self, cls: type) -> int:
        return sum(1 for e in list(self.events) if isinstance(e, cls))

    def actions(self) -> int:
        """Events the screen watcher is asked to take a pre-action frame for."""
        return sum(1 for e in list(self.events) if action_reason(e) is not None)


@contextmanager
def recording(xdisplay: VirtualDisplay, consented: Any) -> Iterator[tuple[Recorder, Tap]]:
    """A started xorg Recorder with a :class:`Tap`; always stopped on the way out."""
    assert xdisplay.display
    d, study = consented
    rec = Recorder(d, select_backend("xorg"), study)
    tap = Tap(rec)
    rec.start()
    try:
        assert {"pointer", "keyboard", "screen", "window_titles"} <= set(rec.scopes), rec.scopes
        yield rec, tap
    finally:
        rec.stop()


def read_back(consented: Any, rec: Recorder) -> list[Event]:
    d, _ = consented
    assert rec.state == "stopped", rec.error
    assert rec.session_id is not None
    return read_session(d, rec.session_id, keys.load_identity(d)).events


@contextmanager
def x_connection(xdisplay: VirtualDisplay) -> Iterator[Any]:
    conn = xlib_display.Display(xdisplay.display)
    try:
        yield conn
    finally:
        conn.close()


def move(conn: Any, x: int, y: int) -> None:
    xtest.fake_input(conn, X.MotionNotify, x=x, y=y)


def click(conn: Any, x: int, y: int) -> None:
    """Move there, press and release the left button; returns once the server has processed it."""
    move(conn, x, y)
    xtest.fake_input(conn, X.ButtonPress, detail=1)
    xtest.fake_input(conn, X.ButtonRelease, detail=1)
    conn.sync()


def screen_pixel(conn: Any, x: int, y: int) -> RGB:
    """The pixel the X server shows at ``x, y`` now (24-bit TrueColor, BGRX in the image)."""
    image = conn.screen().root.get_image(x, y, 1, 1, X.ZPixmap, 0xFFFFFFFF)
    b, g, r = bytes(image.data)[:3]
    return (r, g, b)


def decode(frame: Frame) -> Image.Image:
    image = Image.open(io.BytesIO(frame.data)).convert("RGB")
    assert image.size == (frame.width, frame.height)
    return image


def pixel(image: Image.Image, frame: Frame, x: int, y: int) -> RGB:
    """The pixel at screen coordinates ``x, y`` of a decoded frame."""
    value = image.getpixel((x - frame.left, y - frame.top))
    assert isinstance(value, tuple)
    return (int(value[0]), int(value[1]), int(value[2]))


def screen_at(frames: list[Frame], t_ns: int) -> Frame:
    """The reader's rule: the screen at ``t_ns`` is the latest frame with ``t_ns`` at or before it."""
    before = [f for f in frames if f.t_ns <= t_ns]
    assert before, f"no frame at or before t={t_ns}"
    return max(before, key=lambda f: f.t_ns)


def ms(ns: int) -> str:
    return f"{ns / 1e6:.1f} ms"


def wait_grabs(rec: Recorder, n: int = 2, timeout: float = 10.0) -> None:
    """Wait until the screen watcher has looked at the screen ``n`` more times, each after this
    call: then its frame shows the screen as it is now (a still screen takes no grab with X
    DAMAGE, so grabs cannot be counted)."""
    screen = rec._screen
    assert screen is not None
    for _ in range(n):
        assert screen.sync(timeout), "the screen watcher stopped grabbing"


def wait_frames_chosen(rec: Recorder, tap: Tap, presses: int, unchosen: int) -> None:
    """Wait until the recorder has ``presses`` presses and as many releases, and the screen watcher
    has chosen the pre-action frame of every action the recorder got since :func:`wait_settled`
    (one skew each; ``unchosen``: actions before that without one, as it returned)."""
    screen = rec._screen
    assert screen is not None
    assert wait_for(
        lambda: tap.count(ButtonPress) >= presses and tap.count(ButtonRelease) >= presses, 10, 0.002
    ), "the click did not reach the recorder"
    assert wait_for(lambda: len(screen.skews_ns) + unchosen >= tap.actions(), 10, 0.002), (
        f"the watcher chose {len(screen.skews_ns)} pre-action frames for {tap.actions() - unchosen} actions"
    )


def wait_settled(rec: Recorder, tap: Tap) -> int:
    """Wait until no settled frame is pending (e.g. for the focus event every recording starts with).

    Otherwise a change drawn within the settle window of an earlier action is stored as that
    action's settled frame, not as the pre-action frame of the next.  Returns how many actions so
    far got no pre-action frame (the first focus event may come before the first grab).
    """
    screen = rec._screen
    assert screen is not None
    actions = [e.t_ns for e in list(tap.events) if action_reason(e) is not None]
    if actions:
        deadline = max(actions) + screen._settle_ns
        assert wait_for(lambda: now_ns() > deadline, 10)
    wait_grabs(rec)
    return len(actions) - len(screen.skews_ns)


def wait_frame(tap: Tap, since_ns: int, predicate: Callable[[Frame], bool], timeout: float) -> Frame | None:
    """The first frame handed to the sink with ``t_ns >= since_ns`` that satisfies ``predicate``."""
    checked: set[int] = set()
    found: list[Frame] = []

    def look() -> bool:
        for f in tap.of(Frame):
            if f.t_ns >= since_ns and id(f) not in checked:
                checked.add(id(f))
                if predicate(f):
                    found.append(f)
                    return True
        return False

    wait_for(look, timeout)
    return found[0] if found else None


# -- 1. 1,000 Hz pointer with clicks -------------------------------------------------------------


def path(i: int) -> tuple[int, int]:
    """The i-th pointer position: every position differs from the one before it."""
    x0, y0, w, h = AREA
    return x0 + i % w, y0 + (i * 7) % h


@dataclass
class Generated:
    moves: list[tuple[int, int]] = field(default_factory=list)
    presses: list[tuple[int, int, str]] = field(default_factory=list)
    releases: list[tuple[int, int, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    worst_late_s: float = 0.0
    error: BaseException | None = None

    @property
    def hz(self) -> float:
        return len(self.moves) / self.elapsed_s if self.elapsed_s else 0.0


def drive_pointer(conn: Any, out: Generated, n_moves: int) -> None:
    """Send ``n_moves`` absolute moves paced 1/GEN_HZ apart (sleep, then spin), with clicks.

    Each step is synced (a round trip), so the rate is what the server processed.
    Pacing is by schedule: a late step is followed by quicker ones.
    """
    period = 1.0 / GEN_HZ
    try:
        t0 = time.perf_counter()
        for i in range(n_moves):
            due = t0 + i * period
            while (remaining := due - time.perf_counter()) > 0:
                if remaining > 0.0003:
                    time.sleep(remaining - 0.0002)
            out.worst_late_s = max(out.worst_late_s, time.perf_counter() - due)
            x, y = path(i)
            move(conn, x, y)
            out.moves.append((x, y))
            phase = i % CLICK_EVERY
            if phase == CLICK_EVERY // 2:
                xtest.fake_input(conn, X.ButtonPress, detail=1)
                out.presses.append((x, y, "left"))
            elif phase == CLICK_EVERY // 2 + DRAG_MOVES:
                xtest.fake_input(conn, X.ButtonRelease, detail=1)
                out.releases.append((x, y, "left"))
            conn.sync()
        out.elapsed_s = time.perf_counter() - t0
    except BaseException as exc:  # handed to the test thread
        out.error = exc


def test_1000_hz_pointer_with_clicks_loses_nothing(xdisplay: VirtualDisplay, consented: Consented) -> None:
    n_moves = int(GEN_HZ * GEN_SECONDS)
    gen = Generated()
    with x_connection(xdisplay) as conn:
        move(conn, *PARK)
        conn.sync()
        with recording(xdisplay, consented) as (rec, tap):
            t_start = time.perf_counter()
            driver = threading.Thread(target=drive_pointer, args=(conn, gen, n_moves), name="xtest-driver")
            driver.start()
            driver.join(GEN_SECONDS * 3)
            assert not driver.is_alive(), "the XTEST driver did not finish"
            if gen.error is not None:
                raise gen.error
            # every generated event reaches the recorder's sink (RECORD is lossless) before stopping
            wait_for(
                lambda: (
                    tap.count(PointerMove) >= len(gen.moves) and tap.count(ButtonRelease) >= len(gen.releases)
                ),
                15,
            )
            received_moves = tap.count(PointerMove)
            received_presses = tap.count(ButtonPress)
            received_releases = tap.count(ButtonRelease)
            screen = rec._screen
            skews = sorted(screen.skews_ns) if screen is not None else []
        elapsed = time.perf_counter() - t_start
    events = read_back(consented, rec)

    stored_moves = [e for e in events if isinstance(e, PointerMove)]
    presses = [e for e in events if isinstance(e, ButtonPress)]
    releases = [e for e in events if isinstance(e, ButtonRelease)]
    frames = [e for e in events if isinstance(e, Frame)]
    stop = events[-1]
    assert isinstance(stop, Marker) and stop.marker == "session_stop"
    span_s = (stored_moves[-1].t_ns - stored_moves[0].t_ns) / _NS if len(stored_moves) > 1 else 0.0
    print(
        f"\n[1 kHz pointer] generator {gen.hz:.1f} Hz ({len(gen.moves)} moves in {gen.elapsed_s:.2f} s, "
        f"worst step {gen.worst_late_s * 1e3:.2f} ms late), clicks {len(gen.presses)}; "
        f"received moves {received_moves}, stored {len(stored_moves)} "
        f"({len(stored_moves) / span_s if span_s else 0:.1f} Hz over {span_s:.2f} s), "
        f"coalesced {rec.counters.coalesced}; presses {len(presses)}, releases {len(releases)}; "
        f"frames {len(frames)} ({', '.join(f.reason for f in frames)}), "
        f"frames_skipped {rec.counters.frames_skipped}, dropped {rec.counters.dropped}; "
        f"recording {elapsed:.2f} s; pre-action skews of {len(skews)} actions: "
        + (
            f"min {ms(skews[0])}, median {ms(skews[len(skews) // 2])}, max {ms(skews[-1])}"
            if skews
            else "none"
        )
    )

    # the generator really ran at ~1 kHz (if not, this machine cannot drive the test: say so)
    assert gen.hz >= MIN_GEN_HZ, f"the XTEST generator reached only {gen.hz:.1f} Hz (needs {MIN_GEN_HZ})"
    assert len(gen.presses) == len(gen.releases) == n_moves // CLICK_EVERY

    # nothing lost anywhere: X → hooks → sink → queue → writer
    assert received_moves == len(gen.moves), "the hooks did not deliver every generated move"
    assert (received_presses, received_releases) == (len(gen.presses), len(gen.releases))
    assert rec.counters.dropped == 0
    assert stop.detail["dropped"] == 0
    assert stop.detail["loss"]["events"] == 0
    assert rec.session_id is not None
    meta = load_meta(session_dir(consented[0], rec.session_id))
    assert meta is not None and meta["dropped_by_source"]["events"] == 0
    assert meta["events"]["button_press"] == len(gen.presses)

    # every click, in order, where it was done
    assert [(p.x, p.y, p.button) for p in presses] == gen.presses
    assert [(r.x, r.y, r.button) for r in releases] == gen.releases

    # coalescing: every received move is stored or counted as coalesced, nothing else
    assert rec.counters.coalesced == stop.detail["coalesced_moves"]
    assert len(stored_moves) + rec.counters.coalesced == received_moves
    assert rec.counters.by_kind["pointer_move"] == len(stored_moves)

    # ... and never loses the position at a press or release: the last stored move before it is there
    pointer = [e for e in events if isinstance(e, (PointerMove, ButtonPress, ButtonRelease))]
    assert [e.t_ns for e in pointer] == sorted(e.t_ns for e in pointer)  # one hook thread: in order
    last_move: PointerMove | None = None
    for e in pointer:
        if isinstance(e, PointerMove):
            last_move = e
        else:
            assert last_move is not None and (last_move.x, last_move.y) == (e.x, e.y), e
    assert (stored_moves[-1].x, stored_moves[-1].y) == gen.moves[-1]  # the final position is kept
    generated = iter(gen.moves)  # stored moves: generated ones, in order, none invented
    assert all((m.x, m.y) in generated for m in stored_moves)

    # stored moves are capped at POINTER_HZ: two moves closer than the period only when the later
    # one was forced out by the non-move event right after it
    period_ns = _NS / POINTER_HZ
    index = {id(e): i for i, e in enumerate(events)}
    by_rate = 1
    for a, b in itertools.pairwise(stored_moves):
        if b.t_ns - a.t_ns < period_ns:
            follower = events[index[id(b)] + 1]
            assert not isinstance(follower, PointerMove), (a, b, follower)
        else:
            by_rate += 1
    assert by_rate <= span_s * POINTER_HZ + 1
    print(
        f"[1 kHz pointer] stored moves: {by_rate} by the rate cap, {len(stored_moves) - by_rate} forced out"
    )


# -- 2. the pre-action frame -------------------------------------------------------------------

#: A solid override-redirect window: argv x y w h rrggbb; prints "mapped" once the server has it.
PATTERN_SCRIPT = """
import sys, time
from Xlib import X, display
x, y, w, h = map(int, sys.argv[1:5])
r, g, b = (int(sys.argv[5][i:i + 2], 16) for i in (0, 2, 4))
d = display.Display()
s = d.screen()
pixel = s.default_colormap.alloc_color(r * 257, g * 257, b * 257).pixel
win = s.root.create_window(x, y, w, h, 0, s.root_depth, X.InputOutput, X.CopyFromParent,
                           background_pixel=pixel, override_redirect=True)
win.map()
d.sync()
print("mapped", flush=True)
while True:
    time.sleep(60)
"""

MAGENTA: RGB = (255, 0, 255)
PATTERN: Rect = (200, 150, 160, 100)


def inside_points(rect: Rect) -> list[tuple[int, int]]:
    x, y, w, h = rect
    return [(x, y), (x + w - 1, y), (x, y + h - 1), (x + w - 1, y + h - 1), (x + w // 2, y + h // 2)]


def outside_points(rect: Rect) -> list[tuple[int, int]]:
    x, y, w, h = rect
    return [(x - 1, y + h // 2), (x + w, y + h // 2), (x + w // 2, y - 1), (x + w // 2, y + h)]


def shows(image: Image.Image, frame: Frame, rect: Rect, colour: RGB) -> bool:
    """The whole rectangle's probe points have ``colour`` and the points just outside do not."""
    return all(pixel(image, frame, x, y) == colour for x, y in inside_points(rect)) and all(
        pixel(image, frame, x, y) != colour for x, y in outside_points(rect)
    )


def shows_any(frame: Frame, rect: Rect, colour: RGB) -> bool:
    """Any probe point inside the rectangle has ``colour``."""
    image = decode(frame)
    return any(pixel(image, frame, x, y) == colour for x, y in inside_points(rect))


def test_pre_action_frame_shows_the_screen_before_the_click(
    xdisplay: VirtualDisplay, consented: Consented
) -> None:
    cx, cy = PATTERN[0] + 500, PATTERN[1] + 350  # a click on the empty desktop, away from the pattern
    px, py = PATTERN[0] + PATTERN[2] // 2, PATTERN[1] + PATTERN[3] // 2
    argv = [sys.executable, "-c", PATTERN_SCRIPT, *map(str, PATTERN), "ff00ff"]
    with x_connection(xdisplay) as conn, recording(xdisplay, consented) as (rec, tap):
        screen = rec._screen
        assert screen is not None
        assert screen_pixel(conn, px, py) != MAGENTA
        move(conn, cx, cy)  # input: the watcher goes to its active rate
        conn.sync()
        unchosen = wait_settled(rec, tap)
        pattern = xdisplay.spawn(argv, stdout=True)
        try:
            assert pattern.stdout is not None and pattern.stdout.readline() == b"mapped\n"
            assert wait_for(lambda: screen_pixel(conn, px, py) == MAGENTA, 10)
            wait_grabs(rec)  # the watcher holds a grab that shows the pattern
            click(conn, cx, cy)
            # the press and the release have reached the watcher and it chose their frames: from now
            # on every grab starts after the click, so the pattern can go
            wait_frames_chosen(rec, tap, 1, unchosen)
            t_gone = now_ns()
        finally:
            stop_process(pattern)
        assert wait_for(lambda: screen_pixel(conn, px, py) != MAGENTA, 10)
        # a second click once the watcher has seen the screen without it: some frame after the
        # first click must show it gone (its settled frame, or this click's frame)
        wait_grabs(rec)
        click(conn, cx + 40, cy + 20)
        wait_frames_chosen(rec, tap, 2, unchosen)
        skews = list(screen.skews_ns)  # the recorder drops its ScreenWatch at stop
        # stop discards frames not yet encoded: wait until the one without the pattern is handed over
        first_press = tap.of(ButtonPress)[0].t_ns
        gone = wait_frame(tap, first_press + 1, lambda f: not shows_any(f, PATTERN, MAGENTA), 10)
        assert gone is not None, "no frame without the pattern reached the recorder after the click"
    delivered = tap.count(Frame)  # the screen watcher hands over nothing once stopped
    events = read_back(consented, rec)

    presses = [e for e in events if isinstance(e, ButtonPress)]
    assert [(p.x, p.y) for p in presses] == [(cx, cy), (cx + 40, cy + 20)]
    press = presses[0]
    frames = sorted((e for e in events if isinstance(e, Frame)), key=lambda f: f.t_ns)
    assert len(frames) == delivered  # every frame handed to the sink was stored
    pre = screen_at(frames, press.t_ns)
    later = [f for f in frames if f.t_ns > press.t_ns]
    print(
        f"\n[pre-action] frames {[(f.reason, ms(f.t_ns - press.t_ns)) for f in frames]} "
        f"(t relative to the press); pre-action skews {[ms(s) for s in skews]}; "
        f"pattern removed {ms(t_gone - press.t_ns)} after the press"
    )
    assert pre.reason == "click", [(f.reason, f.t_ns - press.t_ns) for f in frames]
    assert pre.t_ns <= press.t_ns
    assert shows(decode(pre), pre, PATTERN, MAGENTA), "the pre-action frame does not show the pattern"
    assert frames[0].reason == "start"
    assert not shows(decode(frames[0]), frames[0], PATTERN, MAGENTA)  # drawn after the start
    assert later, "no frame after the click although the screen changed"
    assert not shows_any(later[0], PATTERN, MAGENTA), later[0].reason
    assert len(skews) >= 4 and all(s >= 0 for s in skews)  # two clicks: two presses, two releases


# -- 3. focus change ---------------------------------------------------------------------------

GREEN: RGB = (0, 192, 0)
BLUE: RGB = (0, 0, 192)


def client_rect(conn: Any, wid: str) -> Rect:
    """Root-relative rectangle of the client window ``wid`` (what WindowFocus reports)."""
    window = conn.create_resource_object("window", int(wid))
    geometry = window.get_geometry()
    origin = conn.screen().root.translate_coords(window, 0, 0)
    return int(origin.x), int(origin.y), int(geometry.width), int(geometry.height)


@contextmanager
def solid_xterm(xdisplay: VirtualDisplay, title: str, colour: RGB, geometry: str) -> Iterator[str]:
    """An xterm of one colour (text, cursor and background alike); yields its window id."""
    hexcolour = "#{:02x}{:02x}{:02x}".format(*colour)
    proc = xdisplay.spawn(
        [
            *("xterm", "-T", title, "-geometry", geometry),
            *("-bg", hexcolour, "-fg", hexcolour, "-cr", hexcolour),
            *("-e", "sleep", "600"),
        ]
    )
    try:
        assert wait_for(lambda: bool(xdisplay.search(title)), 10), f"xterm {title} did not appear"
        yield xdisplay.search(title)[0]
    finally:
        stop_process(proc)


def center(rect: Rect) -> tuple[int, int]:
    return rect[0] + rect[2] // 2, rect[1] + rect[3] // 2


def overlap(a: Rect, b: Rect) -> Rect:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    assert x1 - x0 > 20 and y1 - y0 > 20, (a, b)
    return x0, y0, x1 - x0, y1 - y0


def crop(frame: Frame, rect: Rect) -> bytes:
    x, y, w, h = rect
    return (
        decode(frame).crop((x - frame.left, y - frame.top, x - frame.left + w, y - frame.top + h)).tobytes()
    )


def test_window_focus_change_stores_a_frame_of_the_new_window(
    xdisplay: VirtualDisplay, consented: Consented
) -> None:
    title_a, title_b = "optin-load-a", "optin-load-b"
    with (
        x_connection(xdisplay) as conn,
        solid_xterm(xdisplay, title_b, BLUE, "40x10+260+250") as wid_b,
        solid_xterm(xdisplay, title_a, GREEN, "40x10+160+180") as wid_a,
    ):
        xdisplay.xdotool("windowactivate", "--sync", wid_a)
        rect_a, rect_b = client_rect(conn, wid_a), client_rect(conn, wid_b)
        both = overlap(rect_a, rect_b)
        ox, oy = center(both)
        assert wait_for(lambda: screen_pixel(conn, ox, oy) == GREEN, 10)  # A is on top of B
        b_only = (rect_b[0] + rect_b[2] - 10, rect_b[1] + rect_b[3] - 10)  # a point of B that A leaves
        assert wait_for(lambda: screen_pixel(conn, *b_only) == BLUE, 10), (
            rect_a,
            rect_b,
            screen_pixel(conn, *b_only),
        )
        title_bar: Rect = (rect_b[0], rect_b[1] - 12, rect_b[2], 10)  # above B's client: its frame
        with recording(xdisplay, consented) as (rec, tap):
            assert wait_for(lambda: tap.count(Frame) >= 1, 10)  # the "start" frame
            t_before = now_ns()
            xdisplay.xdotool("windowactivate", "--sync", wid_b)
            assert wait_for(lambda: screen_pixel(conn, ox, oy) == BLUE, 10)  # B is on top now
            assert wait_for(lambda: any(f.title == title_b for f in tap.of(WindowFocus)), 10)
            shown = wait_frame(tap, t_before, lambda f: pixel(decode(f), f, ox, oy) == BLUE, 10)
            assert shown is not None, "no frame showing the newly focused window reached the recorder"
    events = read_back(consented, rec)

    focus = next(e for e in events if isinstance(e, WindowFocus) and e.title == title_b)
    assert focus.t_ns >= t_before
    assert focus.app_class == "XTerm"
    assert (focus.x, focus.y, focus.width, focus.height) == rect_b
    frames = sorted((e for e in events if isinstance(e, Frame)), key=lambda f: f.t_ns)
    before = screen_at(frames, t_before)
    after = screen_at(frames, max(shown.t_ns, focus.t_ns))  # the stream's screen once B has focus
    after_focus = [f for f in frames if f.t_ns > focus.t_ns]
    print(
        f"\n[focus] frames {[(f.reason, ms(f.t_ns - focus.t_ns)) for f in frames]} "
        f"(t relative to the WindowFocus of B); first showing B: {shown.reason} "
        f"at {ms(shown.t_ns - focus.t_ns)}"
    )
    assert pixel(decode(before), before, ox, oy) == GREEN
    assert pixel(decode(after), after, ox, oy) == BLUE
    assert pixel(decode(after), after, *b_only) == BLUE
    assert crop(before, title_bar) != crop(after, title_bar)  # B's frame: raised and active now
    # the frame showing B was taken for the focus change: its pre-action frame (when the window
    # manager raised B before announcing the focus) or the settled one after it
    assert shown.reason in {"focus", "settled"}, shown.reason
    assert shown in frames
    assert after_focus or shown.reason == "focus"
