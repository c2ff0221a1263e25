"""P9 store tampering: flipped bits and truncations in every kind of session end optin makes.

Loss is measured, never silent (P9), and the store's tamper evidence must not end at a crash:
a writer is SIGKILLed mid-session and its session recovered, then bits are flipped (mostly in the
segment the killed writer was writing) and files truncated; the same for sessions that rolled over
to many segments, sessions the volunteer cut (``agent.store.cut``) and sessions whose end was
deleted (``delete-last``, a tombstone).  Every change must make ``optin verify`` fail (exit 1,
the problem naming the file and, for a flip, only that file) and ``read_session`` raise: no
record is ever dropped quietly.  ``OPTIN_FUZZ_ROUNDS`` (``make fuzz``) sets the rounds per case.

What cannot be detected by a recorder holding only the public key (a forged "crash", a forged
tombstone, an edited meta.json) is listed in docs/threat-model.md, Store, with its own tests.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import NoReturn

import pytest

from agent.errors import StoreError
from agent.events import Marker, PointerMove
from agent.paths import Dirs, dirs
from agent.store import format as fmt
from agent.store import keys
from agent.store.cut import cut_session
from agent.store.reader import load_meta, read_session, session_paths
from agent.store.recovery import RecoveryReport, recover_sessions
from agent.store.retention import delete_last
from agent.store.verify import verify
from agent.store.writer import SessionWriter, utc_timestamp, write_meta
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.unit.store_helpers import flip, numbered, segment_files, write_one_per_record

PROMISE = "P9 store tampering"
#: Seed of the flips, truncations and kill timings; a failure names the round to replay.
SEED = 20261209


@pytest.fixture
def store() -> tuple[Dirs, bytes, bytes]:
    """This test's OPTIN_HOME with a key pair: ``(dirs, recipient, identity)``."""
    d = dirs()
    keys.init_keys(d)
    return d, keys.load_recipient(d), keys.load_identity(d)


# --- the checks -----------------------------------------------------------------------------------


def _caught_flip(d: Dirs, identity: bytes, sid: str, file: Path, bit: int) -> str | None:
    """Flip ``bit`` of ``file``; None when verify and the reader both catch it, else what went wrong."""
    data = file.read_bytes()
    file.write_bytes(flip(data, bit))
    try:
        report = verify(d, identity, sid)
        if report.exit_code != 1:
            return f"verify passed: {report.render_text()}"
        if {p.file for p in report.problems} != {file.name}:
            return f"not reported in {file.name} alone: {report.render_text()}"
        if any(p.offset is None for p in report.problems if p.kind == "authentication"):
            return "an authentication problem without an offset"
        try:
            read_session(d, sid, identity)
        except StoreError:
            return None
        return "read_session returned without raising"
    finally:
        file.write_bytes(data)


def _caught_truncation(d: Dirs, identity: bytes, sid: str, file: Path, size: int) -> str | None:
    """Cut ``file`` to ``size`` bytes; None when both catch it.

    A cut exactly at a record boundary leaves a file that is whole in itself: its successor's
    ``prev_commit`` (or the recovery record's length) is what no longer matches, so the problem
    may name the next segment.
    """
    data = file.read_bytes()
    file.write_bytes(data[:size])
    try:
        report = verify(d, identity, sid)
        if report.exit_code != 1:
            return f"verify passed: {report.render_text()}"
        successor = f"{int(file.stem) + 1:06d}.seg"
        if not {p.file for p in report.problems} & {file.name, successor}:
            return f"reported elsewhere: {report.render_text()}"
        try:
            read_session(d, sid, identity)
        except StoreError:
            return None
        return "read_session returned without raising"
    finally:
        file.write_bytes(data)


