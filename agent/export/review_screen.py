"""The review window's presenter: what the window shows and what its actions do, without Tk.

:class:`ReviewScreen` sits between :class:`agent.export.review.Review` (the session decrypted and
redacted in memory, its marked cuts, approval and export) and the Tk view
(:class:`agent.ui.review.ReviewWindow`, which only draws widgets and calls in here).  It owns
the state of one open window: the frame shown, where a cut was started, whether the window is
loaded, busy (background work runs) or locked (only Close works), the frames and step rows
shown, the step → frame map, the approval, and the export folder.  Each action returns an
:class:`Outcome`: the status line to show and the state the window reports.

It also holds what the window shows of the session's task (:meth:`ReviewScreen.task_view`:
source, the instruction as exported, the outcome, its steps) and what "Cut this task" marks;
each step's UI element (:meth:`ReviewScreen.element_text`, and its rectangle on the frame shown,
:meth:`ReviewScreen.element_boxes`); and the list of sessions the volunteer can move to
(:meth:`ReviewScreen.open`), the newest :data:`agent.export.review.MAX_LISTED`.  One presenter
serves the window for every session it opens.

Texts name counts, times, indices, ids and error messages only: never a step's text, a title,
a task's instruction or an element's name.  Those are captured text: only the dedicated
widgets show them (the step list, :meth:`ReviewScreen.task_view`'s instruction,
:meth:`ReviewScreen.element_text`).
Tones are words the view maps to its styles: ``good``, ``notice``, ``small``, ``error``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import OptinError
from agent.events import Frame
from agent.export.bundle import ExportResult
from agent.export.review import (
    SOURCE_WORDS,
    Progress,
    Review,
    SessionChoice,
    StepRow,
    TaskShown,
    describe_element,
    element_bounds,
    session_choices,
)
from agent.session_summary import counts_text, loss_text, redactions_text, size_text, words
from agent.store.cut import CutReport
from agent.store.retention import Deleted

#: Words and tone for :meth:`Review.approval_state`.
APPROVAL_WORDS = {
    "approved": ("Approved for export", "good"),
    "not approved": ("Not approved for export yet", "notice"),
    "changed": ("Changed since you approved it: approve it again to export it", "notice"),
}

#: Why a frame was taken (agent/capture/screen.py), in words.
TAKEN = {
    "start": "taken when recording started",
    "settled": "taken once the screen settled",
    "keyframe": "taken because the screen changed",
    "click": "taken just before a click",
    "release": "taken just before a button release",
    "scroll": "taken just before a scroll",
    "key": "taken just before typing",
    "hotkey": "taken just before a shortcut or a named key (Enter, Tab…)",
    "focus": "taken when the window changed",
}

#: The task panel shows at most this many characters of an instruction (it says how many there are).
MAX_SHOWN = 600

#: Where a step acts: (action, x, y, to_x, to_y), screen coordinates.
Where = tuple[str, int | None, int | None, int | None, int | None]


@dataclass(frozen=True)
class Outcome:
    """What an action leaves: the window's state line, its status text, whether to redraw."""

    state: str  #: "ready", "marked", "cancelled", "cut", "approved", "exported", "uploaded" or "error"
    status: str
    error: bool = False
    redraw: bool = False  #: the presenter read the review again: the view shows it all again
    rebuild: bool = False  #: ... with the step list filled anew (the session itself changed)
    extra: dict[str, Any] = field(default_factory=dict)  #: for the state line: message, bundle


@dataclass(frozen=True)
class TaskView:
    """What the task panel shows of one task.

    :ivar about: id, source, outcome, its steps (ids and counts: no captured text).
    :ivar instruction: the instruction as exported, or why none is shown (dropped): captured
        text, for the panel's own label only.
    """

    id: str
    about: str
    instruction: str
    dropped: bool
    problem: str | None  #: why an export would refuse the session's tasks (ids only), or None


