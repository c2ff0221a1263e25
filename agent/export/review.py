"""What the review window shows and does: one session exactly as it would be exported.

The window (agent/ui/review.py) is a thin view over its presenter
(:class:`agent.export.review_screen.ReviewScreen`), which calls :class:`Review`.  A review holds the
session decrypted and redacted in memory (:func:`agent.export.bundle.prepare`: the same code
the export runs, so what the volunteer sees is what would leave), a list of cuts the
volunteer marked, and three actions:

* :meth:`Review.apply_cuts` deletes the marked ranges from this computer
  (:func:`agent.store.cut.cut_session`: re-encrypted without them, the old keys shredded),
  then prepares the session again, so the preview shows the cut session's own redaction;
  when the marks hold everything the session would export (:meth:`Review.cuts_cover_session`:
  a task cut whose span is the whole session), :meth:`Review.delete_session` deletes the whole
  session instead (:func:`agent.store.retention.shred_session`, as a given-up task is deleted);
* :meth:`Review.approve` records the approval (:mod:`agent.export.approval`), refused while
  cuts are marked but not applied;
* :meth:`Review.export` writes the bundle of an approved session.

A session holds at most one task (docs/format.md, Tasks): :meth:`Review.tasks` lists it as the
bundle will (:mod:`agent.export.task_list`, the writer's and reader's own rules): its id, source,
instruction as exported (redacted; None when the study drops typed text), outcome, span and
steps.  :meth:`Review.task_span` is what "Cut this task" marks.  The approval stays the
session's: approving a task's session approves its task.

Nothing here writes plaintext: the frames the window shows are decoded from memory.
Rows for the step list carry redacted text only (what the bundle carries), and so does
:func:`describe_element` (a step's element, names as exported).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import consent
from agent.errors import OptinError, UsageError
from agent.events import Frame, Marker, TaskEnd, TaskStart, to_dict
from agent.export import approval, deliveries, task_list
from agent.export.bundle import ExportResult, Prepared, export_session, prepare
from agent.paths import Dirs
from agent.redact import policy
from agent.redact.local_names import LocalNames
from agent.store import keys
from agent.store.cut import CutReport, cut_session, normalise
from agent.store.reader import list_sessions
from agent.store.retention import Deleted, shred_session
from agent.study import Study

Progress = Callable[[int, int], None]

#: At most this many sessions are offered for review in the window's list (the newest).
MAX_LISTED = 200
#: Where a task's instruction comes from, in words.
SOURCE_WORDS = {"study": "the study's task", "volunteer": "your own task"}


@dataclass(frozen=True)
class StepRow:
    """One line of the step list: when (seconds from the start), what, where."""

    index: int
    t_s: float
    action: str
    detail: str
    window: str
    cut: bool
    task: str | None = None  #: the id of the task the step belongs to


@dataclass(frozen=True)
class TaskShown:
    """A session's task as the bundle will hold it.

    :ivar instruction: as exported (a volunteer's redacted); None when it is dropped (the study's
        ``typed_text = "drop"``) — captured text: shown in its own widget only, never in a status.
    :ivar outcome: ``done``, ``failed``, ``interrupted`` (also: no end recorded) or ``timed out``.
    :ivar steps: the first and last step (indices into the step list) of the task, or None.
    """

    id: str
    source: str
    instruction: str | None
    outcome: str
    t_start_ns: int
    t_end_ns: int
    steps: tuple[int, int] | None
    count: int

    @property
    def dropped(self) -> bool:
        return self.instruction is None


@dataclass(frozen=True)
class SessionChoice:
    """One session the window offers: its id and how it is labelled (ids, counts, states only)."""

    id: str
    label: str


def reviewable_sessions(dirs: Dirs) -> list[str]:
    """Ids of the sessions that can be reviewed (closed: not being recorded), newest first."""
    return [i.id for i in reversed(list_sessions(dirs)) if i.state == "closed"]


def session_choices(
    dirs: Dirs, study: Study, known: Mapping[str, str] | None = None, *, limit: int = MAX_LISTED
) -> list[SessionChoice]:
    """The newest ``limit`` reviewable sessions, labelled from their metadata (no key needed):
    id, whether they hold a task (``known``: what the window learnt of a task it opened, e.g.
    ``task free-1a2b3c4d done``), the approval state."""
    policy_sha = policy.Policy.from_study(study).sha256()
    known = known or {}
    out: list[SessionChoice] = []
    infos = [i for i in reversed(list_sessions(dirs)) if i.state == "closed"][: max(0, limit)]
    for info in infos:
        tasks = info.events_by_kind.get("task_start", 0)
        task = known.get(info.id) or ("with a task" if tasks else "no task")
        try:
            state = approval.state(dirs, info.id, policy_sha)
        except (OptinError, OSError):  # gone or unreadable meanwhile: the list still shows it
            state = "approval unknown"
        out.append(SessionChoice(info.id, f"{info.id} · {task} · {state}"))
    return out


class Review:
    """One session under review.  Not thread-safe: the window calls it from one thread at a time."""

    def __init__(
        self,
        dirs: Dirs,
        study: Study,
        session_id: str,
        *,
        ask_passphrase: Callable[[str], bytes] | None = None,
        local: LocalNames | None = None,
    ) -> None:
        self.dirs = dirs
        self.study = study
        self.session_id = session_id
        self._ask = ask_passphrase
        self._local = local
        self._identity: bytes | None = None
        self.prepared: Prepared | None = None
        self.cuts: list[tuple[int, int]] = []
        self._tasks: list[TaskShown] | None = None
        self._tasks_of: Prepared | None = None
        self._of_step: list[str | None] = []
        self.task_problem: str | None = None  #: why the bundle would refuse the tasks (ids only)

    def other(self, session_id: str) -> Review:
        """A review of another session, with the same key (unlocked once), study and names."""
        review = Review(self.dirs, self.study, session_id, ask_passphrase=self._ask, local=self._local)
        review._identity = self._identity
        return review

    # -- loading ---------------------------------------------------------------------------------

    def unlock(self) -> bytes:
        """The volunteer's identity, loaded once (may ask for the passphrase: call it first on the
        GUI thread)."""
        if self._identity is None:
            self._identity = keys.load_identity(self.dirs, ask=self._ask)
        return self._identity

    def load(self, progress: Progress | None = None) -> Prepared:
        """Decrypt and redact the session (slow: OCR reads the frames; ``progress`` is told)."""
        self.prepared = prepare(
            self.dirs, self.session_id, self.study, self.unlock(), progress=progress, local=self._local
        )
        return self.prepared

    @property
    def _ready(self) -> Prepared:
        if self.prepared is None:
            msg = "the session is not loaded yet"
            raise UsageError(msg)
        return self.prepared

    # -- what the window shows -------------------------------------------------------------------

    @property
    def start_ns(self) -> int:
        events = self._ready.events
        return events[0].t_ns if events else 0

    def frames(self) -> list[Frame]:
        """The redacted frames, in time order (the timeline)."""
        return [e for e in self._ready.events if isinstance(e, Frame)]

    def rows(self) -> list[StepRow]:
        """The step list, with the steps inside a marked cut flagged."""
        events = self._ready.events
        start = self.start_ns
        out: list[StepRow] = []
        of_step = self._step_tasks()
        for i, step in enumerate(self._ready.steps):
            win = events[step.window] if step.window is not None else None
            where = ""
            if win is not None:
                title = getattr(win, "title", None)
                where = f"{getattr(win, 'app_class', None) or '?'}" + (f" — {title}" if title else "")
            out.append(
                StepRow(
                    i,
                    round((step.t_start_ns - start) / 1e9, 2),
                    step.action,
                    describe(step),
                    where,
                    self.in_cut(step.t_start_ns, step.t_end_ns),
                    of_step[i] if i < len(of_step) else None,
                )
            )
        return out

    # -- the task ----------------------------------------------------------------------------------

    def tasks(self) -> list[TaskShown]:
        """The session's tasks (at most one as optin records them), as the bundle will list them."""
        prepared = self._ready
        if self._tasks is None or self._tasks_of is not prepared:  # read again for each prepared session
            self._tasks, self._tasks_of = self._read_tasks(), prepared
        return self._tasks

    def _read_tasks(self) -> list[TaskShown]:
        """The task list of :mod:`agent.export.task_list` over the records the bundle writes.

        A record the bundle could not hold is left out here and :attr:`task_problem` says why (the
        export would refuse it; the volunteer can still see and cut the rest)."""
        prepared = self._ready
        lines = task_list.TaskLines()
        self.task_problem = None
        for ev in prepared.events:
            if not isinstance(ev, (TaskStart, TaskEnd)):
                continue
            record = to_dict(ev)
            if isinstance(ev, TaskStart) and ev.source == "volunteer" and not ev.instruction:
                record["instruction"] = None  # dropped (typed_text = "drop"), as the bundle writes it
            try:
                lines.add(record)
            except ValueError as exc:
                self.task_problem = self.task_problem or str(exc)
        starts = [s.t_start_ns for s in prepared.steps]
        last_t = max((e.t_ns for e in prepared.events), default=0)
        try:
            lines.tasks(last_t, prepared.receipt.get("terms"), starts, [s.action for s in prepared.steps])
        except ValueError as exc:
            self.task_problem = self.task_problem or str(exc)
        spans = [
            {
                **task,
                "outcome": task["outcome"] or "interrupted",
                "t_end_ns": task["t_end_ns"]
                if task["t_end_ns"] is not None
                else max(last_t, task["t_start_ns"]),
            }
            for task in lines.started
        ]
        self._of_step = task_list.steps_tasks(spans, starts)
        numbers: dict[str, list[int]] = {}  # one pass over the steps
        for n, task_id in enumerate(self._of_step):
            if task_id is not None:
                numbers.setdefault(task_id, []).append(n)
        out: list[TaskShown] = []
        for task in spans:
            mine = numbers.get(task["id"], [])
            out.append(
                TaskShown(
                    task["id"],
                    task["source"],
                    task["instruction"],
                    task["outcome"],
                    task["t_start_ns"],
                    task["t_end_ns"],
                    (mine[0], mine[-1]) if mine else None,
                    len(mine),
                )
            )
        return out

    def _step_tasks(self) -> list[str | None]:
        """Each step's task id (None: no task), by step number."""
        self.tasks()
        return self._of_step

    def task_span(self, task_id: str) -> tuple[int, int]:
        """The time range (ns) of task ``task_id``, its start to its end: what "Cut this task" marks."""
        for task in self.tasks():
            if task.id == task_id:
                return task.t_start_ns, task.t_end_ns
        msg = f"this session holds no task {task_id!r}"
        raise UsageError(msg)

    def step_span(self, indices: Sequence[int]) -> tuple[int, int]:
        """The time range (ns) that covers the given steps, for a cut."""
        found = [self._ready.steps[i] for i in indices]
        if not found:
            msg = "select one or more steps first"
            raise UsageError(msg)
        return min(s.t_start_ns for s in found), max(s.t_end_ns for s in found)

    def summary(self) -> dict[str, Any]:
        """Counts for the window's header (and what an approval records)."""
        return self._ready.summary()

    def approval_state(self) -> str:
        return approval.state(self.dirs, self.session_id, policy.Policy.from_study(self.study).sha256())

    # -- cuts ------------------------------------------------------------------------------------

    def add_cut(self, start_ns: int, end_ns: int) -> None:
        """Mark ``start_ns .. end_ns`` (in either order) to be cut."""
        a, b = sorted((int(start_ns), int(end_ns)))
        self.cuts = normalise([*self.cuts, (a, b)])

    def clear_cuts(self) -> None:
        self.cuts = []

    def in_cut(self, start_ns: int, end_ns: int) -> bool:
        return any(a <= end_ns and start_ns <= b for a, b in self.cuts)

    def frame_in_cut(self, frame: Frame) -> bool:
        return self.in_cut(frame.t_ns, frame.t_ns)

    def cuts_cover_session(self) -> bool:
        """Whether the marked cuts hold every event the session would export but its markers: then
        nothing would be left to export, and applying them deletes the whole session."""
        if not self.cuts:
            return False
        return all(self.in_cut(e.t_ns, e.t_ns) for e in self._ready.events if not isinstance(e, Marker))

    def apply_cuts(self, progress: Progress | None = None) -> CutReport:
        """Delete the marked ranges from this computer, then prepare the session again."""
        if not self.cuts:
            return CutReport(self.session_id, 0, 0, 0)
        report = cut_session(
            self.dirs, self.session_id, self.cuts, self.unlock(), keys.load_recipient(self.dirs)
        )
        self.cuts = []
        self.load(progress)
        return report

    def delete_session(self, _progress: Progress | None = None) -> Deleted:
        """Delete the whole session from this computer (crypto-shredded, as ``optin sessions delete``
        and a given-up task): what the window does when the marked cuts cover all of it."""
        deleted = shred_session(self.dirs, self.session_id, reason="volunteer")
        self.cuts = []
        self.prepared = None
        return deleted

    # -- approval and export ---------------------------------------------------------------------

    def approve(self) -> dict[str, Any]:
        """Approve the session as it is now (refused while cuts are marked and not applied)."""
        if self.cuts:
            msg = (
                "apply or clear the marked cuts first: an approval is for the session as it will be exported"
            )
            raise UsageError(msg)
        return approval.approve(
            self.dirs, self.session_id, policy.Policy.from_study(self.study).sha256(), self.summary()
        )

    def export(self, out_dir: Path, progress: Progress | None = None) -> ExportResult:
        """Write the approved session's bundle into ``out_dir``."""
        return export_session(
            self.dirs,
            self.session_id,
            out_dir,
            self.study,
            progress=progress,
            local=self._local,
            identity=self.unlock(),  # loaded by load(): the window never asks on its worker thread
        )

    def upload(self, progress: Progress | None = None) -> tuple[deliveries.Delivery, bool]:
        """Send the session's export to the study's intake (docs/upload.md): the delivery as it ended,
        and whether the study's ``after_upload`` then deleted the session here.

        :raises UploadFailed: not delivered (the record says how far it got; ``optin upload`` resumes).
        :raises UsageError: no export to send, another upload runs, or the study names no intake.
        """
        from agent.upload.http import Client  # network code: only here, never in optin run
        from agent.upload.sender import Sender, delete_delivered, one_upload, signer_for

        found = deliveries.load(self.dirs, self.session_id)
        if not self.study.upload_url or found is None:
            msg = f"session {self.session_id} has no export to upload. Fix: export it first"
            raise UsageError(msg)
        consent.require(self.dirs, self.study)
        with one_upload(self.dirs), Client() as client:
            sender = Sender(
                self.dirs, client, self.study.upload_url, signer_for(self.unlock(), self.study.id)
            )
            done = sender.send(found, progress)
        return done, self.study.deletes_after_upload and delete_delivered(self.dirs, done)


