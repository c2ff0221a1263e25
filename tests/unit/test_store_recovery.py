"""Crash recovery: the RECOVERY record and its vector, every crash shape, idempotence, live writers."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import pytest

from agent.errors import StoreCorrupt, StoreFormatError
from agent.events import KeyPress, WindowFocus
from agent.paths import Dirs
from agent.store import format as fmt
from agent.store.reader import list_sessions, read_session
from agent.store.recovery import recover_sessions
from agent.store.verify import verify
from agent.store.writer import SessionWriter
from tests.unit.store_helpers import (
    doc_vector,
    numbered,
    record_ends,
    record_offsets,
    segment_files,
    snapshot,
    spec_commit,
    store_dirs,
    write_one_per_record,
)
from tests.unit.test_store_format import IDENTITY, SESSION_NAME, kat_segment

#: Events of :func:`crashed`: 6 sealed segments of 6 records, then 4 records in the unsealed last one.
COUNT = 40


def crashed(dirs: Dirs, recipient: bytes) -> SessionWriter:
    """A session whose writer stopped without closing (what kill -9 leaves), several segments.

    The clock stands still, so meta.json keeps the counts of the session's start (0) however
    slowly the test runs: these tests cut records off by hand, which a real crash never does to
    records that meta.json already counts (verify checks that).
    """
    w = SessionWriter.create(dirs, recipient, segment_bytes=600, clock=lambda: 0.0)
    write_one_per_record(w, numbered(0, COUNT))
    w.abort()
    assert len(record_offsets(segment_files(w.path)[-1].read_bytes())) == 4
    return w


def meta(session: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((session / "meta.json").read_text())
    return data


def t_ns(dirs: Dirs, session_id: str, identity: bytes) -> list[int]:
    return [e.t_ns for e in read_session(dirs, session_id, identity).events]


# --- the RECOVERY record and its known-answer vector ----------------------------------------------


def recovery_vector() -> dict[str, str]:
    return doc_vector("format.md", "recovery known-answer vector")


RV = recovery_vector()


def test_recovery_vector_matches_docs() -> None:
    cut = kat_segment()[: int(RV["cut-length"])]
    assert spec_commit(cut).hex() == RV["prev-commit"]
    info = fmt.RecoveryInfo("unsealed", 0, 200, 175)
    assert info.encode().hex() == RV["recovery-record"]
    buf = io.BytesIO()
    commit = fmt.write_recovery_segment(
        buf,
        session_id=fmt.session_id_bytes(SESSION_NAME),
        index=1,
        prev_commit=bytes.fromhex(RV["prev-commit"]),
        recipient=fmt.public_from_private(IDENTITY),
        info=info,
        _ephemeral_private=bytes.fromhex(RV["ephemeral-secret"]),
        _file_key=bytes.fromhex(RV["file-key"]),
    )
    assert buf.getvalue().hex() == RV["segment"]
    assert commit.hex() == RV["commit"] == spec_commit(buf.getvalue()).hex()
    assert fmt.public_from_private(bytes.fromhex(RV["ephemeral-secret"])).hex() == RV["ephemeral-share"]
    contents = fmt.read_segment(buf.getvalue(), IDENTITY, name="000001.seg")
    assert contents.recovery == info and contents.records == []
    assert contents.sealed and contents.recovered and contents.closes_session


def test_recovery_vector_follows_the_spec_independently() -> None:
    """Decrypt the RECOVERY record and SEAL of the vector with the primitives and the spec's formulas."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)

    seg = bytes.fromhex(RV["segment"])
    assert seg[24:28] == (1).to_bytes(4, "big") and seg[28:60].hex() == RV["prev-commit"]
    eph = seg[60:92]
    recipient = fmt.public_from_private(IDENTITY)
    shared = X25519PrivateKey.from_private_bytes(IDENTITY).exchange(X25519PublicKey.from_public_bytes(eph))
    file_key = AESGCM(hkdf(shared, eph + recipient, b"optin/v1 wrap")).decrypt(
        bytes(12), seg[92:140], seg[:92]
    )
    header_hash = hashlib.sha256(seg[:140]).digest()
    payload = AESGCM(hkdf(file_key, header_hash, b"optin/v1 payload"))
    assert seg[140:145] == bytes.fromhex("0000002503")  # 21 + 16 bytes, type RECOVERY
    rec = payload.decrypt(bytes(12), seg[145:182], header_hash + bytes(8) + b"\x03")
    assert rec.hex() == RV["recovery-record"]
    assert seg[182:187] == bytes.fromhex("000000197f")
    seal = payload.decrypt(
        (1).to_bytes(11, "big") + b"\x01", seg[187:], header_hash + (1).to_bytes(8, "big") + b"\x7f"
    )
    assert seal == (1).to_bytes(8, "big") + b"\x03"