@dataclass(frozen=True)
class Header:
    """The header's texts: counts, redactions, what is left out, the approval (and its tone)."""

    counts: str
    redactions: str
    loss: str
    approval: str
    approval_tone: str


def home_short(path: Path) -> str:
    """``~/optin-exports`` for a path under the home directory."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


class ReviewScreen:
    """One open review window's state and actions.  Used from the Tk thread only."""

    def __init__(self, review: Review, out_dir: Path) -> None:
        self.review = review
        self.out_dir = out_dir  #: where Export writes
        self.closed = False
        self.asked = 0  #: times the passphrase was asked
        self.cancelled = False  #: the volunteer cancelled the passphrase dialog
        self.busy: str | None = None  #: "load", "cut", "export" or "upload" while the background thread works
        #: the session's export waits to be uploaded to the study's intake (``[upload] url``)
        self.upload_pending = False
        self.sessions: list[SessionChoice] = []  #: the sessions the window offers, newest first
        self.known_tasks: dict[str, str] = {}  #: session id → "task <id> <outcome>", once opened here
        self._reset()

    def _reset(self) -> None:
        """Nothing of a session is shown (a new window, or another session is being opened)."""
        self.failure: OptinError | None = None  #: the window's run() raises it after it closed
        self.loaded = False
        self.locked = False  #: the session changed under the window, or is gone: only Close works
        self.deleted = False  #: the session was deleted (its task cut whole): another can be opened
        # what is shown (read from the review by refresh(), never while background work runs)
        self.frames: list[Frame] = []
        self.start_ns = 0  #: the session's first event: times shown are seconds from it
        self.rows: list[StepRow] = []
        self.frame_cut: list[bool] = []
        self.step_frame: list[int | None] = []  #: each step's frame (index into frames), if any
        self.step_where: list[Where] = []
        self.step_element: list[Mapping[str, Any] | None] = []  #: each step's element, as exported
        self.tasks: list[TaskShown] = []
        self.covers_session = False  #: the marked cuts hold all of it: applying deletes the session
        self.summary: dict[str, Any] = {}
        self.current = 0
        self.cut_start: int | None = None  #: frame index where a cut starts (Alt+S), until Alt+T
        self.approval = "not approved"

    # -- reading the review ----------------------------------------------------------------------

    def refresh(self, *, rebuild: bool) -> None:
        """Read what to show from the review; ``rebuild`` after the session changed (the step →
        frame map is made again)."""
        review = self.review
        self.frames = review.frames()
        self.rows = review.rows()
        self.start_ns = review.start_ns
        self.frame_cut = [review.frame_in_cut(f) for f in self.frames]
        self.covers_session = review.cuts_cover_session()
        prepared = review.prepared
        if prepared is not None and rebuild:
            position: dict[int, int] = {}
            for i, event in enumerate(prepared.events):
                if isinstance(event, Frame):
                    position[i] = len(position)
            self.step_frame = [position.get(s.frame) if s.frame is not None else None for s in prepared.steps]
            self.step_where = [(s.action, s.x, s.y, s.to_x, s.to_y) for s in prepared.steps]
            self.step_element = [getattr(s, "element", None) for s in prepared.steps]
            self.tasks = review.tasks()
            sid = review.session_id
            if self.tasks:
                self.known_tasks[sid] = " ".join(f"task {t.id} {t.outcome}" for t in self.tasks)
            else:
                self.known_tasks[sid] = "no task"
        self.summary = review.summary()
        self.approval = review.approval_state()

    def list_sessions(self) -> None:
        """Read the sessions the window offers again (metadata only: no key, nothing decrypted)."""
        review = self.review
        try:
            self.sessions = session_choices(review.dirs, review.study, self.known_tasks)
        except (OptinError, OSError):  # the store cannot be listed now: the list stays as it was
            return

    def session_index(self) -> int | None:
        """The position of the session shown in :attr:`sessions` (None: not listed, e.g. deleted)."""
        ids = [c.id for c in self.sessions]
        sid = self.review.session_id
        return ids.index(sid) if sid in ids else None

    def neighbour(self, move: int) -> str | None:
        """The id of the session ``move`` places from the one shown (-1: newer, +1: older), or None."""
        if not self.sessions:
            return None
        at = self.session_index()
        if at is None:
            return self.sessions[0].id if move > 0 else None
        index = at + move
        return self.sessions[index].id if 0 <= index < len(self.sessions) else None

    def open_refused(self) -> str | None:
        """Why another session cannot be opened now, or None: it can."""
        if self.busy is not None:
            return "Please wait until the work under way has finished."
        if self.review.cuts or self.cut_start is not None:
            return "Apply or clear the marked cuts first: moving to another session would forget them."
        return None

    def open(self, session_id: str) -> Outcome:
        """Show session ``session_id`` instead (the window then loads it in the background)."""
        refused = self.open_refused()
        if refused is not None:
            return Outcome("error", refused, error=True, extra={"message": refused})
        self.review = self.review.other(session_id)
        self._reset()
        return Outcome("opening", f"Opening session {session_id}…", redraw=False)

    def unlock(self) -> bool:
        """Load the key (may ask for the passphrase).  False when that failed: :attr:`failure`
        says why, and unless it was cancelled (or the window closed) the window is locked."""
        try:
            self.review.unlock()
        except OptinError as exc:
            if self.cancelled or self.closed:
                self.failure = exc
            else:
                self.load_failed(exc)
            return False
        return True

    def ready(self) -> Outcome:
        """The session is loaded: show its first frame."""
        self.loaded = True
        self.refresh(rebuild=True)
        self.list_sessions()
        self.show(0)
        status = "Look through the frames and steps, cut what should not leave, then approve."
        if self.tasks:
            status = (
                "Look through the task's frames and steps, cut what should not leave, "
                "then approve the task for export."
            )
        return Outcome("ready", status, redraw=True, rebuild=True)

    def load_failed(self, exc: OptinError) -> None:
        self.failure = exc
        self.locked = True

    # -- what is shown ---------------------------------------------------------------------------

    def header(self) -> Header:
        summary = self.summary
        approval, tone = APPROVAL_WORDS.get(self.approval, (self.approval, "notice"))
        return Header(counts_text(summary), redactions_text(summary), loss_text(summary), approval, tone)

    def task_view(self, task_id: str | None = None) -> TaskView | None:
        """The task panel's texts for task ``task_id`` (default: the session's first), or None."""
        task = next((t for t in self.tasks if task_id in (None, t.id)), None)
        if task is None:
            return None
        source = SOURCE_WORDS.get(task.source, task.source)
        if task.steps is None:
            steps = "no steps"
        elif task.steps[0] == task.steps[1]:
            steps = f"step {task.steps[0] + 1}"
        else:
            steps = f"steps {task.steps[0] + 1}–{task.steps[1] + 1}"
        t0, t1 = (task.t_start_ns - self.start_ns) / 1e9, (task.t_end_ns - self.start_ns) / 1e9
        about = f"Task {task.id} · {source} · {task.outcome} · {steps} · {t0:.1f}–{t1:.1f} s"
        if task.instruction is None:
            words_ = (
                "Your instruction is not exported: the study does not take typed text, so it is "
                "dropped like the text you type."
            )
        elif len(task.instruction) > MAX_SHOWN:
            words_ = task.instruction[:MAX_SHOWN] + f"… ({len(task.instruction)} characters in all)"
        else:
            words_ = task.instruction
        return TaskView(task.id, about, words_, task.instruction is None, self.review.task_problem)

    def task_rows(self) -> list[bool]:
        """Each step row: whether it belongs to a task (the list marks those rows)."""
        return [row.task is not None for row in self.rows]

    def element_text(self, selected: Sequence[int], focus: int | None = None) -> str:
        """The element of the selected step (the focused one, else the first): captured names, as
        exported, for the details widget only."""
        if not selected:
            return "Select a step to see the element it acted on."
        index = focus if focus is not None and focus in selected else selected[0]
        if not 0 <= index < len(self.step_element):
            return describe_element(None)
        return f"Step {index + 1}: " + describe_element(self.step_element[index])

    def element_boxes(self, selected: Sequence[int]) -> list[tuple[int, int, int, int]]:
        """The selected steps' element rectangles on the frame shown, in the frame's pixels
        (``x - frame.left``, ``y - frame.top``): for the steps this frame is taken before, whose
        element's bounds are known."""
        if not self.frames:
            return []
        frame = self.frames[self.current]
        out: list[tuple[int, int, int, int]] = []
        for i in selected:
            if self.frame_of(i) != self.current or not 0 <= i < len(self.step_element):
                continue
            bounds = element_bounds(self.step_element[i])
            if bounds is not None:
                x, y, w, h = bounds
                out.append((x - frame.left, y - frame.top, w, h))
        return out

    def show(self, index: int) -> int:
        """Make frame ``index`` (clamped to the frames there are) the one shown."""
        n = len(self.frames)
        self.current = max(0, min(index, n - 1)) if n else 0
        return self.current

    def frame_of(self, step: int) -> int | None:
        """The frame taken just before step ``step`` (None: none, or no such step)."""
        return self.step_frame[step] if 0 <= step < len(self.step_frame) else None

    def frame_for_selection(self, chosen: Sequence[int], focus: int | None) -> int:
        """The frame to show for the selected steps: the focused one's, else the first's."""
        index = focus if focus is not None and focus in chosen else (chosen[0] if chosen else None)
        frame = self.frame_of(index) if index is not None else None
        return self.current if frame is None else frame

    def frame_at(self, x: float, width: int) -> int | None:
        """The frame under ``x`` on the strip of frames ``width`` pixels wide."""
        n = len(self.frames)
        return int(x / width * n) if n and width > 0 else None

    def frame_label(self, selected: Sequence[int]) -> tuple[str, str | None]:
        """The line under the frame and its tone (``error`` when it is marked to cut; None: as it was)."""
        n = len(self.frames)
        if self.deleted:
            return "", ""
        if not n:
            return "This session has no frames.", None
        frame = self.frames[self.current]
        t = (frame.t_ns - self.start_ns) / 1e9
        taken = TAKEN.get(frame.reason, f"taken: {frame.reason}")
        text = f"frame {self.current + 1} of {n} · {t:.1f} s · {taken}"
        before = [i for i in selected if self.frame_of(i) == self.current]
        if before:
            text += f" · the screen before step {before[0] + 1} ({self.rows[before[0]].action})"
        if self.frame_cut[self.current]:
            text += "  (marked to cut)"
        return text, "error" if self.frame_cut[self.current] else ""

    def pointers(self, selected: Sequence[int]) -> list[tuple[str, int, int, int | None, int | None]]:
        """Where the selected steps act on the frame shown (those with a position)."""
        found = [self.step_where[i] for i in selected if self.frame_of(i) == self.current]
        return [(a, x, y, to_x, to_y) for a, x, y, to_x, to_y in found if x is not None and y is not None]

    def strip(self) -> list[str]:
        """One cell per frame: ``start`` where a cut was started, ``cut`` when marked, else ``""``."""
        return [
            "start" if i == self.cut_start else ("cut" if cut else "") for i, cut in enumerate(self.frame_cut)
        ]

    def marks(self) -> tuple[str, str]:
        """The line about cuts (one started, ranges marked, or how to cut) and its tone."""
        cuts = self.review.cuts
        if self.deleted:
            return "", "small"
        if self.cut_start is not None and self.frames:
            t = (self.frames[self.cut_start].t_ns - self.start_ns) / 1e9
            text = (
                f"A cut starts at {t:.1f} s (frame {self.cut_start + 1}): go to its last frame "
                "and press Cut to here (Alt+T)."
            )
            return text, "notice"
        if cuts:
            start = self.start_ns
            spans = ", ".join(f"{(a - start) / 1e9:.1f}–{(b - start) / 1e9:.1f} s" for a, b in cuts)
            frames, steps = words(sum(self.frame_cut), "frame"), words(self._steps_cut(), "step")
            text = f"Marked to cut: {words(len(cuts), 'range')} ({spans}): {frames}, {steps}. "
            if self.covers_session:
                text += (
                    "That is all of this session: Apply cuts (Alt+C) deletes the whole session "
                    "from this computer."
                )
            else:
                text += "Nothing is deleted until you press Apply cuts (Alt+C)."
            return text, "notice"
        text = (
            "To cut a part: show its first frame (← →), press Cut starts here (Alt+S), show its last "
            "frame, press Cut to here (Alt+T); or select steps and press Cut selected steps (Alt+X)."
        )
        return text, "small"

    def _steps_cut(self) -> int:
        return sum(1 for r in self.rows if r.cut)

    def enabled(self) -> dict[str, bool]:
        """Which buttons work now (their Alt keys with them): nothing while busy or locked but
        Close (and, unless busy, another session); approve and export only with no cut marked or
        started; another session only with none marked or started (they would be forgotten)."""
        ready = self.loaded and not self.locked and self.busy is None
        has_cuts = bool(self.review.cuts)
        moving = self.busy is None and not has_cuts and self.cut_start is None
        return {
            "cut_from": ready and bool(self.frames),
            "cut_to": ready and bool(self.frames),
            "cut_steps": ready and bool(self.rows),
            "cut_task": ready and bool(self.tasks),
            "clear": ready and (has_cuts or self.cut_start is not None),
            "apply": ready and has_cuts,
            "approve": ready and not has_cuts and self.cut_start is None,
            "export": ready and not has_cuts and self.cut_start is None,
            "folder": not self.locked and self.busy != "export",
            # after an export, even when the study's after_export then deleted the session (locked)
            "upload": self.upload_pending and self.busy is None,
            "sessions": moving,
            "previous": moving and self.neighbour(-1) is not None,
            "next": moving and self.neighbour(1) is not None,
            "close": True,
        }

    def state(self) -> dict[str, Any]:
        """The counts of the window's state line (``optin-review-state``): ids and counts, never
        content (a task by its id, outcome and step range; no instruction)."""
        return {
            "session": self.review.session_id,
            "approval": self.approval,
            "frames": len(self.frames),
            "steps": len(self.rows),
            "cuts_marked": len(self.review.cuts),
            "cut_start": self.cut_start,
            "frame": self.current,
            "frames_marked": sum(self.frame_cut),
            "tasks": [
                {"id": t.id, "outcome": t.outcome, "steps": list(t.steps) if t.steps else None}
                for t in self.tasks
            ],
            "deletes_session": self.covers_session,
            "sessions": len(self.sessions),
            "upload_pending": self.upload_pending,
        }

    def folder_text(self) -> str:
        return f"Export writes to {home_short(self.out_dir)}"

    def folder_chosen(self, path: Path) -> str:
        """Export writes to ``path`` from now on; the status line that says so."""
        self.out_dir = path
        return f"Export will write to {home_short(self.out_dir)}."

    # -- marking cuts ----------------------------------------------------------------------------

    def _marked(self, status: str) -> Outcome:
        self.refresh(rebuild=False)
        return Outcome("marked", status, redraw=True)

    def cut_from(self) -> Outcome:
        """A cut starts at the frame shown."""
        self.cut_start = self.current
        return self._marked("Cut start marked. Now show the last frame to cut and press Cut to here (Alt+T).")

    def cut_to(self) -> Outcome:
        """The cut started ends at the frame shown (both included)."""
        if self.cut_start is None:
            status = "First show where the cut starts and press Cut starts here (Alt+S)."
            return Outcome("error", status, error=True, extra={"message": "no cut start"})
        self.review.add_cut(self.frames[self.cut_start].t_ns, self.frames[self.current].t_ns)
        self.cut_start = None
        return self._marked("Marked to cut. Press Apply cuts (Alt+C) to delete it from this computer.")

    def cut_steps(self, selected: Sequence[int]) -> Outcome:
        """Mark the time the selected steps cover."""
        try:
            start, end = self.review.step_span(selected)
        except OptinError as exc:
            return Outcome("error", f"Cannot cut steps: {exc}.", error=True, extra={"message": str(exc)})
        self.review.add_cut(start, end)
        return self._marked(
            "The selected steps are marked to cut. Apply cuts (Alt+C) deletes them from this computer."
        )

    def cut_task(self, task_id: str | None = None) -> Outcome:
        """Mark the task's whole span (its start to its end) to be cut."""
        task = next((t for t in self.tasks if task_id in (None, t.id)), None)
        if task is None:
            status = "This session holds no task to cut."
            return Outcome("error", status, error=True, extra={"message": "no task"})
        self.review.add_cut(*self.review.task_span(task.id))
        self.cut_start = None
        self.refresh(rebuild=False)
        if self.covers_session:
            status = (
                f"Task {task.id} is marked to cut. It is all of this session: Apply cuts (Alt+C) "
                "deletes the whole session from this computer."
            )
        else:
            status = f"Task {task.id} is marked to cut. Apply cuts (Alt+C) deletes it from this computer."
        return Outcome("marked", status, redraw=True)

    def clear(self) -> Outcome:
        self.review.clear_cuts()
        self.cut_start = None
        return self._marked("No part is marked to cut any more.")

    # -- applying cuts, approving, exporting -----------------------------------------------------

    def confirm_heading(self) -> str:
        """The question before applying the cuts."""
        if self.covers_session:
            return "Delete this whole session from this computer?"
        return "Delete the marked parts from this computer?"

    def confirm_text(self) -> str:
        """What the question before applying the cuts says."""
        n = len(self.review.cuts)
        if self.covers_session:
            return (
                f"The marked parts ({words(sum(self.frame_cut), 'frame')} and "
                f"{words(self._steps_cut(), 'step')}) are all this session would export, so the whole "
                f"session {self.review.session_id} will be deleted from this computer: its encrypted "
                "files are destroyed (their keys overwritten), like a task you give up. This cannot be "
                "undone."
            )
        ranges = "marked range" if n == 1 else f"{n} marked ranges"
        return (
            f"The {ranges} ({words(sum(self.frame_cut), 'frame')} and {words(self._steps_cut(), 'step')} "
            "shown now) will be deleted from this computer: the rest of the session is encrypted again "
            "without them and the old copy is destroyed. This cannot be undone. What remains must be "
            "approved again before it can be exported."
        )

    def nothing_cut(self) -> Outcome:
        """No cut marked, or the volunteer answered Cancel."""
        return Outcome("cancelled", "Nothing was cut.")

    def start_cut(self) -> str:
        """The cuts are about to be applied (in the background): the status line meanwhile."""
        self.cut_start = None
        if self.covers_session:
            return "Deleting the session: its encrypted files are destroyed…"
        return "Cutting: the rest of the session is encrypted again and the old copy destroyed…"

    def cut_job(self) -> Callable[[Progress], CutReport | Deleted]:
        """The cut to run in the background: the marked ranges, or the whole session when they
        hold all of it."""
        review = self.review
        if self.covers_session:
            return review.delete_session
        return review.apply_cuts

    def cut_done(self, report: CutReport | Deleted) -> Outcome:
        if isinstance(report, Deleted):
            return self._session_deleted(report)
        self.refresh(rebuild=True)
        self.list_sessions()
        status = (
            f"Cut {words(report.ranges, 'range')}: {words(report.events, 'event')} and "
            f"{words(report.frames, 'frame')} deleted from this computer."
        )
        return Outcome("cut", status, redraw=True, rebuild=True)

    def _session_deleted(self, deleted: Deleted) -> Outcome:
        sid = deleted.session_id
        self._reset()
        self.deleted = self.locked = True
        self.known_tasks.pop(sid, None)
        self.list_sessions()
        status = (
            f"Session {sid} was deleted from this computer ({words(deleted.segments, 'file')} "
            "destroyed). Choose another session above, or close the window."
        )
        return Outcome("deleted", status, redraw=True, rebuild=True, extra={"deleted": sid})

    def empty_text(self) -> str:
        """What the picture area says when there is no frame to show."""
        if self.deleted:
            return "This session was deleted from this computer."
        return "No screenshots: this session did not record the screen."

    def approve_label(self) -> str:
        """The approve button's words: a task's session is approved as its task."""
        return "Approve this task for export" if self.tasks else "Approve"

    def approve(self) -> Outcome:
        try:
            self.review.approve()
        except OptinError as exc:
            return Outcome("error", str(exc), error=True, extra={"message": str(exc)})
        self.refresh(rebuild=False)
        self.list_sessions()
        what = f"Task {self.tasks[0].id} approved for export" if self.tasks else "Approved"
        return Outcome(
            "approved", f"{what}. Export (Alt+E) writes the encrypted bundle for the study.", redraw=True
        )

    def export_job(self) -> Callable[[Progress], ExportResult]:
        """The export to run in the background (into the folder chosen now)."""
        out = self.out_dir
        return lambda progress: self.review.export(out, progress)

    def exported(self, result: ExportResult) -> Outcome:
        where, size = home_short(result.path), size_text(result.bytes)
        text = f"Exported to {where} ({size}), encrypted to the study's key."
        if result.deleted_locally:
            self.locked = True
            text += " As the study asks, the session was then deleted from this computer."
        else:
            self.approval = self.review.approval_state()
        self.list_sessions()
        self.upload_pending = bool(self.review.study.upload_url)
        if self.upload_pending:
            text += " Upload to the study (Alt+U) sends it to the study's intake."
        return Outcome("exported", text, extra={"bundle": result.path.name})

    def upload_job(self) -> Callable[[Progress], Any]:
        """The upload to run in the background (docs/upload.md)."""
        return self.review.upload

    def uploaded(self, result: Any) -> Outcome:
        delivery, deleted = result
        self.upload_pending = False
        text = (
            f"Delivered: the study confirmed it stored the export ({size_text(delivery.size)})."
            if delivery.state == "delivered"
            else f"Not delivered ({delivery.shown_state()})."
        )
        if deleted:
            self.locked = True
            text += " As the study asks, the session and its export were then deleted from this computer."
        self.list_sessions()
        return Outcome("uploaded", text, extra={"delivery": delivery.state, "deleted": bool(deleted)})

    # -- background work and closing -------------------------------------------------------------

    def begin(self, what: str) -> None:
        """Background work ``what`` ("load", "cut", "export") starts: the actions wait for it."""
        self.busy = what

    def end(self) -> str | None:
        """The background work ended; what it was."""
        what, self.busy = self.busy, None
        return what

    def failed(self, what: str | None, exc: BaseException) -> Outcome:
        """Background work ``what`` raised ``exc``.  A failed load locks the window (the view says
        why, from :attr:`failure`: the outcome's ``state`` is then ``error`` and ``redraw`` False)."""
        error = exc if isinstance(exc, OptinError) else None
        message = (
            str(exc) if error is not None else f"Something unexpected went wrong ({type(exc).__name__})."
        )
        if what == "load":
            self.load_failed(error or OptinError(message))
            return Outcome("error", message, error=True, extra={"message": str(self.failure)})
        if what == "upload":
            message += " optin upload resumes it later from where it stopped."
        if what == "cut" and not self.review.cuts:
            # the cut was made but the session could not be read again: what is shown is gone
            self.locked = True
            message += " Close the window and open the review again."
        return Outcome("error", message, error=True, extra={"message": message})

    def close_refused(self) -> str | None:
        """Why the window cannot close now (a cut or an export half done), or None: it can."""
        if self.busy in ("cut", "export"):
            doing = "the cut" if self.busy == "cut" else "the export"
            return f"Please wait until {doing} has finished: closing now would leave it half done."
        return None
