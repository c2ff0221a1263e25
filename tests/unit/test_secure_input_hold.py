"""agent.capture.secure_input with ``settle_s`` (Linux, issue 16 item 3): after anything that may
move the focus, keys are held until a query that began after the focus settled has answered;
released in order for an ordinary field, left out and counted for a password field or when no
answer comes in time (fail closed)."""

from __future__ import annotations

import time

from agent.backends.virtual_display import wait_for
from agent.capture.secure_input import MAX_HELD, SecureInputWatch
from agent.events import Event, KeyPress, Marker


class Focus:
    """The OS's answer, with how long it takes; each query is recorded with its start time."""

    def __init__(self, answer: bool | None = False, delay: float = 0.0) -> None:
        self.answer = answer
        self.delay = delay
        self.asked: list[float] = []

    def __call__(self) -> bool | None:
        self.asked.append(time.monotonic())
        time.sleep(self.delay)
        return self.answer


def _key(i: int) -> KeyPress:
    return KeyPress(i, chr(ord("a") + i % 26), None, 97 + i % 26, ())


def _watch(focus: Focus, **kw: float) -> tuple[SecureInputWatch, list[Event], list[Event]]:
    markers: list[Event] = []
    stored: list[Event] = []
    watch = SecureInputWatch(
        focus, markers.append, interval=0.05, settle_s=kw.get("settle_s", 0.05), hold_s=kw.get("hold_s", 0.5)
    )
    watch.start()
    return watch, markers, stored


def test_keys_after_a_click_are_held_then_released_in_order() -> None:
    focus = Focus(False)
    watch, markers, stored = _watch(focus)
    try:
        watch.poke()
        poked = time.monotonic()
        for i in range(5):
            watch.admit(_key(i), stored.append)
        assert stored == []  # the focus is not known yet
        assert wait_for(lambda: len(stored) == 5, 2)
        assert [e.t_ns for e in stored] == list(range(5))
        assert any(t >= poked + 0.05 for t in focus.asked)  # judged by a query after the settle time
        assert markers == []
    finally:
        watch.stop()


def test_keys_into_a_password_field_are_left_out_with_a_marker_pair() -> None:
    focus = Focus(False)
    watch, markers, stored = _watch(focus)
    focus.answer = True  # the click lands in a password field
    watch.poke()
    for i in range(4):
        watch.admit(_key(i), stored.append)
    assert wait_for(lambda: watch.active and watch._unknown_since is None, 2)  # judged: left out
    watch.admit(_key(9), stored.append)  # still there: left out at once
    focus.answer = False
    watch.poke()
    assert wait_for(lambda: not watch.active, 2)
    watch.stop()
    assert stored == []
    pair = [m for m in markers if isinstance(m, Marker)]
    assert [m.detail["active"] for m in pair] == [True, False]
    assert pair[1].detail["keys_left_out"] == 5


def test_no_answer_in_time_leaves_the_held_keys_out() -> None:
    focus = Focus(None)  # the lookup keeps failing: cannot tell
    watch, markers, stored = _watch(focus, hold_s=0.2)
    watch.poke()
    for i in range(3):
        watch.admit(_key(i), stored.append)
    assert wait_for(lambda: len(markers) == 2, 2)
    watch.stop()
    assert stored == []
    assert [m.detail["active"] for m in markers if isinstance(m, Marker)] == [True, False]
    assert markers[1].detail["keys_left_out"] == 3  # type: ignore[union-attr]


def test_keys_typed_while_a_password_field_had_the_focus_are_judged_after_the_click() -> None:
    """A click away from a password field: the keys typed at once go to the new field, so they are
    held and released, not left out because the old field was a password field."""
    focus = Focus(True)
    watch, _markers, stored = _watch(focus)
    assert watch.active
    focus.answer = False
    watch.poke()
    watch.admit(_key(1), stored.append)
    assert wait_for(lambda: stored == [_key(1)], 2)
    watch.stop()


