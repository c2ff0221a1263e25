"""Paste capture: which keys paste, and the clipboard thread that turns them into Paste events."""

from __future__ import annotations

import threading

import pytest

from agent.capture.clipboard import BACKLOG, PasteWatch
from agent.events import Event, KeyPress, Paste
from agent.keyboard.names import paste_chord


@pytest.mark.parametrize(
    ("char", "name", "mods", "pastes"),
    [
        ("v", None, ("ctrl",), True),
        ("V", None, ("ctrl", "shift"), True),  # terminals
        ("v", None, ("super",), True),  # macOS cmd+V
        ("\x16", None, ("ctrl",), True),  # Windows reports ctrl+V as a control character
        (None, "insert", ("shift",), True),
        ("v", None, (), False),
        ("v", None, ("alt",), False),
        ("v", None, ("alt_gr", "ctrl"), False),
        ("c", None, ("ctrl",), False),
        (None, "insert", (), False),
        (None, "insert", ("ctrl",), False),  # ctrl+Insert copies
        (None, "enter", ("ctrl",), False),
    ],
)
def test_paste_chords(char: str | None, name: str | None, mods: tuple[str, ...], pastes: bool) -> None:
    assert paste_chord(KeyPress(1, char, name, None, mods)) is pastes


def test_each_request_becomes_a_paste_right_behind_its_key() -> None:
    out: list[Event] = []
    texts = iter(["first", None, "third"])
    watch = PasteWatch(lambda source: next(texts), out.append)
    watch.start()
    for t in (10, 20, 30):
        watch.request(t)
    watch.stop()
    assert out == [Paste(11, "first"), Paste(21, None), Paste(31, "third")]
    assert not watch.is_alive() and watch.lost == 0


def test_a_full_backlog_records_the_paste_without_text_and_counts_it() -> None:
    out: list[Event] = []
    release = threading.Event()

    def slow(source: str) -> str:
        release.wait(5)
        return "late"

    watch = PasteWatch(slow, out.append)
    watch.start()
    for t in range(BACKLOG + 3):  # one is being read, BACKLOG wait, the rest overflow
        watch.request(t * 10)
    release.set()
    watch.stop()
    assert watch.lost >= 2
    assert sum(1 for e in out if isinstance(e, Paste) and e.text is None) == watch.lost
    assert sum(1 for e in out if isinstance(e, Paste) and e.text == "late") == BACKLOG + 3 - watch.lost