def describe_element(element: Mapping[str, Any] | None) -> str:
    """A step's element in a few words: ``push button "OK" · checked, focused · in Firefox`` and the
    ancestors it is inside (names as exported: redacted).  Captured text: for its own widget only."""
    if not element:
        return "No element was recorded for this step."
    role, name = element.get("role") or "element", element.get("name")
    text = f'{role} "{name}"' if name else str(role)
    states = [str(s) for s in element.get("states") or ()]
    if states:
        text += " · " + ", ".join(states)
    if element.get("app"):
        text += f" · in {element['app']}"
    path = [p for p in element.get("path") or () if isinstance(p, Mapping)]
    if path:
        inside = [
            f'{p.get("role") or "?"} "{p["name"]}"' if p.get("name") else str(p.get("role") or "?")
            for p in path[-3:]
        ]
        text += "\ninside: " + " › ".join(inside)
    if element.get("automation_id"):
        text += f"\nautomation id: {element['automation_id']}"
    return text


def element_bounds(element: Mapping[str, Any] | None) -> tuple[int, int, int, int] | None:
    """The element's rectangle ``(x, y, w, h)`` in screen coordinates, or None (unknown, or not
    four integers with w and h at least 1)."""
    bounds = element.get("bounds") if element else None
    if not isinstance(bounds, (list, tuple)) or len(bounds) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int) for v in bounds):
        return None
    x, y, w, h = bounds
    return (x, y, w, h) if w > 0 and h > 0 else None


def describe(step: Any) -> str:
    """A step in a few words (redacted text only, as in the bundle)."""
    if step.action == "type":
        return repr(step.text) if step.text is not None else "(text not recorded)"
    if step.action in ("hotkey", "key"):
        return "+".join(step.keys)
    if step.action == "scroll":
        return f"dx {step.dx}, dy {step.dy} at {step.x}, {step.y}"
    if step.action == "drag":
        return f"{step.x}, {step.y} → {step.to_x}, {step.to_y}"
    return f"at {step.x}, {step.y}"
