"""Sessions: round trip, rotation and chaining, tampering, crash tails, no plaintext on disk, modes, keys."""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import paths
from agent.errors import KeyError_, NotFound, StoreCorrupt, StoreError, StoreFormatError, UsageError
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    PointerMove,
    Scroll,
    WindowFocus,
)
from agent.store import keys, writer
from agent.store.format import generate_keypair
from agent.store.reader import list_sessions, read_session, session_dir
from agent.store.writer import SessionWriter

CANARY_TITLE = "CANARY-TITLE-7731"
CANARY_APP = "canary-app-9913"
CANARY_PIXELS = b"CANARY-PIXELS-4409" * 50
CANARY_TYPED = "CANARY-TYPED-2285"


Closed = tuple[str, list[Event]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> paths.Dirs:
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))
    return paths.dirs()


@pytest.fixture
def recipient(dirs: paths.Dirs) -> bytes:
    return keys.init_keys(dirs)


@pytest.fixture
def identity(dirs: paths.Dirs, recipient: bytes) -> bytes:
    return keys.load_identity(dirs)


def sample_events(n: int, *, frame_bytes: int = 300) -> list[Event]:
    """``n`` rounds of every event kind, with canaries in the content."""
    out: list[Event] = [Marker(t_ns=0, marker="session_start", detail={"consent_sha256": "ab" * 32})]
    for i in range(n):
        t = 10 * i + 1
        char = CANARY_TYPED[i % len(CANARY_TYPED)]
        out += [
            PointerMove(t_ns=t, x=i, y=2 * i),
            ButtonPress(t_ns=t + 1, x=i, y=i, button="left"),
            ButtonRelease(t_ns=t + 2, x=i, y=i, button="left"),
            Scroll(t_ns=t + 3, x=i, y=i, dx=0, dy=-1),
            KeyPress(t_ns=t + 4, char=char, name=None, vk=65 + i % 26, modifiers=("shift",)),
            KeyRelease(t_ns=t + 5, char=char, name=None, vk=65 + i % 26),
            KeyPress(t_ns=t + 6, char=None, name="enter", vk=None),
            WindowFocus(t_ns=t + 7, title=f"{CANARY_TITLE} {i}", app_class=CANARY_APP, pid=42, x=0, y=0),
            Frame(
                t_ns=t + 8,
                left=0,
                top=0,
                width=4,
                height=4,
                format="webp",
                reason="click",
                data=CANARY_PIXELS + bytes([i % 256]) * frame_bytes,
            ),
        ]
    out.append(Marker(t_ns=10 * n + 1, marker="session_stop", detail={"dropped": 0}))
    return out


def record(
    dirs: paths.Dirs, recipient: bytes, events: list[Event], *, batch: int = 7, **kw: object
) -> SessionWriter:
    w = SessionWriter.create(dirs, recipient, **kw)  # type: ignore[arg-type]
    for start in range(0, len(events), batch):
        w.write_events(events[start : start + batch])
        w.flush()
    return w


@pytest.fixture
def closed_session(dirs: paths.Dirs, recipient: bytes) -> Closed:
    """A closed session of several small segments."""
    events = sample_events(12)
    w = record(dirs, recipient, events, segment_bytes=1500)
    w.close({"events": 3, "frames": 1})
    return w.session_id, events


def segments_of(dirs: paths.Dirs, session_id: str) -> list[Path]:
    return sorted(session_dir(dirs, session_id).glob("*.seg"))


