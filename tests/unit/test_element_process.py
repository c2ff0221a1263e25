"""agent.capture.element_process: element lookups in a child process, over a real pipe and a real
child (tests/unit/element_child_stub.py answers through the real wire).  The child may hang, die
or write garbage: the recorder's worker gets a counted miss every time, never an exception, and
the next lookup starts a fresh child."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.capture.element_process import ProcessFinder, lookup_from_wire, lookup_to_wire, window_from_wire
from agent.elements import DENIED, FAILED, LATE, NO_FOCUS
from agent.events import WindowFocus

STUB = [sys.executable, str(Path(__file__).with_name("element_child_stub.py"))]


@pytest.fixture
def asked() -> list[WindowFocus]:
    return []


@pytest.fixture
def finder(asked: list[WindowFocus]) -> Iterator[ProcessFinder]:
    def allow(window: WindowFocus) -> bool:
        asked.append(window)
        return window.title != "secret-window"

    made = ProcessFinder(STUB, 0.5, allow)
    try:
        yield made
    finally:
        made.close()


def test_an_element_crosses_the_pipe_whole(finder: ProcessFinder) -> None:
    found = finder.element_at(1, 0)
    assert found.element is not None and found.reason == ""
    element = found.element
    assert (element.role, element.name, element.states) == (
        "push button",
        "Sign in ✓",
        ("enabled", "focusable"),
    )
    assert element.bounds == (10, 20, 120, 40)
    assert element.path == (("frame", "Form"), ("panel", ""))
    assert element.automation_id == "signin" and found.window_id == 7
    assert finder.focused_element().reason == NO_FOCUS


def test_the_parent_judges_the_window_before_the_child_reads_it(
    finder: ProcessFinder, asked: list[WindowFocus]
) -> None:
    refused = finder.element_at(2, 0)
    assert refused.element is None and refused.reason == DENIED
    assert [w.title for w in asked] == ["secret-window"]
    assert asked[0].pid == 4242 and asked[0].app_class == "Secret"
    assert finder.element_at(1, 0).element is not None  # the same child goes on


def test_a_hanging_child_is_late_then_replaced(finder: ProcessFinder) -> None:
    t0 = time.monotonic()
    stalled = finder.element_at(3, 0)
    assert stalled.element is None and stalled.reason == LATE
    assert time.monotonic() - t0 < 3.0  # the budget, not the child's 5 s
    assert finder.element_at(1, 0).element is not None
    assert finder.restarts == 1


@pytest.mark.parametrize("x", [4, 5], ids=["crash", "garbage"])
def test_a_child_that_dies_or_babbles_is_a_failed_lookup_then_replaced(finder: ProcessFinder, x: int) -> None:
    broken = finder.element_at(x, 0)
    assert broken.element is None and broken.reason == FAILED
    assert finder.element_at(1, 0).element is not None
    assert finder.restarts == 1


def test_a_child_that_cannot_start_is_an_oserror() -> None:
    with pytest.raises(OSError, match="did not start"):
        ProcessFinder([sys.executable, "-c", "print('hello')"], 0.5, None)


@pytest.mark.parametrize(
    "wire",
    [
        None,
        [],
        {"reason": 5},
        {"reason": "", "element": {"role": "x"}},
        {
            "reason": "",
            "element": {
                "role": "x",
                "name": "n",
                "states": [1],
                "bounds": None,
                "app": "a",
                "path": [],
                "automation_id": "",
            },
        },
        {
            "reason": "",
            "element": {
                "role": "x",
                "name": "n",
                "states": [],
                "bounds": [1, 2, 3],
                "app": "a",
                "path": [],
                "automation_id": "",
            },
        },
        {
            "reason": "",
            "element": {
                "role": "x",
                "name": "n",
                "states": [],
                "bounds": None,
                "app": "a",
                "path": [["frame"]],
                "automation_id": "",
            },
        },
    ],
)
def test_a_malformed_answer_is_a_failed_lookup(wire: object) -> None:
    assert lookup_from_wire(wire).reason == FAILED


def test_a_window_that_is_not_one_is_refused() -> None:
    assert window_from_wire({"title": 5}) is None
    assert window_from_wire({"pid": True}) is None
    assert window_from_wire([]) is None
    window = window_from_wire(
        {"title": "t", "app_class": None, "pid": 3, "x": 0, "y": 0, "width": 1, "height": 1}
    )
    assert window is not None and window.pid == 3


def test_an_answer_survives_the_round_trip_with_zero_bounds() -> None:
    from agent.elements import Element, Lookup

    element = Element("text", "", (), (0, 0, 0, 0), "app", 1, (), "")
    back = lookup_from_wire(lookup_to_wire(Lookup(element, "", 0, 1)))
    assert back.element is not None and back.element.bounds == (0, 0, 0, 0)


def test_the_lookup_process_is_started_through_optin_itself() -> None:
    """The packaged app has no ``python -m``: the lookup process runs as ``optin _element-lookup``,
    which agent/__main__.py sends to agent.backends.xorg.a11y_child."""
    from agent.backends.xorg.a11y import LOOKUP_COMMAND

    main = (Path(__file__).resolve().parents[2] / "agent" / "__main__.py").read_text()
    assert f'sys.argv[1:2] == ["{LOOKUP_COMMAND}"]' in main
    argv = [sys.executable, "-m", "agent", LOOKUP_COMMAND]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 2 and "usage: optin _element-lookup" in out.stderr
