"""The pause hotkey: parsing, matching, and that it pauses without being recorded."""

from __future__ import annotations

import pytest

from agent.events import KeyPress, KeyRelease
from agent.keyboard.hotkey import Hotkey, hotkey_problem


def test_parse() -> None:
    assert Hotkey.parse("<ctrl>+<alt>+p") == Hotkey(frozenset({"ctrl", "alt"}), "p")
    assert Hotkey.parse(" <Ctrl>+<Shift>+<F9> ") == Hotkey(frozenset({"ctrl", "shift"}), "f9")
    assert Hotkey.parse("<f12>") == Hotkey(frozenset(), "f12")  # a named key alone is fine
    assert Hotkey.parse("") is None


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("p", "needs a modifier"),
        ("<ctrl>+<hyper>+p", "not a modifier"),
        ("<ctrl>+pp", "one key"),
        ("<ctrl>+<alt>", "one key"),
    ],
)
def test_bad_hotkeys(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Hotkey.parse(text)


def test_matches_exactly_its_modifiers() -> None:
    hk = Hotkey.parse("<ctrl>+<alt>+p")
    assert hk is not None
    assert hk.matches(KeyPress(1, "p", None, 112, ("alt", "ctrl")))
    assert hk.matches(KeyPress(1, None, None, 112, ("alt", "ctrl")))  # no char with modifiers: the code
    assert not hk.matches(KeyPress(1, "p", None, 112, ("ctrl",)))
    assert not hk.matches(KeyPress(1, "p", None, 112, ("alt", "ctrl", "shift")))
    assert not hk.matches(KeyPress(1, "o", None, 111, ("alt", "ctrl")))
    assert hk.matches(KeyRelease(1, "p", None, 112, ()))
    f9 = Hotkey.parse("<ctrl>+<f9>")
    assert f9 is not None and f9.matches(KeyPress(1, None, "f9", 0xFFC6, ("ctrl",)))


@pytest.mark.parametrize(
    "text", ["<ctrl>+<alt>+p", "<ctrl>++", "<CMD>+<F9>", "<alt>+<65>", "<ctrl_l>+<alt_r>+p", "p+<ctrl>"]
)
def test_every_hotkey_a_study_accepts_can_be_used(text: str) -> None:
    """The study file's check and the recorder's parser agree: a valid study never fails to start."""
    assert hotkey_problem(text) is None
    assert Hotkey.parse(text) is not None


def test_the_plus_key_and_key_codes_match() -> None:
    plus = Hotkey.parse("<ctrl>++")
    assert plus == Hotkey(frozenset({"ctrl"}), "+")
    assert plus.matches(KeyPress(1, "+", None, 43, ("ctrl",)))
    code = Hotkey.parse("<alt>+<65>")
    assert code == Hotkey(frozenset({"alt"}), "65", 65)
    assert code.matches(KeyPress(1, None, None, 65, ("alt",))) and not code.matches(
        KeyPress(1, "6", None, 54, ("alt",))
    )
    left = Hotkey.parse("<ctrl_l>+<alt_r>+p")
    assert left == Hotkey(frozenset({"ctrl", "alt"}), "p")
