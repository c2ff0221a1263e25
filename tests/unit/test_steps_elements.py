"""Each step's UI element (agent.steps, steps.version 2): docs/export-format.md, "Which element a step has".

Each rule on its own, on streams built like the recorder writes them: an ``element`` record
carries its action's ``t_ns`` and follows that action in the stream (the exporter sorts by time,
stably, so it lands right after the action).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.events import ElementSeen, Marker, TaskEnd, TaskStart
from agent.steps import ElementIndex, Step, steps
from tests.unit.test_steps import MS, Rec
from tests.unit.test_steps_properties import streams


def element(name: str, role: str = "push button") -> dict[str, Any]:
    """A stored element record (agent/elements.py's shape) called ``name``."""
    return {
        "role": role,
        "name": name,
        "states": ["enabled", "focusable"],
        "bounds": [10, 20, 80, 24],
        "app": "gtk3-demo",
        "path": [{"role": "frame", "name": "Form"}],
        "automation_id": None,
    }


class ERec(Rec):
    """:class:`Rec` with element records at an event's own time."""

    def seen(self, at_event: int, at: str, name: str | None, result: str = "found") -> int:
        """An element record for the event at index ``at_event`` (``name`` None: no element)."""
        t = self.events[at_event].t_ns
        self.events.append(ElementSeen(t, at, result, None if name is None else element(name)))
        return len(self.events) - 1

    def steps(self) -> list[Step]:
        return steps(sorted(self.events, key=lambda e: e.t_ns))


def names(found: list[Step]) -> list[tuple[str, str | None]]:
    return [(s.action, None if s.element is None else s.element["name"]) for s in found]


# --- point lines ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("button", "action"), [("left", "click"), ("right", "right_click"), ("middle", "middle_click")]
)
def test_a_click_has_the_point_element_at_its_press(button: str, action: str) -> None:
    r = ERec()
    press, _ = r.click(10, 10, button)
    r.seen(press, "point", "OK")
    assert names(r.steps()) == [(action, "OK")]


def test_a_point_line_at_another_time_is_not_the_clicks() -> None:
    r = ERec()
    _press, release = r.click(10, 10)
    r.seen(release, "point", "at the release")  # not the press
    assert names(r.steps()) == [("click", None)]


def test_a_drag_has_the_element_it_grabbed_not_the_one_at_the_release() -> None:
    r = ERec()
    press = r.press(10, 10)
    r.seen(press, "point", "grabbed")
    r.move(200, 200)
    release = r.release(200, 200)
    r.seen(release, "point", "dropped on")
    assert names(r.steps()) == [("drag", "grabbed")]


def test_a_double_click_has_the_element_of_its_first_press() -> None:
    r = ERec()
    first, _ = r.click(10, 10)
    r.seen(first, "point", "first")
    second, _ = r.click(10, 10)
    r.seen(second, "point", "second")
    assert names(r.steps()) == [("double_click", "first")]


def test_a_scroll_has_the_element_at_its_first_scroll_event() -> None:
    r = ERec()
    first = r.scroll(50, 50, 0, -1)
    r.seen(first, "point", "list")
    second = r.scroll(50, 50, 0, -1)
    r.seen(second, "point", "other")
    assert names(r.steps()) == [("scroll", "list")]


def test_a_pointer_step_never_takes_a_focus_line() -> None:
    r = ERec()
    press, _ = r.click(10, 10)
    r.seen(press, "focus", "focused")
    assert names(r.steps()) == [("click", None)]


# --- focus lines ---------------------------------------------------------------------------------------


def test_typing_then_enter_share_the_focus_line_of_the_first_key() -> None:
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    r.type("da")
    r.tap(name="enter")
    r.combo("ctrl", "a")
    assert names(r.steps()) == [("type", "Username"), ("key", "Username"), ("hotkey", "Username")]


def test_the_latest_focus_line_counts() -> None:
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    tab = r.tap(name="tab")
    r.seen(tab, "focus", "Password")
    r.tap("b")
    # the Tab key's own line (at its t_ns) is the latest for the Tab step itself
    assert names(r.steps()) == [("type", "Username"), ("key", "Password"), ("type", "Password")]


def test_a_focus_line_after_the_steps_start_is_not_its_element() -> None:
    r = ERec()
    r.tap("a")
    later = r.tap(name="enter")
    r.seen(later, "focus", "later")
    assert names(r.steps()) == [("type", None), ("key", "later")]


@pytest.mark.parametrize("ender", ["button_press", "window_focus", "marker", "task_start", "task_end"])
def test_a_focus_line_ends_at_a_press_a_window_change_a_marker_or_a_task_line(ender: str) -> None:
    """The focus it describes may be gone: the next key has no element until a new focus line."""
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    if ender == "button_press":
        r.press(500, 500, "button8")  # a button without a step: only the press itself counts
        r.release(500, 500, "button8")
    elif ender == "window_focus":
        r.focus(app="other")
    elif ender == "marker":
        r.marker("resume")
    elif ender == "task_start":
        r.add(TaskStart, "sign-in", "Sign in", "study", None)
    else:
        r.add(TaskEnd, "sign-in", "done")
    r.tap(name="enter")
    assert names(r.steps()) == [("type", "Username"), ("key", None)]


def test_an_ender_at_the_same_time_as_the_focus_line_does_not_end_it() -> None:
    """ "A t_ns after it": a marker stamped with the focus line's own time leaves it in force."""
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    r.events.append(Marker(r.events[first].t_ns, "screen_layout", {}))
    r.tap(name="enter")
    assert names(r.steps()) == [("type", "Username"), ("key", "Username")]


def test_a_new_focus_line_after_the_ender_counts_again() -> None:
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    r.focus(app="other")
    enter = r.tap(name="enter")
    r.seen(enter, "focus", "Search")
    assert names(r.steps()) == [("type", "Username"), ("key", "Search")]


