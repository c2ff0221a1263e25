"""An export with OCR required of a session of typical work stored as the recorder stores it, on
one OCR worker and on every core: wall time, CPU and peak memory, extrapolated to an hour.

``python -m tests.benchmarks.export_hour [FRAMES]`` (default 120: six minutes of work at 20
frames a minute; not collected by pytest).  The frames are the typical-work scene of
:mod:`tests.benchmarks.ocr_pool` (1080p text screens: a few characters typed, a line of terminal
output, a dialog opened and closed), each with a click, stored through
:class:`agent.frame_regions.RegionEncoder` (keyframes in strips, then changed rectangles) by the
project's own session writer.  Each export runs in a fresh process (:func:`_child`), so its peak
RSS (VmHWM) is its own; tesseract's workers are separate processes, whose CPU is counted with
the export's (``RUSAGE_CHILDREN``).

Bare: decrypting the stored session (``read_session``), reading each frame's changed regions with
the ``tesseract`` command is :mod:`tests.benchmarks.ocr_pool`'s job; here the bare row is the
same export with OCR off (decrypt, rebuild, tar, age), so the ratio says what OCR costs on top.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

assert sys.platform != "win32", "POSIX only (/proc, os.pread, resource)"  # mypy: not checked as win32

HOUR_FRAMES = 1200
TARGET_S = 120.0
S = 1_000_000_000


def write_session(home: Path, n: int) -> tuple[str, int]:
    """``n`` frames of typical work, each with a click, stored as patches: (session id, stored bytes)."""
    from PIL import Image

    from agent import consent
    from agent.capture.screen import Shot
    from agent.events import ButtonPress, ButtonRelease, Marker
    from agent.frame_regions import RegionEncoder
    from agent.paths import dirs
    from agent.store import keys
    from agent.store.writer import SessionWriter
    from tests.benchmarks import consented_home
    from tests.benchmarks.ocr_pool import session

    consented_home(home, ocr="required")
    d = dirs()
    receipt = consent.current_receipt(d)
    assert receipt is not None
    encoder = RegionEncoder()
    t = 10**12
    w = SessionWriter.create(d, keys.load_recipient(d))
    w.write_events(
        [Marker(t, "session_start", {"mono_ns": t, "wall_ns": 0, "consent_sha256": receipt.text_sha256})]
    )
    import io

    for frame in session(n):
        t += 3 * S
        with Image.open(io.BytesIO(frame.data)) as img:
            pixels = img.convert("RGBA").tobytes("raw", "BGRA")
        shot = Shot(t - 30_000_000, 0, 0, frame.width, frame.height, pixels)
        w.write_events(
            [
                encoder.encode(shot, "click"),
                ButtonPress(t, 400, 300, "left"),
                ButtonRelease(t + 60_000_000, 400, 300, "left"),
            ]
        )
        w.flush()
    w.write_events([Marker(t + S, "session_stop", {"loss": {"events": 0}})])
    w.close()
    return w.session_id, sum(p.stat().st_size for p in w.path.glob("*.seg"))


def _child(session: str, out: str, ocr: str, workers: int) -> dict[str, Any]:
    """One export in this (fresh) process, OCR ``ocr`` with ``workers`` OCR processes."""
    from unittest import mock

    from agent.export import bundle
    from agent.paths import dirs
    from agent.redact import screen
    from agent.redact.local_names import LocalNames
    from agent.store import keys
    from tests.benchmarks import consented_home

    d = dirs()
    _, study = consented_home(Path(os.environ["OPTIN_HOME"]), ocr=ocr)
    identity = keys.load_identity(d)
    find = screen.TesseractOcr.find
    c0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    with mock.patch.object(screen.TesseractOcr, "find", lambda **kw: find(**{**kw, "workers": workers})):
        res = bundle.export_session(
            d, session, Path(out), study, approve=True, local=LocalNames(), identity=identity
        )
    seconds = time.perf_counter() - t0
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (me.ru_utime + me.ru_stime - c0.ru_utime - c0.ru_stime) + kids.ru_utime + kids.ru_stime
    peak_kib = me.ru_maxrss
    return {"seconds": seconds, "cpu": cpu, "peak_kib": peak_kib, "bytes": res.bytes, "frames": res.frames}


def export_child(session: str, out: Path, ocr: str, workers: int) -> dict[str, Any]:
    from tests.benchmarks import run_child

    out.mkdir(parents=True, exist_ok=True)
    return run_child("tests.benchmarks.export_hour", [session, str(out), ocr, str(workers)], timeout=3600)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(argv[1], argv[2], argv[3], int(argv[4]))))
        return 0
    n = int(argv[0]) if argv else 120
    cores = os.cpu_count() or 1
    print(
        f"export with OCR — {platform.machine()}, {cores} CPUs, Python {platform.python_version()}; "
        f"{n} frames of typical 1080p work stored as patches"
    )
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        session, stored = write_session(home, n)
        print(f"stored: {stored / 1e6:.2f} MB ({stored / n / 1024:.0f} KiB a frame)")
        rows = {
            "OCR off (bare: decrypt, rebuild, tar, age)": export_child(session, home / "off", "off", 1),
            "OCR required, 1 worker": export_child(session, home / "one", "required", 1),
            f"OCR required, {cores} workers": export_child(session, home / "all", "required", cores),
        }
    print(f"{'export':<44} {'seconds':>8} {'CPU s':>8} {'peak RSS':>9} {'hour (wall)':>12}")
    for label, r in rows.items():
        hour = r["seconds"] * HOUR_FRAMES / n
        peak = f"{r['peak_kib'] / 1024:.0f}MB"
        print(f"{label:<44} {r['seconds']:>8.1f} {r['cpu']:>8.1f} {peak:>9} {hour:>10.0f} s")
    one, every, bare = (
        rows["OCR required, 1 worker"],
        rows[f"OCR required, {cores} workers"],
        rows[next(iter(rows))],
    )
    hour = every["seconds"] * HOUR_FRAMES / n
    print(
        f"ratios: {cores} workers / 1 worker {every['seconds'] / one['seconds']:.2f}x, "
        f"with OCR / without {every['seconds'] / bare['seconds']:.1f}x; an hour ({HOUR_FRAMES} frames) "
        f"≈ {hour:.0f} s with {cores} workers: {'met' if hour <= TARGET_S else 'NOT met'} "
        f"(target {TARGET_S:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
