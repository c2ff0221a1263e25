"""What the "Start a task" dialog shows, and what a choice in it becomes: pure, no Tk.

The tray asks the recorder for the study's task mode and list (:meth:`agent.recorder_tasks.
RecorderTasks.task_status`) and hands them to the dialog process as JSON (:func:`task_request`);
the dialog builds a :class:`TaskDialogView` from them (:func:`view_from_request`) and renders it
(:mod:`agent.ui.task_dialog`).  By ``[tasks] mode``:

* ``list``: the study's tasks to pick from, each with its instruction and hints (app, web
  address, time limit);
* ``free``: a box to write what the volunteer is about to do;
* ``both``: the study's tasks and, last in the list, "Something else", which lets the volunteer
  write their own.

:func:`choose` turns the picked row and the written text into a :class:`TaskChoice` (a study task's
id, or the volunteer's instruction) or says what is missing; the answer crosses back to the tray
as JSON and is read again, bounded, by :func:`choice_from_answer`.  A written instruction is
captured text: nothing here logs it, and a problem with it names lengths, never the text (the
bounds are the control socket's: :data:`agent.events.MAX_INSTRUCTION`,
:func:`agent.events.instruction_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.errors import UsageError
from agent.events import MAX_INSTRUCTION, MAX_TASK_ID, instruction_problem
from agent.study_model import MAX_TASK_APP, MAX_TASK_INSTRUCTION, MAX_TASK_URL, StudyTask
from agent.untrusted_text import shown_text, visible

#: The modes in which the dialog can start a task (``off`` has no dialog).
TASK_MODES = ("list", "free", "both")
#: A row of the list shows at most this many characters of a study task's instruction.
ROW_CHARS = 90
#: The row, last in the list (mode ``both``), that lets the volunteer write their own task.
OWN_ROW = "Something else: I write what I am about to do"


@dataclass(frozen=True)
class TaskRow:
    """One of the study's tasks as the list shows it."""

    task_id: str
    #: One line: the instruction, cut to :data:`ROW_CHARS`.
    label: str
    #: The whole instruction and its hints, shown below the list while the row is picked.
    details: str


@dataclass(frozen=True)
class TaskDialogView:
    """Everything the dialog says, for one study's tasks."""

    window_title: str
    heading: str
    intro: str
    #: The study's tasks (modes ``list`` and ``both``); empty in mode ``free``.
    rows: tuple[TaskRow, ...]
    #: The label of the last row that lets the volunteer write their own (mode ``both``), else None.
    own_row: str | None
    #: Whether the volunteer may write their own instruction (modes ``free`` and ``both``).
    free: bool
    entry_label: str
    #: What the box's label says while a study task is picked (mode ``both``: the box is off).
    entry_label_off: str
    #: What happens to what they write (shown under the box).
    privacy_note: str
    #: Most characters the box takes.
    max_chars: int = MAX_INSTRUCTION
    start_label: str = "Start"
    cancel_label: str = "Cancel"

    @property
    def row_labels(self) -> tuple[str, ...]:
        """The list's lines, the "Something else" row last when there is one."""
        own = (self.own_row,) if self.own_row else ()
        return (*(row.label for row in self.rows), *own)


@dataclass(frozen=True)
class TaskChoice:
    """What the volunteer chose: one of the study's tasks, or an instruction of their own."""

    task_id: str | None = None
    instruction: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The dialog's answer (``{"started": true, "id" | "instruction": ...}``)."""
        if self.task_id is not None:
            return {"started": True, "id": self.task_id}
        return {"started": True, "instruction": self.instruction}


def _details(task: StudyTask) -> str:
    lines = [shown_text(task.instruction)]
    if task.app:
        lines.append(f"Where: {visible(task.app, limit=120)}")
    if task.url:
        lines.append(f"Web address: {visible(task.url, limit=300)}")
    if task.time_limit_minutes is not None:
        minutes = task.time_limit_minutes
        lines.append(f"Time limit: {minutes} minute{'s' if minutes != 1 else ''} (it ends by itself then)")
    return "\n".join(lines)


