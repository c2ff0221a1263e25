"""Property-based tests (hypothesis): any events, any batching, any rotation size, any crash point,
and any flipped bit of a session that crash recovery sealed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from itertools import cycle
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.errors import StoreError
from agent.events import (
    MARKERS,
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
from agent.paths import Dirs
from agent.store import format as fmt
from agent.store.reader import read_session
from agent.store.recovery import recover_sessions
from agent.store.verify import verify
from agent.store.writer import SessionWriter
from tests.unit.store_helpers import flip, record_ends, segment_files, store_dirs

IDENTITY, RECIPIENT = fmt.generate_keypair()
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

_t = st.integers(0, 2**62)
_xy = st.integers(-(2**31), 2**31)
_maybe_text = st.none() | st.text(max_size=12)
_modifiers = st.lists(st.sampled_from(["alt", "ctrl", "shift", "super"]), unique=True).map(
    lambda mods: tuple(sorted(mods))
)
_json_value = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8)

EVENT = st.one_of(
    st.builds(PointerMove, t_ns=_t, x=_xy, y=_xy),
    st.builds(ButtonPress, t_ns=_t, x=_xy, y=_xy, button=st.sampled_from(["left", "right", "middle"])),
    st.builds(ButtonRelease, t_ns=_t, x=_xy, y=_xy, button=st.sampled_from(["left", "right"])),
    st.builds(Scroll, t_ns=_t, x=_xy, y=_xy, dx=st.integers(-10, 10), dy=st.integers(-10, 10)),
    st.builds(
        KeyPress,
        t_ns=_t,
        char=_maybe_text,
        name=_maybe_text,
        vk=st.none() | st.integers(0, 2**31),
        modifiers=_modifiers,
    ),
    st.builds(KeyRelease, t_ns=_t, char=_maybe_text, name=_maybe_text, vk=st.none() | st.integers(0, 2**31)),
    st.builds(
        WindowFocus,
        t_ns=_t,
        title=_maybe_text,
        app_class=_maybe_text,
        pid=st.none() | st.integers(0, 2**22),
        x=st.none() | _xy,
        y=st.none() | _xy,
        width=st.none() | st.integers(0, 10_000),
        height=st.none() | st.integers(0, 10_000),
    ),
    st.builds(
        Frame,
        t_ns=_t,
        left=_xy,
        top=_xy,
        width=st.integers(0, 10_000),
        height=st.integers(0, 10_000),
        format=st.sampled_from(["webp", "png"]),
        reason=st.sampled_from(["click", "focus", "start"]),
        data=st.binary(max_size=2500),
    ),
    st.builds(
        Marker,
        t_ns=_t,
        marker=st.sampled_from(sorted(MARKERS)),
        detail=st.dictionaries(st.text(max_size=6), _json_value, max_size=3),
    ),
)


def _batches(events: list[Event], sizes: list[int]) -> Iterator[list[Event]]:
    start = 0
    for size in cycle(sizes):
        if start >= len(events):
            return
        yield events[start : start + size]
        start += size


def _record(dirs: Dirs, events: list[Event], sizes: list[int], segment_bytes: int) -> SessionWriter:
    # a still clock: meta.json keeps its start counts (the crash test cuts records a kill would keep)
    w = SessionWriter.create(dirs, RECIPIENT, segment_bytes=segment_bytes, clock=lambda: 0.0)
    for batch in _batches(events, sizes):
        w.write_events(batch)
        w.flush()
    return w


@PROPERTY_SETTINGS
@given(
    events=st.lists(EVENT, max_size=50),
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    segment_bytes=st.integers(150, 6000),
)
def test_any_events_round_trip(events: list[Event], sizes: list[int], segment_bytes: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dirs = store_dirs(Path(tmp))
        w = _record(dirs, events, sizes, segment_bytes)
        w.close()
        data = read_session(dirs, w.session_id, IDENTITY)
        assert data.events == events
        assert data.all_sealed and data.problems == [] and not data.recovered
        assert verify(dirs, IDENTITY).ok


@PROPERTY_SETTINGS
@given(
    events=st.lists(EVENT, min_size=1, max_size=40),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    segment_bytes=st.integers(150, 4000),
    cut_fraction=st.floats(0.0, 1.0),
)
def test_any_crash_point_recovers_a_prefix(
    events: list[Event], sizes: list[int], segment_bytes: int, cut_fraction: float
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dirs = store_dirs(Path(tmp))
        w = _record(dirs, events, sizes, segment_bytes)
        w.abort()
        *sealed, last = segment_files(w.path)
        original = last.read_bytes()
        cut = round(cut_fraction * len(original))
        last.write_bytes(original[:cut])
        [report] = recover_sessions(dirs, RECIPIENT)
        assert report.action == "recovered"
        data = read_session(dirs, w.session_id, IDENTITY)
        assert data.events == events[: len(data.events)]
        kept = [end for end in record_ends(original) if end <= cut]
        sealed_records = sum(len(record_ends(f.read_bytes())) - 1 for f in sealed)
        assert len(data.events) >= sealed_records  # never less than what was sealed
        assert data.recovered and (report.kept_bytes == max(kept, default=fmt.HEADER_SIZE) or cut < 140)
        assert verify(dirs, IDENTITY).ok
        assert recover_sessions(dirs, RECIPIENT) == []


@PROPERTY_SETTINGS
@given(
    events=st.lists(EVENT, min_size=1, max_size=30),
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    segment_bytes=st.integers(150, 3000),
    cut_fraction=st.floats(0.0, 1.0),
    where=st.floats(0.0, 1.0, exclude_max=True),
)
def test_any_flip_in_a_recovered_session_is_caught(
    events: list[Event], sizes: list[int], segment_bytes: int, cut_fraction: float, where: float
) -> None:
    """Wherever the crash fell and whichever byte of whichever segment changes afterwards, verify
    fails naming that file and the reader raises: crash recovery never turns damage into loss."""
    with tempfile.TemporaryDirectory() as tmp:
        dirs = store_dirs(Path(tmp))
        w = _record(dirs, events, sizes, segment_bytes)
        w.abort()
        last = segment_files(w.path)[-1]
        original = last.read_bytes()
        last.write_bytes(original[: round(cut_fraction * len(original))])
        recover_sessions(dirs, RECIPIENT)
        assert verify(dirs, IDENTITY).ok
        files = segment_files(w.path)
        bit = int(where * 8 * sum(f.stat().st_size for f in files))  # one bit of all the session's bytes
        for file in files:
            if bit < 8 * file.stat().st_size:
                break
            bit -= 8 * file.stat().st_size
        file.write_bytes(flip(file.read_bytes(), bit))
        report = verify(dirs, IDENTITY)
        assert report.exit_code == 1 and {p.file for p in report.problems} == {file.name}
        try:
            read_session(dirs, w.session_id, IDENTITY)
        except StoreError:
            pass
        else:
            raise AssertionError(f"{file.name} bit {bit}: read_session did not raise")


@PROPERTY_SETTINGS
@given(data=st.binary(min_size=0, max_size=400))
def test_framing_scan_never_crashes_and_never_overruns(data: bytes) -> None:
    blob = fmt.MAGIC + bytes(fmt.HEADER_SIZE - len(fmt.MAGIC)) + data
    framing = fmt.scan_framing(blob, name="x")
    assert fmt.HEADER_SIZE <= framing.end <= len(blob)
    assert (framing.stop is None) == (framing.end == len(blob))
