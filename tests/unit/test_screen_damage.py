"""The screen watcher with reported changes, on a synthetic screen that reports what is painted on it
(the real X11 source is tested in tests/display/test_damage.py): grabs only when and where it
changed, the frame patched in place while stored shots never change, the previous frame put back
from its patched rows, staleness, the encoder seam, and every fallback to polling."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator

import pytest

from agent.capture.boxes import Box
from agent.capture.screen import ScreenWatch, Shot, encode_frame
from agent.events import Event, Frame, now_ns
from tests.unit.test_screen_watch import Sink, wait_until

W, H = 40, 30


class PaintScreen:
    """A BGRA screen that tests paint boxes on; a :class:`~agent.capture.RegionGrabber`."""

    def __init__(self) -> None:
        self.pixels = bytearray(W * H * 4)
        self.lock = threading.Lock()
        self.whole = 0
        self.parts: list[tuple[int, int, int, int]] = []
        self.closed = False

    def paint(self, box: Box, value: int) -> None:
        with self.lock:
            x0, y0, x1, y1 = box
            for y in range(y0, y1):
                self.pixels[(y * W + x0) * 4 : (y * W + x1) * 4] = bytes([value]) * ((x1 - x0) * 4)

    def shoot(self, t_ns: int) -> Shot:
        with self.lock:
            self.whole += 1
            return Shot(t_ns, 0, 0, W, H, bytearray(self.pixels), ((0, 0, W, H),))

    def grab_box(self, left: int, top: int, width: int, height: int) -> bytes:
        with self.lock:
            self.parts.append((left, top, width, height))
            return b"".join(
                bytes(self.pixels[(y * W + left) * 4 : (y * W + left + width) * 4])
                for y in range(top, top + height)
            )

    def close(self) -> None:
        self.closed = True


class PaintChanges:
    """Reports the boxes :meth:`paint` painted (a :class:`~agent.capture.ScreenChanges`)."""

    def __init__(self, screen: PaintScreen) -> None:
        self.screen = screen
        self.lock = threading.Lock()
        self.pending: list[Box] = []
        self.first: int | None = None
        self.wake: Callable[[int], None] | None = None
        self.alive = False
        self.fail: Exception | None = None
        self.takes = 0

    def paint(self, box: Box, value: int, *, report: bool = True) -> None:
        self.screen.paint(box, value)
        if not report:
            return
        with self.lock:
            self.pending.append(box)
            woke = self.first is None
            if woke:
                self.first = now_ns()
            first = self.first
        if woke and self.wake is not None and first is not None:
            self.wake(first)

    def start(self, wake: Callable[[int], None]) -> None:
        if self.fail is not None:
            raise self.fail
        self.wake, self.alive = wake, True

    def take(self) -> list[Box] | None:
        if self.fail is not None:
            raise self.fail
        with self.lock:
            self.takes += 1
            taken, self.pending, self.first = self.pending, [], None
            return taken

    def dirty_since(self) -> int | None:
        with self.lock:
            return self.first

    def is_alive(self) -> bool:
        return self.alive

    def close(self) -> None:
        self.alive = False


class KeepingEncoder:
    """An encoder that keeps every shot it is given (as a region encoder keeps its reference) and
    what its pixels were then."""

    def __init__(self) -> None:
        self.kept: list[tuple[Shot, bytes, str]] = []

    def encode(self, shot: Shot, reason: str) -> Event:
        self.kept.append((shot, bytes(shot.pixels), reason))
        return encode_frame(shot, reason)

    def lost(self) -> None:
        """Nothing here depends on an earlier frame."""


FAST = {"max_fps": 50.0, "idle_fps": 50.0, "settle_s": 0.1, "keyframe_s": 60.0, "coalesce_s": 0.0}

Parts = tuple[ScreenWatch, PaintScreen, PaintChanges, Sink]


@pytest.fixture
def parts() -> Iterator[Parts]:
    screen = PaintScreen()
    changes = PaintChanges(screen)
    sink = Sink()
    watch = ScreenWatch(screen, sink, changes=changes, **FAST)  # type: ignore[arg-type]
    watch.start()
    wait_until(lambda: len(sink.frames) == 1)
    yield watch, screen, changes, sink
    watch.stop()


def value_at(frame: Frame) -> int:
    import io

    from PIL import Image

    pixel = Image.open(io.BytesIO(frame.data)).convert("RGB").getpixel((1, 1))
    assert isinstance(pixel, tuple)
    return int(pixel[0])


def test_a_still_screen_is_not_grabbed(parts: Parts) -> None:
    watch, screen, changes, _ = parts
    threading.Event().wait(0.3)  # 15 ticks at 50 fps
    assert watch.grabs == 1 and screen.whole == 1 and not screen.parts
    assert watch.reports_changes and changes.alive


def test_a_painted_box_is_grabbed_alone_and_patched(parts: Parts) -> None:
    watch, screen, changes, sink = parts
    changes.paint((2, 3, 6, 5), 200)
    wait_until(lambda: watch.region_grabs == 1)
    assert screen.parts == [(2, 3, 4, 2)] and screen.whole == 1
    current = watch._current
    assert current is not None and bytes(current.pixels) == bytes(screen.pixels)
    t = now_ns()
    watch.action(t, "click")
    changes.paint((0, 0, W, H), 90)  # the click changes everything
    wait_until(lambda: len(sink.frames) == 3)
    _, click, settled = sink.frames
    assert click.reason == "click" and settled.reason == "settled"
    assert value_at(settled) == 90 and watch.grabs == 3  # the whole screen changed: a whole grab


def shows(encoder: KeepingEncoder, value: int) -> bool:
    return any(then[0] == value for _, then, _ in encoder.kept)


def test_stored_shots_never_change_after(parts: Parts) -> None:
    watch, _, changes, _ = parts
    encoder = KeepingEncoder()
    watch._encoder_impl = encoder
    for value in (10, 20, 30, 40):
        watch.action(now_ns(), "click")
        changes.paint((0, 0, 8, 8), value)
        wait_until(functools.partial(shows, encoder, value))
    assert len(encoder.kept) >= 4
    for shot, then, _ in encoder.kept:
        assert bytes(shot.pixels) == then, "a stored shot was patched after it was stored"


def test_the_previous_frame_is_put_back_from_the_patched_rows() -> None:
    """An action stamped before a grab it was queued after: its frame is the one before that
    grab, rebuilt from the kept frame and the rows the grab replaced."""
    screen = PaintScreen()
    changes = PaintChanges(screen)
    watch = ScreenWatch(screen, Sink(), changes=changes, **FAST)  # type: ignore[arg-type]
    watch._start_changes()  # the watcher's steps, on this thread (the threads are not started)
    watch._grab()
    before = bytes(screen.pixels)
    t_action = now_ns()
    changes.paint((1, 1, 4, 4), 77)
    watch._dirty_since = changes.dirty_since()
    watch._grab()  # started after the action
    found = watch._pre_action(t_action)
    assert found is not None
    shot, stale = found
    assert bytes(shot.pixels) == before and shot.t_ns <= t_action
    assert stale == max(0, t_action - (watch._previous_stale or 0))
    current = watch._current
    assert current is not None and bytes(current.pixels) == bytes(screen.pixels)
    watch.stop()


def test_staleness_is_zero_on_a_still_screen_and_the_time_since_the_change_when_not(parts: Parts) -> None:
    watch, _, changes, _ = parts
    threading.Event().wait(0.15)
    watch.action(now_ns(), "click")
    wait_until(lambda: len(watch.skews_ns) == 1)
    assert watch.skews_ns[-1] == 0
    with changes.lock:  # a change seen 50 ms before the action, not grabbed yet
        changes.first = now_ns() - 50_000_000
    watch.action(now_ns(), "scroll")
    wait_until(lambda: len(watch.skews_ns) == 2)
    assert 50_000_000 <= watch.skews_ns[-1] < 5_000_000_000


def test_the_encoder_seam_gets_every_stored_shot(parts: Parts) -> None:
    watch, _, changes, sink = parts
    encoder = KeepingEncoder()
    watch._encoder_impl = encoder
    watch.action(now_ns(), "hotkey")
    changes.paint((0, 0, 3, 3), 55)
    # the settled frame (the hotkey's is the start frame); the sink hears of it after the encoder
    wait_until(lambda: len(encoder.kept) == 1 and len(sink.frames) == 2)
    assert [reason for _, _, reason in encoder.kept] == ["settled"]
    assert [f.reason for f in sink.frames] == ["start", "settled"] and value_at(sink.frames[-1]) == 55


def test_a_source_that_cannot_start_means_polling() -> None:
    screen = PaintScreen()
    changes = PaintChanges(screen)
    changes.fail = OSError("no extension")
    sink = Sink()
    watch = ScreenWatch(screen, sink, changes=changes, **FAST)  # type: ignore[arg-type]
    watch.start()
    try:
        wait_until(lambda: screen.whole >= 5)  # polling: whole grabs at 50 fps
        assert watch.fallbacks == 1 and not watch.reports_changes
    finally:
        watch.stop()


def test_a_failing_take_means_polling(parts: Parts) -> None:
    watch, screen, changes, _ = parts
    changes.fail = ConnectionResetError("gone")
    changes.paint((0, 0, 2, 2), 1)
    wait_until(lambda: watch.fallbacks == 1)
    whole = screen.whole
    wait_until(lambda: screen.whole >= whole + 5)
    assert not watch.reports_changes and watch.is_alive()


def test_a_dead_source_means_polling(parts: Parts) -> None:
    watch, screen, changes, _ = parts
    changes.alive = False
    assert changes.wake is not None
    changes.wake(now_ns())  # what a dying source does
    wait_until(lambda: watch.fallbacks == 1)
    whole = screen.whole
    wait_until(lambda: screen.whole >= whole + 5)


def test_an_unreported_change_is_caught_by_the_verification_grab() -> None:
    screen = PaintScreen()
    changes = PaintChanges(screen)
    sink = Sink()
    watch = ScreenWatch(screen, sink, changes=changes, **{**FAST, "verify_s": 0.05})  # type: ignore[arg-type]
    watch.start()
    try:
        wait_until(lambda: len(sink.frames) == 1)
        wait_until(lambda: watch.verifications >= 2)
        assert watch.fallbacks == 0
        changes.paint((0, 0, 5, 5), 123, report=False)
        wait_until(lambda: watch.fallbacks == 1)
        wait_until(lambda: len(sink.frames) == 2)
        assert sink.frames[-1].reason == "keyframe" and value_at(sink.frames[-1]) == 123
    finally:
        watch.stop()


def test_invalid_verify_and_coalesce_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid screen rates"):
        ScreenWatch(PaintScreen(), Sink(), verify_s=0.0)
    with pytest.raises(ValueError, match="invalid screen rates"):
        ScreenWatch(PaintScreen(), Sink(), coalesce_s=-1.0)