@pytest.mark.parametrize(
    ("shape", "segment", "original", "kept"),
    [
        ("unsealed", 0, 200, 139),
        ("unsealed", 0, 100, 150),
        ("sealed", 3, 500, 400),
        ("removed", 2, 140, 0),
        ("removed", 2, 50, 10),
        ("sideways", 0, 0, 0),
    ],
)
def test_inconsistent_recovery_records_are_refused(
    shape: str, segment: int, original: int, kept: int
) -> None:
    with pytest.raises(ValueError, match="invalid recovery record"):
        fmt.RecoveryInfo(shape, segment, original, kept)


def test_malformed_recovery_plaintext_is_a_format_error() -> None:
    with pytest.raises(StoreFormatError, match=r"x\.seg: RECOVERY record at offset 140 has 3 bytes"):
        fmt.RecoveryInfo.decode(b"abc", name="x.seg", offset=140)
    bad_shape = b"\x09" + fmt.RecoveryInfo("removed", 0, 0, 0).encode()[1:]
    with pytest.raises(StoreFormatError, match="malformed RECOVERY record at offset 140"):
        fmt.RecoveryInfo.decode(bad_shape, name="x.seg", offset=140)


def test_framing_scan_sees_shapes_without_a_key() -> None:
    data = kat_segment()
    full = fmt.scan_framing(data, name="s")
    assert (full.end, full.records, full.sealed, full.stop) == (240, 3, True, None)
    assert fmt.scan_framing(data[:200], name="s").end == 175
    assert fmt.scan_framing(data[:200], name="s").stop == "partial"
    assert fmt.scan_framing(data[:177], name="s").stop == "partial"
    assert fmt.scan_framing(data + b"\x00", name="s").stop == "after-seal"
    zeros = data[:175] + bytes(20)
    assert (fmt.scan_framing(zeros, name="s").end, fmt.scan_framing(zeros, name="s").stop) == (
        175,
        "bad-head",
    )
    rec = bytes.fromhex(RV["segment"])
    assert fmt.scan_framing(rec, name="s").is_recovery_segment
    assert not full.is_recovery_segment
    with pytest.raises(StoreFormatError, match="not an optin segment"):
        fmt.scan_framing(b"\x00" * 200, name="s")


def test_recovered_flag_only_on_recovery_segments() -> None:
    buf = io.BytesIO()
    w = fmt.SegmentWriter(
        buf,
        session_id=bytes(16),
        index=0,
        prev_commit=fmt.ZERO_COMMIT,
        recipient=fmt.public_from_private(IDENTITY),
    )
    w.append(fmt.EVENTS, b"x")
    w._seal(fmt.SEAL_RECOVERED | fmt.SEAL_CLOSES_SESSION)
    with pytest.raises(StoreFormatError, match="recovered flag but there is no RECOVERY record"):
        fmt.read_segment(buf.getvalue(), IDENTITY, name="s")

    buf = io.BytesIO()
    w = fmt.SegmentWriter(
        buf,
        session_id=bytes(16),
        index=0,
        prev_commit=fmt.ZERO_COMMIT,
        recipient=fmt.public_from_private(IDENTITY),
    )
    w._write_record(fmt.RECOVERY, fmt.RecoveryInfo("removed", 0, 0, 0).encode(), final=False)
    w._seal(fmt.SEAL_CLOSES_SESSION)
    with pytest.raises(StoreFormatError, match="recovery segment lacks a required flag"):
        fmt.read_segment(buf.getvalue(), IDENTITY, name="s")


