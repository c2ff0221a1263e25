"""OCR of a session's frames on one worker and on every core, beside the bare tesseract command.

``python -m tests.benchmarks.ocr_pool [FRAMES]`` (default 60 per scene; not collected by
pytest; exits 1 if the reads differ).  Two synthetic sessions of 1080p text screens, each
frame stored as optin stores it (WebP lossless): *typical work* — a few characters typed
on the editor's line, a line of terminal output (the terminal scrolling once full), a dialog
opened and closed again — and the export benchmark's session (one editor line retyped
before each frame, the session behind "0.3 s a frame" in docs/performance.md).  Timed:

* bare: the ``tesseract`` command (``OMP_THREAD_LIMIT=1``, no preparation) run on each region
  optin reads, one after the other;
* before: :func:`read_frames` with one worker and the command (one process a region,
  ``TesseractOcr(pool=False)``), as the export read frames until the pool;
* :func:`read_frames` with one worker process (the library kept loaded), and with a worker
  per core; the CPU seconds of this process and the workers beside the wall time.

Then ``mask_frames`` from the reads (the export's other per-frame cost), the hour (1,200
frames, 20 a minute) extrapolated from the second half's cost per frame — by the wall
clock and at the CPU floor (the frames' CPU over the cores: what an idle machine gives) —
against the target of two minutes, and where a typical frame's time goes (decode, compare,
prepare, the command's start and model load, recognition).  Timings taken while other
work runs are noisy; the CPU figures much less so.
"""

from __future__ import annotations

import io
import itertools
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from agent.events import Frame
from agent.redact.screen import IN_FLIGHT, TesseractOcr
from tests.benchmarks.redaction import FONT, screen

assert sys.platform != "win32", "POSIX only (/proc, os.pread, resource)"  # mypy: not checked as win32

HOUR_FRAMES = 1200
TARGET_S = 120.0


def _row(name: str, value: str, ratio: str = "") -> None:
    print(f"{name:<58} {value:>22} {ratio:>12}")


