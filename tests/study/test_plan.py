"""The build's plan: study binding, duplicate sessions, order and packing (docs/dataset.md, "Plan")."""

from __future__ import annotations

import pytest

from agent.dataset.plan import Accepted, bind_study, plan
from agent.errors import UsageError


def rec(sha: str, session: str, volunteer: str = "a" * 32, room: int = 100, study: str = "s1") -> Accepted:
    return Accepted(
        name=f"{session}-{sha}.optin.tar.age",
        size=room,
        etag="e",
        sha256=sha * 64 if len(sha) == 1 else sha,
        session=session,
        volunteer=volunteer,
        signing_key="k",
        study=study,
        study_name="Study",
        schema="optin-bundle/3",
        room=room,
        steps=3,
    )


def test_two_bundles_of_one_session_keep_the_smaller_sha256() -> None:
    result = plan([rec("b", "s-1"), rec("a", "s-1"), rec("c", "s-2")], ingested_sessions={}, study="s1")
    kept = [b.sha256 for part in result.parts for b in part]
    assert kept == ["a" * 64, "c" * 64]
    assert [(q.sha256, q.reason, q.session) for q in result.quarantined] == [
        ("b" * 64, "duplicate_session", "s-1")
    ]
    assert result.duplicates[0].kept == "a" * 64


def test_a_session_already_ingested_is_a_duplicate() -> None:
    result = plan([rec("a", "s-1")], ingested_sessions={"s-1": "f" * 64}, study="s1")
    assert not result.parts
    assert result.quarantined[0].reason == "duplicate_session"
    assert result.duplicates[0].kept == "f" * 64


def test_the_same_bundle_under_two_names_is_one_bundle() -> None:
    a = rec("a", "s-1")
    twin = Accepted(**{**a.__dict__, "name": "copy.optin.tar.age"})
    result = plan([a, twin], ingested_sessions={}, study="s1")
    assert [len(p) for p in result.parts] == [1] and len(result.skipped) == 1 and not result.quarantined


def test_another_study_is_quarantined() -> None:
    result = plan([rec("a", "s-1", study="other")], ingested_sessions={}, study="s1")
    assert result.quarantined[0].reason == "study_mismatch" and not result.parts


def test_parts_are_packed_by_volunteer_then_session_never_splitting_a_bundle() -> None:
    records = [
        rec("1", "s-3", volunteer="b" * 32, room=40),
        rec("2", "s-1", volunteer="a" * 32, room=40),
        rec("3", "s-2", volunteer="a" * 32, room=40),
        rec("4", "s-4", volunteer="c" * 32, room=500),
    ]
    result = plan(records, ingested_sessions={}, study="s1", shard_size=100)
    assert [[b.session for b in p] for p in result.parts] == [["s-1", "s-2"], ["s-3"], ["s-4"]]


def test_plan_does_not_depend_on_the_order_of_pass_1_answers() -> None:
    records = [rec(c, f"s-{i}", volunteer=c * 32, room=60) for i, c in enumerate("abcdef")]
    one = plan(records, ingested_sessions={}, study="s1", shard_size=130)
    two = plan(list(reversed(records)), ingested_sessions={}, study="s1", shard_size=130)
    assert one.parts == two.parts


def test_binding_the_study() -> None:
    assert bind_study([rec("a", "s", study="x")], None, None) == "x"
    assert bind_study([], None, None) is None
    assert bind_study([rec("a", "s", study="x")], "y", None) == "y"
    with pytest.raises(UsageError, match=r"2 studies: x \(1 bundles\), y \(1 bundles\).*--study-id"):
        bind_study([rec("a", "s", study="x"), rec("b", "t", study="y")], None, None)
    assert bind_study([rec("a", "s", study="x"), rec("b", "t", study="y")], None, "y") == "y"
    with pytest.raises(UsageError, match="not the study this DEST holds"):
        bind_study([], "x", "y")
