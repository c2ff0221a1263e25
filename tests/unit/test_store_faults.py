"""Faults (P5, P9): a full disk or a read-only data dir stops capture cleanly, says why,
and damages nothing already written; the next start recovers the session.

These tests mount a small tmpfs, which needs root (CI runs as root). Locally
without root they skip and say why; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.backends.fake import FakeBackend
from agent.backends.virtual_display import wait_for
from agent.control import Recorder
from agent.events import Frame, PointerMove, now_ns
from agent.store import keys
from agent.store.reader import read_session
from agent.store.verify import verify
from tests.tools import Consented, fake_backend, hooks_of, unavailable

FS_BYTES = 3 * 1024 * 1024


def _mount(target: Path, options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def small_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """OPTIN_HOME on its own 3 MiB tmpfs (so it can fill up or turn read-only)."""
    fs = tmp_path / "fs"
    fs.mkdir()
    done = _mount(fs, f"size={FS_BYTES},mode=0700")
    if done.returncode != 0:
        unavailable(f"mounting a test tmpfs failed ({done.stderr.strip()}); these tests need root")
    try:
        home = fs / "home"
        home.mkdir(mode=0o700)
        monkeypatch.setenv("OPTIN_HOME", str(home))
        yield home
    finally:
        subprocess.run(["umount", "-l", str(fs)], check=False)


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    return wait_for(pred, timeout, interval=0.01)


def _frame(i: int) -> Frame:
    return Frame(now_ns(), 0, 0, 10, 10, "webp", "bench", os.urandom(64 * 1024) + i.to_bytes(4, "big"))


def _fill_until_it_stops(rec: Recorder, backend: FakeBackend) -> int:
    emitted = 0
    while rec.state == "recording" and emitted < 400:  # 400 x 64 KiB > the 3 MiB filesystem
        hooks_of(backend).emit(_frame(emitted))
        emitted += 1
        time.sleep(0.002)
    return emitted


def test_a_full_disk_stops_capture_cleanly_and_keeps_what_was_written(
    small_home: Path, consented: Consented
) -> None:
    d, study = consented
    ballast = small_home.parent / "ballast"  # room to give back later
    ballast.write_bytes(bytes(256 * 1024))
    backend = fake_backend()
    rec = Recorder(d, backend, study)
    rec.start()
    hooks_of(backend).emit(PointerMove(now_ns(), 7, 7))
    assert _wait(lambda: rec.counters.written >= 2)
    emitted = _fill_until_it_stops(rec, backend)
    assert _wait(lambda: rec.state == "error")
    assert rec.error is not None
    assert rec.error.startswith("writing the encrypted store failed (No space left on device)")
    assert _wait(lambda: not hooks_of(backend).is_alive())  # the hooks themselves stopped
    rec.stop()
    assert rec.counters.dropped > 0  # what could not be written is counted (P9)
    assert emitted >= rec.counters.frames

    # nothing already written is damaged: the authenticated prefix reads back
    assert rec.session_id is not None
    data = read_session(d, rec.session_id, keys.load_identity(d))
    assert [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)] == [(7, 7)]
    written_frames = [e for e in data.events if isinstance(e, Frame) and e.reason == "bench"]
    assert len(written_frames) >= 1
    assert all(f.data[-4:] == i.to_bytes(4, "big") for i, f in enumerate(written_frames))

    # once there is room again, the next start recovers the session and the store verifies clean
    ballast.unlink()
    rec2 = Recorder(d, fake_backend(), study)
    rec2.start()
    rec2.stop()
    assert rec.session_id in [r.session_id for r in rec2.recovered]
    assert verify(d, keys.load_identity(d), rec.session_id).ok
    again = read_session(d, rec.session_id, keys.load_identity(d))
    assert again.recovered and len([e for e in again.events if isinstance(e, Frame)]) == len(
        data.events
    ) - len([e for e in data.events if not isinstance(e, Frame)])


def test_a_read_only_data_dir_refuses_to_record_with_a_clear_message(
    small_home: Path, consented: Consented
) -> None:
    """(A mount cannot turn read-only under open files; mid-recording write failures take the
    same path as the full disk above.)"""
    from agent.errors import StoreError

    d, study = consented
    fs = small_home.parent
    done = subprocess.run(["mount", "-o", "remount,ro", str(fs)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    backend = fake_backend()
    try:
        with pytest.raises(StoreError, match="Read-only file system") as err:
            Recorder(d, backend, study).start()
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=False)
    assert "Fix:" in str(err.value)
    assert backend.inputs == [] and backend.screens == []  # nothing captured that could not be kept
