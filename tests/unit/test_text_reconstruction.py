"""Typed-text reconstruction (agent.keyboard.replay and .editing): fields, provenance, key windows."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

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
    Scroll,
    WindowFocus,
)
from agent.keyboard import replay as text_module
from agent.keyboard.editing import ERASE_EACH_BELOW, Field, is_terminal
from agent.keyboard.replay import key_windows, reconstruct

Rec = tuple[str, str | None, str | None, int | None, tuple[str, ...]]

# --- sequences recorded from pynput 1.8.2 on Xvfb (RECORD), driven by xdotool -----------------------
# Each is exactly what agent.capture.input.PynputHooks delivered for the xdotool command in the
# comment: ("P"ress or "R"elease, char, name, vk, modifiers).  Layout "us" unless noted.

# xdotool key --clearmodifiers shift+a
X11_SHIFT_A: list[Rec] = [
    ("P", None, "shift", 65505, ()),
    ("P", "A", None, 65, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", "a", None, 97, ()),
]
# xdotool key --clearmodifiers Caps_Lock a Caps_Lock   (pynput does NOT apply caps lock)
X11_CAPS_A: list[Rec] = [
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
    ("P", "a", None, 97, ()),
    ("R", "a", None, 97, ()),
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
]
# xdotool key --clearmodifiers Caps_Lock shift+a Caps_Lock   (pynput applies shift only: "A")
X11_CAPS_SHIFT_A: list[Rec] = [
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
    ("P", None, "shift", 65505, ()),
    ("P", "A", None, 65, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", "a", None, 97, ()),
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
]
# xdotool key --clearmodifiers ctrl+a
X11_CTRL_A: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", "a", None, 97, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", "a", None, 97, ()),
]
# xdotool key --clearmodifiers ctrl+shift+Left
X11_CTRL_SHIFT_LEFT: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", None, "shift", 65505, ("ctrl",)),
    ("P", None, "left", 65361, ("ctrl", "shift")),
    ("R", None, "shift", 65505, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", None, "left", 65361, ()),
]
# xdotool type --delay 30 'Hi you'
X11_TYPE_HI_YOU: list[Rec] = [
    ("P", None, "shift", 65505, ()),
    ("P", "H", None, 72, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", "h", None, 104, ()),
    ("P", "i", None, 105, ()),
    ("R", "i", None, 105, ()),
    ("P", None, "space", 32, ()),
    ("R", None, "space", 32, ()),
    ("P", "y", None, 121, ()),
    ("R", "y", None, 121, ()),
    ("P", "o", None, 111, ()),
    ("R", "o", None, 111, ()),
    ("P", "u", None, 117, ()),
    ("R", "u", None, 117, ()),
]
# xdotool key --clearmodifiers BackSpace   (likewise Delete 65535, Tab 65289, Return 65293, Escape)
X11_BACKSPACE: list[Rec] = [("P", None, "backspace", 65288, ()), ("R", None, "backspace", 65288, ())]
X11_ENTER: list[Rec] = [("P", None, "enter", 65293, ()), ("R", None, "enter", 65293, ())]
X11_ESCAPE: list[Rec] = [("P", None, "esc", 65307, ()), ("R", None, "esc", 65307, ())]
# xdotool key --clearmodifiers ctrl+BackSpace alt+BackSpace
X11_CTRL_BACKSPACE: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", None, "backspace", 65288, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", None, "backspace", 65288, ()),
]
X11_ALT_BACKSPACE: list[Rec] = [
    ("P", None, "alt", 65513, ()),
    ("P", None, "backspace", 65288, ("alt",)),
    ("R", None, "alt", 65513, ()),
    ("R", None, "backspace", 65288, ()),
]
# xdotool key --clearmodifiers super+a   (pynput names the key "cmd"; the modifier is "super")
X11_SUPER_A: list[Rec] = [
    ("P", None, "cmd", 65515, ()),
    ("P", "a", None, 97, ("super",)),
    ("R", None, "cmd", 65515, ()),
    ("R", "a", None, 97, ()),
]
# xdotool key --clearmodifiers shift+Home
X11_SHIFT_HOME: list[Rec] = [
    ("P", None, "shift", 65505, ()),
    ("P", None, "home", 65360, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", None, "home", 65360, ()),
]
# xdotool key --clearmodifiers ctrl+v   (the recorder's clipboard thread adds the Paste)
X11_CTRL_V: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", "v", None, 118, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", "v", None, 118, ()),
]
# xdotool key --clearmodifiers ctrl+z ; ctrl+shift+z
X11_CTRL_Z: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", "z", None, 122, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", "z", None, 122, ()),
]
X11_CTRL_SHIFT_Z: list[Rec] = [
    ("P", None, "ctrl", 65507, ()),
    ("P", None, "shift", 65505, ("ctrl",)),
    ("P", "Z", None, 90, ("ctrl", "shift")),
    ("R", None, "shift", 65505, ("ctrl",)),
    ("R", None, "ctrl", 65507, ()),
    ("R", "z", None, 122, ()),
]
# xdotool key --clearmodifiers Up ; Page_Up
X11_UP: list[Rec] = [("P", None, "up", 65362, ()), ("R", None, "up", 65362, ())]
X11_PAGE_UP: list[Rec] = [("P", None, "page_up", 65365, ()), ("R", None, "page_up", 65365, ())]
# xdotool key --clearmodifiers KP_1 KP_Add KP_Enter KP_Divide   (num lock on: xdotool toggles it)
X11_KEYPAD: list[Rec] = [
    ("P", None, "num_lock", 65407, ()),
    ("P", "1", None, None, ()),
    ("R", None, "num_lock", 65407, ()),
    ("R", "1", None, None, ()),
    ("P", "+", None, None, ()),
    ("R", "+", None, None, ()),
    ("P", None, "enter", 65293, ()),
    ("R", None, "enter", 65293, ()),
]
X11_KEYPAD_DIVIDE: list[Rec] = [("P", "/", None, None, ()), ("R", "/", None, None, ())]
# xdotool keydown a ; sleep 1 ; keyup a   (Xvfb auto-repeat: presses without releases)
X11_REPEAT_A: list[Rec] = [("P", "a", None, 97, ()) for _ in range(5)]
X11_REPEAT_A.append(("R", "a", None, 97, ()))

# layout "de" (setxkbmap de):
# xdotool key --clearmodifiers dead_acute e
X11_DE_DEAD_ACUTE_E: list[Rec] = [
    ("P", "´", None, 65105, ()),
    ("R", "´", None, 65105, ()),
    ("P", "e", None, 101, ()),
    ("R", "e", None, 101, ()),
]
# xdotool key --clearmodifiers shift+dead_acute e   (dead_grave on the shifted level)
X11_DE_DEAD_GRAVE_E: list[Rec] = [
    ("P", None, "shift", 65505, ()),
    ("P", "`", None, 65104, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", "´", None, 65105, ()),
    ("P", "e", None, 101, ()),
    ("R", "e", None, 101, ()),
]
# xdotool key --clearmodifiers ISO_Level3_Shift+q   (AltGr+q is "@" on "de"; pynput says "q")
X11_DE_ALTGR_Q: list[Rec] = [
    ("P", None, None, 65027, ()),
    ("P", "q", None, 113, ()),
    ("R", None, None, 65027, ()),
    ("R", "q", None, 113, ()),
]
# xdotool key --clearmodifiers shift+2   (pressed as '"', released as "2")
X11_DE_SHIFT_2: list[Rec] = [
    ("P", None, "shift", 65505, ()),
    ("P", '"', None, 34, ("shift",)),
    ("R", None, "shift", 65505, ()),
    ("R", "2", None, 50, ()),
]
# xdotool key --clearmodifiers adiaeresis Caps_Lock adiaeresis Caps_Lock
X11_DE_CAPS_UMLAUT: list[Rec] = [
    ("P", "ä", None, 228, ()),
    ("R", "ä", None, 228, ()),
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
    ("P", "ä", None, 228, ()),
    ("R", "ä", None, 228, ()),
    ("P", None, "caps_lock", 65509, ()),
    ("R", None, "caps_lock", 65509, ()),
]


# --- helpers ---------------------------------------------------------------------------------------


def ev(*recs: Iterable[Rec] | Event) -> list[Event]:
    """Events from recorded tuples (lists of them) and ready events, with increasing times."""
    out: list[Event] = []
    for item in recs:
        if isinstance(item, list):
            for kind, char, name, vk, mods in item:
                cls = KeyPress if kind == "P" else KeyRelease
                out.append(cls(len(out), char, name, vk, mods))
        else:
            out.append(item)  # type: ignore[arg-type]
    return out


def typed(s: str) -> list[Rec]:
    """What X11 reports for ``xdotool type s`` (US layout): shifted letters with shift around them."""
    out: list[Rec] = []
    for c in s:
        if c == " ":
            out += [("P", None, "space", 32, ()), ("R", None, "space", 32, ())]
        elif c.isupper():
            out += [
                ("P", None, "shift", 65505, ()),
                ("P", c, None, ord(c), ("shift",)),
                ("R", None, "shift", 65505, ()),
                ("R", c.lower(), None, ord(c.lower()), ()),
            ]
        else:
            out += [("P", c, None, ord(c), ()), ("R", c, None, ord(c), ())]
    return out


#: The pynput key name of each modifier.
MODIFIER_KEY = {"shift": "shift", "ctrl": "ctrl", "alt": "alt", "alt_gr": "alt_gr", "super": "cmd"}


def _with_mods(char: str | None, name: str | None, mods: tuple[str, ...]) -> list[Rec]:
    """A key tapped with ``mods`` held: modifiers down, the key, modifiers up, its release (X11 order)."""
    out: list[Rec] = []
    held: list[str] = []
    for m in mods:
        out.append(("P", None, MODIFIER_KEY[m], None, tuple(sorted(held))))
        held.append(m)
    out.append(("P", char, name, None, tuple(sorted(held))))
    for m in reversed(mods):
        held.remove(m)
        out.append(("R", None, MODIFIER_KEY[m], None, tuple(sorted(held))))
    out.append(("R", char, name, None, ()))
    return out


def key(name: str, *mods: str) -> list[Rec]:
    """A named key tapped with ``mods`` held."""
    return _with_mods(None, name, mods)


def chord(char: str, *mods: str) -> list[Rec]:
    """A character key tapped with ``mods`` held (``char`` is what the OS reports for it)."""
    return _with_mods(char, None, mods)


def texts(events: list[Event], backend: str | None = None) -> list[str]:
    return [f.text for f in reconstruct(events, backend=backend)]


def one(events: list[Event], backend: str | None = None) -> Field:
    fields = reconstruct(events, backend=backend)
    assert len(fields) == 1, [f.ended_by for f in fields]
    return fields[0]


def focus(app: str | None, pid: int = 1, title: str = "t") -> WindowFocus:
    return WindowFocus(0, title, app, pid, 0, 0, 100, 100)


# --- what X11 delivers -----------------------------------------------------------------------------


def test_x11_shift_a_is_uppercase() -> None:
    assert texts(ev(X11_SHIFT_A)) == ["A"]


def test_x11_caps_lock_is_applied_here_because_pynput_does_not() -> None:
    assert texts(ev(X11_CAPS_A, typed("b"))) == ["Ab"]  # toggled on, a, toggled off, b


def test_x11_caps_lock_with_shift_gives_lowercase() -> None:
    assert texts(ev(X11_CAPS_SHIFT_A)) == ["a"]


def test_caps_lock_uppercases_non_ascii_letters_but_not_sharp_s() -> None:
    assert texts(ev(X11_DE_CAPS_UMLAUT)) == ["äÄ"]
    assert texts(ev(key("caps_lock"), [("P", "ß", None, 223, ()), ("R", "ß", None, 223, ())])) == ["ß"]


def test_caps_lock_already_applied_by_the_os_is_left_alone() -> None:
    # Windows/macOS style: the OS string is "A" with caps lock on, "a" with caps+shift
    recs: list[Rec] = [("P", "A", None, 65, ()), ("R", "A", None, 65, ())]
    shifted: list[Rec] = [("P", "a", None, 65, ("shift",)), ("R", "a", None, 65, ())]
    assert texts(ev(key("caps_lock"), recs, shifted)) == ["Aa"]


def test_caps_lock_auto_repeat_toggles_once() -> None:
    held: list[Rec] = [("P", None, "caps_lock", 65509, ()) for _ in range(3)]
    held.append(("R", None, "caps_lock", 65509, ()))
    assert texts(ev(held, typed("a"))) == ["A"]


def test_on_macos_caps_lock_is_the_os_business() -> None:
    start = Marker(0, "session_start", {"backend": "darwin"})
    mac_caps_shift: list[Rec] = [("P", "A", None, 0, ("shift",)), ("R", "A", None, 0, ())]
    assert texts(ev(start, key("caps_lock"), mac_caps_shift)) == ["A"]


def test_x11_typing_with_space() -> None:
    f = one(ev(X11_TYPE_HI_YOU))
    assert (f.text, f.typed) == ("Hi you", "Hi you")
    assert f.cells == (1, 4, 6, 8, 10, 12)
    assert (f.first, f.last) == (0, 13)


def test_x11_ctrl_a_selects_all_and_typing_replaces_it() -> None:
    f = one(ev(typed("old"), X11_CTRL_A, typed("new")))
    assert f.text == "new"
    assert f.typed == "oldnew"


def test_x11_super_a_is_select_all_too() -> None:
    assert texts(ev(typed("old"), X11_SUPER_A, typed("x"))) == ["x"]


def test_x11_ctrl_shift_left_selects_a_word() -> None:
    assert texts(ev(typed("hello world"), X11_CTRL_SHIFT_LEFT, typed("there"))) == ["hello there"]


def test_x11_backspace_ctrl_and_alt_backspace() -> None:
    assert texts(ev(typed("abc"), X11_BACKSPACE)) == ["ab"]
    assert texts(ev(typed("foo bar"), X11_CTRL_BACKSPACE)) == ["foo "]
    assert texts(ev(typed("foo bar"), X11_ALT_BACKSPACE)) == ["foo "]


def test_x11_shift_home_selects_to_line_start() -> None:
    assert texts(ev(typed("abc"), X11_SHIFT_HOME, typed("z"))) == ["z"]


def test_x11_keypad_characters_and_keypad_enter() -> None:
    fields = reconstruct(ev(X11_KEYPAD, X11_KEYPAD_DIVIDE, typed("2")))
    assert [(f.text, f.ended_by) for f in fields] == [("1+", "enter"), ("/2", "end")]


def test_x11_key_repeat_inserts_every_press_and_ties_all_to_the_release() -> None:
    f = one(ev(X11_REPEAT_A))
    assert f.text == "aaaaa"
    assert f.links == tuple((p, 5) for p in range(5))


def test_x11_undo_and_redo_make_the_field_uncertain() -> None:
    assert one(ev(typed("ab"), X11_CTRL_Z)).uncertain
    assert one(ev(typed("ab"), X11_CTRL_SHIFT_Z)).uncertain
    assert not one(ev(typed("ab"))).uncertain


def test_x11_dead_keys_compose() -> None:
    f = one(ev(X11_DE_DEAD_ACUTE_E, typed("t")))
    assert f.text == "ét"
    assert f.cells == (2, 4)  # the letter's press
    assert (2, 0) in f.links  # ... tied to the dead key's press
    assert texts(ev(X11_DE_DEAD_GRAVE_E)) == ["è"]


def test_dead_key_then_space_gives_the_accent_and_bad_pairs_are_uncertain() -> None:
    space: list[Rec] = [("P", None, "space", 32, ()), ("R", None, "space", 32, ())]
    assert texts(ev(X11_DE_DEAD_ACUTE_E[:2], space)) == ["´"]
    f = one(ev(X11_DE_DEAD_ACUTE_E[:2], typed("x")))  # no precomposed x-acute
    assert (f.text, f.uncertain) == ("´x", True)
    f = one(ev(X11_DE_DEAD_ACUTE_E[:2], [("P", "1", None, 49, ()), ("R", "1", None, 49, ())]))
    assert (f.text, f.uncertain) == ("´1", True)


def test_x11_altgr_level3_reports_the_base_character_so_the_field_is_uncertain() -> None:
    f = one(ev(typed("a"), X11_DE_ALTGR_Q))
    assert f.text == "aq"  # really "a@": pynput cannot tell
    assert f.uncertain
    fields = reconstruct(ev(X11_DE_ALTGR_Q, X11_ENTER, typed("b")))
    assert [(f.text, f.uncertain) for f in fields] == [("q", True), ("b", False)]  # released: normal


def test_x11_release_with_another_character_is_tied_to_its_press() -> None:
    f = one(ev(X11_DE_SHIFT_2))
    assert f.text == '"'
    assert (1, 3) in f.links
    assert f.last == 3


def test_an_unmatched_release_is_tied_only_to_a_recent_press() -> None:
    late: list[Event] = [KeyPress(0, '"', None, 34, ("shift",)), KeyRelease(3_000_000_000, "2", None, 50, ())]
    assert one(late).links == ()
    soon: list[Event] = [KeyPress(0, '"', None, 34, ("shift",)), KeyRelease(80_000_000, "2", None, 50, ())]
    assert one(soon).links == ((0, 1),)


def test_a_release_lost_in_a_pause_does_not_tie_across_it() -> None:
    events: list[Event] = [
        KeyPress(0, "a", None, 97, ()),
        Marker(1, "pause"),  # the release of "a" happened while paused: never recorded
        Marker(2, "resume"),
        KeyPress(3, "a", None, 97, ()),
        KeyRelease(4, "a", None, 97, ()),
    ]
    first, second = reconstruct(events)
    assert (first.links, first.last) == ((), 0)
    assert second.links == ((3, 4),)


def test_x11_shifted_letter_release_is_tied_by_its_lowercase() -> None:
    f = one(ev(X11_SHIFT_A))
    assert f.links == ((0, 2), (1, 3))


# --- characters and shortcuts ----------------------------------------------------------------------


def test_insert_at_the_caret_and_over_a_selection() -> None:
    assert texts(ev(typed("ac"), key("left"), typed("b"))) == ["abc"]
    assert texts(ev(typed("abcd"), key("left", "shift"), key("left", "shift"), typed("X"))) == ["abX"]


def test_cut_removes_the_selection_and_copy_changes_nothing() -> None:
    recs = ev(
        typed("abcd"), key("left", "shift"), key("left", "shift"), chord("c", "ctrl"), chord("x", "ctrl")
    )
    f = one(recs)
    assert (f.text, f.uncertain) == ("ab", False)


def test_cut_without_selection_is_uncertain() -> None:
    assert one(ev(typed("ab"), chord("x", "ctrl"))).uncertain


def test_formatting_and_save_shortcuts_change_nothing() -> None:
    f = one(ev(typed("ab"), chord("b", "ctrl"), chord("s", "ctrl"), typed("c")))
    assert (f.text, f.uncertain) == ("abc", False)


def test_focus_moving_shortcuts_end_the_field() -> None:
    fields = reconstruct(ev(typed("ab"), chord("l", "ctrl"), typed("example.org")))
    assert [(f.text, f.ended_by) for f in fields] == [("ab", "shortcut"), ("example.org", "end")]


def test_windows_control_characters_are_shortcuts() -> None:
    # pynput on Windows reports ctrl+A as "\x01" and ctrl+V as "\x16"
    f = one(ev(typed("old"), chord("\x01", "ctrl"), typed("new")))
    assert f.text == "new"
    f = one(ev(typed("x"), chord("\x16", "ctrl"), Paste(99, "yz")))
    assert (f.text, f.uncertain) == ("xyz", False)


def test_altgr_characters_are_text() -> None:
    assert texts(ev(typed("a"), chord("@", "alt_gr"))) == ["a@"]
    assert texts(ev(typed("a"), chord("@", "alt_gr", "ctrl"))) == ["a@"]  # Windows adds a fake ctrl


def test_ctrl_alt_is_altgr_on_windows_only() -> None:
    start = Marker(0, "session_start", {"backend": "win32"})
    assert texts(ev(start, typed("a"), chord("@", "ctrl", "alt"))) == ["a@"]
    assert texts(ev(typed("a"), chord("q", "ctrl", "alt"))) == ["a"]  # X11: a shortcut


def test_alt_letters_are_accelerators_outside_macos_and_text_on_macos() -> None:
    assert [f.ended_by for f in reconstruct(ev(typed("a"), chord("f", "alt")))] == ["shortcut"]
    start = Marker(0, "session_start", {"backend": "darwin"})
    assert texts(ev(start, typed("a"), chord("©", "alt"))) == ["a©"]


def test_backend_argument_overrides_the_marker() -> None:
    start = Marker(0, "session_start", {"backend": "darwin"})
    assert texts(ev(start, typed("a"), chord("©", "alt")), backend="xorg") == ["a"]


def test_control_and_unknown_characters_insert_nothing() -> None:
    assert texts(ev(typed("a"), [("P", "\x1b", None, None, ()), ("P", "\x7f", None, None, ())])) == ["a"]
    assert texts(ev(typed("a"), [("P", "x\x00y", None, None, ())])) == ["axy"]


def test_multi_character_strings_insert_every_character() -> None:
    f = one(ev([("P", "ab", None, 0, ())]))
    assert (f.text, f.cells) == ("ab", (0, 0))


# --- deleting --------------------------------------------------------------------------------------


def test_delete_forward_and_word_forward() -> None:
    assert texts(ev(typed("abc"), key("home"), key("delete"))) == ["bc"]
    assert texts(ev(typed("foo bar baz"), key("home"), key("delete", "ctrl"))) == [" bar baz"]


def test_windows_word_jumps_land_on_the_next_word() -> None:
    start = Marker(0, "session_start", {"backend": "win32"})
    assert texts(ev(start, typed("foo bar"), key("home"), key("delete", "ctrl"))) == ["bar"]
    assert texts(ev(start, typed("foo bar"), key("home"), key("right", "ctrl"), typed("X"))) == ["foo Xbar"]


def test_backspace_and_delete_remove_a_selection() -> None:
    assert texts(ev(typed("abcd"), key("left", "shift"), key("left", "shift"), key("backspace"))) == ["ab"]
    f = one(ev(typed("abcd"), key("home", "shift"), key("delete")))
    assert (f.text, f.typed) == ("", "abcd")


def test_backspace_at_the_start_does_nothing() -> None:
    assert texts(ev(typed("ab"), key("home"), key("backspace"), key("delete", "ctrl"))) == [""]
    assert texts(ev(key("backspace"), typed("a"))) == ["a"]


# --- moving ----------------------------------------------------------------------------------------


def test_plain_arrows_collapse_a_selection_to_its_end() -> None:
    base = ev(typed("abcd"), key("left", "shift"), key("left", "shift"))
    assert texts([*base, *ev(key("left"), typed("X"))]) == ["abXcd"]
    assert texts([*base, *ev(key("right"), typed("X"))]) == ["abcdX"]


def test_word_jumps() -> None:
    assert texts(ev(typed("foo bar"), key("left", "ctrl"), typed("X"))) == ["foo Xbar"]
    assert texts(ev(typed("foo bar"), key("home"), key("right", "ctrl"), typed("X"))) == ["fooX bar"]
    assert texts(ev(typed("a.b c"), key("left", "ctrl"), key("left", "ctrl"), typed("X"))) == ["a.Xb c"]


def test_home_end_and_ctrl_home_end() -> None:
    assert texts(ev(typed("bc"), key("home"), typed("a"), key("end"), typed("d"))) == ["abcd"]
    assert texts(ev(typed("bc"), key("home", "ctrl"), typed("a"), key("end", "ctrl"), typed("d"))) == ["abcd"]
    assert texts(ev(typed("abc"), key("home", "ctrl", "shift"), typed("z"))) == ["z"]


def test_home_and_end_stop_at_pasted_line_breaks() -> None:
    f = one(ev(Paste(0, "one\ntwo"), key("home"), typed("X")))
    assert f.text == "one\nXtwo"


def test_arrows_stop_at_the_ends() -> None:
    assert texts(ev(typed("a"), key("left"), key("left"), typed("X"))) == ["Xa"]
    assert texts(ev(typed("a"), key("right"), typed("X"))) == ["aX"]


def test_up_down_and_page_keys_end_the_field() -> None:
    for recs in (X11_UP, X11_PAGE_UP, key("down"), key("page_down"), key("up", "shift")):
        fields = reconstruct(ev(typed("ab"), recs, typed("cd")))
        assert [(f.text, f.ended_by, f.uncertain) for f in fields] == [
            ("ab", "navigation", False),
            ("cd", "end", False),
        ]


def test_alt_arrows_are_browser_navigation_outside_macos() -> None:
    fields = reconstruct(ev(typed("ab"), key("left", "alt"), typed("c")))
    assert [(f.text, f.ended_by) for f in fields] == [("ab", "navigation"), ("c", "end")]


def test_super_arrows_are_window_manager_keys_outside_macos() -> None:
    assert texts(ev(typed("ab"), key("left", "super"), typed("c"))) == ["abc"]


def test_macos_keys() -> None:
    start = Marker(0, "session_start", {"backend": "darwin"})
    assert texts(ev(start, typed("foo bar"), key("left", "alt"), typed("X"))) == ["foo Xbar"]
    assert texts(ev(start, typed("foo bar"), key("left", "super"), typed("X"))) == ["Xfoo bar"]
    assert texts(ev(start, typed("foo bar"), key("backspace", "alt"))) == ["foo "]
    assert texts(ev(start, typed("foo bar"), key("backspace", "super"))) == [""]
    assert texts(ev(start, typed("ab"), key("up", "super"), typed("X"))) == ["Xab"]
    assert texts(ev(start, typed("ab"), chord("a", "super"), typed("X"))) == ["X"]  # cmd+A
    assert texts(ev(start, typed("ab"), chord("a", "ctrl"), typed("X"))) == ["Xab"]  # emacs: line start
    assert texts(ev(start, typed("abc"), key("left"), key("left"), chord("k", "ctrl"))) == ["a"]
    assert one(ev(start, typed("ab"), key("home"))).uncertain  # Cocoa home only scrolls


# --- pastes ----------------------------------------------------------------------------------------


def test_paste_inserts_at_the_caret_with_the_paste_as_provenance() -> None:
    events = ev(typed("ad"), key("left"), X11_CTRL_V[:2], Paste(0, "bc"), X11_CTRL_V[2:])
    f = one(events)
    paste_index = next(i for i, e in enumerate(events) if isinstance(e, Paste))
    assert f.text == "abcd"
    assert f.cells[1:3] == (paste_index, paste_index)
    assert f.typed == "adbc"
    assert not f.uncertain


def test_paste_replaces_the_selection() -> None:
    f = one(ev(typed("old"), X11_CTRL_A, X11_CTRL_V[:2], Paste(0, "new"), X11_CTRL_V[2:]))
    assert f.text == "new"


def test_paste_without_text_makes_the_field_uncertain() -> None:
    f = one(ev(typed("a"), X11_CTRL_V[:2], Paste(0, None), typed("b")))
    assert (f.text, f.uncertain) == ("ab", True)


def test_a_paste_key_whose_paste_never_arrives_is_uncertain() -> None:
    assert one(ev(typed("a"), X11_CTRL_V, typed("b"))).uncertain
    assert one(ev(typed("a"), X11_CTRL_V, X11_ENTER)).uncertain
    assert one(ev(typed("a"), key("insert", "shift"))).uncertain


def test_shift_insert_pastes() -> None:
    f = one(ev(typed("a"), key("insert", "shift")[:2], Paste(0, "b")))
    assert (f.text, f.uncertain) == ("ab", False)


def test_insert_key_alone_is_overwrite_mode() -> None:
    assert one(ev(typed("a"), key("insert"))).uncertain


def test_middle_click_ends_the_field_and_its_primary_paste_starts_the_next() -> None:
    events = ev(
        typed("ab"),
        ButtonPress(0, 5, 5, "middle"),
        Paste(0, "xy", source="primary"),
        ButtonRelease(0, 5, 5, "middle"),
    )
    fields = reconstruct(events)
    assert [(f.text, f.ended_by) for f in fields] == [("ab", "click"), ("xy", "end")]
    assert fields[1].cells == (5, 5)
    assert (fields[1].first, fields[1].last) == (5, 5)


# --- field boundaries ------------------------------------------------------------------------------


def test_boundaries() -> None:
    cases: list[tuple[list[Event], str]] = [
        ([ButtonPress(0, 1, 1, "left")], "click"),
        ([ButtonPress(0, 1, 1, "right")], "click"),
        ([focus("Firefox", 2)], "focus"),
        (ev(key("tab")), "tab"),
        (ev(key("tab", "shift")), "tab"),
        (ev(X11_ENTER), "enter"),
        (ev(key("kp_enter")), "enter"),
        (ev(key("enter", "shift")), "enter"),
        (ev(X11_ESCAPE), "escape"),
        ([Marker(0, "pause")], "marker"),
        ([Marker(0, "deny", {"rule": 1})], "marker"),
        ([Marker(0, "secure_input", {"active": True})], "marker"),
        ([Marker(0, "session_stop")], "marker"),
    ]
    for middle, reason in cases:
        fields = reconstruct([focus("Gedit"), *ev(typed("ab")), *middle, *ev(typed("cd"))])
        assert [(f.text, f.ended_by) for f in fields] == [("ab", reason), ("cd", "end")], reason


def test_non_boundaries() -> None:
    frame = Frame(0, 0, 0, 1, 1, "png", "click", b"")
    for middle in (
        [Scroll(0, 1, 1, 0, -1)],
        [PointerMove(0, 3, 4)],
        [ButtonRelease(0, 1, 1, "left")],
        [frame],
        [Marker(0, "screen_layout", {})],
        [focus("Gedit", title="*untitled")],  # a title-only change
    ):
        assert texts([focus("Gedit"), *ev(typed("ab")), *middle, *ev(typed("cd"))]) == ["abcd"]


def test_the_key_that_ends_a_field_belongs_to_it_and_its_release_too() -> None:
    events = ev(typed("a"), X11_ENTER, typed("b"))
    first, second = reconstruct(events)
    assert (first.first, first.last) == (0, 3)  # the enter press (2) and release (3)
    assert (second.first, second.last) == (4, 5)


def test_release_after_the_next_field_began_stays_with_its_field() -> None:
    recs: list[Rec] = [
        ("P", "a", None, 97, ()),
        ("P", None, "tab", 65289, ()),
        ("P", "b", None, 98, ()),
        ("R", "a", None, 97, ()),
        ("R", None, "tab", 65289, ()),
        ("R", "b", None, 98, ()),
    ]
    first, second = reconstruct(ev(recs))
    assert (first.first, first.last, first.links) == (0, 4, ((0, 3), (1, 4)))
    assert (second.first, second.last, second.links) == (2, 5, ((2, 5),))


def test_app_class_is_the_focus_when_the_field_started() -> None:
    fields = reconstruct([focus("Firefox"), *ev(typed("a")), focus("XTerm", 7), *ev(typed("b"))])
    assert [(f.text, f.app_class) for f in fields] == [("a", "Firefox"), ("b", "XTerm")]
    assert reconstruct(ev(typed("a")))[0].app_class is None


def test_empty_fields_are_not_reported() -> None:
    events = ev(key("shift"), key("tab", "alt"), chord("c", "ctrl"), X11_ENTER, key("left"))
    assert reconstruct(events) == []
    assert reconstruct([]) == []


def test_a_field_typed_then_deleted_is_reported_with_its_typed_text() -> None:
    f = one(ev(typed("4111"), X11_BACKSPACE * 4))
    assert (f.text, f.typed, f.cells) == ("", "4111", ())


def test_uncertain_empty_fields_are_reported() -> None:
    f = one([Paste(0, None)])
    assert (f.text, f.uncertain) == ("", True)


# --- terminals -------------------------------------------------------------------------------------


def test_is_terminal() -> None:
    for app in ("XTerm", "URxvt", "Gnome-terminal", "konsole", "Alacritty", "kitty", "foot"):
        assert is_terminal(app)
    for app in ("Xfce4-terminal", "Terminator", "Tilix", "st-256color", "org.wezfurlong.wezterm"):
        assert is_terminal(app)
    for app in ("WindowsTerminal.exe", "conhost.exe", "cmd.exe", "powershell.exe", "pwsh.exe"):
        assert is_terminal(app)
    assert is_terminal("com.apple.Terminal")
    assert is_terminal("com.googlecode.iterm2")
    for other in (None, "", "Firefox", "code", "chrome.exe", "com.apple.Safari"):
        assert not is_terminal(other)


def term(*recs: Iterable[Rec] | Event) -> list[Event]:
    return [focus("XTerm"), *ev(*recs)]


def test_terminal_readline_kills() -> None:
    assert texts(term(typed("foo bar"), chord("u", "ctrl"), typed("x"))) == ["x"]
    assert texts(term(typed("foo bar"), key("left"), key("left"), chord("u", "ctrl"))) == ["ar"]
    assert texts(term(typed("foo bar"), key("left"), key("left"), chord("k", "ctrl"))) == ["foo b"]
    assert texts(term(typed("ls -la /tmp/x"), chord("w", "ctrl"))) == ["ls -la "]
    assert texts(term(typed("abc"), chord("h", "ctrl"))) == ["ab"]
    assert texts(term(typed("foo bar"), chord("b", "alt"), chord("d", "alt"))) == ["foo "]


def test_terminal_ctrl_a_and_e_move_instead_of_selecting() -> None:
    assert texts(term(typed("bc"), chord("a", "ctrl"), typed("a"), chord("e", "ctrl"), typed("d"))) == [
        "abcd"
    ]
    assert texts(term(typed("bc"), chord("b", "ctrl"), typed("X"), chord("f", "ctrl"), typed("Y"))) == [
        "bXcY"
    ]


def test_terminal_ctrl_c_and_ctrl_d_on_an_empty_line_end_the_field() -> None:
    fields = reconstruct(term(typed("sleep"), chord("c", "ctrl"), typed("ls")))
    assert [(f.text, f.ended_by) for f in fields] == [("sleep", "interrupt"), ("ls", "end")]
    fields = reconstruct(term(typed("ab"), X11_ENTER, chord("d", "ctrl"), typed("x")))
    assert [(f.text, f.ended_by) for f in fields] == [("ab", "enter"), ("x", "end")]
    assert texts(term(typed("ab"), key("home"), chord("d", "ctrl"))) == ["b"]


def test_terminal_history_and_search_keys() -> None:
    fields = reconstruct(term(typed("ab"), chord("p", "ctrl"), typed("c")))
    assert [f.ended_by for f in fields] == ["navigation", "end"]
    assert one(term(typed("ab"), chord("r", "ctrl"))).uncertain
    assert one(term(typed("ab"), chord(".", "alt"))).uncertain


def test_terminal_ctrl_shift_c_is_copy() -> None:
    f = one(term(typed("ab"), chord("C", "ctrl", "shift"), typed("c")))
    assert (f.text, f.ended_by) == ("abc", "end")


def test_terminal_control_characters_from_windows() -> None:
    events = [focus("WindowsTerminal.exe"), *ev(typed("bc"), chord("\x01", "ctrl"), typed("a"))]
    assert texts(events) == ["abc"]


# --- key windows -----------------------------------------------------------------------------------


def test_key_windows_cover_from_first_to_last_character_with_releases() -> None:
    events = ev(typed("my 4111"))
    f = one(events)
    start = f.text.index("4")
    (window,) = key_windows([(f, "text", start, len(f.text), "CREDIT_CARD")])
    lo, hi, entity = window
    assert entity == "CREDIT_CARD"
    assert events[lo] == KeyPress(lo, "4", None, ord("4"), ())
    assert hi == len(events) - 1  # the last release


def test_key_windows_take_modifiers_backspaces_and_arrows_between() -> None:
    # "4X1" with a typo fixed through an arrow and a backspace: every key in between goes
    events = ev(typed("41"), key("left"), typed("X"), key("backspace"), key("end"), typed("1"))
    f = one(events)
    assert f.text == "411"
    (window,) = key_windows([(f, "text", 0, 3, "CREDIT_CARD")])
    assert window == (0, len(events) - 1, "CREDIT_CARD")


def test_key_windows_reach_a_release_that_comes_after_the_next_press() -> None:
    recs: list[Rec] = [
        ("P", "a", None, 97, ()),
        ("P", "b", None, 98, ()),
        ("P", "c", None, 99, ()),
        ("R", "a", None, 97, ()),
        ("R", "c", None, 99, ()),
        ("R", "b", None, 98, ()),
    ]
    f = one(ev(recs))
    assert key_windows([(f, "text", 0, 2, "SECRET")]) == [(0, 5, "SECRET")]  # b's release is last
    # a's window holds b's press (1) before a's release (3), so b's release (5) comes along
    assert key_windows([(f, "text", 0, 1, "SECRET")]) == [(0, 5, "SECRET")]
    assert key_windows([(f, "text", 2, 3, "SECRET")]) == [(2, 4, "SECRET")]


def test_key_windows_take_the_dead_key_of_a_composed_first_character() -> None:
    events = ev(typed("x"), X11_DE_DEAD_ACUTE_E, typed("y"))
    f = one(events)
    assert f.text == "xéy"
    assert key_windows([(f, "text", 1, 2, "SECRET")]) == [(2, 5, "SECRET")]


def test_key_windows_for_deleted_characters_use_the_typed_stream() -> None:
    events = ev(typed("ab12"), X11_BACKSPACE * 2, typed("cd"))
    f = one(events)
    assert (f.text, f.typed) == ("abcd", "ab12cd")
    (window,) = key_windows([(f, "typed", 2, 4, "SECRET")])
    assert window == (4, 7, "SECRET")


def test_key_windows_for_pasted_characters_point_at_the_paste() -> None:
    events = ev(typed("a"), X11_CTRL_V[:2], Paste(0, "tok"), X11_CTRL_V[2:])
    f = one(events)
    assert key_windows([(f, "text", 1, 4, "GITHUB_TOKEN")]) == [(4, 4, "GITHUB_TOKEN")]


def test_key_windows_merge_overlaps_keeping_the_first_entity() -> None:
    f = one(ev(typed("abcdefgh")))
    spans = [
        (f, "text", 4, 6, "PHONE"),
        (f, "text", 0, 3, "EMAIL"),
        (f, "typed", 2, 5, "SECRET"),
        (f, "text", 7, 8, "IBAN"),
    ]
    assert key_windows(spans) == [(0, 11, "EMAIL"), (14, 15, "IBAN")]


def test_key_windows_from_several_fields_are_sorted() -> None:
    first, second = reconstruct(ev(typed("ab"), X11_ENTER, typed("cd")))
    assert key_windows([(second, "text", 0, 1, "EMAIL"), (first, "text", 1, 2, "PHONE")]) == [
        (2, 3, "PHONE"),
        (6, 7, "EMAIL"),
    ]


def test_key_windows_ignore_empty_and_out_of_range_spans() -> None:
    f = one(ev(typed("4111"), X11_BACKSPACE * 4))
    assert key_windows([(f, "text", 0, 4, "CREDIT_CARD")]) == []
    assert key_windows([(f, "typed", 3, 99, "CREDIT_CARD")]) == [(6, 7, "CREDIT_CARD")]
    assert key_windows([(f, "typed", 2, 2, "CREDIT_CARD"), (f, "typed", 9, 12, "EMAIL")]) == []
    assert key_windows([]) == []


def test_key_windows_reject_an_unknown_stream_without_echoing_anything() -> None:
    f = one(ev(typed("secret")))
    with pytest.raises(ValueError, match="stream") as info:
        key_windows([(f, "password", 0, 1, "SECRET")])
    assert str(info.value).startswith('a span\'s stream must be "text", "typed" or "erased:K"')


# --- privacy and speed -----------------------------------------------------------------------------


def test_the_module_never_logs_or_prints() -> None:
    source = inspect.getsource(text_module)
    for word in ("import logging", "print(", "getLogger", "sys.stderr", "warnings.warn", "open("):
        assert word not in source


def test_odd_key_events_are_ignored() -> None:
    weird: list[Event] = [
        KeyRelease(0, "x", None, 1, ()),
        KeyPress(1, None, None, None, ()),
        KeyPress(2, "", None, None, ()),
    ]
    assert reconstruct(weird) == []


def test_the_text_before_each_deletion_is_kept_for_detection() -> None:
    f = one(ev(typed("abc"), key("backspace"), key("backspace"), typed("z")))
    assert f.text == "az"
    assert [text for text, _ in f.erased] == ["abc", "ab"]
    text, cells = f.erased[0]
    assert len(cells) == len(text) and cells == f.erased[0][1]
    assert ("erased:1", "ab") in f.streams()
    (win,) = key_windows([(f, "erased:0", 1, 3, "SECRET")])
    assert win[0] <= cells[1] and win[1] >= cells[2]


def test_a_long_field_keeps_the_text_only_before_each_run_of_deletions() -> None:
    long = "x" * (ERASE_EACH_BELOW + 10)
    f = one(
        ev(typed(long), key("backspace"), key("backspace"), key("backspace"), typed("y"), key("backspace"))
    )
    assert [len(text) for text, _ in f.erased] == [len(long), len(long) - 2]
