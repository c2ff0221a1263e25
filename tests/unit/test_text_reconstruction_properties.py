"""Properties of typed-text reconstruction: provenance always points at what produced a character."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import (
    MARKERS,
    ButtonPress,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Scroll,
    WindowFocus,
)
from agent.keyboard.editing import Field
from agent.keyboard.replay import key_windows, reconstruct

CHARS = "abcxyzABCXYZ0129 .,-_@/äéß€"


def _tap(events: list[Event], char: str | None, name: str | None, mods: tuple[str, ...]) -> None:
    events.append(KeyPress(len(events), char, name, None, mods))
    events.append(KeyRelease(len(events), char, name, None, ()))


@st.composite
def editing(draw: st.DrawFn) -> tuple[list[Event], list[str]]:
    """One field's worth of editing keys and pastes; also what each insertion inserted, in order."""
    events: list[Event] = []
    inserted: list[str] = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(
            st.sampled_from(
                ["char", "char", "char", "shift_char", "space", "edit", "move", "shortcut", "paste"]
            )
        )
        if kind in ("char", "shift_char"):
            c = draw(st.sampled_from(CHARS))
            mods = ("shift",) if kind == "shift_char" else ()
            if c == " ":
                _tap(events, None, "space", mods)
            elif draw(st.booleans()):
                _tap(events, c, None, mods)
            else:  # key repeat: a press without its release
                events.append(KeyPress(len(events), c, None, None, mods))
            inserted.append(c)
        elif kind == "space":
            _tap(events, None, "space", ())
            inserted.append(" ")
        elif kind == "edit":
            name = draw(st.sampled_from(["backspace", "delete"]))
            _tap(events, None, name, draw(st.sampled_from([(), ("ctrl",), ("alt",)])))
        elif kind == "move":
            name = draw(st.sampled_from(["left", "right", "home", "end"]))
            _tap(events, None, name, draw(st.sampled_from([(), ("shift",), ("ctrl",), ("ctrl", "shift")])))
        elif kind == "shortcut":
            _tap(events, draw(st.sampled_from("acbiu")), None, ("ctrl",))
        else:
            text = draw(st.text(alphabet=CHARS + "\n", min_size=1, max_size=6))
            events.append(KeyPress(len(events), "v", None, None, ("ctrl",)))
            events.append(Paste(len(events), text))
            events.append(KeyRelease(len(events), "v", None, None, ()))
            inserted.append(text)
    return events, inserted


def produced_by(events: list[Event], index: int, char: str) -> bool:
    ev = events[index]
    if isinstance(ev, KeyPress):
        return (ev.char is not None and char in ev.char) or (ev.name == "space" and char == " ")
    return isinstance(ev, Paste) and ev.text is not None and char in ev.text


def check_field(events: list[Event], field: Field) -> None:
    assert len(field.cells) == len(field.text)
    assert len(field.typed_events) == len(field.typed)
    assert 0 <= field.first <= field.last < len(events)
    for i in (*field.cells, *field.typed_events):
        assert field.first <= i <= field.last
        assert isinstance(events[i], (KeyPress, Paste))
    # every character of the final text was inserted once: it is among the typed characters
    assert not Counter(zip(field.text, field.cells, strict=True)) - Counter(
        zip(field.typed, field.typed_events, strict=True)
    )
    for a, b in field.links:
        assert a <= field.last
        assert b <= field.last


@settings(max_examples=300, deadline=None)
@given(editing())
def test_every_character_points_at_the_event_that_produced_it(case: tuple[list[Event], list[str]]) -> None:
    events, inserted = case
    fields = reconstruct(events)
    assert len(fields) <= 1  # no key here ends a field
    for field in fields:
        check_field(events, field)
        for char, index in zip(field.text, field.cells, strict=True):
            assert produced_by(events, index, char)
        for char, index in zip(field.typed, field.typed_events, strict=True):
            assert produced_by(events, index, char)
        assert field.typed == "".join(inserted)  # everything inserted, in order, deleted or not
        assert not field.uncertain
    if not fields:
        assert not inserted


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "1", "BS"]), max_size=30))
def test_plain_typing_with_backspaces_matches_a_stack(keys: list[str]) -> None:
    events: list[Event] = []
    model: list[str] = []
    for k in keys:
        if k == "BS":
            _tap(events, None, "backspace", ())
            if model:
                model.pop()
        else:
            _tap(events, k, None, ())
            model.append(k)
    fields = reconstruct(events)
    text = fields[0].text if fields else ""
    assert text == "".join(model)


