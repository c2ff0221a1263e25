"""Deletion (P8): crypto-shredding, budget and retention, delete-last with its tombstone, the CLI."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import cli
from agent.backends import select_backend
from agent.control import Recorder
from agent.errors import NotFound, StoreCorrupt, StoreError, StoreFormatError, UsageError
from agent.events import Marker, PointerMove
from agent.paths import Dirs, dirs, write_private_file
from agent.store import format as fmt
from agent.store import keys, retention, safe_fs
from agent.store.reader import list_sessions, load_meta, read_session
from agent.store.retention import SessionStat, delete_last, enforce, plan, shred_segment, shred_session
from agent.store.safe_fs import StoreDir, UnsafeEntry
from agent.store.verify import verify
from agent.store.writer import SessionWriter, utc_timestamp, write_meta
from tests.unit.store_helpers import doc_vector, spec_commit
from tests.unit.test_store_format import IDENTITY, SESSION_NAME, kat_segment

NOW = 1_900_000_000.0  # a fixed "now" (2030): every time below is relative to it


@pytest.fixture
def store() -> tuple[Dirs, bytes, bytes]:
    """The test's OPTIN_HOME dirs with a key pair: ``(dirs, recipient, identity)``."""
    d = dirs()
    keys.init_keys(d)
    return d, keys.load_recipient(d), keys.load_identity(d)


def make_session(d: Dirs, recipient: bytes, *, start: float, minutes: int, close: bool = True) -> Path:
    """A session that started at wall time ``start``: one segment per minute, events every 10 s.

    Event ``t_ns`` are monotonic with the session_start marker's anchor ``mono_ns = 0``,
    ``wall_ns = start``; segment ``i`` ends (mtime) 55 s into minute ``i``.
    """
    clock = [0.0]
    w = SessionWriter.create(d, recipient, clock=lambda: clock[0])
    w.write_events([Marker(0, "session_start", {"mono_ns": 0, "wall_ns": int(start * 1e9)})])
    for m in range(minutes):
        clock[0] = m * 60.0
        w.write_events([PointerMove(t_ns=int((m * 60 + s) * 1e9), x=m, y=s) for s in range(1, 60, 10)])
        w.flush()
    if close:
        w.close()
    meta = load_meta(w.path)
    assert meta is not None
    meta["started_at"] = utc_timestamp(start)
    write_meta(w.path, meta)
    for i, seg in enumerate(sorted(w.path.glob("*.seg"))):
        os.utime(seg, (start + 60 * i + 55, start + 60 * i + 55))
    if not close:
        w.abort()
    return w.path


def wall_times(d: Dirs, sid: str, identity: bytes) -> list[float]:
    """Wall-clock seconds of every event, through the session_start anchor."""
    events = read_session(d, sid, identity).events
    start = next(e for e in events if isinstance(e, Marker) and e.marker == "session_start")
    mono, wall = start.detail["mono_ns"], start.detail["wall_ns"]
    return [(wall + e.t_ns - mono) / 1e9 for e in events]


# --- the pure plan -----------------------------------------------------------------------------------


DAY = 86400.0


def test_plan_deletes_by_age_oldest_first() -> None:
    stats = [
        SessionStat("b", NOW - 40 * DAY, 10),
        SessionStat("a", NOW - 50 * DAY, 10),
        SessionStat("c", NOW - 1 * DAY, 10),
    ]
    assert plan(stats, max_bytes=1000, max_age_days=30, now=NOW) == ["a", "b"]


def test_plan_deletes_oldest_until_within_budget() -> None:
    stats = [SessionStat(str(i), NOW - i * 3600, 100) for i in range(5)]  # "4" is the oldest
    assert plan(stats, max_bytes=250, max_age_days=30, now=NOW) == ["4", "3", "2"]
    assert plan(stats, max_bytes=500, max_age_days=30, now=NOW) == []