def _tamper(
    hostile: Tally,
    store: tuple[Dirs, bytes, bytes],
    sid: str,
    rng: random.Random,
    *,
    focus: Path | None = None,
    label: str,
) -> None:
    """``fuzz_rounds(60)`` flips (half of them in ``focus`` when given) and ``fuzz_rounds(20)`` cuts."""
    d, _, identity = store
    session = d.sessions / sid
    files = segment_files(session)
    assert verify(d, identity, sid).ok, "the untouched session must verify"
    before = len(read_session(d, sid, identity).events)
    flips, cuts = fuzz_rounds(60), fuzz_rounds(20)
    for round_number in range(flips):
        file = focus if focus is not None and round_number % 2 == 0 else rng.choice(files)
        bit = rng.randrange(file.stat().st_size * 8)
        hostile.tried(PROMISE)
        wrong = _caught_flip(d, identity, sid, file, bit)
        assert wrong is None, f"{label}: flip of bit {bit} in {file.name} (seed {SEED}): {wrong}"
        hostile.held(PROMISE)
    for _ in range(cuts):
        file = rng.choice(files)
        size = rng.randrange(file.stat().st_size)
        hostile.tried(PROMISE)
        wrong = _caught_truncation(d, identity, sid, file, size)
        assert wrong is None, f"{label}: {file.name} cut to {size} bytes (seed {SEED}): {wrong}"
        hostile.held(PROMISE)
    assert verify(d, identity, sid).ok and len(read_session(d, sid, identity).events) == before


# --- sessions to tamper with ------------------------------------------------------------------------


def _writer_child(d: Dirs, recipient: bytes, seed: int) -> NoReturn:
    """Record numbered events until killed; never returns and never touches pytest's state."""
    status = 0
    try:
        rng = random.Random(seed)  # noqa: S311 - test workload, not a secret
        w = SessionWriter.create(d, recipient, segment_bytes=1500)
        written = 0
        while True:
            size = rng.randrange(1, 8)
            w.write_events(numbered(written, size, frame_every=5, frame_bytes=300))
            written += size
            w.flush()
    except BaseException:
        status = 1
    finally:
        os._exit(status)


def _killed_and_recovered(store: tuple[Dirs, bytes, bytes], rng: random.Random) -> RecoveryReport:
    """Start a writer in a child process, SIGKILL it 0-20 ms after it has written 4 KB, then recover."""
    d, recipient, identity = store
    before = set(session_paths(d))
    delay = rng.uniform(0.0, 0.02)
    pid = os.fork()
    if pid == 0:
        _writer_child(d, recipient, rng.getrandbits(32))
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            new = [p for p in session_paths(d) if p not in before]
            if new and sum(f.stat().st_size for f in new[0].glob("*.seg")) >= 4000:
                time.sleep(delay)  # not right after a write: anywhere in what the writer does
                break
            time.sleep(0.0005)
    finally:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the writer died by itself"
    [report] = recover_sessions(d, recipient)
    assert report.action == "recovered", report
    data = read_session(d, report.session_id, identity)
    assert [e.t_ns for e in data.events] == list(range(len(data.events)))  # a gap-free prefix
    assert data.recovered and verify(d, identity, report.session_id).ok
    return report


def _closed(d: Dirs, recipient: bytes, count: int = 30) -> SessionWriter:
    """A closed session rolled over to many segments: 6 of 6 records and a closing one."""
    w = SessionWriter.create(d, recipient, segment_bytes=600)
    write_one_per_record(w, numbered(0, count, frame_every=7, frame_bytes=80))
    w.close()
    return w


def _minutes(d: Dirs, recipient: bytes, *, start: float, minutes: int) -> Path:
    """A closed session that started at wall time ``start``: one segment per minute (delete-last
    reads a segment's end from its file time)."""
    clock = [0.0]
    w = SessionWriter.create(d, recipient, clock=lambda: clock[0])
    w.write_events([Marker(0, "session_start", {"mono_ns": 0, "wall_ns": int(start * 1e9)})])
    for m in range(minutes):
        clock[0] = m * 60.0
        w.write_events([PointerMove(t_ns=int((m * 60 + s) * 1e9), x=m, y=s) for s in range(1, 60, 10)])
        w.flush()
    w.close()
    meta = load_meta(w.path)
    assert meta is not None
    meta["started_at"] = utc_timestamp(start)
    write_meta(w.path, meta)
    for i, seg in enumerate(segment_files(w.path)):
        os.utime(seg, (start + 60 * i + 55, start + 60 * i + 55))
    return w.path