def session(n: int, seed: int = 7) -> list[Frame]:
    """``n`` frames of typical work: mostly a line or a dialog differing from the frame before."""
    from agent.frame_codec import encode_image

    rng = random.Random(seed)  # noqa: S311 - reproducible data
    font = ImageFont.truetype(FONT, 14)
    words = ["config", "import", "return", "value", "server", "update", "client", "session", "export"]
    img = screen()
    under: Image.Image | None = None  # what an open dialog covers
    typed = 0
    out_lines = 0
    frames: list[Frame] = []
    t = 1_000_000_000
    for i in range(n):
        draw = ImageDraw.Draw(img)
        roll = rng.random()
        if under is not None and roll < 0.5:  # the dialog closes: the screen behind it again
            img.paste(under, (660, 380))
            under = None
        elif under is None and roll < 0.12:  # a dialog opens
            under = img.crop((660, 380, 1260, 620))
            draw.rectangle((660, 380, 1259, 619), fill=(250, 250, 250), outline=(90, 90, 90), width=2)
            draw.text((690, 410), "Save changes to notes.txt before closing?", fill=(20, 20, 20), font=font)
            draw.text(
                (690, 450), "Your changes will be lost if you don't save them.", fill=(60, 60, 60), font=font
            )
            draw.rectangle((1040, 560, 1230, 595), fill=(40, 110, 200))
            draw.text((1090, 568), "Save", fill=(255, 255, 255), font=font)
        elif roll < 0.25:  # terminal output, scrolled up a line when full
            y = 20 + 22 * min(out_lines, 27)
            if out_lines >= 27:
                region = img.crop((980, 42, 1920, 700))
                img.paste(region, (980, 20))
                draw.rectangle((980, 614, 1919, 700), fill=(30, 30, 30))
            line = f"$ make test {i:04d} " + " ".join(rng.choice(words) for _ in range(5))
            draw.text((1000, y), line, fill=(220, 220, 220), font=font)
            out_lines += 1
        else:  # a few characters typed on the editor's current line
            row = 31 + (typed // 60) % 12
            typed += rng.randrange(3, 12)
            y = 20 + 22 * row
            draw.rectangle((20, y, 960, y + 20), fill=(245, 245, 245))
            text = (" ".join(rng.choice(words) for _ in range(12)))[: typed % 60 + 1]
            draw.text((20, y), text, fill=(20, 20, 20), font=font)
        t += 3_000_000_000
        frames.append(Frame(t, 0, 0, 1920, 1080, "webp", "settled", encode_image(img)))
    return frames


def _best(fn: Any, n: int = 2) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _cpu(engine: TesseractOcr) -> float:
    """CPU seconds used so far by this process and its OCR workers, busy or idle (Linux /proc)."""
    del engine  # every worker of this process counts: the engines' pools are its children
    total = time.process_time()
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:  # a child: the workers (the command's runs are reaped children)
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _bare(frames: list[Frame], reads: list[Any], binary: str) -> float:
    """The tesseract command on each region optin read (raw crops, no preparation), one after another."""
    from agent.redact.screen import frame_image

    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    pngs: list[bytes] = []
    for frame, read in zip(frames, reads, strict=True):
        image = frame_image(frame.data)
        for box in read.regions:
            buf = io.BytesIO()
            image.crop(box).save(buf, format="PNG", compress_level=1)
            pngs.append(buf.getvalue())
    t0 = time.perf_counter()
    for png in pngs:
        subprocess.run(
            [binary, "stdin", "stdout", "tsv"], input=png, capture_output=True, env=env, check=True
        )
    return time.perf_counter() - t0


def profile(frames: list[Frame], engine: Any) -> None:
    """Where one typical frame's read goes (medians over frames 2-13 of the session)."""
    from agent.redact.ocr_pool import prepare
    from agent.redact.screen import changed_regions, frame_image

    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    decode, compare, prep, start, recog = [], [], [], [], []
    blank = io.BytesIO()
    Image.new("L", (40, 20), 255).save(blank, format="PNG")
    for previous, frame in itertools.pairwise(frames[:13]):
        t0 = time.perf_counter()
        a, b = frame_image(previous.data), frame_image(frame.data)
        t1 = time.perf_counter()
        regions = changed_regions(a, b)
        t2 = time.perf_counter()
        crops = [b.crop(box) for box in regions]
        for crop in crops:
            prepare(crop, engine.SCALE, engine.DARK)
        t3 = time.perf_counter()
        subprocess.run(
            [engine.binary, "stdin", "stdout", "tsv"],
            input=blank.getvalue(),
            capture_output=True,
            env=env,
            check=True,
        )
        t4 = time.perf_counter()
        for crop in crops:
            engine._tsv(crop)
        t5 = time.perf_counter()
        decode.append((t1 - t0) / 2)
        compare.append(t2 - t1)
        prep.append(t3 - t2)
        start.append(t4 - t3)
        recog.append(t5 - t4)

    def med(xs: list[float]) -> str:
        return f"{sorted(xs)[len(xs) // 2] * 1e3:.1f} ms"

    print("where a typical frame's read goes (median of 12 frames):")
    _row("  decode the stored WebP (one frame)", med(decode))
    _row("  compare with the previous frame (changed_regions)", med(compare))
    _row("  prepare the regions (greyscale, invert dark, 2x)", med(prep))
    _row("  tesseract command start + model load (blank image)", med(start))
    _row("  recognition in a loaded worker (the frame's regions)", med(recog))


def retyped(n: int) -> list[Frame]:
    """``n`` frames of the export benchmark's session: one editor line retyped before each."""
    from agent.frame_codec import encode_image

    font = ImageFont.truetype(FONT, 14)
    img = screen()
    frames: list[Frame] = []
    for i in range(n):
        draw = ImageDraw.Draw(img)
        draw.rectangle((20, 700, 1000, 720), fill=(245, 245, 245))
        draw.text((20, 700), f"line {i}: " + "typed words " * 6, fill=(20, 20, 20), font=font)
        frames.append(Frame(1_000_000_000 * (i + 1), 0, 0, 1920, 1080, "webp", "click", encode_image(img)))
    return frames


def scene(name: str, frames: list[Frame], binary: str, cores: int) -> tuple[bool, TesseractOcr]:
    """Time one scene's reads every way; whether the reads were identical, and the 1-worker engine."""
    from agent.redact.screen import mask_frames, read_frames

    n = len(frames)
    command = TesseractOcr(binary, workers=1, pool=False)
    one = TesseractOcr(binary, workers=1)
    every = TesseractOcr(binary, workers=cores)
    if not one.pooled:
        print("note: no libtesseract of the command's version: the workers fall back to the command")
    one(Image.new("RGB", (64, 32), "white"), [(0, 0, 64, 32)])  # start the workers outside the timing
    every(Image.new("RGB", (64, 32), "white"), [(0, 0, 64, 32)])

    def fresh(engine: TesseractOcr) -> TesseractOcr:
        engine.forget()  # each timed run reads as an export does: from nothing
        engine.reused = 0
        return engine

    h = n // 2  # the second half's frames give a later frame's cost
    if h <= IN_FLIGHT * cores + 1:
        print(f"note: {n} frames are too few for a steady state (frames in flight: {IN_FLIGHT * cores})")

    def run(engine: TesseractOcr, workers: int, times: int = 2) -> tuple[float, float, float, Any]:
        """Best of ``times`` runs: wall seconds, then a later frame's wall and CPU seconds (from
        when frames ``h`` and ``n`` were done, in order: the first frame's whole read left out),
        and the reads."""
        best, per, per_cpu, reads = float("inf"), float("inf"), 0.0, None
        for _ in range(times):
            fresh(engine)
            marks: dict[int, tuple[float, float]] = {}

            def mark(done: int, _total: int, marks: dict[int, tuple[float, float]] = marks) -> None:
                if done in (h, n):
                    marks[done] = (time.perf_counter(), _cpu(engine))

            t0 = time.perf_counter()
            reads = read_frames(frames, engine, workers=workers, progress=mark)
            wall = time.perf_counter() - t0
            step = (marks[n][0] - marks[h][0]) / (n - h)
            best = min(best, wall)
            if step < per:
                per, per_cpu = step, (marks[n][1] - marks[h][1]) / (n - h)
        return best, per, per_cpu, reads

    t_cmd, per_cmd, _, reads_cmd = run(command, 1, times=1)
    t_one, per_one, _, reads_one = run(one, 1)
    t_all, per_all, per_cpu, reads_all = run(every, cores)
    same = reads_one == reads_all == reads_cmd
    regions = sum(len(r.regions) for r in reads_one)
    t_bare = _bare(frames, reads_one, binary)
    whole = [r for r in reads_one if r.whole]
    area = sum((b[2] - b[0]) * (b[3] - b[1]) for r in reads_one for b in r.regions)
    rows = sum(r.width * (b - t) for r in reads_one for t, b in {(x[1], x[3]) for x in r.regions})
    print(
        f"\n{name}: {n} frames, {regions} regions read ({len(whole)} frames whole), {every.reused} "
        f"reused; {area / max(rows, 1):.0%} of the full-width bands' pixels"
    )
    _row("", "seconds", "vs bare")
    _row("bare: tesseract command on the same regions, one at a time", f"{t_bare:.2f}", "1.00x")
    _row("before: read_frames, 1 worker, the command a region", f"{t_cmd:.2f}", f"{t_cmd / t_bare:.2f}x")
    _row("read_frames, 1 worker process (model kept loaded)", f"{t_one:.2f}", f"{t_one / t_bare:.2f}x")
    _row(f"read_frames, {cores} worker processes", f"{t_all:.2f}", f"{t_all / t_bare:.2f}x")
    _row("  speed-up over before", f"{t_cmd / t_all:.2f}x")
    _row("  identical reads (1 worker, all, the command)", str(same))
    t_mask, _ = _best(lambda: mask_frames(frames, every, ("canary",), reads=reads_all), n=1)
    _row("mask_frames from the reads (masks + re-encode, one thread)", f"{t_mask:.2f}")
    hour_read = t_all + per_all * (HOUR_FRAMES - n)
    hour_mask = t_mask / n * HOUR_FRAMES
    print(f"an hour ({HOUR_FRAMES} frames): this run, then frames {h + 1}-{n}'s cost for each more")
    _row("  a later frame, before (1 worker, the command)", f"{per_cmd * 1e3:.0f} ms")
    _row("  a later frame, 1 worker process", f"{per_one * 1e3:.0f} ms")
    _row(f"  a later frame, {cores} workers", f"{per_all * 1e3:.0f} ms")
    _row("  a later frame's CPU (this process + workers)", f"{per_cpu * 1e3:.0f} ms")
    _row(f"  a later frame at the CPU floor (its CPU / {cores} cores)", f"{per_cpu / cores * 1e3:.0f} ms")
    _row("  reading, before (1 worker, the command)", f"{t_cmd + per_cmd * (HOUR_FRAMES - n):.0f} s")
    _row(f"  reading, {cores} workers", f"{hour_read:.0f} s", "met" if hour_read <= TARGET_S else "NOT met")
    floor = t_all + per_cpu / cores * (HOUR_FRAMES - n)
    _row(
        f"  reading at the CPU floor ({cores} cores ours alone)",
        f"{floor:.0f} s",
        "met" if floor <= TARGET_S else "NOT met",
    )
    _row("  masking (mask_frames, one thread)", f"{hour_mask:.0f} s")
    total = hour_read + hour_mask
    verdict = "met" if total <= TARGET_S else "NOT met"
    _row(f"  reading + masking: target {TARGET_S:.0f} s", f"{total:.0f} s", verdict)
    command.close()
    every.close()
    return same, one


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    cores = os.cpu_count() or 1
    found = TesseractOcr.find()
    if found is None:
        print("OCR: tesseract with English data is not installed (apt-get install tesseract-ocr)")
        return 1
    found.close()
    print(
        f"OCR pool benchmark — {platform.machine()}, {cores} CPUs, Python {platform.python_version()}, "
        f"tesseract {found.version}; 1080p frames stored as WebP lossless"
    )
    ok = True
    for name, frames in (
        ("typical work (lines typed, terminal output and scrolls, dialogs)", session(n)),
        ("the export benchmark's session (one editor line retyped)", retyped(n)),
    ):
        same, one = scene(name, frames, found.binary, cores)
        ok = ok and same
        if name.startswith("typical"):
            print()
            profile(frames, one)
        one.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
