"""Steps (agent.steps): raw events to normalised actions, each rule on its own."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Redacted,
    Scroll,
    TaskEnd,
    TaskStart,
    WindowFocus,
)
from agent.steps import (
    ACTIONS,
    CLICK_SLOP_PX,
    DOUBLE_CLICK_NS,
    SCROLL_GAP_NS,
    SCROLL_SLOP_PX,
    STEPS_VERSION,
    TYPE_GAP_NS,
    Step,
    steps,
)

MS = 1_000_000


class Rec:
    """A stream under construction: every event ``gap`` ms after the previous one."""

    def __init__(self, gap_ms: int = 20) -> None:
        self.events: list[Any] = []
        self.t = 0
        self.gap = gap_ms * MS

    def add(self, make: Any, *args: Any, gap_ms: int | None = None) -> int:
        self.t += self.gap if gap_ms is None else gap_ms * MS
        self.events.append(make(self.t, *args))
        return len(self.events) - 1

    def wait(self, ms: int) -> None:
        self.t += ms * MS

    # pointer
    def press(self, x: int, y: int, button: str = "left", **kw: Any) -> int:
        return self.add(ButtonPress, x, y, button, **kw)

    def release(self, x: int, y: int, button: str = "left", **kw: Any) -> int:
        return self.add(ButtonRelease, x, y, button, **kw)

    def move(self, x: int, y: int, **kw: Any) -> int:
        return self.add(PointerMove, x, y, **kw)

    def click(self, x: int, y: int, button: str = "left", **kw: Any) -> tuple[int, int]:
        return self.press(x, y, button, **kw), self.release(x, y, button)

    def scroll(self, x: int, y: int, dx: int, dy: int, **kw: Any) -> int:
        return self.add(Scroll, x, y, dx, dy, **kw)

    # keys
    def down(
        self, char: str | None = None, name: str | None = None, mods: tuple[str, ...] = (), **kw: Any
    ) -> int:
        return self.add(KeyPress, char, name, None if char is None else ord(char[0]), mods, **kw)

    def up(
        self, char: str | None = None, name: str | None = None, mods: tuple[str, ...] = (), **kw: Any
    ) -> int:
        return self.add(KeyRelease, char, name, None if char is None else ord(char[0]), mods, **kw)

    def tap(
        self, char: str | None = None, name: str | None = None, mods: tuple[str, ...] = (), **kw: Any
    ) -> int:
        i = self.down(char, name, mods, **kw)
        self.up(char, name, mods)
        return i

    def type(self, text: str) -> None:
        for c in text:
            if c == " ":
                self.tap(name="space")
            elif c.isupper():
                self.down(name="shift")
                self.tap(c, mods=("shift",))
                self.up(name="shift")
            else:
                self.tap(c)

    def combo(self, *keys: str) -> int:
        """Hold the modifiers (pynput names), tap the last key, release them."""
        *mods, key = keys
        held: list[str] = []
        for m in mods:
            self.down(name=m + "_l", mods=tuple(sorted(held)))
            held.append(m)
        named = len(key) > 1
        i = self.tap(None if named else key, key if named else None, tuple(sorted(held)))
        for m in reversed(mods):
            held.remove(m)
            self.up(name=m + "_l", mods=tuple(sorted(held)))
        return i

    def paste(self, text: str | None) -> int:
        return self.add(Paste, text)

    def redacted(self, entity: str) -> int:
        return self.add(Redacted, entity)

    # context
    def frame(self, reason: str = "click", **kw: Any) -> int:
        return self.add(Frame, 0, 0, 100, 100, "webp", reason, b"", **kw)

    def focus(self, title: str | None = "t", app: str | None = "app", pid: int | None = 7, **kw: Any) -> int:
        return self.add(WindowFocus, title, app, pid, 0, 0, 800, 600, **kw)

    def marker(self, name: str, detail: dict[str, Any] | None = None) -> int:
        return self.add(Marker, name, detail or {})

    def steps(self) -> list[Step]:
        return steps(self.events)


def one(rec: Rec) -> Step:
    got = rec.steps()
    assert len(got) == 1, got
    return got[0]


def actions(rec: Rec) -> list[str]:
    return [s.action for s in rec.steps()]


# --- clicks ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("button", "action"), [("left", "click"), ("right", "right_click"), ("middle", "middle_click")]
)
def test_a_press_and_release_is_a_click_at_the_press_position(button: str, action: str) -> None:
    r = Rec()
    p = r.press(100, 200, button)
    m = r.move(103, 203)
    q = r.release(103, 204, button)
    s = one(r)
    assert (s.action, s.x, s.y, s.button) == (action, 100, 200, button)
    assert (s.t_start_ns, s.t_end_ns) == (r.events[p].t_ns, r.events[q].t_ns)
    assert s.events == (p, m, q)  # the moves while the button is held are the gesture's


def test_moving_beyond_the_slop_makes_a_drag_from_press_to_release() -> None:
    r = Rec()
    r.press(100, 100)
    r.move(100 + CLICK_SLOP_PX + 1, 100)
    r.move(300, 250)
    r.release(300, 250)
    s = one(r)
    assert (s.action, s.x, s.y, s.to_x, s.to_y, s.button) == ("drag", 100, 100, 300, 250, "left")
    assert len(s.events) == 4


def test_a_release_just_beyond_the_slop_is_a_drag_and_the_slop_itself_a_click() -> None:
    r = Rec()
    r.press(0, 0)
    r.release(3, 4)  # exactly 5 px
    r.wait(1000)
    r.press(0, 0)
    r.release(4, 4)  # 5.66 px
    assert actions(r) == ["click", "drag"]


def test_a_drag_that_comes_back_is_still_a_drag() -> None:
    r = Rec()
    r.press(10, 10)
    r.move(80, 10)
    r.release(12, 10)
    s = one(r)
    assert (s.action, s.to_x, s.to_y) == ("drag", 12, 10)


def test_right_and_middle_drags_name_their_button() -> None:
    r = Rec()
    r.press(0, 0, "right")
    r.release(50, 0, "right")
    r.wait(1000)
    r.press(0, 0, "middle")
    r.release(0, 50, "middle")
    assert [(s.action, s.button) for s in r.steps()] == [("drag", "right"), ("drag", "middle")]


def test_other_buttons_make_no_step_but_end_typing() -> None:
    r = Rec()
    r.type("ab")
    r.click(5, 5, "x1")
    r.type("c")
    got = r.steps()
    assert [(s.action, s.text) for s in got] == [("type", "ab"), ("type", "c")]


def test_two_quick_left_clicks_are_a_double_click() -> None:
    r = Rec(gap_ms=50)
    a, b = r.click(10, 10)
    c, d = r.click(12, 11)
    s = one(r)
    assert (s.action, s.x, s.y, s.button) == ("double_click", 10, 10, "left")
    assert s.events == (a, b, c, d)
    assert (s.t_start_ns, s.t_end_ns) == (r.events[a].t_ns, r.events[d].t_ns)


def test_clicks_too_slow_or_too_far_apart_stay_single() -> None:
    r = Rec()
    r.click(10, 10)
    r.wait(DOUBLE_CLICK_NS // MS)
    r.click(10, 10)  # second press more than 500 ms after the first
    r.wait(2000)
    r.click(10, 10)
    r.click(10 + CLICK_SLOP_PX + 1, 10)  # quick but too far
    assert actions(r) == ["click", "click", "click", "click"]


def test_presses_exactly_the_double_click_time_apart_pair() -> None:
    r = Rec()
    r.add(ButtonPress, 1, 1, "left", gap_ms=1)
    r.add(ButtonRelease, 1, 1, "left", gap_ms=100)
    r.add(ButtonPress, 1, 1, "left", gap_ms=DOUBLE_CLICK_NS // MS - 100)
    r.add(ButtonRelease, 1, 1, "left", gap_ms=100)
    assert actions(r) == ["double_click"]


def test_a_triple_click_is_a_double_click_and_a_click_and_four_are_two_doubles() -> None:
    r = Rec(gap_ms=40)
    for _ in range(3):
        r.click(5, 5)
    assert actions(r) == ["double_click", "click"]
    r = Rec(gap_ms=40)
    for _ in range(4):
        r.click(5, 5)
    assert actions(r) == ["double_click", "double_click"]


def test_right_clicks_never_pair() -> None:
    r = Rec(gap_ms=40)
    r.click(5, 5, "right")
    r.click(5, 5, "right")
    assert actions(r) == ["right_click", "right_click"]


def test_a_step_between_two_clicks_keeps_them_apart() -> None:
    r = Rec(gap_ms=30)
    r.click(5, 5)
    r.tap(name="escape")
    r.click(5, 5)
    assert actions(r) == ["click", "key", "click"]


def test_a_click_then_a_drag_is_not_a_double_click() -> None:
    r = Rec(gap_ms=30)
    r.click(5, 5)
    r.press(5, 5)
    r.release(60, 5)
    assert actions(r) == ["click", "drag"]


def test_a_release_without_press_is_nothing() -> None:
    r = Rec()
    r.release(1, 1)
    r.release(1, 1, "right")
    assert r.steps() == []


def test_a_press_whose_release_is_lost_makes_no_step() -> None:
    r = Rec()
    r.press(1, 1)
    r.wait(1000)
    a, b = r.click(300, 300)  # the same button again: the first press lost its release
    s = one(r)
    assert (s.action, s.x, s.events) == ("click", 300, (a, b))
    r = Rec()
    r.press(1, 1)  # never released
    assert r.steps() == []


def test_input_while_a_button_is_held_joins_the_gesture() -> None:
    r = Rec()
    p = r.press(10, 10)
    k = r.tap("a")
    e = r.tap(name="escape")
    o, q = r.click(10, 10, "right")
    s = r.scroll(10, 10, 0, -1)
    x = r.paste("pasted")
    rel = r.release(10, 10)
    step = one(r)
    assert step.action == "click"
    assert step.events == (p, k, k + 1, e, e + 1, o, q, s, x, rel)


def test_modifiers_held_at_a_click_or_scroll_are_its_keys() -> None:
    r = Rec()
    r.down(name="ctrl_l")
    r.click(5, 5)
    r.scroll(5, 5, 0, 1)
    r.up(name="ctrl_l")
    r.down(name="shift")
    r.click(50, 50)
    r.up(name="shift")
    r.wait(1000)
    r.click(100, 100)
    got = r.steps()
    assert [(s.action, s.keys) for s in got] == [
        ("click", ("ctrl",)),
        ("scroll", ("ctrl",)),
        ("click", ("shift",)),
        ("click", ()),
    ]
    # modifier key events belong to no step
    used = {i for s in got for i in s.events}
    assert not any(isinstance(r.events[i], (KeyPress, KeyRelease)) for i in used)


def test_pointer_moves_alone_make_no_step() -> None:
    r = Rec()
    for k in range(50):
        r.move(k * 10, k * 5)
    assert r.steps() == []


# --- scroll ------------------------------------------------------------------------------------------


def test_scrolls_close_in_time_and_place_are_one_step_with_summed_deltas() -> None:
    r = Rec(gap_ms=100)
    a = r.scroll(400, 300, 0, -1)
    b = r.scroll(401, 300, 0, -1)
    r.move(402, 301)
    c = r.scroll(402, 301, 1, -2)
    s = one(r)
    assert (s.action, s.x, s.y, s.dx, s.dy) == ("scroll", 400, 300, 1, -4)
    assert s.events == (a, b, c)
    assert (s.t_start_ns, s.t_end_ns) == (r.events[a].t_ns, r.events[c].t_ns)


def test_a_scroll_gap_longer_than_the_limit_splits() -> None:
    r = Rec()
    r.scroll(0, 0, 0, 1)
    r.add(Scroll, 0, 0, 0, 1, gap_ms=SCROLL_GAP_NS // MS)  # exactly the gap: same step
    r.add(Scroll, 0, 0, 0, 1, gap_ms=SCROLL_GAP_NS // MS + 1)
    assert [(s.action, s.dy) for s in r.steps()] == [("scroll", 2), ("scroll", 1)]


def test_a_scroll_elsewhere_or_reversed_is_a_new_step() -> None:
    r = Rec(gap_ms=50)
    r.scroll(0, 0, 0, -1)
    r.scroll(0, SCROLL_SLOP_PX + 1, 0, -1)  # elsewhere
    r.scroll(0, SCROLL_SLOP_PX + 1, 0, 1)  # reversed
    r.scroll(0, SCROLL_SLOP_PX + 1, 0, 3)
    r.scroll(0, SCROLL_SLOP_PX + 1, -1, 0)  # sideways joins (dx was 0)
    assert [(s.dx, s.dy) for s in r.steps()] == [(0, -1), (0, -1), (-1, 4)]


def test_typing_ends_a_scroll() -> None:
    r = Rec(gap_ms=50)
    r.scroll(0, 0, 0, -1)
    r.tap("a")
    r.scroll(0, 0, 0, -1)
    assert actions(r) == ["scroll", "type", "scroll"]


# --- typing ------------------------------------------------------------------------------------------


def test_printable_keys_space_and_shift_are_one_type_step() -> None:
    r = Rec()
    r.type("Hello World")
    s = one(r)
    assert (s.action, s.text, s.keys) == ("type", "Hello World", ())
    presses = [i for i, e in enumerate(r.events) if isinstance(e, KeyPress) and e.name != "shift"]
    releases = [i for i, e in enumerate(r.events) if isinstance(e, KeyRelease) and e.name != "shift"]
    assert s.events == tuple(sorted(presses + releases))  # shift presses and releases are in no step
    assert s.t_start_ns == r.events[presses[0]].t_ns
    assert s.t_end_ns == r.events[releases[-1]].t_ns


def test_backspace_delete_and_arrows_edit_inside_the_burst() -> None:
    r = Rec()
    r.type("helo")
    r.tap(name="left")
    r.type("l")
    r.tap(name="end")
    r.type("x")
    r.tap(name="backspace")
    r.tap(name="home")
    r.tap(name="delete")
    r.type("H")
    r.tap(name="left", mods=("ctrl",))
    r.tap(name="right", mods=("ctrl", "shift"))
    r.type("Y")
    s = one(r)
    assert s.text == "Y"
    r = Rec()
    r.type("one two")
    r.tap(name="backspace", mods=("ctrl",))
    assert one(r).text == "one "


def test_edit_keys_outside_a_burst_are_keys() -> None:
    r = Rec()
    r.tap(name="backspace")
    r.tap(name="delete")
    r.tap(name="left", mods=("ctrl",))
    r.tap(name="home", mods=("shift",))
    got = r.steps()
    assert [(s.action, s.keys) for s in got] == [
        ("key", ("backspace",)),
        ("key", ("delete",)),
        ("hotkey", ("ctrl", "left")),
        ("hotkey", ("shift", "home")),
    ]


def test_deleting_more_than_was_typed_leaves_the_empty_text() -> None:
    r = Rec()
    r.type("ab")
    for _ in range(3):
        r.tap(name="backspace")
    s = one(r)
    assert s.text == ""  # the field starts empty (documented limit)
    assert s.to_json(r.events)["text"] == ""  # known to be empty: kept, unlike unknown text


def test_enter_is_its_own_key_step_after_the_text() -> None:
    r = Rec()
    r.type("ls")
    e = r.tap(name="enter")
    got = r.steps()
    assert [(s.action, s.text, s.keys) for s in got] == [("type", "ls", ()), ("key", None, ("enter",))]
    assert got[1].events == (e, e + 1)


@pytest.mark.parametrize(
    "end",
    [
        lambda r: r.tap(name="tab"),
        lambda r: r.tap(name="escape"),
        lambda r: r.tap(name="up"),
        lambda r: r.click(5, 5),
        lambda r: r.scroll(5, 5, 0, 1),
        lambda r: r.combo("ctrl", "s"),
        lambda r: r.focus(app="other"),
        lambda r: r.focus(pid=8),
        lambda r: r.marker("pause"),
    ],
    ids=["tab", "escape", "up", "click", "scroll", "hotkey", "focus-class", "focus-pid", "marker"],
)
def test_a_burst_ends_at(end: Any) -> None:
    r = Rec()
    r.focus()
    r.type("ab")
    end(r)
    r.type("cd")
    texts = [s.text for s in r.steps() if s.action == "type"]
    assert texts == ["ab", "cd"]


def test_a_title_only_change_or_a_frame_keeps_the_burst() -> None:
    r = Rec()
    r.focus(title="doc")
    r.type("ab")
    r.focus(title="*doc")
    r.frame("settled")
    r.type("cd")
    assert one(r).text == "abcd"


def test_a_pause_longer_than_the_gap_splits_typing() -> None:
    r = Rec()
    r.type("ab")
    r.wait(TYPE_GAP_NS // MS)
    r.type("cd")  # 2 s + 20 ms after the last key press
    assert [s.text for s in r.steps()] == ["ab", "cd"]
    r = Rec()
    r.type("ab")
    r.wait(TYPE_GAP_NS // MS - 60)  # the release of b was 20 ms after its press
    r.type("cd")
    assert [s.text for s in r.steps()] == ["abcd"]


def test_editing_after_a_pause_is_a_key() -> None:
    r = Rec()
    r.type("ab")
    r.wait(TYPE_GAP_NS // MS)
    r.tap(name="backspace")
    assert [(s.action, s.text, s.keys) for s in r.steps()] == [
        ("type", "ab", ()),
        ("key", None, ("backspace",)),
    ]


def test_a_redacted_record_is_its_placeholder_at_the_caret() -> None:
    r = Rec()
    r.type("to ")
    x = r.redacted("EMAIL")
    r.type(" now")
    s = one(r)
    assert s.text == "to [EMAIL] now"
    assert x in s.events
    r = Rec()
    r.redacted("PASSWORD")
    r.tap(name="enter")
    assert [(s.action, s.text) for s in r.steps()] == [("type", "[PASSWORD]"), ("key", None)]


def test_a_redacted_record_with_odd_entity_is_still_a_placeholder() -> None:
    r = Rec()
    r.add(lambda t: Redacted(t, ""))
    assert one(r).text == "[REDACTED]"


def test_a_paste_key_with_its_paste_is_text_not_a_hotkey() -> None:
    r = Rec()
    r.type("id: ")
    r.down(name="ctrl_l")
    v = r.down("v", mods=("ctrl",))
    p = r.add(Paste, "abc123", gap_ms=0)  # the clipboard thread stamps it 1 ns later
    r.up("v", mods=("ctrl",))
    r.up(name="ctrl_l")
    r.type("!")
    s = one(r)
    assert s.text == "id: abc123!"
    assert {v, p, v + 2} <= set(s.events)


def test_a_paste_key_whose_paste_was_redacted_is_text() -> None:
    r = Rec()
    r.down("v", mods=("ctrl",))
    r.add(Redacted, "API_KEY", gap_ms=0)
    assert one(r).text == "[API_KEY]"


def test_shift_insert_with_its_paste_is_text() -> None:
    r = Rec()
    r.down(name="insert", mods=("shift",))
    r.add(Paste, "x", gap_ms=0)
    assert (one(r).action, one(r).text) == ("type", "x")


def test_a_paste_key_without_paste_is_a_hotkey() -> None:
    r = Rec()
    r.combo("ctrl", "v")
    r.wait(500)
    r.paste("late")  # too late to be that key's: a paste of its own
    got = r.steps()
    assert [(s.action, s.keys, s.text) for s in got] == [
        ("hotkey", ("ctrl", "v"), None),
        ("type", (), "late"),
    ]


def test_a_paste_without_text_makes_the_text_unknown() -> None:
    r = Rec()
    r.type("ab")
    r.paste(None)
    s = one(r)
    assert (s.action, s.text) == ("type", None)
    assert "text" not in s.to_json(r.events)


def test_keys_stripped_of_their_character_are_typing_of_unknown_text() -> None:
    r = Rec()
    for _ in range(3):
        r.add(KeyPress, None, None, None, ())
        r.add(KeyRelease, None, None, None, ())
    r.add(KeyPress, None, None, None, ("shift",))
    r.tap(name="enter")
    got = r.steps()
    assert [(s.action, s.text) for s in got] == [("type", None), ("key", None)]
    assert len(got[0].events) == 7


def test_a_stripped_key_mixed_into_known_typing_makes_it_unknown() -> None:
    r = Rec()
    r.type("ab")
    r.add(KeyPress, None, None, None, ())
    assert one(r).text is None


def test_a_stripped_key_with_ctrl_makes_no_step_but_ends_the_burst() -> None:
    r = Rec()
    r.type("ab")
    r.add(KeyPress, None, None, None, ("ctrl",))
    r.type("cd")
    assert [s.text for s in r.steps()] == ["ab", "cd"]


def test_caps_lock_before_the_burst_is_applied() -> None:
    r = Rec()
    r.tap(name="caps_lock")
    r.wait(5000)
    r.type("ab")
    assert one(r).text == "AB"
    r.tap(name="caps_lock")
    r.wait(5000)
    r.type("cd")
    assert [s.text for s in r.steps()] == ["AB", "cd"]


def test_x11_altgr_base_characters_are_not_invented() -> None:
    r = Rec()
    r.add(KeyPress, None, None, 0xFE03, ())  # ISO_Level3_Shift: no name, no character
    r.wait(3000)
    r.tap("q")  # pynput reports the base character of AltGr+q ("@" on a German layout)
    r.add(KeyRelease, None, None, 0xFE03, ())
    s = one(r)
    assert (s.action, s.text) == ("type", None)


def test_dead_keys_compose() -> None:
    r = Rec()
    r.add(KeyPress, "´", None, 0xFE51, ())
    r.add(KeyRelease, "´", None, 0xFE51, ())
    r.tap("e")
    assert one(r).text == "é"


def test_altgr_characters_are_text() -> None:
    r = Rec()
    r.down(name="alt_gr")
    r.tap("@", mods=("alt_gr",))
    r.up(name="alt_gr")
    s = one(r)
    assert (s.action, s.text) == ("type", "@")


def test_windows_ctrl_alt_is_altgr_and_macos_option_types() -> None:
    r = Rec()
    r.marker("session_start", {"backend": "win32"})
    r.tap("@", mods=("alt", "ctrl"))
    r.tap("c", mods=("alt", "ctrl", "shift"))  # a letter: still AltGr text on Windows
    assert one(r).text == "@c"
    r = Rec()
    r.marker("session_start", {"backend": "darwin"})
    r.tap("å", mods=("alt",))
    r.tap("c", mods=("super",))
    assert [(s.action, s.text, s.keys) for s in r.steps()] == [
        ("type", "å", ()),
        ("hotkey", None, ("super", "c")),
    ]


def test_key_repeat_inside_typing_repeats_the_character() -> None:
    r = Rec(gap_ms=30)
    for _ in range(4):
        r.down("a")
    r.up("a")
    s = one(r)
    assert (s.text, len(s.events)) == ("aaaa", 5)


# --- hotkeys and keys --------------------------------------------------------------------------------


def test_ctrl_c_is_a_hotkey_with_its_press_and_release() -> None:
    r = Rec()
    i = r.combo("ctrl", "c")
    s = one(r)
    assert (s.action, s.keys, s.events) == ("hotkey", ("ctrl", "c"), (i, i + 1))


def test_hotkey_keys_are_in_canonical_order_with_a_lower_case_letter() -> None:
    r = Rec()
    r.tap("T", mods=("shift", "ctrl"))
    r.tap("x", mods=("super", "shift", "alt", "ctrl"))
    r.tap(None, "f4", ("alt",))
    r.tap(None, "space", ("ctrl",))
    assert [s.keys for s in r.steps()] == [
        ("ctrl", "shift", "t"),
        ("ctrl", "alt", "shift", "super", "x"),
        ("alt", "f4"),
        ("ctrl", "space"),
    ]


def test_windows_control_characters_read_as_letters() -> None:
    r = Rec()
    r.tap("\x03", mods=("ctrl",))
    assert one(r).keys == ("ctrl", "c")


def test_an_unnameable_control_character_with_ctrl_makes_no_step() -> None:
    r = Rec()
    r.tap("\x1b", mods=("ctrl",))
    assert r.steps() == []


def test_modifier_only_presses_make_nothing() -> None:
    r = Rec()
    for name in ("ctrl_l", "shift", "alt", "cmd", "alt_gr", "caps_lock", "num_lock"):
        r.tap(name=name)
    assert r.steps() == []


def test_alt_gr_alone_never_makes_a_hotkey() -> None:
    r = Rec()
    r.tap(None, "enter", ("alt_gr",))
    assert (one(r).action, one(r).keys) == ("key", ("enter",))


@pytest.mark.parametrize("name", ["enter", "escape", "tab", "up", "page_up", "f5", "delete", "insert"])
def test_a_special_key_alone_is_a_key(name: str) -> None:
    r = Rec()
    r.tap(name=name)
    s = one(r)
    assert (s.action, s.keys) == ("key", (name,))


def test_shift_with_a_named_key_is_a_hotkey() -> None:
    r = Rec()
    r.combo("shift", "tab")
    assert (one(r).action, one(r).keys) == ("hotkey", ("shift", "tab"))


def test_key_repeat_makes_one_step_per_press() -> None:
    r = Rec(gap_ms=30)
    presses = [r.down(name="down") for _ in range(5)]
    rel = r.up(name="down")
    got = r.steps()
    assert [s.keys for s in got] == [("down",)] * 5
    assert [s.events for s in got] == [(p,) for p in presses[:4]] + [(presses[4], rel)]


def test_a_release_after_the_next_step_started_is_in_no_step() -> None:
    r = Rec()
    e = r.down(name="enter")
    r.click(5, 5)
    r.up(name="enter")
    got = r.steps()
    assert got[0].events == (e,)
    assert len(got) == 2


def test_an_x11_release_with_other_state_is_tied_to_its_press() -> None:
    r = Rec()
    r.down(name="shift")
    p = r.down("@", mods=("shift",))
    r.up(name="shift")
    q = r.up("2")  # X11: shift+2 released as "2"
    assert one(r).events == (p, q)


# --- markers -----------------------------------------------------------------------------------------


def test_no_step_spans_a_marker() -> None:
    r = Rec()
    r.press(5, 5)
    r.marker("pause")
    r.marker("resume")
    r.release(5, 5)  # the gesture was dropped at the pause
    assert r.steps() == []
    r = Rec(gap_ms=30)
    r.click(5, 5)
    r.marker("deny", {"active": True, "label": "bank"})
    r.click(5, 5)
    assert actions(r) == ["click", "click"]
    r = Rec(gap_ms=30)
    r.scroll(5, 5, 0, 1)
    r.marker("secure_input", {"active": True})
    r.scroll(5, 5, 0, 1)
    assert actions(r) == ["scroll", "scroll"]


def test_held_keys_are_forgotten_at_a_marker() -> None:
    r = Rec()
    r.down(name="ctrl_l")
    r.marker("pause")
    r.marker("resume")
    r.click(5, 5)  # the ctrl release was lost in the pause
    assert one(r).keys == ()
    r = Rec()
    r.down(name="f5")
    r.marker("pause")
    r.up(name="f5")
    assert one(r).events == (0,)


def test_no_step_spans_a_tasks_start_or_end() -> None:
    """Steps version 2: task lines end the step in progress as markers do, so a task's steps are
    consecutive and none begins before its task_start or ends after its task_end."""
    r = Rec()
    r.type("ab")
    r.add(TaskStart, "rename", "Rename a file", "study", None)
    r.type("cd")
    r.add(TaskEnd, "rename", "done")
    r.type("ef")
    assert [(s.action, s.text) for s in r.steps()] == [("type", "ab"), ("type", "cd"), ("type", "ef")]
    r = Rec(gap_ms=30)
    r.press(5, 5)
    r.add(TaskEnd, "rename", "failed")
    r.release(5, 5)  # the gesture was dropped at the task's end
    assert r.steps() == []
    r = Rec(gap_ms=30)
    r.click(5, 5)
    r.add(TaskStart, "free-0a1b2c3d", "Find a flight", "volunteer", None)
    r.click(5, 5)  # no double click across a task's start
    assert actions(r) == ["click", "click"]


def test_a_screen_layout_marker_ends_nothing() -> None:
    r = Rec()
    r.type("ab")
    r.marker("screen_layout", {"monitors": []})
    r.type("cd")
    assert one(r).text == "abcd"


# --- context -----------------------------------------------------------------------------------------


def test_frame_and_window_are_the_last_ones_at_or_before_the_start() -> None:
    r = Rec()
    r.frame("start")
    w1 = r.focus(title="a")
    f2 = r.frame("focus")
    r.focus(title="b", gap_ms=100)  # after the press below: not the click's
    got_frame_time = r.events[f2].t_ns
    r.events.insert(3, ButtonPress(got_frame_time + 10 * MS, 1, 1, "left"))
    r.events.insert(4, ButtonRelease(got_frame_time + 20 * MS, 1, 1, "left"))
    s = one(r)
    assert (s.frame, s.window) == (f2, w1)


def test_a_frame_at_the_very_start_time_counts_even_after_the_action_in_the_stream() -> None:
    events: list[Event] = [
        ButtonPress(100, 1, 1, "left"),
        Frame(100, 0, 0, 1, 1, "webp", "click", b""),
        ButtonRelease(150, 1, 1, "left"),
    ]
    s = steps(events)[0]
    assert s.frame == 1


def test_no_frame_or_window_is_none() -> None:
    r = Rec()
    r.click(1, 1)
    s = one(r)
    assert (s.frame, s.window) == (None, None)
    j = s.to_json(r.events)
    assert "frame_t_ns" not in j
    assert "window" not in j


def test_a_double_click_has_the_frame_of_its_first_press() -> None:
    r = Rec(gap_ms=40)
    f = r.frame()
    r.click(1, 1)
    r.frame("settled")
    r.click(1, 1)
    s = one(r)
    assert (s.action, s.frame) == ("double_click", f)


def test_unsorted_input_is_read_in_time_order_with_the_original_indices() -> None:
    r = Rec()
    r.frame("start")
    r.type("ab")
    r.click(5, 5)
    expected = r.steps()
    perm = [3, 0, 5, 1, 6, 2, 4]
    shuffled = [r.events[k] for k in perm]
    got = steps(shuffled)
    assert [(s.action, s.text, s.t_start_ns) for s in got] == [
        (s.action, s.text, s.t_start_ns) for s in expected
    ]
    back = {new: old for new, old in enumerate(perm)}
    assert [tuple(sorted(back[i] for i in s.events)) for s in got] == [s.events for s in expected]
    assert [back[s.frame] if s.frame is not None else None for s in got] == [s.frame for s in expected]


def test_unknown_objects_are_ignored() -> None:
    r = Rec()
    r.click(1, 1)
    events = [object(), *r.events, "text", None]
    assert [s.events for s in steps(events)] == [(1, 2)]


# --- JSON --------------------------------------------------------------------------------------------


def test_to_json_has_the_fields_times_window_without_pid_and_frame_time() -> None:
    r = Rec()
    f = r.frame("start")
    r.focus(title="Inbox", app="firefox", pid=42)
    r.type("hi")
    r.tap(name="enter")
    r.scroll(3, 4, 0, 0)
    r.press(1, 2)
    r.release(30, 40)
    got = [s.to_json(r.events) for s in r.steps()]
    window = {"title": "Inbox", "app_class": "firefox", "x": 0, "y": 0, "width": 800, "height": 600}
    t_frame = r.events[f].t_ns
    typed = got[0]
    assert typed["action"] == "type"
    assert typed["text"] == "hi"
    assert typed["window"] == window
    assert typed["frame_t_ns"] == t_frame
    assert set(typed) == {"action", "text", "t_start_ns", "t_end_ns", "window", "frame_t_ns", "events"}
    assert got[1]["keys"] == ["enter"]
    assert "text" not in got[1]
    assert "x" not in got[1]
    assert (got[2]["action"], got[2]["dx"], got[2]["dy"]) == ("scroll", 0, 0)  # a scroll always has both
    drag = got[3]
    assert {k: drag[k] for k in ("action", "x", "y", "to_x", "to_y", "button")} == {
        "action": "drag",
        "x": 1,
        "y": 2,
        "to_x": 30,
        "to_y": 40,
        "button": "left",
    }
    assert "dx" not in drag
    assert "keys" not in drag
    json.dumps(got, sort_keys=True, ensure_ascii=False)  # JSON-ready


def test_constants() -> None:
    assert STEPS_VERSION == 2  # 2: a task's start and end end the step in progress
    expected = {
        "click",
        "double_click",
        "right_click",
        "middle_click",
        "drag",
        "scroll",
        "type",
        "hotkey",
        "key",
    }
    assert expected == ACTIONS


# --- on the redacted stream --------------------------------------------------------------------------


def test_on_the_redacted_export_stream_secrets_are_placeholders() -> None:
    from agent.redact.policy import Policy, redact_session

    r = Rec()
    r.focus(app="firefox")
    r.type("mail bob.smith@example.com now")
    r.tap(name="enter")
    r.focus(app="xterm", pid=9)
    r.type("sudo ls")
    r.tap(name="enter")
    r.type("hunter2")
    r.tap(name="enter")
    redacted = redact_session(r.events, Policy(ocr="off"), ocr=None).events
    got = [(s.action, s.text) for s in steps(redacted)]
    assert got == [
        ("type", "mail [EMAIL] now"),
        ("key", None),
        ("type", "sudo ls"),
        ("key", None),
        ("type", "[PASSWORD]"),
        ("key", None),
    ]
    dropped = redact_session(r.events, Policy(ocr="off", typed_text="drop"), ocr=None).events
    assert [(s.action, s.text) for s in steps(dropped)] == [
        ("type", None),
        ("key", None),
        ("type", None),
        ("key", None),
        ("type", None),
        ("key", None),
    ]
