"""Cuts: the marked ranges are gone from this computer (re-encrypted without them, the old keys
shredded), the session keeps its id and verifies, and a crash at any step is finished or undone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.errors import StoreError, UsageError
from agent.events import Frame, Marker, PointerMove
from agent.paths import Dirs, dirs
from agent.store import cut, keys, retention
from agent.store.reader import list_sessions, load_meta, read_session
from agent.store.safe_fs import StoreDir, UnsafeEntry
from agent.store.verify import verify
from agent.store.writer import SessionWriter
from tests.unit.store_helpers import numbered

S = 1_000_000_000


@pytest.fixture
def store() -> tuple[Dirs, bytes, bytes]:
    d = dirs()
    keys.init_keys(d)
    return d, keys.load_recipient(d), keys.load_identity(d)


def _session(d: Dirs, recipient: bytes, *, close: bool = True) -> SessionWriter:
    w = SessionWriter.create(d, recipient, segment_bytes=4096)  # several segments
    w.write_events([Marker(0, "session_start", {"mono_ns": 0, "wall_ns": 0})])
    w.write_events(numbered(1, 400, frame_every=10))
    w.write_events([Marker(1000, "session_stop", {"loss": {"events": 0}})])
    if close:
        w.close({"events": 3})
    return w


def test_normalise_sorts_merges_and_refuses_backwards_ranges() -> None:
    assert cut.normalise([(50, 60), (1, 5), (4, 10), (11, 12)]) == [(1, 12), (50, 60)]
    with pytest.raises(UsageError, match="must end after it starts"):
        cut.normalise([(5, 1)])


def test_apply_cuts_keeps_the_session_markers_and_marks_each_cut() -> None:
    events = [Marker(0, "session_start", {}), *numbered(1, 30, frame_every=5), Marker(40, "session_stop", {})]
    kept, n_events, n_frames = cut.apply_cuts(events, [(0, 10), (20, 25)])
    assert kept[0] == events[0] and kept[-1] == events[-1]  # the session's start and stop markers
    assert not any(1 <= e.t_ns <= 10 or 20 <= e.t_ns <= 25 for e in kept if not isinstance(e, Marker))
    cuts = [e for e in kept if isinstance(e, Marker) and e.marker == "cut"]
    assert [(m.detail["from_ns"], m.detail["to_ns"]) for m in cuts] == [(0, 10), (20, 25)]
    assert n_frames == 3 and n_events == 16 - 3 - 1 + 1  # 10 + 6 inside, 3 of them frames
    assert [e.t_ns for e in kept] == sorted(e.t_ns for e in kept)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.integers(0, 60), min_size=1, max_size=60).map(sorted),
    st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)).map(sorted), max_size=5),
)
def test_apply_cuts_property(times: list[int], ranges: list[list[int]]) -> None:
    events = [PointerMove(t, t, t) for t in times]
    kept, n_events, _ = cut.apply_cuts(events, [(a, b) for a, b in ranges])
    inside = [e for e in kept if not isinstance(e, Marker)]
    assert all(not any(a <= e.t_ns <= b for a, b in ranges) for e in inside)
    assert len(inside) + n_events == len(events)  # nothing is lost without being counted
    assert [e.t_ns for e in kept] == sorted(e.t_ns for e in kept)


def test_cut_session_deletes_the_range_for_real(
    store: tuple[Dirs, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, recipient, identity = store
    w = _session(d, recipient)
    sid = w.session_id
    old_segments = sorted(w.path.glob("*.seg"))
    assert len(old_segments) > 1
    shredded: list[str] = []
    real_shred = retention.shred_at

    def spy(folder: StoreDir, name: str) -> int:
        shredded.append(name)
        return real_shred(folder, name)

    monkeypatch.setattr(retention, "shred_at", spy)

    report = cut.cut_session(d, sid, [(100, 199)], identity, recipient)

    assert report.to_dict() == {"session": sid, "ranges": 1, "events": 90, "frames": 10}
    assert sorted(shredded) == sorted(p.name for p in old_segments)  # every old key overwritten
    events = read_session(d, sid, identity).events
    assert not any(100 <= e.t_ns <= 199 for e in events if not isinstance(e, Marker))
    assert [e.detail for e in events if isinstance(e, Marker) and e.marker == "cut"] == [
        {"from_ns": 100, "to_ns": 199}
    ]
    assert sum(isinstance(e, Frame) for e in events) == 30
    assert [i.id for i in list_sessions(d)] == [sid]  # same id, no leftovers
    assert not [p for p in d.sessions.iterdir() if p.name.startswith(".")]
    meta = load_meta(d.sessions / sid)
    assert meta is not None and meta["state"] == "closed" and meta["dropped_by_source"] == {"events": 3}
    assert meta["cuts"][0]["events"] == 90 and "session" not in meta["cuts"][0]
    assert verify(d, identity, sid).ok


def test_cut_refuses_the_session_being_recorded(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    w = _session(d, recipient, close=False)
    with pytest.raises(StoreError, match="another writer"):
        cut.cut_session(d, w.session_id, [(1, 5)], identity, recipient)
    w.close()


def test_nothing_marked_changes_nothing(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    w = _session(d, recipient)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in w.path.iterdir())
    assert cut.cut_session(d, w.session_id, [], identity, recipient).ranges == 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in w.path.iterdir()) == before


def _interrupted(d: Dirs, recipient: bytes, identity: bytes, stage: str) -> tuple[str, Path]:
    """A cut stopped at ``stage``: the temp directories as a crash there leaves them."""
    w = _session(d, recipient)
    sid, path = w.session_id, w.path
    events = read_session(d, sid, identity).events
    kept, _, _ = cut.apply_cuts(events, [(100, 199)])
    new = path.parent / f".cut-new-{sid}-0badcafe"
    report = cut.CutReport(sid, 1, 0, 0)
    if stage == "writing":  # the new copy is half written: no seal, no closed meta
        new.mkdir(mode=0o700)
        (new / "00000000.seg").write_bytes(os.urandom(300))
        return sid, new
    with StoreDir.open_root(d.sessions) as root:  # type: ignore[union-attr]
        cut._write_copy(root, new.name, kept, recipient, meta={}, report=report)
    if stage == "written":
        return sid, new
    old = path.parent / f".cut-old-{sid}-0badcafe"
    path.rename(old)
    if stage == "moved-away":
        return sid, old
    new.rename(path)
    return sid, old  # "swapped": only the old copy's shredding is left


@pytest.mark.parametrize(
    ("stage", "cut_applied"),
    [("writing", False), ("written", False), ("moved-away", True), ("swapped", True)],
)
def test_an_interrupted_cut_is_finished_or_undone(
    store: tuple[Dirs, bytes, bytes], stage: str, cut_applied: bool
) -> None:
    d, recipient, identity = store
    sid, _ = _interrupted(d, recipient, identity, stage)
    assert cut.finish_interrupted_cuts(d)
    assert not [p for p in d.sessions.iterdir() if p.name.startswith(".")]
    events = read_session(d, sid, identity).events
    has_cut = any(isinstance(e, Marker) and e.marker == "cut" for e in events)
    assert has_cut is cut_applied
    assert any(100 <= e.t_ns <= 199 for e in events if not isinstance(e, Marker)) is not cut_applied
    assert verify(d, identity, sid).ok


def test_a_session_holding_a_link_is_not_cut_and_nothing_changes(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path
) -> None:
    """A cut reads, carries and shreds the session's files: a link among them (here review.json,
    pointing outside the store) makes it refuse before anything changes."""
    d, recipient, identity = store
    w = _session(d, recipient)
    outside = tmp_path / "review.json"
    outside.write_text("{}\n")
    (w.path / "review.json").symlink_to(outside)
    before = sorted((p.name, p.lstat().st_mtime_ns) for p in w.path.iterdir())
    with pytest.raises(
        UnsafeEntry, match=rf"session {w.session_id} was not cut \(nothing was changed\)"
    ) as err:
        cut.cut_session(d, w.session_id, [(100, 199)], identity, recipient)
    assert f"{w.path / 'review.json'} is a symbolic link (to {outside})" in str(err.value)
    assert sorted((p.name, p.lstat().st_mtime_ns) for p in w.path.iterdir()) == before
    assert not [p for p in d.sessions.iterdir() if p.name.startswith(".")]
    assert outside.read_text() == "{}\n"
