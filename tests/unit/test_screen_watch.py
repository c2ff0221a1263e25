"""The screen watcher: pre-action and settled frames, stored once, cheap when static, stop means now."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from typing import TypedDict

import pytest
from PIL import Image

from agent.backends.fake import FakeScreen
from agent.capture import screen as screen_mod
from agent.capture.screen import ScreenWatch, Shot, action_reason
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    Scroll,
    WindowFocus,
    now_ns,
)

RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


class Timing(TypedDict, total=False):
    """The timing keywords of :class:`ScreenWatch` these tests set."""

    max_fps: float
    idle_fps: float
    settle_s: float
    keyframe_s: float


FAST: Timing = {"max_fps": 50.0, "idle_fps": 50.0, "settle_s": 0.1, "keyframe_s": 60.0}


def wait_until(pred: Callable[[], object], timeout: float = 5.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout / 0.005)):
        if pred():
            return
        done.wait(0.005)
    raise AssertionError(f"condition not reached in {timeout} s")


class TimedScreen(FakeScreen):
    """A FakeScreen that remembers when each shot started."""

    def __init__(self) -> None:
        super().__init__((8, 6))
        self.times: list[int] = []

    def shoot(self, t_ns: int) -> Shot:
        shot = super().shoot(t_ns)
        self.times.append(t_ns)
        return shot


class Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    @property
    def frames(self) -> list[Frame]:
        with self.lock:
            return [e for e in self.events if isinstance(e, Frame)]


def colour(frame: Frame) -> tuple[int, int, int]:
    pixel = Image.open(io.BytesIO(frame.data)).convert("RGB").getpixel((0, 0))
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


Watch = tuple[ScreenWatch, TimedScreen, Sink]


@pytest.fixture
def watch() -> Iterator[Watch]:
    grabber, sink = TimedScreen(), Sink()
    grabber.paint(GREEN)
    w = ScreenWatch(grabber, sink, **FAST)
    w.start()
    wait_until(lambda: len(sink.frames) == 1)
    yield w, grabber, sink
    w.stop()


def settle_grabs(grabber: TimedScreen, n: int = 3) -> None:
    """Wait until the watcher has taken ``n`` more shots (so it has seen a paint)."""
    start = len(grabber.times)
    wait_until(lambda: len(grabber.times) >= start + n)


def test_start_frame_and_layout(watch: Watch) -> None:
    sink = watch[2]
    (start,) = sink.frames
    assert start.reason == "start" and colour(start) == GREEN and (start.width, start.height) == (8, 6)
    layout = [e for e in sink.events if isinstance(e, Marker)]
    assert [m.marker for m in layout] == ["screen_layout"]
    assert layout[0].detail == {"virtual": [0, 0, 8, 6], "monitors": [[0, 0, 8, 6]]}


def test_a_static_screen_is_grabbed_but_never_stored_again(
    watch: Watch,
) -> None:
    w, grabber, sink = watch
    for reason in ("click", "scroll", "hotkey", "focus"):
        w.action(now_ns(), reason)
        settle_grabs(grabber, 2)
    settle_grabs(grabber, 8)  # settled frames would have been taken by now
    assert len(sink.frames) == 1 and w.grabs >= 10


def test_pre_action_frame_is_the_screen_before_the_action(
    watch: Watch,
) -> None:
    w, grabber, sink = watch
    grabber.paint(RED)
    settle_grabs(grabber)
    t_action = now_ns()
    grabber.paint(BLUE)  # the click changes the screen
    w.action(t_action, "click")
    wait_until(lambda: len(sink.frames) == 3)
    _, click, settled = sink.frames
    assert (click.reason, colour(click)) == ("click", RED)
    assert click.t_ns <= t_action
    # the pre-action shot is the latest shot started at or before the action: no shot in between
    assert max(t for t in grabber.times if t <= t_action) == click.t_ns
    assert w.skews_ns[-1] == t_action - click.t_ns
    assert (settled.reason, colour(settled)) == ("settled", BLUE)
    # settled by the rule, not by the clock (a loaded machine may grab late): the grab after the
    # action whose next one, 20 ms later at FAST's 50 fps, would be past settle_s (100 ms)
    assert settled.t_ns in grabber.times and settled.t_ns > t_action
    assert settled.t_ns + 20_000_000 > t_action + 100_000_000


def test_typing_burst_costs_a_frame_before_and_one_after(
    watch: Watch,
) -> None:
    w, grabber, sink = watch
    colours = [RED, BLUE, RED, BLUE, (9, 9, 9)]
    for c in colours:
        w.action(now_ns(), "key")
        grabber.paint(c)
        settle_grabs(grabber, 1)
    settle_grabs(grabber, 10)
    frames = sink.frames
    assert [f.reason for f in frames] == ["start", "settled"]  # the first key's pre-action frame is "start"
    assert colour(frames[-1]) == (9, 9, 9)


def test_hotkeys_always_get_a_pre_action_frame(watch: Watch) -> None:
    w, grabber, sink = watch
    w.action(now_ns(), "key")
    grabber.paint(RED)
    settle_grabs(grabber)
    w.action(now_ns(), "hotkey")
    wait_until(lambda: any(f.reason == "hotkey" for f in sink.frames))
    assert colour(next(f for f in sink.frames if f.reason == "hotkey")) == RED


def test_keyframe_only_when_the_screen_changed() -> None:
    grabber, sink = TimedScreen(), Sink()
    timing: Timing = {**FAST, "keyframe_s": 0.05}
    w = ScreenWatch(grabber, sink, **timing)
    w.start()
    try:
        settle_grabs(grabber, 15)
        assert [f.reason for f in sink.frames] == ["start"]
        grabber.paint(RED)
        wait_until(lambda: len(sink.frames) == 2)
        settle_grabs(grabber, 15)
        assert [(f.reason, colour(f)) for f in sink.frames][1:] == [("keyframe", RED)]
    finally:
        w.stop()


def test_grab_failures_are_counted_and_the_watcher_goes_on(
    watch: Watch,
) -> None:
    w, grabber, sink = watch
    grabber.failure = OSError("no screen")
    wait_until(lambda: w.failures >= 2)
    grabber.failure = None
    grabber.paint(RED)
    settle_grabs(grabber)
    w.action(now_ns(), "click")
    wait_until(lambda: len(sink.frames) == 2)
    assert w.is_alive()


def test_encoder_backlog_drops_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    real = screen_mod.encode_frame

    def slow(shot: Shot, reason: str) -> Frame:
        assert gate.wait(5)
        return real(shot, reason)

    monkeypatch.setattr(screen_mod, "encode_frame", slow)
    grabber, sink = TimedScreen(), Sink()
    w = ScreenWatch(grabber, sink, **FAST, encode_backlog=1)
    w.start()
    try:
        for c in (RED, BLUE, GREEN, RED, BLUE):
            grabber.paint(c)
            settle_grabs(grabber)
            w.action(now_ns(), "click")
        wait_until(lambda: w.skipped >= 2)
        gate.set()
        wait_until(lambda: w.frames >= 2)
    finally:
        gate.set()
        w.stop()
    assert w.frames == len(sink.frames) >= 2 and w.skipped >= 2  # dropped ones are counted (P9)
    assert w.failures == 0


def test_stop_means_now_and_counts_what_was_not_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    entered = threading.Event()
    real = screen_mod.encode_frame

    def gated(shot: Shot, reason: str) -> Frame:
        entered.set()
        gate.wait(5)
        return real(shot, reason)

    monkeypatch.setattr(screen_mod, "encode_frame", gated)
    grabber, sink = TimedScreen(), Sink()
    w = ScreenWatch(grabber, sink, **FAST)
    w.start()
    assert entered.wait(5)  # the start frame is being encoded
    stopper = threading.Thread(target=w.stop)
    stopper.start()
    wait_until(lambda: not w.is_alive())
    gate.set()
    stopper.join(5)
    assert sink.frames == [] and w.skipped == 1 and grabber.closed


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ButtonPress(1, 0, 0, "left"), "click"),
        (ButtonRelease(1, 0, 0, "left"), "release"),
        (Scroll(1, 0, 0, 0, -1), "scroll"),
        (WindowFocus(1, "t", "App", 1, 0, 0, 1, 1), "focus"),
        (KeyPress(1, "a", None, 97, ()), "key"),
        (KeyPress(1, "A", None, 65, ("shift",)), "key"),
        (KeyPress(1, " ", "space", 32, ()), "key"),
        (KeyPress(1, None, "backspace", 0xFF08, ()), "key"),
        (KeyPress(1, "c", None, 99, ("ctrl",)), "hotkey"),
        (KeyPress(1, None, "enter", 0xFF0D, ()), "hotkey"),
        (KeyPress(1, None, "tab", 0xFF09, ()), "hotkey"),
        (KeyPress(1, None, "ctrl_l", 0xFFE3, ()), None),
        (KeyPress(1, None, "shift", 0xFFE1, ()), None),
        (KeyRelease(1, "a", None, 97, ()), None),
        (PointerMove(1, 0, 0), None),
        (Marker(1, "pause"), None),
    ],
)
def test_action_reasons(event: Event, reason: str | None) -> None:
    assert action_reason(event) == reason


def test_invalid_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid screen rates"):
        ScreenWatch(TimedScreen(), Sink(), max_fps=1.0, idle_fps=2.0)


class TwoMonitorMss:
    """Stands in for mss on a machine with two monitors side by side (Xvfb cannot show mss two)."""

    monitors = [  # noqa: RUF012 - mss's own shape
        {"left": -1280, "top": 0, "width": 3200, "height": 1080},
        {"left": -1280, "top": 56, "width": 1280, "height": 1024},
        {"left": 0, "top": 0, "width": 1920, "height": 1080},
    ]

    def grab(self, region: dict[str, int]) -> object:
        class Raw:
            size = (region["width"], region["height"])
            raw = bytearray(region["width"] * region["height"] * 4)

        return Raw()

    def close(self) -> None:
        pass


def test_every_monitor_is_grabbed_and_the_layout_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    import mss

    monkeypatch.setattr(mss, "MSS", TwoMonitorMss, raising=False)
    sink = Sink()
    w = ScreenWatch(screen_mod.MssGrabber(), sink, **FAST)
    w.start()
    try:
        wait_until(lambda: len(sink.frames) == 1)
    finally:
        w.stop()
    (frame,) = sink.frames
    assert (frame.left, frame.top, frame.width, frame.height) == (-1280, 0, 3200, 1080)
    (layout,) = [e for e in sink.events if isinstance(e, Marker)]
    assert layout.detail == {
        "virtual": [-1280, 0, 3200, 1080],
        "monitors": [[-1280, 56, 1280, 1024], [0, 0, 1920, 1080]],
    }
