"""What the review window shows and does: one session exactly as it would be exported.

The window (agent/ui/review.py) is a thin view over its presenter
(:class:`agent.export.review_screen.ReviewScreen`), which calls :class:`Review`.  A review holds the
session decrypted and redacted in memory (:func:`agent.export.bundle.prepare`: the same code
the export runs, so what the volunteer sees is what would leave), a list of cuts the
volunteer marked, and three actions:

* :meth:`Review.apply_cuts` deletes the marked ranges from this computer
  (:func:`agent.store.cut.cut_session`: re-encrypted without them, the old keys shredded),
  then prepares the session again, so the preview shows the cut session's own redaction;
* :meth:`Review.approve` records the approval (:mod:`agent.export.approval`), refused while
  cuts are marked but not applied;
* :meth:`Review.export` writes the bundle of an approved session.

Nothing here writes plaintext: the frames the window shows are decoded from memory.
Rows for the step list carry redacted text only (what the bundle carries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from agent.events import Frame
from agent.export import approval
from agent.export.bundle import ExportResult, Prepared, export_session, prepare
from agent.paths import Dirs
from agent.redact import policy
from agent.redact.local_names import LocalNames
from agent.store import keys
from agent.store.cut import CutReport, cut_session, normalise
from agent.store.reader import list_sessions
from agent.study import Study

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class StepRow:
    """One line of the step list: when (seconds from the start), what, where."""

    index: int
    t_s: float
    action: str
    detail: str
    window: str
    cut: bool


def reviewable_sessions(dirs: Dirs) -> list[str]:
    """Ids of the sessions that can be reviewed (closed: not being recorded), newest first."""
    return [i.id for i in reversed(list_sessions(dirs)) if i.state == "closed"]


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
                )
            )
        return out

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