def test_a_failed_record_is_never_read_as_a_shorter_segment() -> None:
    """A record that fails authentication is an error with its offset, never a valid prefix (P9)."""
    data = bytearray(kat_segment())
    data[190] ^= 0x01  # inside record 1's ciphertext
    with pytest.raises(StoreCorrupt, match="at offset 175") as caught:
        fmt.read_segment(bytes(data), IDENTITY, name="s")
    assert caught.value.offset == 175


# --- recovery of each crash shape -----------------------------------------------------------------


def test_unsealed_tail_is_cut_and_sealed(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    data = last.read_bytes()
    cut = len(data) - 7
    last.write_bytes(data[:cut])
    kept = record_ends(data[:cut])[-1]
    [report] = recover_sessions(dirs, recipient)
    assert (report.action, report.shape, report.original_bytes, report.kept_bytes) == (
        "recovered",
        "unsealed",
        cut,
        kept,
    )
    assert report.segment == int(last.stem) and report.lost_bytes == cut - kept
    assert last.stat().st_size == kept
    assert len(segment_files(w.path)) == report.segment + 2
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT - 1))
    data_read = read_session(dirs, w.session_id, identity)
    assert data_read.recovered and not data_read.all_sealed
    assert any("crash recovery cut" in p for p in data_read.problems)
    m = meta(w.path)
    assert m["state"] == "closed" and m["recovered"] is True and m["stopped_at"]
    assert m["recovery"] == {
        "shape": "unsealed",
        "segment": report.segment,
        "original_bytes": cut,
        "kept_bytes": kept,
        "recovered_at": m["recovery"]["recovered_at"],  # type: ignore[index]
    }
    assert m["segments"] == len(segment_files(w.path))
    assert m["bytes"] == sum(p.stat().st_size for p in segment_files(w.path))
    assert {i.id: i for i in list_sessions(dirs)}[w.session_id].state == "closed"
    assert verify(dirs, identity).ok


def test_counts_in_meta_are_kept(dirs: Dirs, recipient: bytes) -> None:
    w = crashed(dirs, recipient)
    before = meta(w.path)
    recover_sessions(dirs, recipient)
    after = meta(w.path)
    for key in ("records", "events", "frames", "dropped", "dropped_by_source", "started_at", "id", "schema"):
        assert after[key] == before[key]


def test_whole_records_only_nothing_cut(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    size = segment_files(w.path)[-1].stat().st_size
    [report] = recover_sessions(dirs, recipient)
    assert report.shape == "unsealed" and report.original_bytes == report.kept_bytes == size
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT))