def test_a_flood_while_held_is_bounded_and_counted() -> None:
    focus = Focus(False, delay=0.3)
    watch, _markers, stored = _watch(focus)
    watch.poke()
    for i in range(MAX_HELD + 40):
        watch.admit(_key(i), stored.append)
    assert wait_for(lambda: len(stored) == MAX_HELD, 3)
    watch.stop()
    assert [e.t_ns for e in stored] == list(range(MAX_HELD))


def test_stopping_while_keys_are_held_leaves_them_out_with_a_marker_pair() -> None:
    focus = Focus(False, delay=1.0)
    watch, markers, stored = _watch(focus)
    watch.poke()
    watch.admit(_key(0), stored.append)
    watch.stop()
    assert stored == []
    pair = [m for m in markers if isinstance(m, Marker)]
    assert [m.detail["active"] for m in pair] == [True, False]
    assert pair[1].detail == {"active": False, "keys_left_out": 1, "at_stop": True}


def test_no_answer_and_no_key_held_leaves_no_gap() -> None:
    """A click whose focus is never told (a menu, a stalled application) with no key typed after it:
    nothing was left out, so no marker pair says so (it once said a gap of 0 keys)."""
    focus = Focus(None)
    watch, markers, stored = _watch(focus, hold_s=0.2)
    watch.poke()
    assert wait_for(lambda: watch._unknown_since is None, 2)
    watch.admit(_key(1), stored.append)  # the focus is no longer unknown: typing goes on
    watch.stop()
    assert markers == [] and stored == [_key(1)]


def _idle_watch(focus: Focus, markers: list[Event], settle_s: float | None = 0.05) -> SecureInputWatch:
    watch = SecureInputWatch(focus, markers.append, interval=0.02, settle_s=settle_s, idle_s=0.2, fresh_s=0.1)
    watch.start()
    return watch


def test_an_idle_watch_asks_nothing_and_judges_the_next_key_afresh() -> None:
    """Nobody types or clicks: no questions (an idle desktop costs nothing).  A password field that
    took the focus by itself meanwhile (no click, no focus event) is caught at the first key."""
    focus = Focus(False, delay=0.02)
    markers: list[Event] = []
    stored: list[Event] = []
    watch = _idle_watch(focus, markers)
    try:
        time.sleep(0.4)
        asked = len(focus.asked)
        time.sleep(0.5)
        assert len(focus.asked) == asked, "an idle watch kept asking"
        assert asked <= 0.25 / 0.02 + 2  # it stopped about idle_s after the start
        focus.answer = True  # a password dialog took the focus by itself
        watch.admit(_key(0), stored.append)
        watch.admit(_key(1), stored.append)
        assert wait_for(lambda: watch.active and watch._unknown_since is None, 2)
        assert stored == []
        assert len(focus.asked) > asked
        time.sleep(0.1)
        assert len(focus.asked) >= asked + 3, "typing did not resume the questions"
        focus.answer = False
        watch.poke()
        assert wait_for(lambda: not watch.active, 2)
    finally:
        watch.stop()
    pair = [m for m in markers if isinstance(m, Marker)]
    assert [m.detail["active"] for m in pair] == [True, False]
    assert pair[1].detail["keys_left_out"] == 2


def test_a_key_after_idle_into_an_ordinary_field_is_held_then_released() -> None:
    focus = Focus(False, delay=0.05)
    markers: list[Event] = []
    stored: list[Event] = []
    watch = _idle_watch(focus, markers)
    try:
        time.sleep(0.4)
        watch.admit(_key(0), stored.append)
        assert stored == []  # held: the last question is too old to judge it
        assert wait_for(lambda: stored == [_key(0)], 2)
        watch.admit(_key(1), stored.append)  # asked lately now: typing goes on unheld
        assert stored == [_key(0), _key(1)]
    finally:
        watch.stop()
    assert markers == []


def test_where_the_os_tells_at_once_the_watch_keeps_asking() -> None:
    """Without ``settle_s`` (Windows, macOS: a cheap flag) nothing is held, so the questions are
    the only guard: they go on while idle."""
    focus = Focus(False)
    watch = _idle_watch(focus, [], settle_s=None)
    try:
        time.sleep(0.4)
        asked = len(focus.asked)
        assert wait_for(lambda: len(focus.asked) > asked + 5, 2)
    finally:
        watch.stop()