@settings(max_examples=200, deadline=None)
@given(editing(), st.lists(st.tuples(st.integers(-2, 50), st.integers(-2, 50), st.booleans()), max_size=6))
def test_key_windows_hold_the_span_and_are_disjoint(
    case: tuple[list[Event], list[str]], spans: list[tuple[int, int, bool]]
) -> None:
    events, _ = case
    fields = reconstruct(events)
    items = [(f, "typed" if typed else "text", a, b, "SECRET") for f in fields for a, b, typed in spans]
    windows = key_windows(items)
    for (_, hi, _), (lo2, _, _) in itertools.pairwise(windows):
        assert hi < lo2
    for lo, hi, entity in windows:
        assert 0 <= lo <= hi < len(events)
        assert entity == "SECRET"
    for f, stream, a, b, _ in items:
        prov = f.cells if stream == "text" else f.typed_events
        for i in prov[max(a, 0) : max(b, 0)]:
            assert any(lo <= i <= hi for lo, hi, _ in windows)


# --- arbitrary event sequences -----------------------------------------------------------------

NAMES = [
    "shift",
    "shift_r",
    "ctrl_l",
    "alt",
    "alt_gr",
    "cmd",
    "caps_lock",
    "space",
    "backspace",
    "delete",
    "left",
    "right",
    "up",
    "down",
    "home",
    "end",
    "page_up",
    "tab",
    "enter",
    "kp_enter",
    "esc",
    "insert",
    "f5",
    "menu",
    "media_play_pause",
]
MODS = ["shift", "ctrl", "alt", "alt_gr", "super", "hyper"]
VKS = st.one_of(st.none(), st.integers(0, 70000), st.sampled_from([0xFE03, 0xFE11, 0xFE50, 0xFE51, 0xFE93]))
KEY_FIELDS = st.tuples(
    st.one_of(st.none(), st.text(max_size=3), st.sampled_from(["´", "`", "\x01", "\x16", "\x7f", "a", "A"])),
    st.one_of(st.none(), st.sampled_from(NAMES), st.text(max_size=6)),
    VKS,
    st.lists(st.sampled_from(MODS), max_size=3, unique=True).map(lambda m: tuple(sorted(m))),
)
APPS = st.sampled_from([None, "", "XTerm", "Firefox", "cmd.exe", "com.apple.Terminal", "Gedit"])


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        char, name, vk, mods = draw(KEY_FIELDS)
        return KeyPress(0, char, name, vk, mods)
    if kind <= 5:
        char, name, vk, mods = draw(KEY_FIELDS)
        return KeyRelease(0, char, name, vk, mods)
    if kind == 6:
        return Paste(
            0,
            draw(st.one_of(st.none(), st.text(max_size=5))),
            draw(st.sampled_from(["clipboard", "primary"])),
        )
    if kind == 7:
        pointer: list[Event] = [
            ButtonPress(0, 1, 1, "left"),
            ButtonPress(0, 1, 1, "middle"),
            Scroll(0, 1, 1, 0, 1),
            PointerMove(0, 2, 2),
        ]
        return draw(st.sampled_from(pointer))
    if kind == 8:
        return WindowFocus(0, "t", draw(APPS), draw(st.one_of(st.none(), st.integers(1, 3))))
    marker = draw(st.sampled_from(sorted(MARKERS)))
    detail = (
        {"backend": draw(st.sampled_from(["xorg", "win32", "darwin", 3]))}
        if marker == "session_start"
        else {}
    )
    return Marker(0, marker, detail)


@settings(max_examples=500, deadline=None)
@given(st.lists(any_event(), max_size=60), st.sampled_from([None, "xorg", "win32", "darwin"]))
def test_reconstruct_never_raises_on_arbitrary_events(events: list[Event], backend: str | None) -> None:
    fields = reconstruct(events, backend=backend)
    for field in fields:
        check_field(events, field)
    for i, field in enumerate(fields[1:]):
        assert fields[i].first < field.first
    windows = key_windows((f, s, 0, 10**6, "EMAIL") for f in fields for s in ("text", "typed"))
    for lo, hi, _ in windows:
        assert 0 <= lo <= hi < len(events)