def test_header_tail_is_removed(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    files = segment_files(w.path)
    files[-1].unlink()  # the previous segment is sealed: as if killed while creating the next one
    (w.path / files[-1].name).write_bytes(fmt.MAGIC[:5])
    events_before = len(read_session(dirs, w.session_id, identity).events)
    [report] = recover_sessions(dirs, recipient)
    assert (report.shape, report.segment, report.original_bytes, report.kept_bytes) == (
        "removed",
        int(files[-1].stem),
        5,
        0,
    )
    assert files[-1].stat().st_size == 212  # the recovery segment took its name
    data = read_session(dirs, w.session_id, identity)
    assert len(data.events) == events_before and data.recovered and data.all_sealed
    assert verify(dirs, identity).ok


def test_header_tail_of_segment_zero(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.abort()
    seg = segment_files(w.path)[0]
    seg.write_bytes(seg.read_bytes()[:100])
    [report] = recover_sessions(dirs, recipient)
    assert (report.shape, report.segment, report.original_bytes) == ("removed", 0, 100)
    data = read_session(dirs, w.session_id, identity)
    assert data.events == [] and data.recovered and data.segments == 1
    assert verify(dirs, identity).ok


def test_sealed_without_successor(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    files = segment_files(w.path)
    lost = len(read_session(dirs, w.session_id, identity).events)
    files[-1].unlink()  # killed between sealing and creating the next segment
    kept = len(read_session(dirs, w.session_id, identity).events)
    assert kept < lost
    [report] = recover_sessions(dirs, recipient)
    assert report.shape == "sealed" and report.segment == int(files[-2].stem)
    assert report.original_bytes == report.kept_bytes == files[-2].stat().st_size
    assert t_ns(dirs, w.session_id, identity) == list(range(kept))
    assert read_session(dirs, w.session_id, identity).all_sealed
    assert verify(dirs, identity).ok


def test_killed_between_closing_seal_and_meta(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events(numbered(0, 5))
    w.close({"events": 2})
    m = meta(w.path)
    m["state"], m["stopped_at"] = "closing", None  # the final meta.json write never happened
    (w.path / "meta.json").write_text(json.dumps(m))
    before = snapshot(w.path)
    [report] = recover_sessions(dirs, recipient)
    assert report.action == "finalized"
    after = snapshot(w.path)
    assert {k: v for k, v in after.items() if k != "meta.json"} == {
        k: v for k, v in before.items() if k != "meta.json"
    }
    m = meta(w.path)
    assert m["state"] == "closed" and "recovered" not in m and m["dropped"] == 2
    data = read_session(dirs, w.session_id, identity)
    assert data.problems == [] and not data.recovered and len(data.events) == 5


def test_killed_during_close_before_the_seal(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events(numbered(0, 5))
    w.flush()
    m = meta(w.path)
    m["state"] = "closing"
    (w.path / "meta.json").write_text(json.dumps(m))
    w.abort()
    [report] = recover_sessions(dirs, recipient)
    assert report.action == "recovered" and report.shape == "unsealed"
    assert t_ns(dirs, w.session_id, identity) == list(range(5))


def test_killed_before_any_segment_or_meta(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    session = dirs.sessions / "20261127T213000Z-1a2b3c4d"
    session.mkdir(parents=True, mode=0o700)
    [report] = recover_sessions(dirs, recipient)
    assert (report.action, report.shape, report.segment, report.original_bytes) == (
        "recovered",
        "removed",
        0,
        0,
    )
    m = meta(session)
    assert m["state"] == "closed" and m["started_at"] == "2026-11-27T21:30:00Z" and m["records"] == 0
    data = read_session(dirs, session.name, identity)
    assert data.events == [] and data.recovered
    assert verify(dirs, identity).ok


def test_killed_before_meta_with_a_header(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.abort()
    (w.path / "meta.json").unlink()
    [report] = recover_sessions(dirs, recipient)
    assert report.shape == "unsealed" and report.kept_bytes == fmt.HEADER_SIZE
    assert read_session(dirs, w.session_id, identity).events == []
    assert verify(dirs, identity).ok


def test_interrupted_recovery_is_completed(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    """A recovery killed after its segment was renamed into place, before meta.json."""
    w = crashed(dirs, recipient)
    recover_sessions(dirs, recipient)
    m = meta(w.path)
    m["state"] = "recording"
    del m["recovered"], m["recovery"]
    (w.path / "meta.json").write_text(json.dumps(m))
    (w.path / ".recovery-0123abcd.tmp").write_bytes(b"half")
    (w.path / ".meta.json.tmp-0123abcd").write_bytes(b"{")
    segments = {p.name: p.read_bytes() for p in segment_files(w.path)}
    [report] = recover_sessions(dirs, recipient)
    assert report.action == "finalized"
    assert {p.name: p.read_bytes() for p in segment_files(w.path)} == segments
    assert not [p for p in w.path.iterdir() if p.name.startswith(".")]
    assert meta(w.path)["recovered"] is True and meta(w.path)["state"] == "closed"
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT))


def test_recovery_is_idempotent(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    crashed(dirs, recipient)
    crashed(dirs, recipient)
    assert len(recover_sessions(dirs, recipient)) == 2
    before = snapshot(dirs.sessions)
    assert recover_sessions(dirs, recipient) == []
    assert snapshot(dirs.sessions) == before


def test_live_writer_is_never_touched(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    live = SessionWriter.create(dirs, recipient)
    live.write_events(numbered(0, 10))
    live.flush(force_fsync=True)
    dead = crashed(dirs, recipient)
    before = snapshot(live.path)
    reports = recover_sessions(dirs, recipient)
    assert [r.session_id for r in reports] == [dead.session_id]
    assert snapshot(live.path) == before
    live.write_events(numbered(10, 5))
    live.close()
    assert t_ns(dirs, live.session_id, identity) == list(range(15))
    assert not read_session(dirs, live.session_id, identity).recovered


def test_closed_sessions_are_not_reported(dirs: Dirs, recipient: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.close()
    assert recover_sessions(dirs, recipient) == []
    assert recover_sessions(store_dirs(dirs.data / "nowhere"), recipient) == []


def test_non_crash_shapes_are_left_alone(dirs: Dirs, recipient: bytes) -> None:
    gap = crashed(dirs, recipient)
    segment_files(gap.path)[1].unlink()
    after_seal = SessionWriter.create(dirs, recipient)
    after_seal.write_events(numbered(0, 3))
    after_seal._segment.seal()  # a sealed last segment ...
    after_seal.abort()
    seg = segment_files(after_seal.path)[-1]
    seg.write_bytes(seg.read_bytes() + b"\x00")  # ... with a byte after its SEAL
    normal = crashed(dirs, recipient)
    bad_meta = crashed(dirs, recipient)
    (bad_meta.path / "meta.json").write_text("{")
    other = crashed(dirs, recipient)
    segment_files(other.path)[-1].write_bytes(segment_files(gap.path)[-1].read_bytes())
    before = snapshot(dirs.sessions)
    reports = {r.session_id: r for r in recover_sessions(dirs, recipient)}
    for session, why in [
        (gap, "not contiguous"),
        (after_seal, "bytes follow its SEAL"),
        (bad_meta, "meta.json is unreadable"),
        (other, "header of another session"),
    ]:
        assert reports[session.session_id].action == "skipped"
        assert why in (reports[session.session_id].problem or "")
        assert {k: v for k, v in before.items() if k.startswith(session.session_id)} == {
            k: v for k, v in snapshot(dirs.sessions).items() if k.startswith(session.session_id)
        }
    assert reports[normal.session_id].action == "recovered"


def test_recovery_never_raises(dirs: Dirs, recipient: bytes, caplog: pytest.LogCaptureFixture) -> None:
    crashed(dirs, recipient)
    with caplog.at_level(logging.WARNING, logger="agent.store.recovery"):
        [report] = recover_sessions(dirs, bytes(32))  # a low-order key: the recovery segment cannot be made
    assert report.action == "skipped" and "recovery failed: KeyError_" in (report.problem or "")
    assert "was not recovered" in caplog.text


def test_no_content_in_reports_or_logs(
    dirs: Dirs, recipient: bytes, identity: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events(
        [
            KeyPress(t_ns=1, char="Q", name=None, vk=81),
            WindowFocus(t_ns=2, title="CANARY-TITLE-5150", app_class="canary-app", pid=1),
        ]
    )
    w.flush()
    w.abort()
    with caplog.at_level(logging.DEBUG):
        reports = recover_sessions(dirs, recipient)
        text = verify(dirs, identity).render_text() + verify(dirs, identity).to_json()
    blob = json.dumps([r.to_dict() for r in reports]) + text + caplog.text
    blob += "".join(p.read_text() for p in w.path.glob("*.json"))
    assert "CANARY" not in blob and "canary" not in blob
    assert all(b"CANARY" not in p.read_bytes() for p in w.path.iterdir() if p.is_file())


def test_modes_of_recovery_files(dirs: Dirs, recipient: bytes) -> None:
    w = crashed(dirs, recipient)
    old = os.umask(0)
    try:
        recover_sessions(dirs, recipient)
    finally:
        os.umask(old)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in w.path.iterdir())


# --- reading a recovered session ------------------------------------------------------------------


def test_a_flipped_bit_before_the_cut_is_a_problem_with_file_and_offset(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """Recovery committed to where it cut: every record before the cut must authenticate (P9)."""
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    last.write_bytes(last.read_bytes()[:-7])  # killed in the middle of its last record
    recover_sessions(dirs, recipient)
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT - 1))
    original = last.read_bytes()
    offsets = record_offsets(original)
    assert len(offsets) == 3
    for record in offsets:
        data = bytearray(original)
        data[record + 20] ^= 0x04  # inside the record's ciphertext: the commit does not cover it
        last.write_bytes(bytes(data))
        report = verify(dirs, identity)
        assert not report.ok and report.exit_code == 1
        [problem] = report.problems
        assert (problem.kind, problem.file, problem.offset) == ("authentication", last.name, record)
        assert f"{last.name}: segment authentication failed at offset {record}" in problem.message
        assert not any("torn write" in note.message for note in report.info)
        with pytest.raises(StoreCorrupt, match=f"at offset {record}"):
            read_session(dirs, w.session_id, identity)  # never the records before it, silently
    last.write_bytes(original)
    assert verify(dirs, identity).ok


def test_a_torn_record_left_by_the_crash_is_a_problem_too(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """Garbage in a complete record before recovery: recovery cannot authenticate, so it keeps the
    record; readers then say where the bytes are wrong instead of dropping what follows."""
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    data = bytearray(last.read_bytes())
    offsets = record_offsets(bytes(data))
    data[offsets[-1] + 10] ^= 0xFF  # garbage inside the last record's ciphertext
    last.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        read_session(dirs, w.session_id, identity)  # before recovery: an error
    recover_sessions(dirs, recipient)
    with pytest.raises(
        StoreCorrupt, match=f"{last.name}: segment authentication failed at offset {offsets[-1]}"
    ):
        read_session(dirs, w.session_id, identity)
    report = verify(dirs, identity)
    assert report.exit_code == 1
    assert [(p.kind, p.file, p.offset) for p in report.problems] == [
        ("authentication", last.name, offsets[-1])
    ]


def test_a_record_whose_tag_is_all_zero_is_cut_as_never_written(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """A power loss can keep a file's new length but not its last block: the zeros are cut."""
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    data = last.read_bytes()
    ends = record_ends(data)
    zeroed = data[: ends[-2] + 8] + bytes(len(data) - ends[-2] - 8)  # the last record's body and tag
    last.write_bytes(zeroed)
    [report] = recover_sessions(dirs, recipient)
    assert (report.shape, report.original_bytes, report.kept_bytes) == ("unsealed", len(data), ends[-2])
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT - 1))
    assert verify(dirs, identity).ok


def test_the_recovery_note_says_what_is_known_and_no_more(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    last.write_bytes(last.read_bytes()[:-7])
    [report] = recover_sessions(dirs, recipient)
    [note] = verify(dirs, identity).info
    assert note.kind == "recovered" and note.file == segment_files(w.path)[-1].name
    assert note.message.endswith(
        f"crash recovery cut {last.name} from {report.original_bytes} to {report.kept_bytes} bytes "
        f"and closed the session: the {report.lost_bytes} bytes cut, and anything recorded after them, "
        "are lost; the store cannot tell how much that was"
    )
    assert "second" not in note.message


def test_a_forged_crash_is_not_detected_and_claims_nothing_more(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """Someone with write access and the public key cuts a closed session and seals it as recovery
    would: a recorder with only the public key cannot tell (docs/threat-model.md, Store); the
    messages then say only what the store shows."""
    w = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(w, numbered(0, COUNT))
    w.close()
    files = segment_files(w.path)
    for file in files[3:]:
        file.unlink()  # the end of the session, gone
    target = files[2]
    cut = record_ends(target.read_bytes())[1]
    target.write_bytes(target.read_bytes()[:cut])
    fmt.write_recovery_segment(
        w.path / fmt.segment_name(3),
        session_id=fmt.session_id_bytes(w.session_id),
        index=3,
        prev_commit=spec_commit(target.read_bytes()),
        recipient=recipient,
        info=fmt.RecoveryInfo("unsealed", 2, cut + 200, cut),
    )
    [problem] = verify(dirs, identity).problems  # meta.json still counts the whole session
    assert (problem.kind, problem.file) == ("meta", "meta.json")
    m = meta(w.path)
    m["records"], m["events"], m["recovered"] = 0, {}, True  # the forger edits it too
    (w.path / "meta.json").write_text(json.dumps(m))
    report = verify(dirs, identity)
    assert report.ok  # undetectable, and documented as such
    [note] = report.info
    assert "at most" not in note.message and "the store cannot tell how much that was" in note.message
    assert t_ns(dirs, w.session_id, identity) == list(range(14))


def test_a_forged_deeper_cut_shows_when_meta_json_counted_more(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """meta.json counts only records the writer had fsynced: a recovered session must hold them."""
    w = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(w, numbered(0, 20))
    w.flush(force_fsync=True)  # meta.json: 20 records, all durable
    write_one_per_record(w, numbered(20, 3))
    w.abort()
    recover_sessions(dirs, recipient)
    assert verify(dirs, identity).ok  # 23 >= 20
    files = segment_files(w.path)
    recovery, cut = files[-1], files[-2]
    recovery.unlink()
    cut.unlink()
    target = files[-3]  # sealed by rotation; seal it "as recovery would" one segment earlier
    fmt.write_recovery_segment(
        w.path / cut.name,
        session_id=fmt.session_id_bytes(w.session_id),
        index=int(cut.stem),
        prev_commit=spec_commit(target.read_bytes()),
        recipient=recipient,
        info=fmt.RecoveryInfo("sealed", int(target.stem), target.stat().st_size, target.stat().st_size),
    )
    report = verify(dirs, identity)
    [problem] = report.problems
    assert (problem.kind, problem.file) == ("meta", "meta.json")
    assert "says 20 records and 20 events were written before the crash" in problem.message


def test_meta_json_saying_recovered_does_not_switch_off_the_count_check(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events(numbered(0, 5))
    w.close()
    m = meta(w.path)
    m["recovered"], m["records"] = True, 9
    (w.path / "meta.json").write_text(json.dumps(m))
    [problem] = verify(dirs, identity).problems
    assert (problem.kind, problem.file) == ("meta", "meta.json") and "says 9 records" in problem.message
    m["deleted"] = [{"segment": 1, "segments": 1, "bytes": 1, "deleted_at": "2026-11-27T21:30:00Z"}]
    (w.path / "meta.json").write_text(json.dumps(m))
    assert [p.kind for p in verify(dirs, identity).problems] == ["meta"]  # nor does "deleted"


def test_a_missing_meta_json_never_makes_recovery_break_a_closed_session(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    one = SessionWriter.create(dirs, recipient)
    one.write_events(numbered(0, 5))
    one.close()
    many = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(many, numbered(0, COUNT))
    many.close()
    for w in (one, many):
        (w.path / "meta.json").unlink()
    before = snapshot(dirs.sessions)
    reports = recover_sessions(dirs, recipient)
    assert {r.session_id: r.action for r in reports} == {
        one.session_id: "skipped",
        many.session_id: "skipped",
    }
    assert all("meta.json is missing" in (r.problem or "") for r in reports)
    assert snapshot(dirs.sessions) == before
    for w, count in ((one, 5), (many, COUNT)):
        assert t_ns(dirs, w.session_id, identity) == list(range(count))
    report = verify(dirs, identity)
    assert [(p.kind, p.file) for p in report.problems] == [("meta", "meta.json")] * 2
    assert all("restore it from a backup" in p.message for p in report.problems)
    # a header appended after the closing segment does not fool it either
    (many.path / fmt.segment_name(len(segment_files(many.path)))).write_bytes(fmt.MAGIC)
    [report_many] = [r for r in recover_sessions(dirs, recipient) if r.session_id == many.session_id]
    assert report_many.action == "skipped"


def test_a_missing_meta_json_with_an_open_end_is_recovered(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    w = crashed(dirs, recipient)
    (w.path / "meta.json").unlink()
    assert "run optin run to recover" in verify(dirs, identity).problems[-1].message
    [report] = recover_sessions(dirs, recipient)
    assert report.action == "recovered" and report.shape == "unsealed"
    assert t_ns(dirs, w.session_id, identity) == list(range(COUNT))
    assert verify(dirs, identity).ok


def test_changes_after_recovery_break_the_chain(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    recover_sessions(dirs, recipient)
    cut = segment_files(w.path)[-2]
    original = cut.read_bytes()
    for changed in (original + b"\x00", original[:-1], original[:-40]):
        cut.write_bytes(changed)
        with pytest.raises((StoreCorrupt, StoreFormatError)):
            read_session(dirs, w.session_id, identity)
        assert not verify(dirs, identity).ok
    cut.write_bytes(original)
    assert verify(dirs, identity).ok


def test_recovery_segment_must_be_last_and_match(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    w = crashed(dirs, recipient)
    recover_sessions(dirs, recipient)
    files = segment_files(w.path)
    rec = files[-1]
    rec_bytes = rec.read_bytes()
    # a recovery segment whose record names another segment, with a valid chain otherwise
    rec.unlink()
    info = fmt.RecoveryInfo("unsealed", int(files[-2].stem), 999, 150)
    fmt.write_recovery_segment(
        rec,
        session_id=fmt.session_id_bytes(w.session_id),
        index=int(rec.stem),
        prev_commit=spec_commit(files[-2].read_bytes()),
        recipient=recipient,
        info=info,
    )
    with pytest.raises(StoreCorrupt, match=rf"RECOVERY record does not match {files[-2].name}"):
        read_session(dirs, w.session_id, identity)
    [problem] = verify(dirs, identity).problems
    assert (problem.kind, problem.file) == ("chain", rec.name)
    rec.unlink()
    rec.write_bytes(rec_bytes)
    # anything after a recovery segment
    extra = w.path / fmt.segment_name(int(rec.stem) + 1)
    fmt.write_recovery_segment(
        extra,
        session_id=fmt.session_id_bytes(w.session_id),
        index=int(rec.stem) + 1,
        prev_commit=spec_commit(rec_bytes),
        recipient=recipient,
        info=fmt.RecoveryInfo("sealed", int(rec.stem), len(rec_bytes), len(rec_bytes)),
    )
    with pytest.raises(StoreCorrupt):
        read_session(dirs, w.session_id, identity)
    problems = verify(dirs, identity).problems
    assert ("chain", rec.name) in {(p.kind, p.file) for p in problems}
    assert any("recovery segment is followed by more segments" in p.message for p in problems)


def test_a_recovery_record_that_misstates_the_cut_segment_breaks_the_chain(
    dirs: Dirs, recipient: bytes, identity: bytes
) -> None:
    """Recovery says "sealed" exactly when the segment it closed after ends with a SEAL."""
    w = SessionWriter.create(dirs, recipient, segment_bytes=600)
    write_one_per_record(w, numbered(0, 12))
    w.abort()
    *_, sealed, unsealed = segment_files(w.path)
    unsealed.unlink()
    size = sealed.stat().st_size
    fmt.write_recovery_segment(
        w.path / unsealed.name,
        session_id=fmt.session_id_bytes(w.session_id),
        index=int(unsealed.stem),
        prev_commit=spec_commit(sealed.read_bytes()),
        recipient=recipient,
        info=fmt.RecoveryInfo("unsealed", int(sealed.stem), size, size),  # it is sealed
    )
    [problem] = verify(dirs, identity).problems
    assert (problem.kind, problem.file) == ("chain", unsealed.name)
    assert "RECOVERY record does not match" in problem.message


def test_a_cut_segment_must_end_with_a_whole_record(dirs: Dirs, recipient: bytes, identity: bytes) -> None:
    """Recovery never leaves part of a record; a recovery segment that binds one is refused."""
    w = crashed(dirs, recipient)
    last = segment_files(w.path)[-1]
    data = last.read_bytes()[:-7]
    last.write_bytes(data)
    fmt.write_recovery_segment(
        w.path / fmt.segment_name(int(last.stem) + 1),
        session_id=fmt.session_id_bytes(w.session_id),
        index=int(last.stem) + 1,
        prev_commit=spec_commit(data),
        recipient=recipient,
        info=fmt.RecoveryInfo("unsealed", int(last.stem), len(data), len(data)),
    )
    m = meta(w.path)
    m["state"] = "closed"
    (w.path / "meta.json").write_text(json.dumps(m))
    tail = record_ends(data)[-1]
    [problem] = verify(dirs, identity).problems
    assert (problem.kind, problem.file, problem.offset) == ("truncated", last.name, tail)
    with pytest.raises(StoreCorrupt, match="not a whole record"):
        read_session(dirs, w.session_id, identity)
