"""The review window's presenter without Tk, over a real recorded session (two frames, three steps):
the frame shown stays in bounds, cut marks cover exactly the frames between them, busy and locked
block the actions, an approval is refused while cuts are only marked, the step → frame map is the
prepared session's, and each action says what happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import KeyError_, OptinError, UsageError
from agent.events import Frame
from agent.export import approval
from agent.export.review import Review
from agent.export.review_screen import ReviewScreen, home_short
from agent.store import keys
from agent.store.reader import read_session
from tests.tools import Consented
from tests.unit.test_export import LOCAL, session

__all__ = ["session"]

ACTIONS = ("cut_from", "cut_to", "cut_steps", "clear", "apply", "approve", "export")


@pytest.fixture
def screen(consented: Consented, session: str, tmp_path: Path) -> ReviewScreen:
    """The presenter of the recorded session, loaded as the window loads it (unlock, load, ready)."""
    d, study = consented
    s = ReviewScreen(Review(d, study, session, local=LOCAL), tmp_path / "exports")
    assert s.unlock()
    s.review.load()
    outcome = s.ready()
    assert (outcome.state, outcome.redraw, outcome.rebuild) == ("ready", True, True)
    return s


def test_before_loading_nothing_can_be_done_but_close(consented: Consented, session: str) -> None:
    d, study = consented
    s = ReviewScreen(Review(d, study, session, local=LOCAL), Path("/nowhere"))
    enabled = s.enabled()
    assert not any(enabled[name] for name in ACTIONS) and enabled["close"] and enabled["folder"]
    assert s.state() == {
        "session": session,
        "approval": "not approved",
        "frames": 0,
        "steps": 0,
        "cuts_marked": 0,
        "cut_start": None,
        "frame": 0,
        "frames_marked": 0,
        "tasks": [],
        "deletes_session": False,
        "sessions": 0,
        "upload_pending": False,
    }
    assert not enabled["upload"]  # nothing exported yet


def test_ready_shows_the_first_frame_and_the_session_as_exported(screen: ReviewScreen) -> None:
    assert screen.loaded and not screen.locked and screen.busy is None
    assert (len(screen.frames), len(screen.rows), screen.current) == (2, 3, 0)
    assert screen.start_ns == screen.review.start_ns > 0
    header = screen.header()
    assert header.counts.startswith("3 steps (") and " · 2 frames · " in header.counts
    assert header.redactions.startswith("Redacted: ") and (header.approval, header.approval_tone) == (
        "Not approved for export yet",
        "notice",
    )
    text, tone = screen.frame_label([])
    assert text == "frame 1 of 2 · 0.0 s · taken when recording started" and tone == ""
    assert screen.marks()[1] == "small" and screen.strip() == ["", ""]
    enabled = screen.enabled()
    assert enabled["cut_from"] and enabled["cut_to"] and enabled["cut_steps"] and enabled["approve"]
    assert not enabled["clear"] and not enabled["apply"]


def test_the_step_frame_map_is_the_prepared_session_s(screen: ReviewScreen) -> None:
    prepared = screen.review.prepared
    assert prepared is not None
    assert len(screen.step_frame) == len(prepared.steps) == 3
    for i, step in enumerate(prepared.steps):
        shown = screen.step_frame[i]
        if step.frame is None:
            assert shown is None
        else:
            assert shown is not None and screen.frames[shown] is prepared.events[step.frame]
    assert screen.step_frame[2] == 1  # the click comes after the screen changed: the second frame
    assert screen.step_where[2] == ("click", 3, 4, None, None)
    assert screen.frame_of(2) == 1 and screen.frame_of(3) is None and screen.frame_of(-1) is None


def test_navigation_stays_within_the_frames(screen: ReviewScreen) -> None:
    assert screen.show(-5) == 0 == screen.current
    assert screen.show(10**9) == 1 == screen.current
    assert screen.show(0) == 0
    assert screen.frame_at(0, 200) == 0 and screen.frame_at(99, 200) == 0 and screen.frame_at(100, 200) == 1
    assert screen.frame_at(5, 0) is None
    assert screen.frame_for_selection([2], None) == 1  # a selected step shows the screen before it
    assert screen.frame_for_selection([0, 2], 2) == 1 and screen.frame_for_selection([0, 2], 7) == (
        screen.step_frame[0] if screen.step_frame[0] is not None else screen.current
    )
    screen.show(1)
    text, _tone = screen.frame_label([2])
    assert text.startswith("frame 2 of 2 · ") and text.endswith(" · the screen before step 3 (click)")
    assert screen.pointers([2]) == [("click", 3, 4, None, None)] and screen.pointers([]) == []


@pytest.mark.parametrize(
    ("start", "end", "marked"), [(1, 1, [False, True]), (0, 0, [True, False]), (1, 0, [True, True])]
)
def test_cut_marks_cover_exactly_the_frames_between_them(
    screen: ReviewScreen, start: int, end: int, marked: list[bool]
) -> None:
    screen.show(start)
    started = screen.cut_from()
    assert (started.state, started.redraw, screen.cut_start) == ("marked", True, start)
    assert screen.strip()[start] == "start" and screen.marks()[0].startswith("A cut starts at ")
    enabled = screen.enabled()
    assert enabled["clear"] and not enabled["approve"] and not enabled["export"] and not enabled["apply"]
    screen.show(end)
    ended = screen.cut_to()
    assert ended.state == "marked" and not ended.error and screen.cut_start is None
    assert screen.frame_cut == marked and screen.state()["frames_marked"] == sum(marked)
    assert screen.strip() == ["cut" if m else "" for m in marked]
    assert screen.state()["cuts_marked"] == 1 and screen.marks()[0].startswith("Marked to cut: 1 range (")
    screen.show(marked.index(True))
    assert screen.frame_label([]) == (screen.frame_label([])[0], "error")
    assert screen.frame_label([])[0].endswith("  (marked to cut)")


def test_a_cut_needs_its_start_and_steps_need_a_selection(screen: ReviewScreen) -> None:
    no_start = screen.cut_to()
    assert (no_start.state, no_start.error, no_start.extra) == ("error", True, {"message": "no cut start"})
    nothing = screen.cut_steps([])
    assert nothing.error and nothing.status == "Cannot cut steps: select one or more steps first."
    assert screen.review.cuts == [] and screen.frame_cut == [False, False]
    steps = screen.cut_steps([2])
    assert steps.state == "marked" and [r.cut for r in screen.rows] == [False, False, True]
    cleared = screen.clear()
    assert cleared.status == "No part is marked to cut any more." and screen.review.cuts == []
    assert not any(r.cut for r in screen.rows)


def test_approve_is_refused_while_cuts_are_only_marked(screen: ReviewScreen) -> None:
    screen.cut_steps([2])
    assert not screen.enabled()["approve"] and not screen.enabled()["export"]
    refused = screen.approve()
    assert refused.state == "error" and refused.status.startswith("apply or clear the marked cuts first")
    assert screen.approval == "not approved" == screen.review.approval_state()
    screen.clear()
    approved = screen.approve()
    assert (approved.state, approved.redraw, screen.approval) == ("approved", True, "approved")
    assert screen.header().approval_tone == "good"


def test_busy_blocks_every_action_and_closing_during_a_cut_or_export(screen: ReviewScreen) -> None:
    for what in ("load", "cut", "export"):
        screen.begin(what)
        enabled = screen.enabled()
        assert not any(enabled[name] for name in ACTIONS) and enabled["close"]
        assert enabled["folder"] == (what != "export")
        refused = screen.close_refused()
        assert (refused is None) == (what == "load")
        assert screen.end() == what and screen.busy is None
    assert screen.enabled()["approve"] and screen.close_refused() is None
    screen.locked = True
    assert not any(screen.enabled()[name] for name in (*ACTIONS, "folder"))


def test_applying_the_marks_deletes_them_and_shows_the_cut_session(
    consented: Consented, screen: ReviewScreen
) -> None:
    d, _study = consented
    screen.show(1)
    screen.cut_from()
    screen.cut_to()
    assert screen.confirm_text().startswith(
        "The marked range (1 frame and 0 steps shown now) will be deleted"
    )
    assert screen.nothing_cut().status == "Nothing was cut." and screen.review.cuts
    screen.cut_start = 0
    assert screen.start_cut().startswith("Cutting: ") and screen.cut_start is None
    done = screen.cut_done(screen.review.apply_cuts())
    assert (done.state, done.rebuild) == ("cut", True)
    assert done.status.startswith("Cut 1 range: ") and done.status.endswith(
        " and 1 frame deleted from this computer."
    )
    stored = [
        e
        for e in read_session(d, screen.review.session_id, keys.load_identity(d)).events
        if isinstance(e, Frame)
    ]
    assert len(screen.frames) == len(stored) == 1 and screen.frame_cut == [False]
    assert len(screen.step_frame) == len(screen.rows) == 3 and screen.show(5) == 0
    assert all(f in (None, 0) for f in screen.step_frame)  # the map was made again: one frame is left


def test_export_says_where_and_how_big(screen: ReviewScreen, tmp_path: Path) -> None:
    screen.approve()
    job = screen.export_job()
    screen.folder_chosen(tmp_path / "elsewhere")  # the export started writes where it was started for
    result = job(lambda _n, _total: None)
    assert result.path.parent == tmp_path / "exports"
    outcome = screen.exported(result)
    assert outcome.state == "exported" and outcome.extra == {"bundle": result.path.name}
    assert outcome.status.startswith(f"Exported to {home_short(result.path)} (")
    assert outcome.status.endswith("), encrypted to the study's key.") and not screen.locked
    assert screen.approval == approval.state(screen.review.dirs, screen.review.session_id) == "approved"


def test_failures_say_why_and_lock_when_what_is_shown_is_gone(screen: ReviewScreen) -> None:
    plain = screen.failed("export", OptinError("the disk is full"))
    assert (plain.state, plain.status, plain.extra) == (
        "error",
        "the disk is full",
        {"message": "the disk is full"},
    )
    assert not screen.locked
    bug = screen.failed("export", ZeroDivisionError("secret text"))
    assert bug.status == "Something unexpected went wrong (ZeroDivisionError)." and "secret" not in bug.status
    gone = screen.failed("cut", OptinError("cannot read it"))
    assert gone.status == "cannot read it Close the window and open the review again." and screen.locked
    assert not any(screen.enabled()[name] for name in ACTIONS)
    screen.failed("load", RuntimeError("x"))
    assert (
        isinstance(screen.failure, OptinError)
        and str(screen.failure) == "Something unexpected went wrong (RuntimeError)."
    )


def test_a_wrong_passphrase_locks_the_window_a_cancelled_one_does_not(
    consented: Consented, session: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    wrong.chmod(0o600)
    monkeypatch.setenv("OPTIN_PASSPHRASE_FILE", str(wrong))
    s = ReviewScreen(Review(d, study, session, local=LOCAL), tmp_path)
    assert not s.unlock() and isinstance(s.failure, KeyError_) and s.locked

    def cancel(_prompt: str) -> bytes:
        raise KeyError_("no passphrase was entered")

    monkeypatch.delenv("OPTIN_PASSPHRASE_FILE")
    s = ReviewScreen(Review(d, study, session, ask_passphrase=cancel, local=LOCAL), tmp_path)
    s.cancelled = True  # as the window's passphrase dialog marks it when Cancel is pressed
    assert not s.unlock() and isinstance(s.failure, KeyError_) and not s.locked


def test_the_folder_is_shown_from_home(
    screen: ReviewScreen, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert screen.folder_chosen(tmp_path / "optin-exports") == "Export will write to ~/optin-exports."
    assert screen.folder_text() == "Export writes to ~/optin-exports"
    screen.folder_chosen(Path("/srv/out"))
    assert screen.folder_text() == "Export writes to /srv/out"


def test_usage_error_is_the_models(screen: ReviewScreen) -> None:
    """The presenter adds no rule of its own: the model still refuses an approval with marks."""
    screen.review.add_cut(0, 1)
    with pytest.raises(UsageError):
        screen.review.approve()


def test_a_failed_upload_says_why_and_that_it_resumes(screen: ReviewScreen) -> None:
    from agent.upload.sender import UploadFailed

    screen.upload_pending = True
    screen.begin("upload")
    assert not screen.enabled()["upload"]  # not twice at once
    what = screen.end()
    outcome = screen.failed(
        what, UploadFailed("the intake did not answer. Fix: check the network", retry=True)
    )
    assert outcome.error and outcome.status.startswith("the intake did not answer. Fix: check the network")
    assert "optin upload resumes it" in outcome.status
    assert screen.enabled()["upload"]  # try again from the window
