"""The review window per task (issue 16): a task's session shows its task as the bundle will hold it
(source, the instruction redacted or dropped, the outcome, its steps); "Cut this task" marks exactly
its span, and a task that is all of its session deletes the session (crypto-shredded, as a given-up
task); the window moves between the reviewable sessions; the selected step's element is described
and outlined on its frame.  Real recordings (fake backend, real store, real redaction); the elements
are Steps built with one, as the step builder makes them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import consent
from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import wait_for
from agent.control import Recorder
from agent.errors import NotFound, UsageError
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Frame,
    KeyPress,
    KeyRelease,
    PointerMove,
    TaskEnd,
    TaskStart,
    now_ns,
)
from agent.export.review import (
    MAX_LISTED,
    Review,
    describe_element,
    element_bounds,
    reviewable_sessions,
    session_choices,
)
from agent.export.review_screen import MAX_SHOWN, ReviewScreen
from agent.paths import Dirs, dirs
from agent.store import keys
from agent.store.reader import list_sessions, read_session
from agent.study import Study, demo_study_toml, install_study
from tests.tools import fake_backend, hooks_of, screen_of
from tests.unit.test_export import LOCAL

#: The volunteer's own words, with an address the detectors redact: captured text.
INSTRUCTION = "Write to alice.canary@example.com about the Zorblax lunch"
SHOWN = "Write to [EMAIL] about the Zorblax lunch"
TASKS = """
[[task]]
id = "rename"
instruction = "Rename a file"
"""
ELEMENT: dict[str, Any] = {
    "role": "push button",
    "name": "OK",
    "states": ["checked", "focused"],
    "bounds": [130, 70, 60, 24],
    "app": "Firefox",
    "path": [{"role": "frame", "name": "Sign in"}, {"role": "panel", "name": None}],
    "automation_id": None,
}


def _study(tmp_path: Path, *, typed_text: str = "redact") -> tuple[Dirs, Study]:
    from pyrage import x25519

    text = demo_study_toml(str(x25519.Identity.generate().to_public()))
    text += f'\n[redaction]\ntyped_text = "{typed_text}"\n\n[tasks]\nmode = "both"\n' + TASKS
    path = tmp_path / "study.toml"
    path.write_text(text)
    d = dirs()
    study = install_study(d, path)
    consent.grant(d, study, study.terms_sha256)
    keys.init_keys(d)
    return d, study


def _wait(pred: Callable[[], bool]) -> None:
    assert wait_for(pred, 5.0, interval=0.01)


def _click(backend: FakeBackend, x: int, y: int) -> None:
    """The screen changes, then a click at ``x, y`` (a frame is taken before it)."""
    screen = screen_of(backend)
    grabs = screen.grabs
    screen.paint((200, 10 + x % 200, 10))
    _wait(lambda: screen.grabs > grabs)
    fake = hooks_of(backend)
    fake.emit(PointerMove(now_ns(), x, y))
    fake.emit(ButtonPress(now_ns(), x, y, "left"))
    fake.emit(ButtonRelease(now_ns(), x, y, "left"))


def _type(backend: FakeBackend, text: str) -> None:
    fake = hooks_of(backend)
    for ch in text:
        fake.emit(KeyPress(now_ns(), ch, None, ord(ch), ()))
        fake.emit(KeyRelease(now_ns(), ch, None, ord(ch), ()))
    fake.emit(KeyPress(now_ns(), None, "enter", 65293, ()))
    fake.emit(KeyRelease(now_ns(), None, "enter", 65293, ()))


def _record(d: Dirs, study: Study, *, after: bool, stop: bool = False, **task: str) -> tuple[str, str]:
    """A session before the task, then the task's session: a click and typing in the task (ended
    done, or with ``stop`` by stopping the recorder under it: interrupted, after capture stopped),
    and with ``after`` a click after its end.  The two session ids, older first."""
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    _wait(lambda: rec.counters.frames >= 1)
    before = str(rec.session_id)
    info = rec.start_task(**task)
    _wait(lambda: rec.counters.frames >= 1)
    _click(backend, 30, 40)
    _type(backend, "hello")
    time.sleep(0.05)
    if not stop:
        rec.finish_task("done")
    if after:
        time.sleep(0.05)
        _click(backend, 150, 80)
        _wait(lambda: rec.counters.by_kind.get("button_release", 0) >= 2)
    rec.stop()
    return before, str(info["session"])


@pytest.fixture
def recorded(optin_home: Path, tmp_path: Path) -> tuple[Dirs, Study, str, str]:
    d, study = _study(tmp_path)
    before, task = _record(d, study, after=True, instruction=INSTRUCTION)
    return d, study, before, task


def _screen(d: Dirs, study: Study, sid: str, out: Path) -> ReviewScreen:
    screen = ReviewScreen(Review(d, study, sid, local=LOCAL), out)
    assert screen.unlock()
    screen.review.load()
    screen.ready()
    return screen


# --- the task shown -----------------------------------------------------------------------------


def test_a_task_session_shows_its_task_as_exported(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    d, study, _before, sid = recorded
    screen = _screen(d, study, sid, tmp_path)
    (task,) = screen.tasks
    assert task.id.startswith("free-") and task.source == "volunteer" and task.outcome == "done"
    assert task.instruction == SHOWN and not task.dropped  # redacted, as the bundle holds it
    rows = screen.rows
    assert [r.action for r in rows] == ["click", "type", "key", "click"]
    assert [r.task for r in rows] == [task.id] * 3 + [None] and screen.task_rows() == [True] * 3 + [False]
    assert task.steps == (0, 2) and task.count == 3
    view = screen.task_view()
    assert view is not None and view.instruction == SHOWN and view.problem is None
    assert view.about.startswith(f"Task {task.id} · your own task · done · steps 1–3 · ")
    assert screen.approve_label() == "Approve this task for export"
    state = screen.state()
    assert state["tasks"] == [{"id": task.id, "outcome": "done", "steps": [0, 2]}]
    # captured text stays in its widget: no status, state or label says it
    texts = [screen.ready().status, view.about, screen.marks()[0], screen.header().counts, str(state)]
    texts += [screen.approve().status, *(c.label for c in screen.sessions)]
    assert not any(w in t for t in texts for w in ("Zorblax", "[EMAIL]", "alice", "hello"))
    assert screen.approve().status.startswith(f"Task {task.id} approved for export.")


def test_a_session_without_a_task_looks_as_before(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    d, study, before, _sid = recorded
    screen = _screen(d, study, before, tmp_path)
    assert screen.tasks == [] and screen.task_view() is None and screen.approve_label() == "Approve"
    assert all(r.task is None for r in screen.rows) and not screen.enabled()["cut_task"]
    assert screen.cut_task().state == "error" and screen.review.cuts == []
    assert screen.ready().status.startswith("Look through the frames and steps")


def test_a_dropped_instruction_is_said_to_be_dropped(optin_home: Path, tmp_path: Path) -> None:
    d, study = _study(tmp_path, typed_text="drop")
    _before, sid = _record(d, study, after=False, instruction=INSTRUCTION)
    screen = _screen(d, study, sid, tmp_path)
    (task,) = screen.tasks
    assert task.instruction is None and task.dropped
    view = screen.task_view()
    assert view is not None and view.dropped and "Zorblax" not in view.instruction
    assert view.instruction.startswith("Your instruction is not exported: the study does not take typed text")


def test_a_study_task_shows_the_study_s_words(optin_home: Path, tmp_path: Path) -> None:
    d, study = _study(tmp_path)
    _before, sid = _record(d, study, after=True, task_id="rename")
    screen = _screen(d, study, sid, tmp_path)
    view = screen.task_view("rename")
    assert view is not None and view.instruction == "Rename a file"
    assert view.about.startswith("Task rename · the study's task · done · steps 1–3")
    assert screen.task_view("no-such-task") is None


# --- cutting a task -------------------------------------------------------------------------------


def test_cut_this_task_marks_exactly_its_span_and_the_cut_deletes_it(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    d, study, _before, sid = recorded
    screen = _screen(d, study, sid, tmp_path)
    (task,) = screen.tasks
    outcome = screen.cut_task(task.id)
    assert outcome.state == "marked" and outcome.status.startswith(f"Task {task.id} is marked to cut.")
    assert screen.review.cuts == [(task.t_start_ns, task.t_end_ns)]
    assert [r.cut for r in screen.rows] == [True, True, True, False]  # its steps, not the click after it
    assert not screen.covers_session and not screen.state()["deletes_session"]
    assert screen.confirm_heading() == "Delete the marked parts from this computer?"
    assert not screen.enabled()["approve"] and not screen.enabled()["sessions"]
    report = screen.cut_job()(lambda _n, _t: None)
    done = screen.cut_done(report)
    assert done.state == "cut" and screen.tasks == [] and [r.action for r in screen.rows] == ["click"]
    events = read_session(d, sid, keys.load_identity(d)).events
    assert not any(isinstance(e, (TaskStart, TaskEnd)) for e in events)
    assert not any(task.t_start_ns <= e.t_ns <= task.t_end_ns for e in events if e.KIND != "marker")
    assert any(e.t_ns > task.t_end_ns and e.KIND == "button_press" for e in events)  # after it: kept


def test_a_task_that_is_all_of_its_session_deletes_the_session(optin_home: Path, tmp_path: Path) -> None:
    d, study = _study(tmp_path)
    before, sid = _record(d, study, after=False, stop=True, instruction=INSTRUCTION)
    screen = _screen(d, study, sid, tmp_path)
    prepared = screen.review.prepared
    assert prepared is not None
    (task,) = screen.tasks
    assert task.outcome == "interrupted"  # capture stopped before its end was written
    outside = [
        e for e in prepared.events if e.KIND != "marker" and not task.t_start_ns <= e.t_ns <= task.t_end_ns
    ]
    assert outside == []
    outcome = screen.cut_task()
    assert screen.covers_session and screen.state()["deletes_session"]
    assert "deletes the whole session from this computer" in outcome.status
    assert "That is all of this session" in screen.marks()[0]
    assert screen.confirm_heading() == "Delete this whole session from this computer?"
    assert f"the whole session {sid} will be deleted from this computer" in screen.confirm_text()
    assert screen.start_cut().startswith("Deleting the session")
    done = screen.cut_done(screen.cut_job()(lambda _n, _t: None))
    assert (
        done.state == "deleted"
        and done.extra == {"deleted": sid}
        and done.status.startswith(f"Session {sid} was deleted")
    )
    assert sid not in {s.id for s in list_sessions(d)}
    with pytest.raises(NotFound):
        read_session(d, sid, keys.load_identity(d))
    # the window is empty but can move on: only another session, the folder and Close work
    assert screen.locked and screen.deleted and screen.frames == [] and screen.rows == []
    assert screen.empty_text() == "This session was deleted from this computer."
    assert screen.frame_label([]) == ("", "") and screen.marks() == ("", "small")
    enabled = screen.enabled()
    assert enabled["sessions"] and enabled["close"] and not enabled["approve"] and not enabled["cut_task"]
    assert [c.id for c in screen.sessions] == [before] and screen.session_index() is None
    assert screen.neighbour(1) == before


# --- moving between sessions ----------------------------------------------------------------------


def test_the_window_lists_the_sessions_and_moves_between_them(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    d, study, before, sid = recorded
    choices = session_choices(d, study)
    assert [c.id for c in choices] == reviewable_sessions(d) and {c.id for c in choices} == {sid, before}
    labels = {c.id: c.label for c in choices}
    assert labels == {
        sid: f"{sid} · with a task · not approved",
        before: f"{before} · no task · not approved",
    }
    assert [c.id for c in session_choices(d, study, limit=1)] == reviewable_sessions(d)[
        :1
    ] and MAX_LISTED == 200
    screen = _screen(d, study, sid, tmp_path)
    (task,) = screen.tasks
    labels = {c.id: c.label for c in screen.sessions}
    assert labels[sid] == f"{sid} · task {task.id} done · not approved"  # learnt when it was opened
    at = screen.session_index()
    assert at is not None and screen.sessions[at].id == sid
    older = screen.neighbour(1)
    newer = screen.neighbour(-1)
    assert {older, newer} == {before, None}  # the other session is next to it, on one side
    enabled = screen.enabled()
    assert (
        enabled["sessions"]
        and enabled["next"] == (older is not None)
        and enabled["previous"] == (newer is not None)
    )
    screen.cut_steps([3])
    assert not any(screen.enabled()[k] for k in ("sessions", "previous", "next"))
    refused = screen.open(before)
    assert refused.error and refused.status.startswith("Apply or clear the marked cuts first")
    assert screen.review.session_id == sid
    screen.clear()
    identity = screen.review.unlock()
    opening = screen.open(before)
    assert (opening.state, opening.status) == ("opening", f"Opening session {before}…")
    assert (
        screen.review.session_id == before and not screen.loaded and screen.rows == [] and screen.tasks == []
    )
    assert screen.review.unlock() is identity  # the key is not asked for again
    screen.review.load()
    screen.ready()
    assert screen.state()["session"] == before and screen.tasks == []
    assert sid in (screen.neighbour(-1), screen.neighbour(1))
    assert {c.id: c.label for c in screen.sessions}[before] == f"{before} · no task · not approved"
    screen.begin("load")
    assert screen.open(sid).error and not screen.enabled()["sessions"]


# --- a step's element -----------------------------------------------------------------------------


def test_describe_element() -> None:
    assert describe_element(None) == "No element was recorded for this step."
    assert describe_element(ELEMENT) == (
        'push button "OK" · checked, focused · in Firefox\ninside: frame "Sign in" › panel'
    )
    bare = {**ELEMENT, "name": None, "states": [], "app": None, "path": [], "automation_id": "okButton"}
    assert describe_element(bare) == "push button\nautomation id: okButton"
    assert element_bounds(ELEMENT) == (130, 70, 60, 24) and element_bounds(None) is None
    for bounds in (None, [1, 2, 3], [1, 2, 0, 4], [1, 2, 3, -1], [True, 2, 3, 4], [1.5, 2, 3, 4], "1,2,3,4"):
        assert element_bounds({**ELEMENT, "bounds": bounds}) is None, bounds


def test_the_selected_step_s_element_is_described_and_outlined_on_its_frame(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    """Steps built with an element (and the frame moved on the screen): its text, its rectangle in
    the frame's pixels; none for a step without one or shown on another frame."""
    d, study, _before, sid = recorded
    screen = _screen(d, study, sid, tmp_path)
    prepared = screen.review.prepared
    assert prepared is not None
    first = prepared.steps[0]
    assert first.action == "click" and first.frame is not None
    events = list(prepared.events)
    frame = events[first.frame]
    assert isinstance(frame, Frame)
    events[first.frame] = dataclasses.replace(frame, left=100, top=50)  # a frame of the second monitor
    built = [dataclasses.replace(first, element=ELEMENT), *prepared.steps[1:]]
    screen.review.prepared = dataclasses.replace(prepared, events=events, steps=built)
    screen.refresh(rebuild=True)
    shown = screen.frame_for_selection([0], 0)
    screen.show(shown)
    assert (
        screen.element_text([0])
        == 'Step 1: push button "OK" · checked, focused · in Firefox\ninside: frame "Sign in" › panel'
    )
    assert screen.element_boxes([0]) == [(30, 20, 60, 24)]  # 130 - 100, 70 - 50
    assert screen.element_text([1, 0], 1) == "Step 2: No element was recorded for this step."
    assert screen.element_text([]) == "Select a step to see the element it acted on."
    assert screen.element_boxes([1]) == [] and screen.element_boxes([]) == []
    other = next(i for i in range(len(screen.frames)) if i != shown)
    screen.show(other)
    assert screen.element_boxes([0]) == []  # the step's frame is not the one shown
    # no status or state line holds the element's names
    assert "OK" not in str(screen.state()) and "Sign in" not in screen.frame_label([0])[0]