def all_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_across_rotation(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, events = closed_session
    data = read_session(dirs, session_id, identity)
    assert data.events == events
    assert data.segments == len(segments_of(dirs, session_id)) > 3
    assert data.all_sealed
    assert data.problems == []


def test_large_frame_and_single_call(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    events = sample_events(3, frame_bytes=200_000)
    w = SessionWriter.create(dirs, recipient, segment_bytes=100_000)
    w.write_events(events)
    w.close()
    data = read_session(dirs, w.session_id, identity)
    assert data.events == events
    # each big frame overfills its segment, so the next record (frame or the stop marker) starts a new one
    assert data.segments == 4


def test_events_record_is_split_at_target(
    dirs: paths.Dirs, recipient: bytes, identity: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "EVENTS_RECORD_TARGET", 200)
    events: list[Event] = [PointerMove(t_ns=i, x=i, y=i) for i in range(100)]
    w = SessionWriter.create(dirs, recipient)
    w.write_events(events)
    assert w.records > 10
    w.close()
    assert read_session(dirs, w.session_id, identity).events == events


def test_order_is_kept_around_frames(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    frame = Frame(t_ns=2, left=0, top=0, width=1, height=1, format="png", reason="focus", data=b"\x89PNG")
    events: list[Event] = [PointerMove(t_ns=1, x=0, y=0), frame, PointerMove(t_ns=3, x=1, y=1), frame]
    w = SessionWriter.create(dirs, recipient)
    w.write_events(events)
    w.write_events([])
    assert w.records == 4
    w.close()
    assert read_session(dirs, w.session_id, identity).events == events


def test_time_rotation_and_idle_flush(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    clock = FakeClock()
    w = SessionWriter.create(dirs, recipient, segment_seconds=60.0, clock=clock)
    w.write_events([PointerMove(t_ns=1, x=1, y=1)])
    clock.now += 30
    w.write_events([PointerMove(t_ns=2, x=2, y=2)])
    assert len(segments_of(dirs, w.session_id)) == 1
    clock.now += 31
    w.flush()  # idle: the old segment is sealed by time alone
    assert len(segments_of(dirs, w.session_id)) == 2
    w.flush()  # an empty segment is never rotated
    clock.now += 100
    w.flush()
    assert len(segments_of(dirs, w.session_id)) == 2
    w.write_events([PointerMove(t_ns=3, x=3, y=3)])
    w.close()
    data = read_session(dirs, w.session_id, identity)
    assert [e.t_ns for e in data.events] == [1, 2, 3]
    assert data.segments == 2 and data.all_sealed


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The file descriptors fsynced from now on (each fsync still done)."""
    calls: list[int] = []
    real = os.fsync

    def counting_fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    return calls


def test_fsync_is_paced(dirs: paths.Dirs, recipient: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    w = SessionWriter.create(dirs, recipient, clock=clock)
    calls = _count_fsyncs(monkeypatch)
    for _ in range(5):
        w.write_events([PointerMove(t_ns=1, x=1, y=1)])
        w.flush()
    assert calls == []
    clock.now += 1.0
    w.flush()
    assert len(calls) == 1
    w.flush(force_fsync=True)
    assert len(calls) == 2
    w.close()


def test_an_idle_second_costs_no_fsync(
    dirs: paths.Dirs, recipient: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing written since the last fsync: the paced flush has nothing to make durable."""
    clock = FakeClock()
    w = SessionWriter.create(dirs, recipient, clock=clock)
    calls = _count_fsyncs(monkeypatch)
    w.write_events([PointerMove(t_ns=1, x=1, y=1)])
    clock.now += 1.0
    w.flush()
    assert len(calls) == 1
    for _ in range(5):  # idle seconds
        clock.now += 1.0
        w.flush()
    assert len(calls) == 1
    w.write_events([PointerMove(t_ns=2, x=2, y=2)])
    clock.now += 1.0
    w.flush()
    assert len(calls) == 2
    w.close()


def test_rotation_fsyncs_the_seal_then_the_new_segment_within_a_second(
    dirs: paths.Dirs, recipient: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotation costs one fsync (the seal, before the successor exists); the new segment's
    directory entry and meta.json follow at the next paced fsync, and at close at the latest."""
    clock = FakeClock()
    w = SessionWriter.create(dirs, recipient, segment_bytes=400, clock=clock)
    synced: list[str] = []
    real = os.fsync

    def naming_fsync(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fsync", naming_fsync)
    w.write_events(sample_events(40))
    w.flush()
    segments = len(segments_of(dirs, w.session_id))
    assert segments > 1
    assert synced == [f"{i:06d}.seg" for i in range(segments - 1)]  # each seal, nothing else
    assert meta_of(dirs, w.session_id)["segments"] == 1
    synced.clear()
    clock.now += 1.0
    w.flush()
    assert synced[:2] == [f"{segments - 1:06d}.seg", w.session_id]  # the open segment, then its directory
    assert meta_of(dirs, w.session_id)["segments"] == segments
    w.close()


# --- metadata and listing ------------------------------------------------------------------------


def meta_of(dirs: paths.Dirs, session_id: str) -> dict[str, object]:
    meta: dict[str, object] = json.loads((session_dir(dirs, session_id) / "meta.json").read_text())
    return meta


def test_meta_while_recording_and_after_close(dirs: paths.Dirs, recipient: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    meta = meta_of(dirs, w.session_id)
    assert meta["state"] == "recording" and meta["stopped_at"] is None and meta["segments"] == 1
    assert meta["id"] == w.session_id and meta["schema"] == 1
    events = sample_events(2)
    w.write_events(events)
    w.close({"events": 5, "frames": 2})
    meta = meta_of(dirs, w.session_id)
    assert meta["state"] == "closed"
    assert isinstance(meta["stopped_at"], str) and meta["stopped_at"].endswith("Z")
    assert meta["frames"] == 2 and meta["dropped"] == 7
    assert meta["dropped_by_source"] == {"events": 5, "frames": 2}
    assert meta["events"] == w.counts and sum(w.counts.values()) == len(events)
    assert meta["bytes"] == sum(p.stat().st_size for p in segments_of(dirs, w.session_id))
    assert meta["records"] == w.records
    assert sorted(p.name for p in session_dir(dirs, w.session_id).iterdir())[-1] == "meta.json"
    assert not [p for p in session_dir(dirs, w.session_id).iterdir() if p.name.startswith(".")]


def test_session_id_shape(dirs: paths.Dirs, recipient: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    assert len(w.session_id) == 25 and w.session_id[8] == "T" and w.session_id[15:17] == "Z-"
    int(w.session_id[17:], 16)
    w.close()


def test_list_sessions_states(dirs: paths.Dirs, recipient: bytes) -> None:
    assert list_sessions(dirs) == []
    closed = record(dirs, recipient, sample_events(2))
    closed.close({"dropped": 4})
    live = record(dirs, recipient, sample_events(1))
    crashed = record(dirs, recipient, sample_events(1))
    crashed.abort()
    stray = dirs.sessions / "20200101T000000Z-00000000"
    stray.mkdir(mode=0o700)
    infos = {i.id: i for i in list_sessions(dirs)}
    assert [i.id for i in list_sessions(dirs)] == sorted(infos)
    assert infos[closed.session_id].state == "closed"
    assert infos[closed.session_id].dropped == 4
    assert infos[closed.session_id].events == len(sample_events(2))
    assert infos[closed.session_id].frames == 2
    assert infos[closed.session_id].bytes == closed.bytes_written
    assert infos[live.session_id].state == "recording"
    assert infos[crashed.session_id].state == "interrupted"
    assert infos[stray.name].state == "unknown" and infos[stray.name].segments == 0
    live.close()
    assert {i.id: i for i in list_sessions(dirs)}[live.session_id].state == "closed"


def test_close_is_idempotent_and_final(dirs: paths.Dirs, recipient: bytes) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.close()
    w.close()
    w.flush()
    with pytest.raises(StoreError, match="is closed"):
        w.write_events([PointerMove(t_ns=1, x=1, y=1)])


@pytest.mark.parametrize("stats", [{"Bad Name": 1}, {"events": -1}, {"events": 1.5}, {"events": True}])
def test_bad_loss_counters_are_refused_before_sealing(
    dirs: paths.Dirs, recipient: bytes, identity: bytes, stats: dict[str, object]
) -> None:
    w = SessionWriter.create(dirs, recipient)
    w.write_events([PointerMove(t_ns=1, x=1, y=1)])
    with pytest.raises(UsageError):
        w.close(stats)  # type: ignore[arg-type]
    w.close({"events": 1})
    assert read_session(dirs, w.session_id, identity).all_sealed


def test_create_validates_arguments(dirs: paths.Dirs, recipient: bytes) -> None:
    with pytest.raises(UsageError):
        SessionWriter.create(dirs, b"short")
    with pytest.raises(UsageError):
        SessionWriter.create(dirs, recipient, segment_seconds=0)
    assert list_sessions(dirs) == []


# --- no plaintext, file modes ---------------------------------------------------------------------


def test_no_captured_content_on_disk(dirs: paths.Dirs, recipient: bytes, tmp_path: Path) -> None:
    events = sample_events(20)
    w = record(dirs, recipient, events, segment_bytes=4000)
    w.close()
    crashed = record(dirs, recipient, events)
    crashed.abort()
    from agent.events import encode

    needles = [
        CANARY_TITLE.encode(),
        CANARY_APP.encode(),
        CANARY_PIXELS[:18],
        CANARY_TYPED.encode(),
        b'"char":',
        b'"title":',
        encode(events[5]),  # a whole KeyPress record
    ]
    files = list(all_files(tmp_path / "home"))
    assert any(p.name == "meta.json" for p in files)
    for path in files:
        blob = path.read_bytes()
        for needle in needles:
            assert needle not in blob, f"{needle!r} found in {path.name}"


def test_file_and_directory_modes(dirs: paths.Dirs, recipient: bytes) -> None:
    old = os.umask(0)  # even a careless umask must not widen anything
    try:
        w = record(dirs, recipient, sample_events(5), segment_bytes=1500)
        w.close()
    finally:
        os.umask(old)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(dirs.sessions) == 0o700
    assert mode(w.path) == 0o700
    assert mode(dirs.keys) == 0o700
    assert mode(dirs.keys / "identity") == 0o600
    assert mode(dirs.keys / "recipient") == 0o600
    for p in w.path.iterdir():
        assert mode(p) == 0o600, p.name


# --- tampering ---------------------------------------------------------------------------------------


def _flip_sample(path: Path) -> list[int]:
    """Header bytes densely, the records sparsely, the SEAL record and tag densely."""
    size = path.stat().st_size
    return sorted(set(range(0, 140, 4)) | set(range(140, size, 41)) | set(range(max(140, size - 24), size)))


def test_bit_flips_in_any_segment_are_detected(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    w = record(dirs, recipient, sample_events(3), segment_bytes=1500)
    w.close()
    segments = segments_of(dirs, w.session_id)
    assert len(segments) >= 3
    checked = 0
    for path in segments:
        original = path.read_bytes()
        for offset in _flip_sample(path):
            tampered = bytearray(original)
            tampered[offset] ^= 1 << (offset % 8)
            path.write_bytes(bytes(tampered))
            with pytest.raises((StoreCorrupt, StoreFormatError)) as info:
                read_session(dirs, w.session_id, identity)
            assert path.name in str(info.value)
            checked += 1
        path.write_bytes(original)
    assert checked > 200
    assert read_session(dirs, w.session_id, identity).problems == []


def test_swapped_segments(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    a, b = segments_of(dirs, session_id)[1:3]
    tmp = a.with_name("swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(StoreCorrupt, match=rf"{a.name}: holds segment 2, expected 1"):
        read_session(dirs, session_id, identity)


def test_deleted_middle_segment(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    segments_of(dirs, session_id)[1].unlink()
    with pytest.raises(StoreCorrupt, match=r"000001\.seg is missing"):
        read_session(dirs, session_id, identity)


def test_deleted_middle_segment_with_renumbering(
    dirs: paths.Dirs, closed_session: Closed, identity: bytes
) -> None:
    session_id, _ = closed_session
    segs = segments_of(dirs, session_id)
    segs[1].unlink()
    for seg in segs[2:]:
        seg.rename(seg.with_name(f"{int(seg.stem) - 1:06d}.seg"))
    with pytest.raises(StoreCorrupt, match="segment chain broken"):
        read_session(dirs, session_id, identity)


def test_deleted_last_segment_of_closed_session(
    dirs: paths.Dirs, closed_session: Closed, identity: bytes
) -> None:
    session_id, _ = closed_session
    segments_of(dirs, session_id)[-1].unlink()
    with pytest.raises(StoreCorrupt, match="closing segment is missing"):
        read_session(dirs, session_id, identity)


def test_segment_spliced_from_another_session(
    dirs: paths.Dirs, closed_session: Closed, recipient: bytes, identity: bytes
) -> None:
    session_id, events = closed_session
    other = record(dirs, recipient, events, segment_bytes=1500)
    other.close()
    target = segments_of(dirs, session_id)[1]
    shutil.copyfile(segments_of(dirs, other.session_id)[1], target)
    with pytest.raises(StoreCorrupt, match=rf"{target.name}: segment belongs to another session"):
        read_session(dirs, session_id, identity)


def test_replaced_segment_of_same_session(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    """A segment re-encrypted with the right session id and index still breaks the chain."""
    session_id, _ = closed_session
    from agent.store.format import SegmentWriter, session_id_bytes

    target = segments_of(dirs, session_id)[2]
    target.unlink()
    w = SegmentWriter(
        target,
        session_id=session_id_bytes(session_id),
        index=2,
        prev_commit=b"\x01" * 32,
        recipient=keys.load_recipient(dirs),
    )
    w.seal()
    with pytest.raises(StoreCorrupt, match=r"000002\.seg: previous segment missing, reordered or replaced"):
        read_session(dirs, session_id, identity)


def test_data_appended_after_seal(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    for seg in (segments_of(dirs, session_id)[0], segments_of(dirs, session_id)[-1]):
        original = seg.read_bytes()
        seg.write_bytes(original + original[140:180])
        with pytest.raises(StoreFormatError, match=rf"{seg.name}: .* follow the SEAL record"):
            read_session(dirs, session_id, identity)
        seg.write_bytes(original)


def test_truncated_sealed_segments(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    segs = segments_of(dirs, session_id)
    for seg in (segs[1], segs[-1]):
        original = seg.read_bytes()
        for cut in (1, 20, len(original) - 141):
            seg.write_bytes(original[:-cut])
            with pytest.raises(StoreCorrupt, match=rf"{seg.name}: segment is truncated or not sealed"):
                read_session(dirs, session_id, identity)
        seg.write_bytes(original)


def test_wrong_identity(dirs: paths.Dirs, closed_session: Closed) -> None:
    session_id, _ = closed_session
    other, _ = generate_keypair()
    with pytest.raises(StoreCorrupt, match=r"000000\.seg: segment authentication failed at offset 92$"):
        read_session(dirs, session_id, other)


def test_renamed_session_directory(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    moved = session_dir(dirs, session_id).rename(dirs.sessions / "20200101T000000Z-deadbeef")
    with pytest.raises(StoreCorrupt, match="another session"):
        read_session(dirs, moved.name, identity)


def test_unexpected_segment_name(dirs: paths.Dirs, closed_session: Closed, identity: bytes) -> None:
    session_id, _ = closed_session
    (session_dir(dirs, session_id) / "1.seg").write_bytes(b"")
    with pytest.raises(StoreFormatError, match=r"1\.seg: unexpected segment file name"):
        read_session(dirs, session_id, identity)


# --- crash tails ----------------------------------------------------------------------------------------


def test_truncated_unsealed_last_segment_reads_its_prefix(
    dirs: paths.Dirs, recipient: bytes, identity: bytes
) -> None:
    events = sample_events(12)
    w = record(dirs, recipient, events, segment_bytes=1500)
    w.abort()  # what a crash leaves: last segment unsealed, meta says recording
    last = segments_of(dirs, w.session_id)[-1]
    full = read_session(dirs, w.session_id, identity)
    assert full.events == events and not full.all_sealed
    assert len(full.problems) == 1 and last.name in full.problems[0]

    last.write_bytes(last.read_bytes()[:-7])  # cut the last record in the middle
    data = read_session(dirs, w.session_id, identity)
    assert data.events == events[: len(data.events)]
    assert len(data.events) < len(events)
    assert not data.all_sealed
    assert data.problems and "not sealed" in data.problems[0] and "trailing bytes" in data.problems[0]
    assert data.segments == len(segments_of(dirs, w.session_id))


def test_crash_inside_a_new_segment_header(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    w = record(dirs, recipient, sample_events(4), segment_bytes=1500)
    w.abort()
    last = segments_of(dirs, w.session_id)[-1]
    last.write_bytes(last.read_bytes()[:50])
    data = read_session(dirs, w.session_id, identity)
    assert "header incomplete" in data.problems[0]
    assert not data.all_sealed
    assert data.events == sample_events(4)[: len(data.events)]


def test_crash_between_segments_is_reported(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    events = sample_events(12)
    w = record(dirs, recipient, events, segment_bytes=1500)
    w.abort()
    segments_of(dirs, w.session_id)[-1].unlink()  # sealed predecessor, successor never created
    data = read_session(dirs, w.session_id, identity)
    assert data.all_sealed
    assert data.problems and "no closing segment" in data.problems[0]


def test_closed_meta_makes_a_cut_tail_an_error(dirs: paths.Dirs, recipient: bytes, identity: bytes) -> None:
    w = record(dirs, recipient, sample_events(3))
    w.close()
    seg = segments_of(dirs, w.session_id)[-1]
    seg.write_bytes(seg.read_bytes()[:-10])
    with pytest.raises(StoreCorrupt, match="the session was closed"):
        read_session(dirs, w.session_id, identity)
    meta_path = w.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["state"] = "recording"  # unauthenticated metadata can only turn the error into a reported problem
    meta_path.write_text(json.dumps(meta))
    assert read_session(dirs, w.session_id, identity).problems


def test_session_without_segments(dirs: paths.Dirs, identity: bytes) -> None:
    (dirs.sessions / "20200101T000000Z-00000000").mkdir(parents=True)
    data = read_session(dirs, "20200101T000000Z-00000000", identity)
    assert data.events == [] and data.problems and not data.all_sealed


# --- session ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "a\\b", "", ".hidden", "x..y", "/etc"])
def test_session_ids_with_paths_are_refused(dirs: paths.Dirs, bad: str) -> None:
    with pytest.raises(UsageError, match="optin sessions"):
        session_dir(dirs, bad)


def test_missing_session_says_how_to_list(dirs: paths.Dirs, identity: bytes) -> None:
    with pytest.raises(NotFound, match="optin sessions"):
        read_session(dirs, "20261127T213000Z-1a2b3c4d", identity)


# --- keys -------------------------------------------------------------------------------------------------


def test_keys_init_load_and_refuse_overwrite(dirs: paths.Dirs) -> None:
    public = keys.init_keys(dirs)
    assert keys.load_recipient(dirs) == public
    assert len(keys.load_identity(dirs)) == 32
    text = (dirs.keys / "recipient").read_text()
    assert text == f"{keys.encode_recipient(public)}\nkey-id {keys.key_id(public)}\n"
    assert text.startswith("optin-pub1:")
    with pytest.raises(KeyError_, match="--force"):
        keys.init_keys(dirs)
    assert keys.ensure_keys(dirs) == public
    replaced = keys.init_keys(dirs, force=True)
    assert replaced != public and keys.load_recipient(dirs) == replaced
    assert keys.encode_recipient(replaced) in keys.describe(dirs)
    assert (dirs.keys / "identity").read_text().strip()[11:] not in keys.describe(dirs)


def test_missing_keys_say_the_fix(dirs: paths.Dirs) -> None:
    with pytest.raises(KeyError_, match="optin keys init"):
        keys.load_recipient(dirs)
    with pytest.raises(KeyError_, match="optin keys init"):
        keys.load_identity(dirs)


def test_identity_created_private_under_any_umask(dirs: paths.Dirs) -> None:
    old = os.umask(0)
    try:
        keys.init_keys(dirs)
    finally:
        os.umask(old)
    assert stat.S_IMODE((dirs.keys / "identity").stat().st_mode) == 0o600
    assert not [p for p in dirs.keys.iterdir() if p.name.startswith(".")]


def test_readable_identity_is_refused(dirs: paths.Dirs) -> None:
    keys.init_keys(dirs)
    (dirs.keys / "identity").chmod(0o644)
    with pytest.raises(KeyError_, match="chmod 600"):
        keys.load_identity(dirs)


def test_mismatched_pair_and_malformed_files(dirs: paths.Dirs) -> None:
    keys.init_keys(dirs)
    _, other = generate_keypair()
    (dirs.keys / "recipient").write_text(keys.encode_recipient(other) + "\n")
    with pytest.raises(KeyError_, match="not one key pair"):
        keys.load_identity(dirs)
    (dirs.keys / "recipient").write_text("optin-pub1:zz\n")
    with pytest.raises(KeyError_, match="not an optin key file"):
        keys.load_recipient(dirs)


def test_interrupted_init_is_completed(dirs: paths.Dirs) -> None:
    public = keys.init_keys(dirs)
    (dirs.keys / "recipient").unlink()
    assert keys.init_keys(dirs) == public
    assert keys.load_recipient(dirs) == public


def test_recipient_alone_is_enough_to_record(dirs: paths.Dirs, tmp_path: Path) -> None:
    """The identity can live elsewhere: recording needs only the public key."""
    public = keys.init_keys(dirs)
    identity_file = dirs.keys / "identity"
    kept = tmp_path / "offline-identity"
    identity_file.rename(kept)
    assert keys.ensure_keys(dirs) == public
    w = SessionWriter.create(dirs, keys.load_recipient(dirs))
    w.write_events(sample_events(1))
    w.close()
    assert "not on this machine" in keys.describe(dirs)
    with pytest.raises(KeyError_):
        keys.init_keys(dirs)  # refuses to replace a recipient whose identity is kept elsewhere
    kept.rename(identity_file)
    assert read_session(dirs, w.session_id, keys.load_identity(dirs)).events == sample_events(1)


def test_events_records_must_hold_events_and_no_frame() -> None:
    """format.md, Record types: an EVENTS record holds at least one event and never a frame."""
    import struct

    from agent.errors import StoreFormatError
    from agent.events import Frame, PointerMove, encode
    from agent.store.chain import _split_events

    def pack(*events: object) -> bytes:
        return b"".join(struct.pack(">I", len(b)) + b for b in (encode(e) for e in events))  # type: ignore[arg-type]

    assert len(_split_events(pack(PointerMove(1, 2, 3)))) == 1
    with pytest.raises(StoreFormatError, match="no event"):
        _split_events(b"")
    with pytest.raises(StoreFormatError, match="frame"):
        _split_events(pack(Frame(1, 0, 0, 1, 1, "webp", "click", b"x")))
