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
    ev.FramePatch(7, 0, 0, 2, 1, "webp", "settled", "0" * 32, ((1, 0, 1, 1, 3),), b"RIF"),
    ev.WindowFocus(8, "Grüße €", "XTerm", 1234, 1, 2, 3, 4),
    ev.WindowFocus(9, None, None, None),
    ev.Marker(10, "session_start", {"wall_ns": 5, "scopes": ["pointer"]}),
    ev.TaskStart(11, "free-0a1b2c3d", "Réserver un vol ✓", "volunteer"),
    ev.TaskStart(12, "find-flight", "Find a flight\nto Rome", "study", 600),
    ev.TaskEnd(13, "find-flight", "timed out"),
    ev.ElementSeen(
        14,
        "point",
        "found",
        {
            "role": "push button",
            "name": "Grüße ✓",
            "states": ["enabled", "focusable"],
            "bounds": [10, 20, 80, 24],
            "app": "gtk3-demo",
            "path": [{"role": "frame", "name": "Form"}, {"role": "panel", "name": None}],
            "automation_id": None,
        },
    ),
    ev.ElementSeen(15, "focus", "not_accessible"),
]

#: The encoded form of the task records, byte for byte (docs/format.md, Event encoding): the length
#: field, then compact JSON in the fields' order, UTF-8 as it is (not \u-escaped).
TASK_KNOWN_ANSWERS = [
    (
        ev.TaskStart(1_000_000_000, "free-0a1b2c3d", "Réserver un vol", "volunteer"),
        b"\x00\x00\x00\x8e"
        b'{"v":1,"k":"task_start","t_ns":1000000000,"task_id":"free-0a1b2c3d",'
        b'"instruction":"R\xc3\xa9server un vol","source":"volunteer","time_limit_s":null}',
    ),
    (
        ev.TaskStart(5, "find-flight", "Find a flight", "study", 600),
        b"\x00\x00\x00\x7b"
        b'{"v":1,"k":"task_start","t_ns":5,"task_id":"find-flight","instruction":"Find a flight",'
        b'"source":"study","time_limit_s":600}',
    ),
    (
        ev.TaskEnd(7, "find-flight", "timed out"),
        b'\x00\x00\x00\x4d{"v":1,"k":"task_end","t_ns":7,"task_id":"find-flight","outcome":"timed out"}',
    ),
    (
        ev.ElementSeen(9, "focus", "late"),
        b'\x00\x00\x00\x4a{"v":1,"k":"element","t_ns":9,"at":"focus","result":"late","element":null}',
    ),
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


@pytest.mark.parametrize(("event", "blob"), TASK_KNOWN_ANSWERS, ids=lambda x: getattr(x, "KIND", "blob"))
def test_task_records_have_known_encodings(event: ev.Event, blob: bytes) -> None:
    assert ev.encode(event) == blob
    assert ev.decode(blob) == event
    (length,) = __import__("struct").unpack(">I", blob[:4])
    assert length == len(blob) - 4


def test_every_task_outcome_and_source_round_trips() -> None:
    assert ev.TASK_OUTCOMES == ("done", "failed", "abandoned", "interrupted", "timed out")
    for outcome in ev.TASK_OUTCOMES:
        end = ev.TaskEnd(1, "t", outcome)
        assert ev.decode(ev.encode(end)) == end
    for source in ev.TASK_SOURCES:
        start = ev.TaskStart(1, "t", "x", source)
        assert ev.decode(ev.encode(start)) == start


@pytest.mark.parametrize(
    "fields",
    [
        {"k": "task_end", "t_ns": 1, "task_id": "t", "outcome": "won"},
        {"k": "task_end", "t_ns": 1, "task_id": 5, "outcome": "done"},
        {"k": "task_end", "t_ns": 1, "task_id": "t"},
        {"k": "task_start", "t_ns": 1, "task_id": "t", "instruction": "x", "source": "operator"},
        {"k": "task_start", "t_ns": 1, "task_id": "t", "instruction": None, "source": "study"},
        {"k": "task_start", "t_ns": 1, "task_id": ["t"], "instruction": "x", "source": "study"},
        {
            "k": "task_start",
            "t_ns": 1,
            "task_id": "t",
            "instruction": "x",
            "source": "study",
            "time_limit_s": 0,
        },
        {
            "k": "task_start",
            "t_ns": 1,
            "task_id": "t",
            "instruction": "x",
            "source": "study",
            "time_limit_s": True,
        },
        {
            "k": "task_start",
            "t_ns": 1,
            "task_id": "t",
            "instruction": "x",
            "source": "study",
            "time_limit_s": 1.5,
        },
    ],
)
def test_malformed_task_records_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(StoreFormatError, match="malformed task_"):
        ev.from_dict({"v": ev.SCHEMA_VERSION, **fields})


def test_an_old_reader_never_meets_task_kinds_in_old_stores() -> None:
    """Every kind before tasks still decodes as it did: the new kinds take nothing from them."""
    before = {"pointer_move", "button_press", "button_release", "scroll", "key_press", "key_release"}
    before |= {"paste", "frame", "window_focus", "marker"}
    assert set(ev.EVENT_TYPES) == before | {"task_start", "task_end", "element", "frame_patch"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        (" \t ", "empty"),
        ("x" * (ev.MAX_INSTRUCTION + 1), "at most"),
        ("a\u202eb", "U+202E"),
        ("a\u2066b", "U+2066"),
        ("a\rb", "U+000D"),
        ("a\x00b", "U+0000"),
    ],
)
def test_instruction_problems_name_code_points_not_text(text: str, needle: str) -> None:
    problem = ev.instruction_problem(text)
    assert problem is not None and needle in problem
    assert ev.instruction_problem("Book the cheapest flight to Rome, then print it ✓") is None
    assert ev.instruction_problem("x" * ev.MAX_INSTRUCTION) is None


@pytest.mark.parametrize(
    ("at", "result", "element"),
    [
        ("pointer", "found", None),  # unknown at
        ("point", "maybe", None),  # unknown result
        ("point", "found", None),  # found without an element
        ("focus", "late", {"role": "x"}),  # an element without found
        ("point", "found", {"role": "push button"}),  # keys missing
    ],
)
def test_a_malformed_element_record_is_refused(at: str, result: str, element: object) -> None:
    """An element record whose at, result or element does not fit is a malformed record (the
    reader's StoreFormatError), never an element kept half-checked."""
    obj = {"v": 1, "k": "element", "t_ns": 1, "at": at, "result": result, "element": element}
    with pytest.raises(StoreFormatError, match="malformed element record"):
        ev.from_dict(obj)


def test_an_element_records_names_stay_out_of_its_repr() -> None:
    sample = next(e for e in SAMPLES if isinstance(e, ev.ElementSeen) and e.element is not None)
    assert "Grüße" not in repr(sample) and "Form" not in repr(sample)
