from __future__ import annotations

import json

import pytest

from agent import events as ev
from agent.errors import StoreFormatError

SAMPLES: list[ev.Event] = [
    ev.PointerMove(1, 10, 20),
    ev.ButtonPress(2, 10, 20, "left"),
    ev.ButtonRelease(3, 10, 20, "left"),
    ev.Scroll(4, 10, 20, 0, -1),
    ev.KeyPress(5, "é", None, 233, ("shift",)),
    ev.KeyRelease(6, None, "enter", 65293, ()),
    ev.Paste(6, "pasted ✓\n", "clipboard"),
    ev.Paste(6, None),
    ev.Frame(7, 0, 0, 2, 1, "webp", "click", b"\x00\xffRIFF"),
    ev.WindowFocus(8, "Grüße €", "XTerm", 1234, 1, 2, 3, 4),
    ev.WindowFocus(9, None, None, None),
    ev.Marker(10, "session_start", {"wall_ns": 5, "scopes": ["pointer"]}),
]


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.KIND)
def test_round_trip(event: ev.Event) -> None:
    assert ev.decode(ev.encode(event)) == event


def test_every_kind_is_covered_and_versioned() -> None:
    assert {e.KIND for e in SAMPLES} == set(ev.EVENT_TYPES)
    for e in SAMPLES:
        d = ev.to_dict(e)
        assert d["v"] == ev.SCHEMA_VERSION and d["k"] == e.KIND
        json.dumps(d)  # JSON-ready; frames leave their bytes out
        assert "data" not in d


def test_unknown_version_and_kind_are_rejected() -> None:
    with pytest.raises(StoreFormatError, match="version"):
        ev.from_dict({"v": 99, "k": "scroll"})
    with pytest.raises(StoreFormatError, match="unknown event kind"):
        ev.from_dict({"v": ev.SCHEMA_VERSION, "k": "telepathy"})
    with pytest.raises(StoreFormatError, match="malformed"):
        ev.from_dict({"v": ev.SCHEMA_VERSION, "k": "marker", "t_ns": 1, "marker": "nonsense", "detail": {}})


@pytest.mark.parametrize("blob", [b"", b"\x00\x00", b"\x00\x00\x00\x09{}", b"\x00\x00\x00\x02{x"])
def test_truncated_or_garbled_records_are_rejected(blob: bytes) -> None:
    with pytest.raises(StoreFormatError):
        ev.decode(blob)


def test_clock_anchor_maps_monotonic_to_wall() -> None:
    a = ev.ClockAnchor.now()
    assert a.to_wall_ns(a.mono_ns + 1_000) == a.wall_ns + 1_000
    assert abs(a.to_wall_ns(ev.now_ns()) - __import__("time").time_ns()) < 50_000_000


def test_kind_counts() -> None:
    assert ev.kind_counts(SAMPLES[:3] + SAMPLES[:1]) == {
        "button_press": 1,
        "button_release": 1,
        "pointer_move": 2,
    }


def test_only_frames_carry_a_payload() -> None:
    blob = ev.encode(ev.PointerMove(1, 2, 3)) + b"extra"
    with pytest.raises(StoreFormatError, match="only frames have a payload"):
        ev.decode(blob)