# --- the cases --------------------------------------------------------------------------------------


def test_p9_flips_in_a_killed_writers_segment_are_caught_after_recovery(
    hostile: Tally, store: tuple[Dirs, bytes, bytes]
) -> None:
    """The bug of issue 14: a flip in the segment the killed writer was writing passed as a torn write."""
    rng = random.Random(SEED)  # noqa: S311 - reproducible test data
    d = store[0]
    for _ in range(min(20, max(2, fuzz_rounds(60) // 100))):  # 2 kills; more under make fuzz
        report = _killed_and_recovered(store, rng)
        assert report.segment is not None
        focus = d.sessions / report.session_id / f"{report.segment:06d}.seg"  # removed: the recovery one
        _tamper(hostile, store, report.session_id, rng, focus=focus, label=f"recovered ({report.shape})")


def test_p9_flips_and_cuts_in_a_rolled_over_session_are_caught(
    hostile: Tally, store: tuple[Dirs, bytes, bytes]
) -> None:
    rng = random.Random(SEED + 1)  # noqa: S311 - reproducible test data
    d, recipient, _ = store
    w = _closed(d, recipient)
    assert len(segment_files(w.path)) >= 5
    _tamper(hostile, store, w.session_id, rng, label="rolled over")


def test_p9_flips_and_cuts_in_a_session_the_volunteer_cut_are_caught(
    hostile: Tally, store: tuple[Dirs, bytes, bytes]
) -> None:
    rng = random.Random(SEED + 2)  # noqa: S311 - reproducible test data
    d, recipient, identity = store
    w = _closed(d, recipient)
    report = cut_session(d, w.session_id, [(8, 14)], identity, recipient)
    assert report.events + report.frames == 7
    _tamper(hostile, store, w.session_id, rng, label="cut")


def test_p9_flips_and_cuts_in_a_session_whose_end_was_deleted_are_caught(
    hostile: Tally, store: tuple[Dirs, bytes, bytes]
) -> None:
    rng = random.Random(SEED + 3)  # noqa: S311 - reproducible test data
    d, recipient, identity = store
    start = time.time() - 7200
    path = _minutes(d, recipient, start=start, minutes=6)
    report = delete_last(d, 150, now=start + 6 * 60)
    assert [t.session_id for t in report.trimmed] == [path.name]
    tombstone = segment_files(path)[-1]
    assert "deleted" in (load_meta(path) or {})
    assert verify(d, identity, path.name).info[0].kind == "deleted"
    _tamper(hostile, store, path.name, rng, focus=tombstone, label="delete-last")


def test_p9_a_forged_tombstone_is_not_detected_and_says_so_in_the_threat_model(
    store: tuple[Dirs, bytes, bytes],
) -> None:
    """What a recorder holding only the public key cannot detect (docs/threat-model.md, Store): a
    party that can write the store drops a session's last segments and writes a tombstone with the
    recipient.  This test pins what optin then claims, so that the document stays true."""
    d, recipient, identity = store
    w = _closed(d, recipient)
    files = segment_files(w.path)
    removed = files[-2:]
    size = sum(f.stat().st_size for f in removed)
    for file in removed:
        file.unlink()
    keep = files[-3]
    info = fmt.DeletionInfo(int(removed[0].stem), len(removed), size, 1_800_000_000)
    fmt.write_deletion_segment(
        removed[0],
        session_id=fmt.session_id_bytes(w.session_id),
        prev_commit=fmt.segment_commit(keep.read_bytes()),
        recipient=recipient,
        info=info,
    )
    report = verify(d, identity, w.session_id)
    assert report.ok  # not detectable: documented, not defended (and not counted as held)
    [note] = report.info
    assert note.kind == "deleted" and "deleted by the volunteer at 2027-01-15T08:00:00Z" in note.message