def test_plan_never_deletes_kept_or_alive_sessions_but_counts_their_bytes() -> None:
    stats = [
        SessionStat("open", NOW - 90 * DAY, 1000),
        SessionStat("live", NOW - 80 * DAY, 1000, alive=True),
        SessionStat("old", NOW - 70 * DAY, 10),
        SessionStat("new", NOW - 60, 10),
    ]
    # over budget because of the two it may not touch: it deletes every other one, oldest first
    assert plan(stats, max_bytes=100, max_age_days=30, now=NOW, keep={"open"}) == ["old", "new"]


def test_plan_unknown_start_counts_as_oldest() -> None:
    stats = [SessionStat("x", None, 1), SessionStat("y", NOW, 1)]
    assert plan(stats, max_bytes=10, max_age_days=30, now=NOW) == ["x"]


def test_defaults_are_the_issue_s() -> None:
    assert retention.MAX_BYTES == 2 * 1024**3
    assert retention.MAX_AGE_DAYS == 30
    assert retention.ENFORCE_EVERY_S == 60


# --- crypto-shredding ---------------------------------------------------------------------------------


def test_shred_overwrites_the_key_material_before_unlink(
    store: tuple[Dirs, bytes, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, recipient, identity = store
    path = make_session(d, recipient, start=time.time() - 300, minutes=2)
    seg = sorted(path.glob("*.seg"))[0]
    before = seg.read_bytes()
    seen: dict[str, bytes] = {}
    real_unlink = os.unlink

    def spy(target: str, *args: object, dir_fd: int | None = None, **kwargs: object) -> None:
        fd = os.open(target, os.O_RDONLY, dir_fd=dir_fd)  # what is on disk just before the unlink
        with os.fdopen(fd, "rb") as fh:
            seen[target] = fh.read()
        real_unlink(target, *args, dir_fd=dir_fd, **kwargs)

    monkeypatch.setattr(os, "unlink", spy)
    assert shred_segment(seg) == len(before)
    assert not seg.exists()
    after = seen[seg.name]
    assert len(after) == len(before)
    assert after[:60] == before[:60] and after[140:] == before[140:]
    assert after[60:92] != before[60:92] and after[92:140] != before[92:140]
    with pytest.raises(StoreCorrupt, match="authentication failed"):
        fmt.read_segment(after, identity, name="x")


def test_shred_segment_refuses_a_link_and_a_hard_link(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path
) -> None:
    """Bytes 60..139 are overwritten only in a regular file with one name inside the folder given."""
    d, recipient, _ = store
    path = make_session(d, recipient, start=time.time() - 300, minutes=2)
    outside = tmp_path / "outside.bin"
    original = os.urandom(300)
    outside.write_bytes(original)
    seg = path / "000000.seg"
    seg.unlink()
    seg.symlink_to(outside)
    with pytest.raises(UnsafeEntry, match=r"000000\.seg is a symbolic link \(to .*outside\.bin\)") as err:
        shred_segment(seg)
    assert "optin never follows links" in str(err.value) and "Fix:" in str(err.value)
    assert [(r.kind, r.target) for r in err.value.refused] == [("symbolic link", str(outside))]
    seg.unlink()
    os.link(outside, seg)
    with pytest.raises(UnsafeEntry, match=r"has 2 names \(hard links\)"):
        shred_segment(seg)
    assert outside.read_bytes() == original and seg.exists()
    linked_dir = tmp_path / "linked"
    linked_dir.symlink_to(path, target_is_directory=True)
    with pytest.raises(UnsafeEntry, match="linked is a symbolic link"):
        shred_segment(linked_dir / "000001.seg")  # its folder is not followed either
    assert (path / "000001.seg").exists()


def test_the_store_is_acted_on_by_directory_descriptor_on_linux() -> None:
    if sys.platform == "linux":
        assert safe_fs.DIR_FD  # the lstat fallback is for platforms without them (Windows)


def _mkfifo(path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("no FIFOs on Windows")
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("make", "kind", "fix"),
    [
        (_mkfifo, "FIFO (named pipe)", "rm "),
        (lambda p: p.mkdir(), "folder", "rm -r "),
        (lambda p: p.symlink_to(Path(__file__)), "symbolic link", "remove the link"),
    ],
)
def test_a_session_keeps_what_it_refused_and_says_so(
    store: tuple[Dirs, bytes, bytes], make: Callable[[Path], object], kind: str, fix: str
) -> None:
    d, recipient, _ = store
    path = make_session(d, recipient, start=time.time() - 300, minutes=2)
    make(path / "odd.seg")
    with pytest.raises(UnsafeEntry) as err:
        shred_session(d, path.name)
    text = str(err.value)
    assert text.startswith(f"session {path.name} was not deleted completely (2 segments")
    assert f"{path / 'odd.seg'} is a {kind}" in text and fix in text and "then run the command again" in text
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "odd.seg"]  # listed until fixed
    assert isinstance(err.value.partial, retention.Deleted) and err.value.partial.segments == 2
    assert [s.id for s in list_sessions(d)] == [path.name]


def test_delete_last_does_the_rest_and_reports_what_it_left(
    store: tuple[Dirs, bytes, bytes], tmp_path: Path
) -> None:
    d, recipient, _ = store
    now = time.time()
    _, straddling, recent = three_sessions(d, recipient, now)
    outside = tmp_path / "moved"
    recent.rename(outside)
    recent.symlink_to(outside, target_is_directory=True)
    with pytest.raises(UnsafeEntry) as err:
        delete_last(d, 600, now=now)
    report = err.value.partial
    assert isinstance(report, retention.DeleteReport)
    assert [t.session_id for t in report.trimmed] == [straddling.name] and report.deleted == []
    assert str(err.value).startswith("deleted 5 segments (")
    assert f"{recent} is a symbolic link (to {outside}) where optin keeps a session folder" in str(err.value)
    assert len(list(outside.glob("*.seg"))) == 3


def test_shred_session_removes_everything_and_refuses_a_live_writer(
    store: tuple[Dirs, bytes, bytes],
) -> None:
    d, recipient, _ = store
    path = make_session(d, recipient, start=time.time() - 300, minutes=3)
    deleted = shred_session(d, path.name)
    assert (deleted.segments, deleted.reason) == (3, "volunteer") and deleted.bytes > 0
    assert not path.exists() and list_sessions(d) == []
    live = SessionWriter.create(d, recipient)
    with pytest.raises(StoreError, match="held by another writer"):
        shred_session(d, live.session_id)
    assert live.path.exists()
    live.close()
    with pytest.raises(NotFound):
        shred_session(d, path.name)
    with pytest.raises(UsageError):
        shred_session(d, "../keys")


@pytest.mark.skipif(not safe_fs.WRITER_LOCK, reason="no writer lock on this platform (Windows)")
def test_shred_all_goes_on_past_a_held_session_and_names_it(store: tuple[Dirs, bytes, bytes]) -> None:
    """purge, opt-out and uninstall --purge: a session whose writer lock another process holds is
    left and named with why, after every other session was shredded (none is skipped unnamed)."""
    from agent.store.writer import lock_session, unlock_session

    d, recipient, _ = store
    now = time.time()
    paths = [make_session(d, recipient, start=now - 900 + 60 * i, minutes=2) for i in range(3)]
    held = sorted(paths)[0]  # the first shred_all meets: every later one must still be shredded
    fd = lock_session(held)  # another descriptor holds its writer lock, as a live recorder does
    try:
        with pytest.raises(UnsafeEntry) as err:
            retention.shred_all(d)
    finally:
        unlock_session(fd)
    text = str(err.value)
    assert text.startswith(f"2 sessions were deleted, but not everything in {d.sessions}")
    assert f"session {held.name} was not deleted: session directory {held} is held by another writer" in text
    assert "Fix:" in text and err.value.refused == ()
    partial = err.value.partial
    assert isinstance(partial, list)
    assert sorted(x.session_id for x in partial) == sorted(p.name for p in paths if p != held)
    assert [p.exists() for p in paths] == [p == held for p in paths]
    assert len(list(held.glob("*.seg"))) == 2  # left whole
    assert [x.session_id for x in retention.shred_all(d)] == [held.name]  # once released, it goes
    assert list_sessions(d) == []


# --- enforce -------------------------------------------------------------------------------------------


def test_enforce_applies_age_and_budget_but_spares_kept_and_live(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, _ = store
    now = time.time()
    old = make_session(d, recipient, start=now - 40 * DAY, minutes=1)
    mid = make_session(d, recipient, start=now - 2 * DAY, minutes=2)
    new = make_session(d, recipient, start=now - DAY, minutes=2)
    kept = make_session(d, recipient, start=now - 50 * DAY, minutes=1)
    live = SessionWriter.create(d, recipient)
    try:
        sizes = {p.name: sum(f.stat().st_size for f in p.glob("*.seg")) for p in (mid, new, kept, live.path)}
        budget = sum(sizes.values()) - 1  # without the old one, one byte over: the middle one goes
        done = enforce(d, max_bytes=budget, now=now, keep={kept.name})
        assert [(x.session_id, x.reason) for x in done] == [(old.name, "age"), (mid.name, "budget")]
        assert {s.id for s in list_sessions(d)} == {new.name, kept.name, live.session_id}
    finally:
        live.close()


def test_recorder_start_enforces_retention_before_the_new_session(
    consented: tuple[Dirs, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, study = consented
    old = make_session(d, keys.load_recipient(d), start=time.time() - 45 * DAY, minutes=1)
    calls: list[set[str]] = []
    real = retention.enforce

    def spy(dirs_: Dirs, **kw: object) -> list[retention.Deleted]:
        calls.append(set(kw["keep"]))  # type: ignore[call-overload]
        return real(dirs_, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(retention, "enforce", spy)  # the module the recorder calls
    monkeypatch.setattr(retention, "ENFORCE_EVERY_S", 0.0)
    rec = Recorder(d, select_backend("fake"), study)  # type: ignore[arg-type]
    rec.start()
    try:
        assert not old.exists()
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        rec.stop()
    assert calls[0] == set()
    assert calls[1] == {rec.session_id}
    assert [s.id for s in list_sessions(d)] == [rec.session_id]


def test_retention_failure_is_logged_never_fatal(
    consented: tuple[Dirs, object], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    d, study = consented

    def boom(*_a: object, **_k: object) -> list[retention.Deleted]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retention, "enforce", boom)
    rec = Recorder(d, select_backend("fake"), study)  # type: ignore[arg-type]
    rec.start()
    rec.stop()
    assert rec.state == "stopped"
    assert "budget and retention failed (No space left on device)" in caplog.text


# --- delete-last ---------------------------------------------------------------------------------------


def three_sessions(d: Dirs, recipient: bytes, now: float) -> tuple[Path, Path, Path]:
    early = make_session(d, recipient, start=now - 7200, minutes=10)
    straddling = make_session(d, recipient, start=now - 1200, minutes=15)
    recent = make_session(d, recipient, start=now - 240, minutes=3)
    return early, straddling, recent


def test_delete_last_removes_every_event_in_the_range(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    early, straddling, recent = three_sessions(d, recipient, now)
    early_before = wall_times(d, early.name, identity)
    report = delete_last(d, 600, now=now)

    assert [x.session_id for x in report.deleted] == [recent.name] and not recent.exists()
    assert [t.session_id for t in report.trimmed] == [straddling.name]
    trim = report.trimmed[0]
    assert (trim.segments, trim.kept_segments) == (5, 10)
    assert report.segments == 3 + 5 and report.bytes > 0
    times = wall_times(d, straddling.name, identity)
    assert times and max(times) < now - 600  # nothing inside the range survives
    assert max(times) > now - 600 - 120  # ...and whole segments remove at most about a minute more
    assert wall_times(d, early.name, identity) == early_before
    meta = load_meta(straddling)
    assert meta is not None and meta["state"] == "closed" and meta["segments"] == 11
    assert meta["deleted"][0]["segments"] == 5
    assert json.loads(json.dumps(report.to_dict()))["segments"] == 8


def test_tombstoned_session_verifies_and_still_catches_tampering(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    _, straddling, _ = three_sessions(d, recipient, now)
    delete_last(d, 600, now=now)
    report = verify(d, identity)
    assert report.ok, report.render_text()
    notes = [p for p in report.info if p.session == straddling.name]
    assert [p.kind for p in notes] == ["deleted"] and "deleted by the volunteer" in notes[0].message
    assert "deleted by the volunteer" in read_session(d, straddling.name, identity).problems[0]

    for name in ("000004.seg", "000010.seg"):  # a kept segment, the tombstone itself
        file = straddling / name
        good = file.read_bytes()
        data = bytearray(good)
        data[150] ^= 1
        file.write_bytes(bytes(data))
        assert not verify(d, identity, straddling.name).ok, name
        file.write_bytes(good)
    assert verify(d, identity, straddling.name).ok


def test_tombstone_chain_rules(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    _, straddling, _ = three_sessions(d, recipient, now)
    delete_last(d, 600, now=now)
    tomb = straddling / "000010.seg"
    # a kept segment removed after the deletion: the tombstone no longer chains
    (straddling / "000009.seg").unlink()
    problems = verify(d, identity, straddling.name).problems
    assert any(p.kind == "missing-segment" for p in problems)
    # a tombstone that is not the last segment
    tomb.rename(straddling / "000009.seg")
    assert not verify(d, identity, straddling.name).ok


def test_delete_last_again_and_nothing_to_delete(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    _, straddling, _ = three_sessions(d, recipient, now)
    delete_last(d, 600, now=now)
    empty = delete_last(d, 30, now=now)
    assert empty.deleted == [] and empty.trimmed == []
    again = delete_last(d, 900, now=now)  # tombstone and 5 more segments go; a new tombstone
    assert [t.segments for t in again.trimmed] == [6]
    assert verify(d, identity, straddling.name).ok
    assert max(wall_times(d, straddling.name, identity)) < now - 900
    meta = load_meta(straddling)
    assert meta is not None and len(meta["deleted"]) == 2


def test_delete_last_on_an_interrupted_session_closes_it(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    path = make_session(d, recipient, start=now - 600, minutes=8, close=False)
    delete_last(d, 300, now=now)
    assert verify(d, identity, path.name).ok
    assert max(wall_times(d, path.name, identity)) < now - 300


def test_delete_last_refuses_a_live_writer_and_bad_durations(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, _ = store
    live = SessionWriter.create(d, recipient)
    try:
        with pytest.raises(UsageError, match="pause/quit optin first"):
            delete_last(d, 60)
    finally:
        live.close()
    with pytest.raises(UsageError, match="must be positive"):
        delete_last(d, 0)


# --- the DELETION record and its known-answer vector -----------------------------------------------------


def deletion_vector() -> dict[str, str]:
    return doc_vector("format.md", "deletion known-answer vector")


def test_deletion_vector_matches_docs() -> None:
    dv = deletion_vector()
    assert spec_commit(kat_segment()).hex() == dv["prev-commit"]
    info = fmt.DeletionInfo(1, 2, 480, 1795816800)
    assert info.encode().hex() == dv["deletion-record"]
    assert utc_timestamp(info.deleted_at) == "2026-11-27T22:00:00Z"
    buf = io.BytesIO()
    commit = fmt.write_deletion_segment(
        buf,
        session_id=fmt.session_id_bytes(SESSION_NAME),
        prev_commit=bytes.fromhex(dv["prev-commit"]),
        recipient=fmt.public_from_private(IDENTITY),
        info=info,
        _ephemeral_private=bytes.fromhex(dv["ephemeral-secret"]),
        _file_key=bytes.fromhex(dv["file-key"]),
    )
    assert buf.getvalue().hex() == dv["segment"] and len(buf.getvalue()) == 215
    assert commit.hex() == dv["commit"]
    assert fmt.public_from_private(bytes.fromhex(dv["ephemeral-secret"])).hex() == dv["ephemeral-share"]
    contents = fmt.read_segment(buf.getvalue(), IDENTITY, name="000001.seg")
    assert contents.deletion == info and contents.recovery is None and contents.records == []
    assert contents.sealed and contents.closes_session and not contents.recovered
    assert fmt.scan_framing(buf.getvalue(), name="s").is_deletion_segment


def test_malformed_deletion_records_are_format_errors() -> None:
    with pytest.raises(StoreFormatError, match="DELETION record at offset 140 has 3 bytes"):
        fmt.DeletionInfo.decode(b"abc", name="x.seg", offset=140)
    zero = bytes(24)
    with pytest.raises(StoreFormatError, match="malformed DELETION record"):
        fmt.DeletionInfo.decode(zero, name="x.seg", offset=140)


# --- the command line ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("1h", 3600), ("2h30m", 9000), ("1h5m10s", 3910)]
)
def test_durations(text: str, seconds: int) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15", "m", "1d", "0m", "5 minutes", "30m2h"])
def test_bad_duration_exits_2_with_the_accepted_forms(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["delete-last", text]) == 2
    assert "90s, 15m, 1h or 2h30m" in capsys.readouterr().err


def test_missing_duration_says_the_accepted_forms(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["delete-last"]) == 2
    assert "90s, 15m, 1h or 2h30m" in capsys.readouterr().err


def fake_running_agent(d: Dirs, session: str | None) -> None:
    """A status file as a running agent publishes it (this process's pid is alive)."""
    d.runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = {"state": "recording", "pid": os.getpid(), "session": session}
    write_private_file(d.runtime / "status.json", json.dumps(status).encode())


def test_cli_delete_last(store: tuple[Dirs, bytes, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    d, recipient, _ = store
    now = time.time()
    _, straddling, recent = three_sessions(d, recipient, now)
    fake_running_agent(d, None)
    assert cli.main(["delete-last", "10m"]) == 2
    assert "pause/quit optin first" in capsys.readouterr().err
    (d.runtime / "status.json").unlink()
    assert cli.main(["delete-last", "10m", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [x["session_id"] for x in out["deleted"]] == [recent.name]
    assert [x["session_id"] for x in out["trimmed"]] == [straddling.name]
    assert cli.main(["delete-last", "1m"]) == 0
    assert "nothing was recorded in that time" in capsys.readouterr().out


def test_cli_sessions_delete(store: tuple[Dirs, bytes, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    d, recipient, _ = store
    path = make_session(d, recipient, start=time.time() - 300, minutes=2)
    fake_running_agent(d, path.name)
    assert cli.main(["sessions", "delete", path.name]) == 2
    assert "is being recorded" in capsys.readouterr().err and path.exists()
    (d.runtime / "status.json").unlink()
    assert cli.main(["sessions", "delete", path.name]) == 0
    assert f"deleted session {path.name}: 2 segments" in capsys.readouterr().out
    assert not path.exists()
    assert cli.main(["sessions", "delete"]) == 2
    assert cli.main(["sessions", "delete", path.name]) == 1  # not found


def test_cli_purge(store: tuple[Dirs, bytes, bytes], capsys: pytest.CaptureFixture[str]) -> None:
    d, recipient, _ = store
    for start in (time.time() - 900, time.time() - 300):
        make_session(d, recipient, start=start, minutes=1)
    total = sum(s.bytes for s in list_sessions(d))
    assert cli.main(["purge"]) == 2
    assert f"this deletes all 2 sessions ({total} bytes); run again with --yes" in capsys.readouterr().err
    assert len(list_sessions(d)) == 2
    assert cli.main(["purge", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes"] == total
    assert list_sessions(d) == []
    assert keys.load_recipient(d) == recipient  # the keys stay


@pytest.mark.parametrize("shredded_before_failure", [0, 2, 4])  # of the 5 segments to remove
def test_an_interrupted_trim_is_finished_not_lost(
    store: tuple[Dirs, bytes, bytes], monkeypatch: pytest.MonkeyPatch, shredded_before_failure: int
) -> None:
    """A crash or I/O error in the middle of shredding leaves the tombstone's temp file; the next
    delete-last (or the next start) finishes the deletion: the range is gone and the chain whole."""
    d, recipient, identity = store
    now = time.time()
    session = make_session(d, recipient, start=now - 1200, minutes=15)
    real_shred = retention.shred_at
    calls = [0]

    def failing_shred(folder: StoreDir, name: str) -> int:
        if calls[0] == shredded_before_failure:
            raise OSError(5, "Input/output error")
        calls[0] += 1
        return real_shred(folder, name)

    monkeypatch.setattr(retention, "shred_at", failing_shred)
    with pytest.raises(OSError):
        delete_last(d, 600, now=now)
    monkeypatch.setattr(retention, "shred_at", real_shred)
    assert list(session.glob(".deletion-*.tmp"))  # the tombstone was kept, not thrown away
    # half-trimmed, the chain is broken until the deletion is finished (untouched if none was shredded)
    assert verify(d, identity, session.name).ok is (shredded_before_failure == 0)

    assert retention.finish_interrupted_deletions(d) == [session.name]
    assert not list(session.glob(".deletion-*.tmp"))
    assert verify(d, identity, session.name).ok
    times = wall_times(d, session.name, identity)
    assert times and max(times) < now - 600
    assert retention.finish_interrupted_deletions(d) == []  # idempotent


def test_recovery_keeps_the_crashed_segments_time_so_delete_last_spares_it(
    store: tuple[Dirs, bytes, bytes],
) -> None:
    """Recovery truncates a cut segment; that must not make it look recent to delete-last."""
    from agent.store.recovery import recover_sessions

    d, recipient, identity = store
    now = time.time()
    crashed = make_session(d, recipient, start=now - 7200, minutes=3, close=False)
    last = sorted(crashed.glob("*.seg"))[-1]
    with last.open("ab") as f:
        f.write(b"\x00\x00\x01")  # a torn record head: recovery has something to cut
    os.utime(last, (now - 7000, now - 7000))
    recover_sessions(d, recipient)
    assert abs(last.stat().st_mtime - (now - 7000)) < 1  # the crash time, not the recovery time
    before = wall_times(d, crashed.name, identity)
    report = delete_last(d, 60, now=now)
    assert report.deleted == [] and report.trimmed == []
    assert wall_times(d, crashed.name, identity) == before


def test_a_store_copied_without_its_times_does_not_all_look_recent(store: tuple[Dirs, bytes, bytes]) -> None:
    d, recipient, identity = store
    now = time.time()
    old = make_session(d, recipient, start=now - 7200, minutes=5)
    meta = load_meta(old)
    assert meta is not None
    meta["stopped_at"] = utc_timestamp(now - 7200 + 300)  # what the writer wrote when it stopped
    write_meta(old, meta)
    for seg in old.glob("*.seg"):
        os.utime(seg, (now, now))  # `cp -r` without -p: every segment "ended" just now
    before = wall_times(d, old.name, identity)
    report = delete_last(d, 60, now=now)
    assert report.deleted == [] and report.trimmed == []  # capped at stopped_at, two hours ago
    assert wall_times(d, old.name, identity) == before
