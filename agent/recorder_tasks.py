"""The recorder's tasks: what the volunteer sets out to do, and how it ended (issue 16).

A task is started from the study's ``[[task]]`` list (by id) or with an instruction the
volunteer writes, as the study's ``[tasks] mode`` allows; one at a time, and only while
recording (a task started while paused would record nothing of its start, and resuming for
the volunteer would break P3).  Starting one seals the running session and opens a new one
(like "Review and export…"), so every task begins its own session: the ``task_start``
record follows the ``session_start`` marker, and giving the task up can crypto-shred that
whole session with the public key alone (:func:`agent.store.retention.shred_session`), the
same deletion as ``optin sessions delete``, leaving nothing of the task in the store.

A task ends ``done`` or ``failed`` as the volunteer says, ``abandoned`` when given up (its
session is then shredded and recording goes on in a new one; a give-up names the task it means,
and one that ended meanwhile has its session shredded only while that is still the session being
recorded, never another task's), ``timed out`` when its time
limit passes (checked once a second on the writer thread; the limit is clock time, pauses
included), and ``interrupted`` when the session it runs in is sealed under it: quit, a
withdrawal, opt-out, ``delete-last``, a failure.  Pausing keeps it.  The ``task_end`` record
is queued before the session is sealed.  After a crash there is none: readers take a
``task_start`` without ``task_end`` as interrupted (docs/format.md, Tasks).

A free instruction is captured text: it goes only into the encrypted store (the
``task_start`` record), never into a log, a notification, ``status.json`` or a reply; those
name the task by its id (``free-`` and 8 random hex digits for a volunteer's task).

:class:`RecorderTasks` is a part of :class:`agent.control.Recorder`, which holds the state
it works on (declared below) and the lifecycle steps it calls.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from agent.errors import OptinError, StoreError, UsageError
from agent.events import TaskEnd, TaskStart, instruction_problem, now_ns
from agent.recorder_states import Lifecycle, Phase
from agent.store import retention

if TYPE_CHECKING:
    from agent.events import Event
    from agent.paths import Dirs
    from agent.study import Study

logger = logging.getLogger("agent.control")

T = TypeVar("T")

#: The outcomes the volunteer gives (``abandoned`` has its own step, the others are the recorder's).
VOLUNTEER_OUTCOMES = ("done", "failed")
#: What the session_start marker of a task's session says it opened after.
TASK_SESSION = "task"
#: How many ended tasks the recorder remembers for a late give-up (:meth:`RecorderTasks.abandon_task`).
RECENT_ENDED = 16

__all__ = ["RECENT_ENDED", "TASK_SESSION", "VOLUNTEER_OUTCOMES", "RecorderTasks", "RunningTask"]


@dataclass(frozen=True)
class RunningTask:
    """The task under way: everything but its instruction (which only the store keeps)."""

    task_id: str
    source: str  #: ``study`` or ``volunteer``
    session_id: str  #: the session it began (a task begins its own session)
    started_ns: int  #: monotonic, as its ``task_start`` record
    started_at: float  #: wall clock, for status
    time_limit_s: int | None

    def seconds(self, now: int | None = None) -> float:
        """How long it has run."""
        return round(((now_ns() if now is None else now) - self.started_ns) / 1e9, 3)

    def overdue(self, now: int) -> bool:
        limit = self.time_limit_s
        return limit is not None and now - self.started_ns >= limit * 1_000_000_000

    def info(self) -> dict[str, Any]:
        """Plain data for status and replies (no instruction: it may be captured text)."""
        ends = None if self.time_limit_s is None else self.started_at + self.time_limit_s
        return {
            "id": self.task_id,
            "source": self.source,
            "session": self.session_id,
            "started_at": _utc(self.started_at),
            "time_limit_s": self.time_limit_s,
            "ends_at": None if ends is None else _utc(ends),
        }


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _is_meant(task: RunningTask | None, task_id: str, session: str | None) -> bool:
    """Is ``task`` the one named by ``task_id`` (and ``session``, when given)?"""
    return task is not None and task.task_id == task_id and session in (None, task.session_id)


def _find_ended(
    ended: tuple[tuple[RunningTask, dict[str, Any]], ...], task_id: str, session: str | None
) -> tuple[RunningTask, dict[str, Any]] | None:
    """The newest of the ``ended`` tasks named by ``task_id`` (and ``session``), or None."""
    for task, how in reversed(ended):
        if _is_meant(task, task_id, session):
            return task, how
    return None


class RecorderTasks:
    """Tasks of :class:`agent.control.Recorder`; every step under its lifecycle lock."""

    dirs: Dirs
    study: Study
    session_id: str | None
    _life: Lifecycle
    _lock: threading.RLock
    _queue: queue.Queue[Event | None]
    _task: RunningTask | None
    #: How the last task ended (id, outcome, seconds), for ``optin task status``.
    _last_task: dict[str, Any] | None
    #: The overdue task a background thread is already ending (one thread, not one a second).
    _timing_out: RunningTask | None = None
    #: The last tasks that ended and how, newest last (at most :data:`RECENT_ENDED`; replaced, never
    #: changed in place), so a give-up chosen before one ended finds it.
    _ended_tasks: tuple[tuple[RunningTask, dict[str, Any]], ...] = ()

    if TYPE_CHECKING:  # the lifecycle steps agent.control.Recorder provides

        @property
        def state(self) -> str: ...
        def _between_sessions(
            self, reason: str, action: Callable[[], T], *, opened: Callable[[], None] | None = None
        ) -> T: ...
        def _count_drops(self, n: int) -> None: ...
        def _publish(self) -> None: ...
        def _notify(self, message: str) -> None: ...
        def _in_background(self, fn: Callable[[], None], name: str) -> None: ...

    # -- what the volunteer asks -------------------------------------------------------------------

    def start_task(self, task_id: str | None = None, instruction: str | None = None) -> dict[str, Any]:
        """Start the study's task ``task_id``, or a task with the volunteer's ``instruction``.

        The running session is sealed and the task begins a new one.  Returns the task's
        :meth:`RunningTask.info` (never the instruction).

        :raises UsageError: neither or both given; the study's ``[tasks] mode`` does not allow
            it; no such task; a bad instruction; a task already runs; not recording.
        """
        with self._lock:
            if self._life.phase is not Phase.RECORDING:
                raise UsageError(self._not_recording())
            running = self._task
            if running is not None:
                msg = (
                    f"task {running.task_id} is still running; end it first "
                    "(`optin task done`, `optin task fail` or `optin task abandon`)"
                )
                raise UsageError(msg)
            chosen = self._choose(task_id, instruction)
            begun: list[RunningTask] = []
            self._between_sessions(TASK_SESSION, lambda: None, opened=lambda: self._begin(chosen, begun))
            if not begun:
                msg = "the task could not be started: the recorder is behind (its queue is full); try again"
                raise OptinError(msg)
            task = begun[0]
        logger.info("task %s started (%s)", task.task_id, task.source)
        return task.info()

    def finish_task(self, outcome: str) -> dict[str, Any]:
        """End the running task as ``done`` or ``failed`` (recording or paused); returns how it ended.

        :raises UsageError: another outcome, no task runs, or the recorder has stopped.
        """
        if outcome not in VOLUNTEER_OUTCOMES:
            msg = (
                f"a task ends as {' or '.join(VOLUNTEER_OUTCOMES)} (or is given up with `optin task abandon`)"
            )
            raise UsageError(msg)
        with self._lock:
            task = self._running()
            ended = self._end(task, outcome)
            self._publish()
        return ended

    def abandon_task(
        self, expected_id: str | None = None, *, expected_session: str | None = None
    ) -> dict[str, Any]:
        """Give the running task up: it ends ``abandoned`` and its session is crypto-shredded;
        recording goes on in a new session, in the same state.  Returns how it ended and what
        was deleted (ids, counts, sizes).

        ``expected_id`` (and ``expected_session``, the session it began) name the task the
        volunteer means, as it was shown when they chose to give it up: it may have ended since
        (done from the command line, timed out) and another may have started.  Another task is
        never given up in its place.  If the meant task has ended and its session is still the one
        being recorded, that session is shredded all the same (the volunteer asked for it to be
        deleted); otherwise the request is refused with the command that deletes its session.

        :raises UsageError: no task runs (or not the meant one, and its session cannot be deleted
            here: the message says how), or the recorder has stopped.
        :raises StoreError: the session could not be sealed or deleted (the message names it,
            with the fix).
        """
        with self._lock:
            running = self._task
            if expected_id is not None and not _is_meant(running, expected_id, expected_session):
                return self._abandon_ended(expected_id, expected_session, running)
            task = self._running()
            ended = self._end(task, "abandoned")  # an account, should the deletion fail
            deleted = self._shred_session_of(task)
        logger.info("task %s given up: session %s shredded", task.task_id, task.session_id)
        return {**ended, "deleted": deleted}

    def task_status(self) -> dict[str, Any]:
        """The study's task mode and list, the running task (no instruction) and how the last one ended."""
        mode = self.study.tasks_mode
        listed = [t.to_json() for t in self.study.tasks] if mode in ("list", "both") else []
        task = self._task
        return {
            "mode": mode,
            "free": mode in ("free", "both"),
            "tasks": listed,
            "running": None if task is None else {**task.info(), "seconds": task.seconds()},
            "last": self._last_task,
        }

    # -- what the recorder calls -------------------------------------------------------------------

    def _task_info(self) -> dict[str, Any] | None:
        """The running task for ``status.json``: id, source, times; never its instruction."""
        task = self._task
        return None if task is None else task.info()

    def _interrupt_task(self) -> None:
        """The session is being sealed under a running task: it ends ``interrupted`` (under the lock)."""
        task = self._task
        if task is not None:
            self._end(task, "interrupted")

    def _check_task_limit(self, now: int | None = None) -> None:
        """Once a second on the writer thread: a task past its time limit ends ``timed out``."""
        task = self._task
        if task is None or task is self._timing_out or not task.overdue(now_ns() if now is None else now):
            return
        self._timing_out = task  # while the lifecycle lock is busy, later checks add no thread
        self._in_background(lambda: self._time_out(task), "optin-task-limit")

    def _task_done_soon(self) -> None:
        """The study's task-done hotkey was pressed (a hook thread): end the running task as done
        on another thread, and say so; nothing happens when no task runs."""

        def run() -> None:
            with self._lock:
                try:
                    task = self._running()
                except UsageError:
                    return  # no task runs, or optin is stopping: the keys only
                self._end(task, "done")
                self._publish()
            self._notify(f"The task {task.task_id} is done.")

        self._in_background(run, "optin-task-done")

    def _time_out(self, task: RunningTask) -> None:
        with self._lock:
            if self._task is not task:
                return  # ended meanwhile
            self._end(task, "timed out")
            self._publish()
        minutes = (task.time_limit_s or 0) / 60
        self._notify(f"The task {task.task_id} reached its time limit ({minutes:g} min) and ended.")

    # -- steps -------------------------------------------------------------------------------------

    def _not_recording(self) -> str:
        if self._life.phase is Phase.PAUSED:
            return "optin is paused; resume it (`optin resume`), then start the task"
        if self._life.phase is Phase.IDLE:
            return "optin is starting; try again in a moment"
        return f"optin is {self.state}; start it with `optin run`, then start the task"

    def _running(self) -> RunningTask:
        if self._life.phase not in (Phase.RECORDING, Phase.PAUSED):
            msg = f"optin is {self.state}; no task runs"
            raise UsageError(msg)
        task = self._task
        if task is None:
            msg = "no task is running; start one with `optin task start`"
            raise UsageError(msg)
        return task

    def _choose(self, task_id: str | None, instruction: str | None) -> TaskStart:
        """The ``task_start`` record to write (its time is set when written)."""
        if (task_id is None) == (instruction is None):
            msg = "start a task with the study's task id or an instruction of your own (one of the two)"
            raise UsageError(msg)
        mode = self.study.tasks_mode
        if mode == "off":
            msg = "the study asks for no tasks ([tasks] mode is off); record without one"
            raise UsageError(msg)
        if instruction is None:
            return self._study_task(str(task_id), mode)
        if mode not in ("free", "both"):
            msg = "the study asks for its own tasks only; pick one by id (`optin task status` lists them)"
            raise UsageError(msg)
        problem = instruction_problem(instruction)
        if problem is not None:
            raise UsageError(problem)
        return TaskStart(0, f"free-{secrets.token_hex(4)}", instruction.strip(), "volunteer", None)

    def _study_task(self, task_id: str, mode: str) -> TaskStart:
        if mode not in ("list", "both"):
            msg = (
                "the study has no task list; write your own instruction "
                "(`optin task start --instruction TEXT`)"
            )
            raise UsageError(msg)
        for task in self.study.tasks:
            if task.id == task_id:
                limit = task.time_limit_minutes
                return TaskStart(0, task.id, task.instruction, "study", None if limit is None else limit * 60)
        known = ", ".join(t.id for t in self.study.tasks) or "none"
        msg = (
            f"the study has no task with that id ({len(task_id)} characters; a mistyped instruction is "
            f"not repeated here); its tasks: {known} (`optin task status` lists them)"
        )
        raise UsageError(msg)

    def _begin(self, chosen: TaskStart, begun: list[RunningTask]) -> None:
        """Right after the task's session opened, before capture starts: queue its ``task_start``."""
        t = now_ns()
        record = TaskStart(t, chosen.task_id, chosen.instruction, chosen.source, chosen.time_limit_s)
        if not self._put(record):
            return
        task = RunningTask(
            chosen.task_id, chosen.source, str(self.session_id), t, time.time(), chosen.time_limit_s
        )
        self._task = task  # from now on a seal under it ends it interrupted (capture may fail to start)
        begun.append(task)

    def _abandon_ended(
        self, expected_id: str, expected_session: str | None, running: RunningTask | None
    ) -> dict[str, Any]:
        """Give up the meant task, which is not the running one (under the lock): shred its session
        if it ended and its session is still the one being recorded, else refuse saying how to
        delete it."""
        found = _find_ended(self._ended_tasks, expected_id, expected_session)
        refusal = self._late_give_up_refusal(expected_id, running, found)
        if refusal is not None or found is None:
            logger.info("a give-up was refused: the task meant is not running, nor its session recorded")
            raise UsageError(refusal or "nothing was deleted")
        task, ended = found
        deleted = self._shred_session_of(task)
        given_up = {**ended, "outcome": "abandoned", "ended_as": ended["outcome"]}
        self._last_task = given_up
        self._remember_ended(task, given_up)
        logger.info(
            "task %s (ended %s) given up: session %s shredded",
            task.task_id,
            ended["outcome"],
            task.session_id,
        )
        return {**given_up, "deleted": deleted}

    def _late_give_up_refusal(
        self,
        expected_id: str,
        running: RunningTask | None,
        found: tuple[RunningTask, dict[str, Any]] | None,
    ) -> str | None:
        """Why the meant task (``found`` among the ended ones, or None) cannot be given up now, with how
        to delete it; None when its session is still the one being recorded.  An id optin does not
        know is not repeated (it may be mistyped words)."""
        if found is None:
            now = "no task runs" if running is None else f"task {running.task_id} runs now"
            return (
                f"the task you gave up (an id of {len(expected_id)} characters) is not running ({now}) "
                "nor among the tasks that ended lately, so nothing was deleted. Fix: find its session "
                "with `optin sessions` and delete it with `optin sessions delete <session id>`"
            )
        task, ended = found
        sid = task.session_id
        recorded = self._life.phase in (Phase.RECORDING, Phase.PAUSED) and self.session_id == sid
        if recorded and ended["outcome"] != "abandoned":
            return None
        how = (
            f"its session {sid} is already deleted"
            if not (self.dirs.sessions / sid).exists()
            else f"Fix: delete its session with `optin sessions delete {sid}`"
        )
        what = (
            "was already given up"
            if ended["outcome"] == "abandoned"
            else f"already ended ({ended['outcome']}) and its session is no longer the one being recorded"
        )
        return f"task {task.task_id} {what}, so nothing was deleted now; {how}"

    def _shred_session_of(self, task: RunningTask) -> dict[str, Any]:
        """Seal the session ``task`` began (the one being recorded), crypto-shred it, record on in a
        new one; what was deleted (under the lock)."""
        sid = task.session_id
        try:
            deleted = self._between_sessions(
                "abandon", lambda: retention.shred_session(self.dirs, sid, reason="volunteer")
            )
        except OptinError as exc:
            msg = (
                f"{exc}. The given-up task's session {sid} may not be deleted. "
                f"Fix: delete it with `optin sessions delete {sid}` once optin has stopped"
            )
            raise StoreError(msg) from None
        return deleted.to_dict()

    def _remember_ended(self, task: RunningTask, ended: dict[str, Any]) -> None:
        """Keep the last :data:`RECENT_ENDED` ended tasks, newest last, for a give-up that comes late."""
        self._ended_tasks = (*self._ended_tasks[-(RECENT_ENDED - 1) :], (task, ended))

    def _end(self, task: RunningTask, outcome: str) -> dict[str, Any]:
        """Queue the ``task_end`` record and forget the task (under the lock)."""
        t = now_ns()
        self._put(TaskEnd(t, task.task_id, outcome))  # lost: readers take the task as interrupted
        self._task = None
        ended = {"id": task.task_id, "outcome": outcome, "seconds": task.seconds(t)}
        self._last_task = ended
        self._remember_ended(task, ended)
        logger.info("task %s ended: %s", task.task_id, outcome)
        return ended

    def _put(self, event: TaskStart | TaskEnd) -> bool:
        """Queue a task record, waiting at most a second for room; a full queue counts it as dropped."""
        try:
            self._queue.put(event, timeout=1.0)
        except queue.Full:
            self._count_drops(1)
            return False
        return True