def test_usage_errors_name_the_task_id(recorded: tuple[Dirs, Study, str, str], tmp_path: Path) -> None:
    d, study, _before, sid = recorded
    review = Review(d, study, sid, local=LOCAL)
    review.load()
    with pytest.raises(UsageError, match="this session holds no task 'nope'"):
        review.task_span("nope")


def test_a_long_instruction_is_shown_in_part_and_says_how_long(
    recorded: tuple[Dirs, Study, str, str], tmp_path: Path
) -> None:
    d, study, _before, sid = recorded
    screen = _screen(d, study, sid, tmp_path)
    screen.tasks = [dataclasses.replace(screen.tasks[0], instruction="x" * 5000)]
    view = screen.task_view()
    assert view is not None and view.instruction == "x" * MAX_SHOWN + "… (5000 characters in all)"


def test_a_task_the_export_would_refuse_is_still_shown_with_why(optin_home: Path, tmp_path: Path) -> None:
    """The bundle refuses a study task that is not in the consent terms (its error says: cut the
    task out in the review window): the window shows the task, says why, and can cut it."""
    d, study = _study(tmp_path)
    _before, sid = _record(d, study, after=True, task_id="rename")
    screen = _screen(d, study, sid, tmp_path)
    prepared = screen.review.prepared
    assert prepared is not None
    screen.review.prepared = dataclasses.replace(prepared, receipt={**prepared.receipt, "terms": {}})
    screen.refresh(rebuild=True)
    (task,) = screen.tasks
    view = screen.task_view()
    assert task.id == "rename" and view is not None
    assert view.problem == "study task 'rename' is not in the consent terms (consent.terms.tasks.list)"
    assert screen.cut_task().state == "marked" and screen.review.cuts == [(task.t_start_ns, task.t_end_ns)]
