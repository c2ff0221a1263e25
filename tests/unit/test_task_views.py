"""The "Start a task" dialog's view model (agent/ui/task_views.py), without Tk."""

from __future__ import annotations

import json

import pytest

from agent.errors import UsageError
from agent.events import MAX_INSTRUCTION, MAX_TASK_ID
from agent.study_model import StudyTask
from agent.ui.task_views import (
    OWN_ROW,
    ROW_CHARS,
    TaskChoice,
    choice_from_answer,
    choose,
    task_dialog_view,
    task_request,
    view_from_request,
    writes_own,
)

TASKS = (
    StudyTask(
        "book-flight", "Book the cheapest flight from Paris to Rome next Friday.", url="https://example.org/f"
    ),
    StudyTask("rename-file", "Rename the file report.txt to final.txt.", app="Files", time_limit_minutes=5),
)


def test_list_mode_shows_the_tasks_with_their_hints_and_no_box() -> None:
    view = task_dialog_view("list", TASKS)
    assert [r.task_id for r in view.rows] == ["book-flight", "rename-file"]
    assert view.row_labels == (TASKS[0].instruction, TASKS[1].instruction)
    assert not view.free and view.own_row is None
    assert "Web address: https://example.org/f" in view.rows[0].details
    assert "Where: Files" in view.rows[1].details and "Time limit: 5 minutes" in view.rows[1].details
    assert choose(view, 1, "") == TaskChoice(task_id="rename-file")
    assert choose(view, None, "anything") == "Pick a task in the list first."
    assert not writes_own(view, 0)


def test_free_mode_has_only_the_box_and_checks_the_instruction() -> None:
    view = task_dialog_view("free", TASKS)  # a list in free mode is not offered
    assert view.rows == () and view.row_labels == () and view.free
    assert writes_own(view, None)
    assert choose(view, None, "  Find a recipe for soup ") == TaskChoice(instruction="Find a recipe for soup")
    empty = choose(view, None, "   ")
    assert isinstance(empty, str) and "empty" in empty
    long = choose(view, None, "x" * (MAX_INSTRUCTION + 1))
    assert isinstance(long, str) and str(MAX_INSTRUCTION) in long and "xxx" not in long
    hidden = choose(view, None, "secret\u202eword")
    assert isinstance(hidden, str) and "secret" not in hidden  # the problem never repeats the text
    assert view.max_chars == MAX_INSTRUCTION


def test_both_mode_ends_the_list_with_something_else_which_uses_the_box() -> None:
    view = task_dialog_view("both", TASKS)
    assert view.row_labels[-1] == OWN_ROW and view.own_row == OWN_ROW and view.free
    assert choose(view, 0, "ignored") == TaskChoice(task_id="book-flight")
    assert not writes_own(view, 0) and writes_own(view, 2)
    assert choose(view, 2, "Plan a trip") == TaskChoice(instruction="Plan a trip")
    assert isinstance(choose(view, 2, ""), str)
    # both without a list is free
    bare = task_dialog_view("both", ())
    assert bare.own_row is None and bare.row_labels == () and writes_own(bare, None)


def test_off_unknown_or_an_empty_list_has_no_dialog() -> None:
    for mode in ("off", "sometimes", ""):
        with pytest.raises(UsageError, match="no tasks"):
            task_dialog_view(mode, TASKS)
    with pytest.raises(UsageError, match="lists no tasks"):
        task_dialog_view("list", ())


def test_rows_are_one_line_and_shown_safely() -> None:
    tricky = StudyTask("t", "first line\nsecond\u202e " + "y" * 200)
    (row,) = task_dialog_view("list", (tricky,)).rows
    assert "\n" not in row.label and "\u202e" not in row.label and len(row.label) <= ROW_CHARS
    assert "\u202e" not in row.details and "\\u202e" in row.details


def test_the_request_round_trips_through_json_as_the_recorder_states_it() -> None:
    status = {"mode": "both", "free": True, "tasks": [t.to_json() for t in TASKS], "running": None}
    request = json.loads(json.dumps(task_request(status)))
    assert request == {"mode": "both", "tasks": [t.to_json() for t in TASKS]}
    view = view_from_request(request)
    assert view == task_dialog_view("both", TASKS)


@pytest.mark.parametrize(
    "request_",
    [
        None,
        [],
        {"mode": "list"},
        {"mode": "list", "tasks": "book-flight"},
        {"mode": "list", "tasks": [1]},
        {"mode": "list", "tasks": [{"id": 3, "instruction": "x"}]},
        {"mode": "list", "tasks": [{"id": "a" * (MAX_TASK_ID + 1), "instruction": "x"}]},
        {"mode": "list", "tasks": [{"id": "a", "instruction": "x" * 100_000}]},
        {"mode": "list", "tasks": [{"id": "a", "instruction": "x", "time_limit_minutes": True}]},
        {"mode": "list", "tasks": [{"id": "a", "instruction": "x", "time_limit_minutes": "5"}]},
        {"mode": "off", "tasks": []},
    ],
)
def test_a_malformed_request_is_refused_with_what_is_wrong(request_: object) -> None:
    with pytest.raises(UsageError):
        view_from_request(request_)


def test_the_answer_is_read_back_bounded() -> None:
    assert choice_from_answer(TaskChoice(task_id="book-flight").to_json()) == TaskChoice(
        task_id="book-flight"
    )
    assert choice_from_answer(TaskChoice(instruction="Plan").to_json()) == TaskChoice(instruction="Plan")
    for bad in (
        {"started": False},
        {"started": "yes", "id": "a"},
        {"started": True},
        {"started": True, "id": "a", "instruction": "b"},
        {"started": True, "id": 5},
        {"started": True, "id": ""},
        {"started": True, "id": "a" * (MAX_TASK_ID + 1)},
        {"started": True, "instruction": ["x"]},
        {"started": True, "instruction": "x" * (MAX_INSTRUCTION + 1)},
    ):
        assert choice_from_answer(bad) is None, bad


def test_the_tray_names_a_task_by_its_study_id_or_as_yours() -> None:
    from agent.ui.tray import task_name

    assert task_name({"id": "book-flight", "source": "study"}) == "the task book-flight"
    assert task_name({"id": "free-0a1b2c3d", "source": "volunteer"}) == "your task"
    assert task_name({"id": "free-0a1b2c3d", "outcome": "done"}) == "your task"  # an end has no source
    assert task_name({"id": "free-list", "source": "study"}) == "the task free-list"
    assert task_name({"id": "odd\u202eid", "source": "study"}) == "the task odd\\u202eid"


@pytest.mark.parametrize(
    "stdin", ["", "not json", '{"mode": "list"}', '{"mode": "off", "tasks": []}', "[" * 60_000 + "]" * 60_000]
)
def test_the_dialog_process_refuses_a_bad_request_before_any_window(stdin: str) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "agent.ui.dialogs", "--task"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},  # no DISPLAY: it must not get that far
    )
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("optin: ") and "task" in out.stderr and "Traceback" not in out.stderr