def task_dialog_view(mode: str, tasks: Sequence[StudyTask]) -> TaskDialogView:
    """The dialog for the study's ``[tasks] mode`` and ``[[task]]`` list.

    :raises UsageError: the mode asks for no tasks (``off``), is unknown, or lists none to pick.
    """
    if mode not in TASK_MODES:
        msg = "this study asks for no tasks ([tasks] mode is off); record without one"
        raise UsageError(msg)
    listed = mode in ("list", "both")
    rows = tuple(
        TaskRow(t.id, visible(" ".join(t.instruction.split()), limit=ROW_CHARS), _details(t)) for t in tasks
    )
    if listed and not rows and mode == "list":
        msg = "the study lists no tasks to pick from; ask the study's contact"
        raise UsageError(msg)
    free = mode in ("free", "both")
    intro = {
        "list": "Pick the study's task you are about to do (Up and Down choose), then press Start.",
        "free": "Write, in one line, what you are about to do, then press Start.",
        "both": "Pick the study's task you are about to do, or “Something else” to write your own; "
        "then press Start.",
    }[mode]
    return TaskDialogView(
        window_title="optin — start a task",
        heading="Start a task",
        intro=intro
        + " optin starts a new recording for the task; end it from the tray menu with “Task done”, "
        "“Task failed” or “Give up”.",
        rows=rows if listed else (),
        own_row=OWN_ROW if mode == "both" and rows else None,
        free=free,
        entry_label="What are you about to do?",
        entry_label_off="Your own task: pick “Something else” in the list to write it here.",
        privacy_note="What you write is recorded like what you type: encrypted on this computer, "
        "checked for personal details at export, and never written to a log.",
    )


def writes_own(view: TaskDialogView, index: int | None) -> bool:
    """Whether, with row ``index`` picked (None: none), the volunteer's own instruction is used."""
    if not view.free:
        return False
    return not view.rows or index == len(view.rows)


def choose(view: TaskDialogView, index: int | None, text: str) -> TaskChoice | str:
    """What Start does with row ``index`` picked and ``text`` written: the choice, or what is
    missing (a message that never repeats the text)."""
    if writes_own(view, index):
        problem = instruction_problem(text)
        return problem if problem is not None else TaskChoice(instruction=text.strip())
    if index is None or not 0 <= index < len(view.rows):
        return "Pick a task in the list first."
    return TaskChoice(task_id=view.rows[index].task_id)


def task_request(status: Mapping[str, Any]) -> dict[str, Any]:
    """The dialog's request (its stdin), from the recorder's task status: the mode and the list."""
    return {"mode": status.get("mode"), "tasks": list(status.get("tasks") or [])}


def _text(entry: Mapping[str, Any], key: str, limit: int) -> str:
    value = entry.get(key, "")
    if not isinstance(value, str) or len(value) > limit:
        msg = f"the task dialog's request has a bad {key} (a string of at most {limit} characters)"
        raise UsageError(msg)
    return value


def view_from_request(request: object) -> TaskDialogView:
    """The view for the request :func:`task_request` made (read back in the dialog process).

    :raises UsageError: the request is not such an object (the message names what is wrong).
    """
    if not isinstance(request, dict) or not isinstance(request.get("tasks"), list):
        msg = 'the --task dialog reads {"mode": ..., "tasks": [...]} from stdin'
        raise UsageError(msg)
    tasks = []
    for entry in request["tasks"]:
        if not isinstance(entry, dict):
            msg = "the task dialog's request lists a task that is not an object"
            raise UsageError(msg)
        limit = entry.get("time_limit_minutes")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
            msg = "the task dialog's request has a bad time_limit_minutes (a whole number)"
            raise UsageError(msg)
        tasks.append(
            StudyTask(
                id=_text(entry, "id", MAX_TASK_ID),
                instruction=_text(entry, "instruction", MAX_TASK_INSTRUCTION),
                app=_text(entry, "app", MAX_TASK_APP),
                url=_text(entry, "url", MAX_TASK_URL),
                time_limit_minutes=limit,
            )
        )
    return task_dialog_view(str(request.get("mode")), tasks)


def choice_from_answer(answer: Mapping[str, Any]) -> TaskChoice | None:
    """The dialog's JSON answer read back in the tray: the choice, or None (cancelled or malformed).

    Exactly one of a task id (at most :data:`MAX_TASK_ID` characters) and an instruction (at most
    :data:`MAX_INSTRUCTION`); the recorder checks them again when it starts the task.
    """
    if answer.get("started") is not True:
        return None
    task_id, instruction = answer.get("id"), answer.get("instruction")
    if (task_id is None) == (instruction is None):
        return None
    if task_id is not None:
        ok = isinstance(task_id, str) and 0 < len(task_id) <= MAX_TASK_ID
        return TaskChoice(task_id=task_id) if ok else None
    ok = isinstance(instruction, str) and 0 < len(instruction) <= MAX_INSTRUCTION
    return TaskChoice(instruction=instruction) if ok else None
