"""A bundle's task list and each step's task, computed one way for writer and reader.

docs/export-format.md, "optin-bundle/3", Tasks: the writer (agent/export/bundle.py) puts these
into the manifest, ``tasks.jsonl`` and the step members, and the reader (agent/export/recount.py)
recomputes them from ``events.jsonl``, the step members and the signed consent terms, and
refuses a bundle whose members say otherwise.  Pure functions over the records as
``events.jsonl`` holds them (``{"k": "task_start", "t_ns": ..., ...}``); a record the format
does not allow (an outcome ``abandoned``, a task that starts while another runs, a study task
whose words differ from the consent terms) raises :class:`ValueError` whose message names ids,
kinds and counts, never an instruction (captured text, when the volunteer wrote it).

Memory: one dict per task, at most :data:`MAX_TASKS` of them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from typing import Any

from agent.export.counts import is_integer
from agent.steps import ACTIONS

#: Outcomes a bundle may hold (a given-up task, ``abandoned``, is shredded, never exported).
OUTCOMES = ("done", "failed", "interrupted", "timed out")
#: Where a task's instruction comes from.
SOURCES = ("study", "volunteer")
#: Most tasks in one bundle.
MAX_TASKS = 10_000
#: Longest instruction as exported (redaction placeholders can lengthen a volunteer's).
MAX_INSTRUCTION = 32_768
#: Longest time limit, seconds (24 h).
MAX_TIME_LIMIT_S = 86_400
#: A task id.
TASK_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: The keys of every task object.
KEYS = frozenset(
    {"id", "source", "instruction", "hints", "time_limit_s", "outcome", "t_start_ns", "t_end_ns", "steps"}
)
_ACTIONS = tuple(sorted(ACTIONS))


def _id_shown(value: Any) -> str:
    """A task id in a message: ids are checked against :data:`TASK_ID` before any message shows one."""
    return repr(value) if isinstance(value, str) and TASK_ID.fullmatch(value) else "(not a task id)"


class TaskLines:
    """The ``task_start`` and ``task_end`` records of a stream, given one at a time in stream order.

    :meth:`add` raises :class:`ValueError` for what a bundle may not hold; :meth:`tasks` is the list.
    """

    def __init__(self) -> None:
        self.started: list[dict[str, Any]] = []
        self.running: dict[str, Any] | None = None
        self.ids: set[str] = set()

    def add(self, record: Mapping[str, Any]) -> None:
        """Take one ``task_start`` or ``task_end`` record (other kinds are ignored)."""
        kind = record.get("k")
        if kind == "task_start":
            self._start(record)
        elif kind == "task_end":
            self._end(record)

    def _start(self, record: Mapping[str, Any]) -> None:
        task_id, source = record.get("task_id"), record.get("source")
        instruction, limit, t_ns = record.get("instruction"), record.get("time_limit_s"), record.get("t_ns")
        if not (isinstance(task_id, str) and TASK_ID.fullmatch(task_id)):
            msg = "a task_start has no task id ([a-z0-9][a-z0-9._-]{0,63})"
            raise ValueError(msg)
        if source not in SOURCES:
            msg = f"task {task_id!r} has a source that is not 'study' or 'volunteer'"
            raise ValueError(msg)
        if not (
            (isinstance(instruction, str) and 1 <= len(instruction) <= MAX_INSTRUCTION)
            or (instruction is None and source == "volunteer")
        ):
            msg = f"task {task_id!r} has no instruction of 1 to {MAX_INSTRUCTION} characters"
            raise ValueError(msg)
        if limit is not None and not (is_integer(limit) and 1 <= limit <= MAX_TIME_LIMIT_S):
            msg = f"task {task_id!r} has a time_limit_s that is not null or 1 to {MAX_TIME_LIMIT_S}"
            raise ValueError(msg)
        if not (is_integer(t_ns) and t_ns >= 0):
            msg = f"task {task_id!r} starts at no t_ns"
            raise ValueError(msg)
        if self.running is not None:
            msg = f"task {task_id!r} starts while task {self.running['id']!r} has not ended (tasks overlap)"
            raise ValueError(msg)
        if task_id in self.ids:
            msg = f"task {task_id!r} starts twice (task ids are unique in a bundle)"
            raise ValueError(msg)
        if len(self.started) >= MAX_TASKS:
            msg = f"it has more than {MAX_TASKS} tasks"
            raise ValueError(msg)
        self.ids.add(task_id)
        task = {
            "id": task_id,
            "source": source,
            "instruction": instruction,
            "time_limit_s": limit,
            "outcome": None,
            "t_start_ns": t_ns,
            "t_end_ns": None,
        }
        self.started.append(task)
        self.running = task

    def _end(self, record: Mapping[str, Any]) -> None:
        task_id, outcome, t_ns = record.get("task_id"), record.get("outcome"), record.get("t_ns")
        if outcome == "abandoned":
            msg = (
                f"task {_id_shown(task_id)} ended 'abandoned': a given-up task is deleted with its session "
                "and never exported"
            )
            raise ValueError(msg)
        if outcome not in OUTCOMES:
            msg = f"task {_id_shown(task_id)} ended with an outcome that is not one of {', '.join(OUTCOMES)}"
            raise ValueError(msg)
        running = self.running
        if running is None or running["id"] != task_id:
            msg = f"a task_end of task {_id_shown(task_id)}, which is not the task running"
            raise ValueError(msg)
        if not (is_integer(t_ns) and t_ns >= running["t_start_ns"]):
            msg = f"task {task_id!r} ends before it starts"
            raise ValueError(msg)
        running["outcome"], running["t_end_ns"] = outcome, t_ns
        self.running = None

    def tasks(
        self, last_t_ns: int, terms: Any, step_starts: Sequence[int], step_actions: Sequence[str]
    ) -> tuple[list[dict[str, Any]], list[str | None]]:
        """The task objects, and each step's task id (None: no task).

        :param last_t_ns: the largest ``t_ns`` of the stream: where a task without its end ends.
        :param terms: the consent terms the manifest carries (a study task's words and hints).
        :param step_starts: each step's ``t_start_ns``, by step number (``step_actions``: its action).
        :raises ValueError: a study task is not in the terms or differs from them, or a task's
            steps are not consecutive.
        """
        listed = _study_tasks(terms)
        out: list[dict[str, Any]] = []
        for task in self.started:
            end = task["t_end_ns"] if task["t_end_ns"] is not None else max(last_t_ns, task["t_start_ns"])
            hints: dict[str, Any] = {"app": None, "url": None}
            if task["source"] == "study":
                hints = _check_study_task(task, listed)
            out.append(
                {
                    "id": task["id"],
                    "source": task["source"],
                    "instruction": task["instruction"],
                    "hints": hints,
                    "time_limit_s": task["time_limit_s"],
                    "outcome": task["outcome"] or "interrupted",
                    "t_start_ns": task["t_start_ns"],
                    "t_end_ns": end,
                }
            )
        of_step = steps_tasks(out, step_starts)
        numbers: dict[str, list[int]] = {}  # one pass over the steps: time bounded by the bundle's size
        for n, task_id in enumerate(of_step):
            if task_id is not None:
                numbers.setdefault(task_id, []).append(n)
        for task in out:
            task["steps"] = _task_steps(task["id"], numbers.get(task["id"], []), step_actions)
        return out, of_step


def steps_tasks(tasks: Sequence[Mapping[str, Any]], step_starts: Sequence[int]) -> list[str | None]:
    """Each step's task: the one whose ``[t_start_ns, t_end_ns]`` holds its start (the later of two)."""
    starts = [t["t_start_ns"] for t in tasks]
    out: list[str | None] = []
    for t in step_starts:
        i = bisect_right(starts, t) - 1
        out.append(tasks[i]["id"] if i >= 0 and t <= tasks[i]["t_end_ns"] else None)
    return out


def _task_steps(task_id: str, numbers: Sequence[int], actions: Sequence[str]) -> dict[str, Any]:
    """The steps of one task (``numbers``, ascending): their range, count and actions."""
    by_action = dict.fromkeys(_ACTIONS, 0)
    for n in numbers:
        by_action[actions[n]] = by_action.get(actions[n], 0) + 1
    if not numbers:
        return {"range": None, "count": 0, "by_action": by_action}
    if numbers[-1] - numbers[0] + 1 != len(numbers):
        msg = (
            f"the steps of task {task_id!r} are not consecutive (its span holds steps of no task or another)"
        )
        raise ValueError(msg)
    return {"range": [numbers[0], numbers[-1]], "count": len(numbers), "by_action": by_action}


def _study_tasks(terms: Any) -> dict[str, Mapping[str, Any]]:
    """``terms.tasks.list`` by id (entries that are not objects with a string id are left out)."""
    tasks = terms.get("tasks") if isinstance(terms, Mapping) else None
    entries = tasks.get("list") if isinstance(tasks, Mapping) else None
    if not isinstance(entries, list):
        return {}
    return {e["id"]: e for e in entries if isinstance(e, Mapping) and isinstance(e.get("id"), str)}


def _check_study_task(task: Mapping[str, Any], listed: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A study task's hints from its consent terms entry, after checking its words and time limit."""
    task_id = task["id"]
    entry = listed.get(task_id)
    if entry is None:
        msg = f"study task {task_id!r} is not in the consent terms (consent.terms.tasks.list)"
        raise ValueError(msg)
    minutes = entry.get("time_limit_minutes")
    limit = minutes * 60 if is_integer(minutes) and minutes > 0 else None
    if task["instruction"] != entry.get("instruction") or task["time_limit_s"] != limit:
        msg = (
            f"study task {task_id!r} differs from its entry in the consent terms (instruction or time limit)"
        )
        raise ValueError(msg)
    hints = {"app": entry.get("app"), "url": entry.get("url")}
    if not all(h is None or (isinstance(h, str) and 1 <= len(h) <= 2048) for h in hints.values()):
        msg = f"study task {task_id!r} has hints in the consent terms that are not strings"
        raise ValueError(msg)
    return hints


__all__ = [
    "KEYS",
    "MAX_INSTRUCTION",
    "MAX_TASKS",
    "OUTCOMES",
    "SOURCES",
    "TASK_ID",
    "TaskLines",
    "steps_tasks",
]