# --- ties and results ----------------------------------------------------------------------------------


def test_of_two_lines_at_one_time_the_first_counts() -> None:
    r = ERec()
    press, _ = r.click(10, 10)
    r.seen(press, "point", "first")
    r.seen(press, "point", "second")
    key = r.tap(name="enter")
    r.seen(key, "focus", "one")
    r.seen(key, "focus", "two")
    assert names(r.steps()) == [("click", "first"), ("key", "one")]


@pytest.mark.parametrize("result", ["not_accessible", "no_element", "failed", "late"])
def test_a_line_without_an_element_gives_none_even_when_a_later_one_at_that_time_has_one(result: str) -> None:
    r = ERec()
    press, _ = r.click(10, 10)
    r.seen(press, "point", None, result)
    r.seen(press, "point", "second")
    key = r.tap(name="enter")
    r.seen(key, "focus", None, result)
    assert names(r.steps()) == [("click", None), ("key", None)]


def test_an_earlier_found_focus_line_is_not_used_when_the_latest_failed() -> None:
    r = ERec()
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    tab = r.tap(name="tab")
    r.seen(tab, "focus", None, "late")
    r.tap(name="enter")
    assert names(r.steps()) == [("type", "Username"), ("key", None), ("key", None)]


# --- the rest of the step is unchanged -----------------------------------------------------------------


def test_element_lines_are_in_no_steps_events_and_change_no_step() -> None:
    r = ERec()
    press, _ = r.click(10, 10)
    r.seen(press, "point", "OK")
    first = r.tap("a")
    r.seen(first, "focus", "Username")
    r.type("bc")
    r.tap(name="enter")
    ordered = sorted(r.events, key=lambda e: e.t_ns)
    with_lines = steps(ordered)
    elements = {i for i, e in enumerate(ordered) if isinstance(e, ElementSeen)}
    assert all(not elements.intersection(s.events) for s in with_lines)
    without = steps([e for e in ordered if not isinstance(e, ElementSeen)])
    strip = [(s.action, s.text, s.keys, s.t_start_ns, s.t_end_ns, len(s.events)) for s in with_lines]
    assert strip == [(s.action, s.text, s.keys, s.t_start_ns, s.t_end_ns, len(s.events)) for s in without]
    assert all(s.element is None for s in without)
    assert with_lines[0].to_json(ordered)["element"]["name"] == "OK"
    assert "element" not in without[0].to_json(ordered)


def test_the_index_refuses_lines_out_of_time_order() -> None:
    index = ElementIndex()
    index.line(5 * MS, "point", True)
    with pytest.raises(ValueError, match="time order"):
        index.ender(4 * MS)
    with pytest.raises(ValueError, match="time order"):
        index.line(4 * MS, "focus", True)


def test_the_index_answers_without_walking_the_lines() -> None:
    """10,000 lines and 10,000 questions: the answer for each is one dict look-up or two bisections."""
    index = ElementIndex()
    for n in range(10_000):
        index.line(2 * n, "point" if n % 2 else "focus", True)
        index.ender(2 * n + 1) if n % 3 == 0 else None
    assert index.of("click", 2) == 1 and index.of("click", 3) is None
    assert index.of("type", 0) == 0 and index.of("type", 1) is None  # ended by the ender at 1
    assert index.of("key", 4) == 2 and index.of("key", 5) == 2
    assert index.of("hotkey", 7) is None and index.of("key", 8) == 4  # 7 ends line 2; 8 is a new line
    assert index.of("drag", 19_998) == 9_999 and index.of("drag", 19_996) is None  # a focus line
    assert index.of("scroll", 19_994) == 9_997


# --- the rule against a plain reading of the spec, on arbitrary streams --------------------------------


def reference(stream: list[Any], step: Step) -> Any:
    """docs/export-format.md's words, read literally: every line looked at, for every step."""
    lines = [(pos, e) for pos, e in enumerate(stream) if isinstance(e, ElementSeen)]
    start = step.t_start_ns
    if step.action in {"click", "double_click", "right_click", "middle_click", "drag", "scroll"}:
        chosen = next((e for _pos, e in lines if e.at == "point" and e.t_ns == start), None)
    else:
        focus = [e for _pos, e in lines if e.at == "focus" and e.t_ns <= start]
        latest = max((e.t_ns for e in focus), default=None)
        chosen = next((e for e in focus if e.t_ns == latest), None)
        enders = {"button_press", "window_focus", "marker", "task_start", "task_end"}
        if chosen is not None and any(e.KIND in enders and chosen.t_ns < e.t_ns <= start for e in stream):
            chosen = None
    return None if chosen is None or chosen.result != "found" else chosen.element


@st.composite
def with_lookups(draw: st.DrawFn) -> list[Any]:
    """A stream with element lines after some of its events, at their time (point or focus, any result)."""
    out: list[Any] = []
    for n, ev in enumerate(draw(streams())):
        out.append(ev)
        if draw(st.integers(0, 2)) == 0:
            at = draw(st.sampled_from(["point", "focus"]))
            result = draw(st.sampled_from(["found", "found", "late", "no_element"]))
            out.append(ElementSeen(ev.t_ns, at, result, element(f"e{n}") if result == "found" else None))
    return out


@given(with_lookups())
@settings(max_examples=300, deadline=None)
def test_every_steps_element_is_the_one_the_spec_names(stream: list[Any]) -> None:
    found = steps(stream)
    assert [s.element for s in found] == [reference(stream, s) for s in found]
    lines = {i for i, e in enumerate(stream) if isinstance(e, ElementSeen)}
    assert all(not lines.intersection(s.events) for s in found)
