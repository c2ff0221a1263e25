"""An export's peak memory does not grow with the session's frames: 1 hour and 8 hours side by side.

Two synthetic sessions are written by the recorder's own writer (tests/benchmarks/export_memory.py:
a click every 4 s with its pre-action frame, small frames and a 1.7 MB one every half hour), then
each is exported by ``export_session`` in a fresh child process, which reports how far its RSS
rose above where it started (VmHWM, reset after the key is unlocked).  Before the export
streamed, that rise was the session's frames two or three times over (the whole tar, then the
whole age file, in memory: 640 MB for this 8-hour session); now it is a few segments' worth (the
walk's buffers and two cached segments of ~8 MiB: ~40 MB) plus the session's event records, which
are small (~2.5 MB per hour of this session: 3 events and a frame every 4 s).

The bounds are generous (a shared machine): what the test proves is the shape — 8 hours of
frames (7x the bytes of 1 hour, 127 MB more) cost the export 20-40 MB more (the event records,
and the buffers a 1-hour session of 3 segments does not fill), where the in-memory export,
run on the same session for contrast, rises by twice the bundle.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyrage import x25519

assert sys.platform != "win32", "POSIX only: the export runs in a child measured through /proc"

from agent.study import demo_study_toml  # noqa: E402 - after the platform line, for mypy
from tests.benchmarks.export_memory import child_export, long_session  # noqa: E402
from tests.tools import Consented  # noqa: E402

MB = 1024  # KiB


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    """The demo study, OCR off (the frames here are random bytes: nothing decodes them)."""
    identity = x25519.Identity.generate()
    path = tmp_path / "study.toml"
    path.write_text(demo_study_toml(str(identity.to_public())) + '\n[redaction]\nocr = "off"\n')
    return path


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the peak is read from /proc/self/status (Linux)"
)
def test_the_export_of_8_hours_peaks_where_the_export_of_1_hour_does(
    consented: Consented, tmp_path: Path
) -> None:
    d, _ = consented
    runs = {}
    for hours in (1.0, 8.0):
        session, frames, stored = long_session(d, hours, small=16_000)
        run = child_export("stream", session, tmp_path / f"out-{hours:g}")
        assert run["reset"] is True
        runs[hours] = (frames, stored, {**run, "session": session})
    (f1, s1, r1), (f8, s8, r8) = runs[1.0], runs[8.0]
    grow1 = r1["peak_kib"] - r1["base_kib"]
    grow8 = r8["peak_kib"] - r8["base_kib"]
    assert f8 >= 7 * f1 and s8 > 120_000_000 and r8["bytes"] > s8 * 0.9  # the frames are in the bundle
    assert grow8 < 96 * MB, f"the 8-hour export rose {grow8 // MB} MB"
    assert grow8 - grow1 < 48 * MB, f"8 h rose {grow8 // MB} MB, 1 h {grow1 // MB} MB"
    assert (grow8 - grow1) * 1024 < (s8 - s1) / 2  # far below the frames added (127 MB)
    # the same session exported all in memory (as before it streamed) rises by the bundle, twice
    whole = child_export("memory", runs[8.0][2]["session"], tmp_path / "out-memory")
    assert whole["peak_kib"] - whole["base_kib"] > 2 * grow8 and abs(whole["bytes"] - r8["bytes"]) < 1000
