"""optin verify: every tamper kind is reported with the right kind, file and offset; clean stores pass."""

from __future__ import annotations

import json
import shutil

import pytest

from agent.errors import NotFound, StoreError, UsageError
from agent.paths import Dirs
from agent.store import format as fmt
from agent.store.reader import read_session
from agent.store.recovery import recover_sessions
from agent.store.verify import Problem, VerifyReport, verify
from agent.store.writer import SessionWriter
from tests.unit.store_helpers import (
    flip,
    numbered,
    record_offsets,
    segment_files,
    write_one_per_record,
)


def closed_session(dirs: Dirs, recipient: bytes, count: int = 30) -> SessionWriter:
    """A closed session of 30 events: 5 segments of 6 records, and the closing one (empty)."""
    w = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(w, numbered(0, count))
    w.close()
    return w


def only_problem(report: VerifyReport) -> Problem:
    assert len(report.problems) == 1, report.render_text()
    return report.problems[0]


def where(problem: Problem) -> tuple[str, str | None, int | None]:
    return problem.kind, problem.file, problem.offset


# --- clean stores ---------------------------------------------------------------------------------


def test_clean_store_exit_code_and_json(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    assert verify(dirs, identity).exit_code == 0
    assert verify(dirs, identity).render_text() == "no sessions to verify"
    a = closed_session(dirs, recipient)
    b = closed_session(dirs, recipient, count=3)
    report = verify(dirs, identity)
    assert report.ok and report.exit_code == 0 and report.problems == [] and report.info == []
    doc = json.loads(report.to_json())
    assert doc["ok"] is True and doc["problems"] == [] and doc["info"] == []
    by_id = {s["session"]: s for s in doc["sessions"]}
    assert by_id[a.session_id] == {
        "session": a.session_id,
        "state": "closed",
        "recovered": False,
        "segments": 6,
        "records": 30,
        "events": 30,
        "problems": 0,
        "ok": True,
    }
    assert by_id[b.session_id]["events"] == 3
    text = report.render_text()
    assert f"ok      {a.session_id}  closed: 6 segments, 30 records, 30 events" in text
    assert text.endswith("2 sessions verified: no problems")
    assert verify(dirs, identity, a.session_id).sessions[0].session == a.session_id


def test_unknown_session_ids(dirs: Dirs, identity: bytes) -> None:
    with pytest.raises(UsageError):
        verify(dirs, identity, "../etc")
    with pytest.raises(NotFound):
        verify(dirs, identity, "20261127T213000Z-1a2b3c4d")


def test_problem_report_json_and_text(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[2]
    data = seg.read_bytes()
    record = record_offsets(data)[1]
    seg.write_bytes(flip(data, 8 * (record + 20)))
    report = verify(dirs, identity)
    assert report.exit_code == 1 and not report.ok
    doc = json.loads(report.to_json())
    assert doc["ok"] is False
    assert doc["problems"] == [
        {
            "session": w.session_id,
            "file": "000002.seg",
            "offset": record,
            "kind": "authentication",
            "message": f"{w.session_id}/000002.seg: segment authentication failed at offset {record}",
        }
    ]
    assert doc["sessions"][0]["ok"] is False and doc["sessions"][0]["problems"] == 1
    text = report.render_text()
    assert f"FAILED  {w.session_id}" in text
    assert "problem  authentication: " in text
    assert "1 with problems (1 problems). Nothing was changed." in text


# --- each tamper kind -----------------------------------------------------------------------------


def test_flipped_bit_names_file_and_record_offset(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[2]
    data = seg.read_bytes()
    third = record_offsets(data)[2]
    seg.write_bytes(flip(data, 8 * (third + 30)))
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("authentication", "000002.seg", third)
    assert problem.message == f"{w.session_id}/000002.seg: segment authentication failed at offset {third}"


def test_flipped_bit_in_wrapped_key(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[0]
    seg.write_bytes(flip(seg.read_bytes(), 8 * 100))
    assert where(only_problem(verify(dirs, identity))) == ("authentication", "000000.seg", 92)


def test_several_problems_are_all_reported(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    segs = segment_files(w.path)
    segs[1].write_bytes(flip(segs[1].read_bytes(), 8 * 150))
    segs[3].write_bytes(flip(segs[3].read_bytes(), 8 * 150))
    other = closed_session(dirs, recipient)
    segment_files(other.path)[4].unlink()
    report = verify(dirs, identity)
    assert sorted((p.session == w.session_id, p.kind, p.file) for p in report.problems) == [
        (False, "missing-segment", "000004.seg"),
        (True, "authentication", "000001.seg"),
        (True, "authentication", "000003.seg"),
    ]
    assert [s.ok for s in report.sessions] == [False, False]


def test_truncated_middle_segment(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[1]
    seg.write_bytes(seg.read_bytes()[:-20])
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("truncated", "000001.seg", None)
    assert "later segments follow" in problem.message


def test_truncated_last_segment_of_closed_session(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[-1]
    seg.write_bytes(seg.read_bytes()[:-1])
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("truncated", "000005.seg", None)
    assert "the session was closed" in problem.message


def test_reordered_segments(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    a, b = segment_files(w.path)[1:3]
    tmp = w.path / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    report = verify(dirs, identity)
    assert [where(p) for p in report.problems] == [("chain", "000001.seg", 24), ("chain", "000002.seg", 24)]
    assert "holds segment 2, expected 1" in report.problems[0].message


def test_segment_from_another_session(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    other = closed_session(dirs, recipient)
    shutil.copyfile(segment_files(other.path)[2], segment_files(w.path)[2])
    problem = only_problem(verify(dirs, identity, w.session_id))
    assert where(problem) == ("chain", "000002.seg", 8)
    assert "belongs to another session" in problem.message


def test_segment_from_another_position(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    segs = segment_files(w.path)
    shutil.copyfile(segs[3], segs[1])
    assert where(only_problem(verify(dirs, identity))) == ("chain", "000001.seg", 24)


def test_replaced_segment_with_valid_header(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    target = segment_files(w.path)[2]
    target.unlink()
    forged = fmt.SegmentWriter(
        target,
        session_id=fmt.session_id_bytes(w.session_id),
        index=2,
        prev_commit=b"\x01" * 32,
        recipient=recipient,
    )
    forged.seal()
    assert where(only_problem(verify(dirs, identity))) == ("chain", "000002.seg", 28)


def test_deleted_middle_segment(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    segment_files(w.path)[2].unlink()
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("missing-segment", "000002.seg", None)
    assert problem.message == f"{w.session_id}/000002.seg is missing: segment chain broken"


def test_deleted_last_segment_of_closed_session(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    segment_files(w.path)[-1].unlink()
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("missing-segment", "000004.seg", None)
    assert "closing segment is missing" in problem.message


def test_deleted_all_segments_of_closed_session(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    for seg in segment_files(w.path):
        seg.unlink()
    assert where(only_problem(verify(dirs, identity))) == ("missing-segment", None, None)


def test_data_after_seal(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[1]
    size = seg.stat().st_size
    seg.write_bytes(seg.read_bytes() + b"\x00\x00\x00")
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("format", "000001.seg", size)
    assert "3 bytes follow the SEAL record" in problem.message


@pytest.mark.parametrize(
    "case",
    [
        (0, b"PK", 0, "not an optin segment"),
        (7, b"\x01", 7, "version 1 is not supported"),
        (140, b"\x7f\xff\xff\xff", 140, "record length 2147483647 out of range at offset 140"),
        (144, b"\x44", 140, "unknown record type 0x44 at offset 140"),
    ],
)
def test_structural_errors_are_precise(
    dirs: Dirs, recipient: bytes, identity: bytes, case: tuple[int, bytes, int, str]
) -> None:
    offset, value, expected_offset, what = case
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[1]
    data = bytearray(seg.read_bytes())
    data[offset : offset + len(value)] = value
    seg.write_bytes(bytes(data))
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("format", "000001.seg", expected_offset)
    assert what in problem.message


def test_short_middle_segment(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[1]
    seg.write_bytes(seg.read_bytes()[:100])
    assert where(only_problem(verify(dirs, identity))) == ("format", "000001.seg", 100)


def test_unexpected_file_name(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    (w.path / "7.seg").write_bytes(b"")
    assert where(only_problem(verify(dirs, identity))) == ("format", "7.seg", None)


def test_meta_json_that_disagrees(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    meta_path = w.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["records"] = 29
    meta_path.write_text(json.dumps(meta))
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("meta", "meta.json", None)
    assert "says 29 records" in problem.message
    meta_path.write_text("not json")
    report = verify(dirs, identity)
    assert [where(p) for p in report.problems] == [("meta", "meta.json", None)]
    assert report.sessions[0].state == "unknown"


# --- crash tails ----------------------------------------------------------------------------------


def test_unrecovered_crash_tail_is_a_problem(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events(numbered(0, 5))
    w.abort()
    problem = only_problem(verify(dirs, identity))
    assert where(problem) == ("unsealed", "000000.seg", None)
    assert "unrecovered crash tail" in problem.message and "run optin run to recover" in problem.message
    assert verify(dirs, identity).sessions[0].state == "interrupted"
    recover_sessions(dirs, recipient)
    report = verify(dirs, identity)
    assert report.ok and [(p.kind, p.file) for p in report.info] == [("recovered", "000001.seg")]
    assert report.sessions[0].recovered and report.sessions[0].state == "closed"
    assert "closed, sealed by crash recovery: 2 segments" in report.render_text()


def test_unrecovered_shapes_are_problems(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    between = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(between, numbered(0, 30))
    between.abort()
    segment_files(between.path)[-1].unlink()
    header = SessionWriter.create(dirs, recipient)
    header.abort()
    seg = segment_files(header.path)[0]
    seg.write_bytes(seg.read_bytes()[:60])
    report = verify(dirs, identity)
    assert sorted((p.kind, p.file) for p in report.problems) == [
        ("unsealed", "000000.seg"),
        ("unsealed", "000004.seg"),
    ]
    assert all("unrecovered crash tail" in p.message for p in report.problems)
    recover_sessions(dirs, recipient)
    assert verify(dirs, identity).ok


def test_live_recording_is_info(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    live = SessionWriter.create(dirs, recipient)
    live.write_events(numbered(0, 5))
    live.flush()
    report = verify(dirs, identity)
    assert report.ok and report.exit_code == 0
    assert [(p.kind, p.file) for p in report.info] == [("recording", "000000.seg")]
    assert report.sessions[0].state == "recording"
    live.close()
    assert verify(dirs, identity).info == []


def test_bit_flips_in_a_whole_store_are_each_reported_once(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """A flipped bit anywhere in a middle segment is one problem, in that file (never a chain echo)."""
    w = closed_session(dirs, recipient)
    seg = segment_files(w.path)[2]
    data = seg.read_bytes()
    for byte in range(0, len(data), 7):
        seg.write_bytes(flip(data, 8 * byte + byte % 8))
        report = verify(dirs, identity, w.session_id)
        assert [p.file for p in report.problems] == ["000002.seg"], (byte, report.render_text())
        with pytest.raises(StoreError):
            read_session(dirs, w.session_id, identity)
    seg.write_bytes(data)
    assert verify(dirs, identity).ok


def test_a_far_index_is_one_missing_range(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = closed_session(dirs, recipient)
    segment_files(w.path)[-1].rename(w.path / "4294967295.seg")
    problems = verify(dirs, identity).problems
    assert [where(p) for p in problems][:1] == [("missing-segment", "000005.seg", None)]
    assert "000005.seg to 4294967294.seg are missing" in problems[0].message


def test_a_held_writer_lock_makes_a_cut_tail_look_live(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    """Not defended (docs/threat-model.md, Store): any process of the user can hold a session's
    writer lock, and a session whose meta.json says recording then reads as one being recorded.
    This pins what verify claims then, and that it is a problem again once the lock is gone."""
    from agent.store.writer import lock_session, unlock_session

    w = closed_session(dirs, recipient)
    meta_path = w.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"] = "recording"
    meta_path.write_text(json.dumps(meta))
    last = segment_files(w.path)[-2]  # sealed by rotation; drop the closing segment after it
    segment_files(w.path)[-1].unlink()
    data = last.read_bytes()
    last.write_bytes(data[: record_offsets(data)[-1]])  # and its SEAL
    fd = lock_session(w.path)
    try:
        report = verify(dirs, identity)
        assert report.ok and [(p.kind, p.file) for p in report.info] == [("recording", last.name)]
    finally:
        unlock_session(fd)
    problem = only_problem(verify(dirs, identity))
    assert (problem.kind, problem.file) == ("unsealed", last.name)
