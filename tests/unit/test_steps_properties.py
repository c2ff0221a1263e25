"""Properties of steps (agent.steps) on arbitrary event sequences: never raises, well-formed output."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import (
    MARKERS,
    ButtonPress,
    ButtonRelease,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Redacted,
    Scroll,
    WindowFocus,
)
from agent.steps import ACTIONS, Step, steps

CHARS = ["a", "b", "Z", "1", "@", "é", " ", "\x03", "\x16", "\x1b", "v", "V", "", "ab"]
NAMES = [
    "enter",
    "space",
    "backspace",
    "delete",
    "left",
    "right",
    "home",
    "end",
    "up",
    "tab",
    "escape",
    "insert",
    "f5",
    "shift",
    "ctrl_l",
    "alt",
    "alt_gr",
    "cmd",
    "caps_lock",
]
MODS = ["shift", "ctrl", "alt", "alt_gr", "super", "hyper"]
BUTTONS = ["left", "left", "right", "middle", "x1"]

coord = st.sampled_from([0, 0, 2, 5, 9, 40]) | st.integers(-20, 2000)
maybe_int = st.none() | st.integers(-5, 70000)
mods = st.lists(st.sampled_from(MODS), max_size=3, unique=True).map(lambda m: tuple(sorted(m)))
text = st.none() | st.text(alphabet="ab [@]\n", max_size=6)


def _key(cls: type[Any]) -> st.SearchStrategy[Any]:
    char = st.none() | st.sampled_from(CHARS)
    name = st.none() | st.sampled_from(NAMES)
    return st.builds(cls, st.just(0), char, name, maybe_int, mods)


def _marker() -> st.SearchStrategy[Any]:
    detail = st.sampled_from(
        [{}, {"backend": "win32"}, {"backend": "darwin"}, {"backend": 3}, {"active": True}]
    )
    return st.builds(lambda name, d: Marker(0, name, d), st.sampled_from(sorted(MARKERS)), detail)


EVENT = st.one_of(
    st.builds(PointerMove, st.just(0), coord, coord),
    st.builds(ButtonPress, st.just(0), coord, coord, st.sampled_from(BUTTONS)),
    st.builds(ButtonRelease, st.just(0), coord, coord, st.sampled_from(BUTTONS)),
    st.builds(Scroll, st.just(0), coord, coord, st.integers(-2, 2), st.integers(-3, 3)),
    _key(KeyPress),
    _key(KeyPress),
    _key(KeyRelease),
    st.builds(Paste, st.just(0), text),
    st.builds(Redacted, st.just(0), st.sampled_from(["EMAIL", "PASSWORD", ""])),
    st.builds(Frame, st.just(0), coord, coord, coord, coord, st.just("webp"), st.just("click"), st.just(b"")),
    st.builds(
        WindowFocus,
        st.just(0),
        st.none() | st.just("title"),
        st.none() | st.sampled_from(["xterm", "firefox"]),
        maybe_int,
        maybe_int,
        maybe_int,
        maybe_int,
        maybe_int,
    ),
    _marker(),
)


#: A click (press and release close together), so that clicks and double clicks come up.
CLICK = st.builds(
    lambda b, x, y, d: [ButtonPress(0, x, y, b), ButtonRelease(0, x + d, y, b)],
    st.sampled_from(BUTTONS),
    coord,
    coord,
    st.integers(0, 7),
)
#: A few typed characters, each pressed and released.
WORD = st.lists(st.sampled_from("ab Z1"), min_size=1, max_size=5).map(
    lambda cs: [
        ev
        for c in cs
        for ev in (
            (KeyPress(0, None, "space", None, ()), KeyRelease(0, None, "space", None, ()))
            if c == " "
            else (KeyPress(0, c, None, ord(c), ()), KeyRelease(0, c, None, ord(c), ()))
        )
    ]
)


@st.composite
def streams(draw: st.DrawFn, *, distinct: bool = False) -> list[Any]:
    """Events at non-decreasing times (gaps from 0 to 3 s; ``distinct``: never equal)."""
    chunks = draw(st.lists(EVENT.map(lambda e: [e]) | CLICK | WORD, max_size=40))
    events = [e for chunk in chunks for e in chunk]
    gaps = st.sampled_from([1, 2, 1_000, 50_000_000, 200_000_000, 400_000_000, 600_000_000, 3_000_000_000])
    if not distinct:
        gaps = gaps | st.just(0)
    t = 0
    out = []
    for ev in events:
        t += draw(gaps)
        out.append(_at(ev, t))
    return out


def _at(ev: Any, t: int) -> Any:
    return dataclasses.replace(ev, t_ns=t)


INPUT = (PointerMove, ButtonPress, ButtonRelease, Scroll, KeyPress, KeyRelease, Paste, Redacted)
MODIFIER_NAMES = {"shift", "ctrl_l", "alt", "alt_gr", "cmd", "caps_lock"}


def check(events: list[Any], got: list[Step]) -> None:
    seen: set[int] = set()
    prev_end = None
    prev_start = None
    for s in got:
        assert s.action in ACTIONS
        assert s.t_start_ns <= s.t_end_ns
        if prev_end is not None:
            assert prev_end <= s.t_start_ns  # in time order, no overlap
            assert prev_start is not None
            assert prev_start <= s.t_start_ns
        prev_start, prev_end = s.t_start_ns, s.t_end_ns
        assert s.events
        assert not seen.intersection(s.events)
        seen.update(s.events)
        times = [events[i].t_ns for i in s.events]
        assert min(times) == s.t_start_ns
        assert max(times) == s.t_end_ns
        for i in s.events:
            ev = events[i]
            assert isinstance(ev, INPUT)
            assert not (isinstance(ev, (KeyPress, KeyRelease)) and ev.name in MODIFIER_NAMES)
        _check_context(events, s, Frame, s.frame)
        _check_context(events, s, WindowFocus, s.window)
        _check_fields(s)
        json.dumps(s.to_json(events))


def _check_context(events: list[Any], s: Step, cls: type[Any], index: int | None) -> None:
    before = [i for i, e in enumerate(events) if isinstance(e, cls) and e.t_ns <= s.t_start_ns]
    if not before:
        assert index is None
        return
    assert index is not None
    assert isinstance(events[index], cls)
    assert events[index].t_ns == max(events[i].t_ns for i in before)


def _check_fields(s: Step) -> None:
    if s.action in ("click", "double_click", "right_click", "middle_click", "drag", "scroll"):
        assert s.x is not None
        assert s.y is not None
    if s.action == "drag":
        assert s.to_x is not None
    if s.action in ("hotkey", "key"):
        assert s.keys
        assert s.text is None
        assert (len(s.keys) == 1) == (s.action == "key")
    if s.action != "type":
        assert s.text is None


@settings(max_examples=400, deadline=None)
@given(streams())
def test_steps_never_raise_and_are_well_formed(events: list[Any]) -> None:
    check(events, steps(events))


@settings(max_examples=200, deadline=None)
@given(streams(), st.randoms(use_true_random=False))
def test_unsorted_input_is_sorted_first(events: list[Any], rnd: Any) -> None:
    shuffled = list(events)
    rnd.shuffle(shuffled)
    check(shuffled, steps(shuffled))


@settings(max_examples=200, deadline=None)
@given(streams(distinct=True), st.randoms(use_true_random=False))
def test_order_of_the_input_does_not_change_the_steps(events: list[Any], rnd: Any) -> None:
    perm = list(range(len(events)))
    rnd.shuffle(perm)
    shuffled = [events[k] for k in perm]
    got = steps(shuffled)
    expected = steps(events)
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.action, a.t_start_ns, a.t_end_ns, a.text, a.keys, a.dx, a.dy) == (
            b.action,
            b.t_start_ns,
            b.t_end_ns,
            b.text,
            b.keys,
            b.dx,
            b.dy,
        )
        assert sorted(perm[i] for i in a.events) == sorted(b.events)


@settings(max_examples=300, deadline=None)
@given(streams())
def test_typed_text_holds_only_what_was_typed_pasted_or_redacted(events: list[Any]) -> None:
    allowed = {" "}
    for ev in events:
        if isinstance(ev, KeyPress) and ev.char:
            allowed.update(ev.char + ev.char.swapcase())  # caps lock may change the case
        elif isinstance(ev, Paste) and ev.text:
            allowed.update(ev.text)
        elif isinstance(ev, Redacted):
            allowed.update(f"[{ev.entity or 'REDACTED'}]")
    for s in steps(events):
        if s.text is not None:
            assert set(s.text) <= allowed


@settings(max_examples=100, deadline=None)
@given(streams())
def test_steps_are_deterministic(events: list[Any]) -> None:
    assert steps(events) == steps(events)


def _maybe(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


#: Events whose fields break their annotations (None positions, buttons, deltas, modifiers).
MALFORMED = st.one_of(
    st.builds(PointerMove, st.just(0), _maybe(coord), _maybe(coord)),
    st.builds(ButtonPress, st.just(0), _maybe(coord), _maybe(coord), _maybe(st.sampled_from(BUTTONS))),
    st.builds(ButtonRelease, st.just(0), _maybe(coord), _maybe(coord), _maybe(st.sampled_from(BUTTONS))),
    st.builds(
        Scroll,
        st.just(0),
        _maybe(coord),
        _maybe(coord),
        _maybe(st.integers(-2, 2)),
        _maybe(st.integers(-2, 2)),
    ),
    st.builds(
        KeyPress,
        st.just(0),
        _maybe(st.sampled_from(CHARS)),
        _maybe(st.sampled_from(NAMES)),
        maybe_int,
        _maybe(mods),
    ),
    st.builds(
        KeyRelease,
        st.just(0),
        _maybe(st.sampled_from(CHARS)),
        _maybe(st.sampled_from(NAMES)),
        maybe_int,
        _maybe(mods),
    ),
    st.builds(Marker, st.just(0), st.sampled_from(sorted(MARKERS)), st.none()),
    st.builds(Redacted, st.just(0), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(EVENT | MALFORMED, st.integers(0, 10**9)), max_size=50))
def test_malformed_fields_never_raise(items: list[tuple[Any, int]]) -> None:
    t = 0
    events = []
    for ev, gap in items:
        t += gap
        events.append(_at(ev, t))
    for s in steps(events):
        assert s.t_start_ns <= s.t_end_ns
        json.dumps(s.to_json(events))
