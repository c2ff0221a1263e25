"""The review window's model: what it shows is what would be exported; cuts delete locally and
re-redact; an approval is refused while cuts are only marked."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import UsageError
from agent.events import Marker
from agent.export import approval
from agent.export.review import Review, describe, reviewable_sessions
from agent.store import keys
from agent.store.reader import read_session
from tests.tools import Consented
from tests.unit.test_export import LOCAL, session

__all__ = ["session"]


@pytest.fixture
def review(consented: Consented, session: str) -> Review:
    d, study = consented
    r = Review(d, study, session, local=LOCAL)
    r.load()
    return r


def test_rows_show_the_redacted_steps(review: Review) -> None:
    rows = review.rows()
    assert [r.action for r in rows] == ["type", "key", "click"]
    assert rows[0].detail == "'to:[EMAIL]'" and rows[1].detail == "enter" and rows[2].detail == "at 3, 4"
    assert rows[0].window == "Thunderbird — Inbox - [EMAIL]"
    assert rows[2].window.startswith("XTerm — [USER_NAME]@[HOSTNAME]")
    assert rows[0].t_s <= rows[1].t_s <= rows[2].t_s and not any(r.cut for r in rows)
    assert len(review.frames()) == 2 and review.summary()["steps"] == 3


def test_marked_cuts_flag_rows_and_block_approval_until_applied(consented: Consented, review: Review) -> None:
    d, _study = consented
    click = review.prepared.steps[2]  # type: ignore[union-attr]
    review.add_cut(*review.step_span([2]))
    assert [r.cut for r in review.rows()] == [False, False, True]
    with pytest.raises(UsageError, match="apply or clear the marked cuts"):
        review.approve()
    report = review.apply_cuts()
    assert report.ranges == 1 and report.events >= 2
    assert [r.action for r in review.rows()] == ["type", "key"]  # prepared again from the cut store
    events = read_session(d, review.session_id, keys.load_identity(d)).events
    assert not any(click.t_start_ns <= e.t_ns <= click.t_end_ns for e in events if not isinstance(e, Marker))
    review.approve()
    assert review.approval_state() == "approved" == approval.state(d, review.session_id)


def test_export_of_the_approved_review(review: Review, tmp_path: Path) -> None:
    review.approve()
    res = review.export(tmp_path)
    assert res.path.exists() and res.steps == 3


def test_a_frame_inside_a_cut_is_flagged(review: Review) -> None:
    first = review.frames()[0]
    review.add_cut(first.t_ns, first.t_ns)
    assert review.frame_in_cut(first) and not review.frame_in_cut(review.frames()[1])
    review.clear_cuts()
    assert not review.frame_in_cut(first)


def test_the_newest_closed_session_comes_first(consented: Consented, session: str) -> None:
    d, _study = consented
    assert reviewable_sessions(d) == [session]


def test_describe_every_action() -> None:
    from agent.steps import Step

    assert describe(Step("scroll", 0, 0, x=1, y=2, dx=0, dy=-3)) == "dx 0, dy -3 at 1, 2"
    assert describe(Step("drag", 0, 0, x=1, y=2, to_x=3, to_y=4)) == "1, 2 → 3, 4"
    assert describe(Step("hotkey", 0, 0, keys=("ctrl", "c"))) == "ctrl+c"
    assert describe(Step("type", 0, 0)) == "(text not recorded)"
