"""Dataset build benchmarks (issue 17): ``optin dataset build`` beside the bare work on the same bundles.

``python -m tests.benchmarks.dataset`` (part of ``make bench``; about 3 minutes on 2 cores);
``--profile`` prints a cProfile of the two passes instead (``--profile --1080p``: on bundles of
60 kB 1080p frames).  Synthetic volunteers' bundles (tests/study/synth.py: real ``optin-bundle/3``
files from optin's own writer, 60 steps each, every step with its frame) are made once in a
temporary folder, then, in one run:

* bare: ``pyrage.decrypt`` of every file and ``tarfile`` reading every member, in one process and
  in two (the least any build must do: decrypt once and read the tar);
* optin: :func:`agent.dataset.build.build` with the local engine (1 and 2 worker processes, and 2
  with a shard size that gives several parts) and with Ray (a local Ray of 1 and 2 CPUs, started
  here as :class:`agent.dataset.engines.RayEngine` starts one), each into a fresh local DEST; the
  two passes are timed apart (the build decrypts every bundle twice by design: docs/dataset.md,
  Decision 3);
* peak memory (VmHWM) of every process of a build with 1 worker run in a child process (the
  driver, pass 1's worker, pass 2's worker), on one bundle, on the 200 and on a few large ones
  (1280x800 noise frames), beside their sizes;
* the wall time and peak memory of a 1,000-bundle build (local engine, 2 workers, in a child
  process; ``OPTIN_BENCH_DATASET_1000=0`` leaves it out: it adds about 90 s).
"""

from __future__ import annotations

import contextlib
import cProfile
import dataclasses
import io
import json
import logging
import os
import platform
import pstats
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tests.study import synth

STEPS = 60
#: Bundles of the side-by-side runs (10 volunteers x 20 sessions).
VOLUNTEERS, SESSIONS = 10, 20
#: A shard size that cuts the side-by-side SRC into several parts (pass 2 can use both workers).
SMALL_SHARD = 10_000_000
#: The large bundles of the memory rows: frames of noise (a photo is nearly as incompressible).
LARGE_SIZE, LARGE_STEPS, LARGE_BUNDLES = (1280, 800), 20, 3
#: The noise block of a "typical" 1080p frame: about 60 kB of WebP (docs/performance.md: 63 KiB text screens).
TYPICAL_NOISE = (140, 140)
MB = 1e6

#: A child process running :func:`agent.dataset.build.build` (what ``optin dataset build SRC DEST
#: --identity FILE --workers N`` runs) that prints its pass times as JSON; it, and every worker of its
#: pools (which import this file as ``__mp_main__`` under ``spawn``), appends its VmHWM to a file when
#: it exits, and the driver a line when each pass reports its first progress (so a worker's line
#: after ``stage write`` is pass 2's). VmHWM, not ru_maxrss: Linux carries a parent's peak into
#: ru_maxrss across fork and exec.
_DRIVER = """
import atexit, json, os, sys, time


def _record(line: str) -> None:
    with open(os.environ["OPTIN_BENCH_PEAKS"], "a") as out:
        out.write(line + "\\n")


def _peak() -> None:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    _record(f"{'driver' if __name__ == '__main__' else 'worker'} {kb}")


atexit.register(_peak)
if __name__ == "__main__":
    from pathlib import Path

    from agent.dataset.build import BuildOptions, build

    src, dest, identity, workers = sys.argv[1:5]
    marks = {}

    def progress(stage, done, total):
        if stage not in marks:
            _record(f"stage {stage}")
        marks[stage] = time.perf_counter()

    t0 = time.perf_counter()
    report = build(BuildOptions(src, dest, Path(identity), workers=int(workers)), progress=progress)
    end = time.perf_counter()
    check, write = marks["check"] - t0, marks["write"] - marks["check"]
    times = [end - t0, check, write, end - marks["write"], len(report.parts), report.ingested]
    print(json.dumps(times))
"""


def _row(name: str, bare: str, ours: str, ratio: float | None = None) -> None:
    """One line; the ratio is optin's throughput over the bare one's."""
    shown = f"{ratio:>8.3f}x" if ratio is not None else ""
    print(f"{name:<46} {bare:>24} {ours:>34} {shown}", flush=True)


@dataclass(frozen=True)
class Src:
    path: Path
    bundles: int
    steps: int
    bytes: int


# --- bare -------------------------------------------------------------------------------------------


def _bare_one(path: str, identity_lines: Sequence[str]) -> int:
    """Decrypt one bundle and read every tar member; the plaintext's size."""
    import pyrage
    from pyrage import x25519

    identities = [x25519.Identity.from_str(line) for line in identity_lines]
    with open(path, "rb") as f:
        plain = pyrage.decrypt(f.read(), identities)
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        for member in tar:
            data = tar.extractfile(member) if member.isfile() else None
            if data is not None:
                data.read()
    return len(plain)


def _bare_many(paths: Sequence[str], identity_lines: Sequence[str]) -> int:
    return sum(_bare_one(p, identity_lines) for p in paths)


def _identity_lines(identity_file: Path) -> tuple[str, ...]:
    from agent.dataset.build import load_identity

    return load_identity(identity_file).lines


def bare(src: Src, identity_file: Path, workers: int) -> tuple[float, int]:
    """Seconds to decrypt and read every bundle of ``src`` with ``workers`` processes (one: this
    one; more: a spawned pool, its start included as a build's is), and the plaintext bytes."""
    lines = _identity_lines(identity_file)
    paths = sorted(str(p) for p in src.path.iterdir())
    t0 = time.perf_counter()
    if workers == 1:
        plain = _bare_many(paths, lines)
    else:
        chunks = [paths[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            plain = sum(pool.map(_bare_many, chunks, [lines] * workers))
    return time.perf_counter() - t0, plain


# --- optin ------------------------------------------------------------------------------------------


@dataclass
class Timed:
    seconds: float
    check: float = 0.0  # start to the last bundle checked (lock, listing, pool start included)
    write: float = 0.0  # the last bundle checked to the last part written (plan, pool start included)
    publish: float = 0.0  # the rest: ledger, manifest, card, CURRENT, GC
    parts: int = 0
    ingested: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def optin_build(src: Src, identity_file: Path, dest: Path, engine: str, workers: int, **more: Any) -> Timed:
    from agent.dataset.build import BuildOptions, build

    marks: dict[str, float] = {}

    def progress(stage: str, done: int, total: int) -> None:
        marks[stage] = time.perf_counter()

    options = BuildOptions(str(src.path), str(dest), identity_file, engine=engine, workers=workers, **more)
    t0 = time.perf_counter()
    report = build(options, progress=progress)
    end = time.perf_counter()
    if report.ingested != src.bundles or report.quarantined or report.deferred:
        msg = f"the build ingested {report.ingested} of {src.bundles} bundles: {report.to_json()['bundles']}"
        raise RuntimeError(msg)
    check_end = marks.get("check", t0)
    write_end = marks.get("write", check_end)
    return Timed(
        end - t0, check_end - t0, write_end - check_end, end - write_end, len(report.parts), report.ingested
    )


@contextmanager
def local_ray(cpus: int) -> Iterator[dict[str, float]]:
    """A local Ray of ``cpus`` CPUs started as RayEngine starts one; yields its start and stop times."""
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="optin-ray-", dir="/tmp")  # AF_UNIX paths <= 107 bytes
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=temp,
    )
    times["start"] = time.perf_counter() - t0
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    for name in list(logging.root.manager.loggerDict):  # Ray Data's log lines (each sets its level)
        if name.startswith("ray"):
            logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray\.")
    try:
        yield times
    finally:
        t0 = time.perf_counter()
        ray.shutdown()
        times["stop"] = time.perf_counter() - t0
        shutil.rmtree(temp, ignore_errors=True)


# --- memory -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Peaks:
    """A build in a child process: its times and each process's VmHWM (bytes)."""

    timed: Timed
    pass1: list[int]
    pass2: list[int]
    driver: int


def peaks(src: Src, identity_file: Path, dest: Path, workers: int) -> Peaks:
    """:data:`_DRIVER` on ``src``: the build's times and the peak memory of every process."""
    driver = dest.parent / "peak_driver.py"
    driver.write_text(_DRIVER)
    record = dest.parent / f"{dest.name}.peaks"
    env = {**os.environ, "OPTIN_BENCH_PEAKS": str(record), "PYTHONDONTWRITEBYTECODE": "1"}
    args = [str(src.path), str(dest), str(identity_file), str(workers)]
    done = subprocess.run(
        [sys.executable, str(driver), *args], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        msg = f"the build exited {done.returncode}: {done.stderr[-2000:]}"
        raise RuntimeError(msg)
    seconds, check, write, publish, parts, ingested = json.loads(done.stdout.splitlines()[-1])
    if ingested != src.bundles:
        msg = f"the build ingested {ingested} of {src.bundles} bundles"
        raise RuntimeError(msg)
    stage, found = "", Peaks(Timed(seconds, check, write, publish, parts, ingested), [], [], 0)
    for line in record.read_text().splitlines():
        role, value = line.split()
        if role == "stage":
            stage = value
        elif role == "worker":
            (found.pass2 if stage == "write" else found.pass1).append(int(value) * 1024)
        else:
            found = dataclasses.replace(found, driver=int(value) * 1024)
    return found


def _mb(values: Sequence[int]) -> str:
    return "+".join(f"{v / MB:.0f}" for v in values)


@contextmanager
def large_frames(width: int, height: int, noise: tuple[int, int] | None = None) -> Iterator[None]:
    """Make synth write ``width`` x ``height`` frames (restored after): white with a ``noise``-sized
    block of random pixels (a screen where a little changed), or all noise (like a photo)."""
    from PIL import Image

    from agent.frame_codec import encode_image

    rng = random.Random(5)  # noqa: S311 - benchmark data
    nw, nh = noise or (width, height)
    images = []
    for n in range(4):
        image = Image.new("RGB", (width, height), (255, 255, 255))
        image.paste(Image.frombytes("RGB", (nw, nh), rng.randbytes(nw * nh * 3)), (40 * n, 30 * n))
        images.append(encode_image(image))
    frames = tuple(images)
    saved = synth.WIDTH, synth.HEIGHT, synth.frame_images
    synth.WIDTH, synth.HEIGHT = width, height
    synth.frame_images = lambda: frames  # type: ignore[assignment]
    try:
        yield
    finally:
        synth.WIDTH, synth.HEIGHT, synth.frame_images = saved


# --- the run ----------------------------------------------------------------------------------------


def make_src(where: Path, recipient: str, volunteers: int, sessions: int, steps: int, *, seed: int) -> Src:
    made = synth.make_bundles(
        where, recipient, volunteers=volunteers, sessions=sessions, seed=seed, steps=steps
    )
    return Src(where, len(made), sum(b.steps for b in made), sum(b.size for b in made))


def _rate(src: Src, seconds: float) -> str:
    return f"{src.bundles / seconds:,.1f} b/s, {src.steps / seconds:,.0f} st/s"


def _passes(t: Timed) -> str:
    return f"{t.check:.1f} + {t.write:.1f} + {t.publish:.1f} s"


def side_by_side(tmp: Path, identity_file: Path, src: Src) -> None:
    each = src.bytes / src.bundles
    print(f"SRC: {src.bundles} bundles of {STEPS} steps (each step with a frame), {each / 1e3:.0f} kB each")
    _row("", "bare", "optin", None)
    bare1, plain = bare(src, identity_file, 1)
    bare2, _ = bare(src, identity_file, 2)
    print(f"plaintext: {plain / src.bundles / 1e3:.0f} kB a bundle")
    _row("bare: decrypt + read every tar member, 1 proc", _rate(src, bare1), "")
    _row("bare: the same, 2 processes", _rate(src, bare2), "")
    base = {1: bare1, 2: bare2}
    runs: list[tuple[str, str, int, dict[str, Any]]] = [
        ("local, 1 worker", "local", 1, {}),
        ("local, 2 workers", "local", 2, {}),
        (f"local, 2 workers, shard {SMALL_SHARD / MB:.0f} MB", "local", 2, {"shard_size": SMALL_SHARD}),
    ]
    for n, (label, engine, workers, more) in enumerate(runs):
        t = optin_build(src, identity_file, tmp / f"dest-{n}", engine, workers, **more)
        _report(label, src, t, workers, base[workers])
    try:
        import ray  # noqa: F401
    except ImportError:
        print("Ray rows skipped: ray is not installed (make venv installs the study extra)")
        return
    for cpus in (1, 2):
        with local_ray(cpus) as ray_times:
            t = optin_build(src, identity_file, tmp / f"dest-ray-{cpus}", "ray", cpus)
        _report(f"ray, {cpus} CPU{'s' * (cpus > 1)}", src, t, cpus, base[cpus])
        ray_life = f"Ray start {ray_times['start']:.1f} s, stop {ray_times['stop']:.1f} s"
        _row("", "", ray_life, None)


def _report(label: str, src: Src, t: Timed, workers: int, bare_s: float) -> None:
    _row(f"optin {label}", "", _rate(src, t.seconds), bare_s / t.seconds)
    per = f"{src.bundles / t.seconds / workers:,.1f} b/s, {src.steps / t.seconds / workers:,.0f} st/s"
    _row("  per worker", "", per, None)
    pass2 = f"pass 1 + 2 + publish: {_passes(t)}"
    _row(f"  {t.parts} part{'s' * (t.parts > 1)}", "", pass2, None)
    # Pass 1 alone against the bare work: the same decrypt + tar, plus every check of optin inspect.
    _row("  pass 1 alone vs bare", "", _rate(src, t.check), bare_s / t.check)


def memory(tmp: Path, identity_file: Path, recipient: str, small: Src) -> None:
    """Throughput and peak memory (VmHWM) of each process of a 1-worker build in a child process."""
    print("a build with 1 worker in a child process: throughput and peak memory (VmHWM) of each process")
    _row("", "bare MB/s (1 proc)", "optin MB/s", None)
    one = make_src(tmp / "src-one", recipient, 1, 1, STEPS, seed=29)
    with large_frames(1920, 1080, TYPICAL_NOISE):
        typical = make_src(tmp / "src-typical", recipient, 3, 20, STEPS, seed=37)
    with large_frames(*LARGE_SIZE):
        large = make_src(tmp / "src-large", recipient, LARGE_BUNDLES, 1, LARGE_STEPS, seed=23)
    lines = _identity_lines(identity_file)
    cases = (
        ("64x40 frames", one),
        ("64x40 frames", small),
        ("1080p frames, 60 kB each", typical),
        (f"{LARGE_SIZE[0]}x{LARGE_SIZE[1]} noise frames", large),
    )
    for label, src in cases:
        plain = max(_bare_one(str(p), lines) for p in src.path.iterdir())
        biggest = max(p.stat().st_size for p in src.path.iterdir())
        bare_s, _ = bare(src, identity_file, 1)
        found = peaks(src, identity_file, tmp / f"dest-peak-{label[:4]}-{src.bundles}", 1)
        t = found.timed
        name = f"{src.bundles} bundle{'s' * (src.bundles > 1)}, {label}: {biggest / MB:.1f} MB"
        if src.bundles == 1:  # the fixed costs of a build and the memory of a worker that holds nothing
            _row(name, "", f"{t.seconds:.1f} s: {_passes(t)}", None)
        else:
            mbs = f"{src.bytes / MB / t.seconds:.1f}"
            _row(name, f"{src.bytes / MB / bare_s:.1f}", mbs, bare_s / t.seconds)
            _row(
                f"  plaintext {plain / MB:.1f} MB; {_rate(src, t.seconds)}", "", f"passes {_passes(t)}", None
            )
        shown = f"{_mb(found.pass1)} / {_mb(found.pass2)} / {found.driver / MB:.0f} MB"
        _row("  VmHWM pass 1 / pass 2 worker / driver", "", shown, None)


def thousand(tmp: Path, identity_file: Path, recipient: str) -> None:
    t0 = time.perf_counter()
    src = make_src(tmp / "src-1000", recipient, 50, 20, STEPS, seed=31)
    made = time.perf_counter() - t0
    bare_s, _ = bare(src, identity_file, 2)
    found = peaks(src, identity_file, tmp / "dest-1000", 2)
    t = found.timed
    print(f"1,000 bundles ({src.bytes / MB:.0f} MB, {src.steps:,} steps; synth wrote them in {made:.0f} s):")
    _row(
        "  local, 2 workers: wall time", f"{bare_s:.1f} s (2 proc)", f"{t.seconds:.1f} s", bare_s / t.seconds
    )
    _row(f"  {t.parts} part{'s' * (t.parts > 1)}", "", f"pass 1 + 2 + publish: {_passes(t)}", None)
    shown = f"{_mb(found.pass1)} / {_mb(found.pass2)} / {found.driver / MB:.0f} MB"
    _row("  VmHWM pass 1 / pass 2 workers / driver", "", shown, None)


def profile(
    tmp: Path, identity_file: Path, recipient: str, count: int = 12, *, frames_1080p: bool = False
) -> None:
    """cProfile of pass 1 (``passes.check``) and pass 2 (``passes.write_part``) in this process, on
    bundles of 64x40 frames or (``frames_1080p``) of 60 kB 1080p frames."""
    from agent.dataset import layout
    from agent.dataset.build import load_identity
    from agent.dataset.passes import PartJob, Settings, check, write_part
    from agent.dataset.plan import Accepted
    from agent.dataset.source import open_source

    with large_frames(1920, 1080, TYPICAL_NOISE) if frames_1080p else contextlib.nullcontext():
        src = make_src(tmp / "src", recipient, 3, count // 3, STEPS, seed=41)
    settings = Settings(
        source=str(src.path),
        dest=str(tmp / "dest"),
        identity=load_identity(identity_file),
        withdrawn=frozenset(),
        known=frozenset(),
        max_bundle_size=4 << 30,
    )
    candidates = list(open_source(settings.source).list())
    check(settings, candidates[0])  # imports and caches out of the profile
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    accepted = [check(settings, c) for c in candidates]
    prof.disable()
    pass1 = time.perf_counter() - t0
    _top(f"pass 1: check() of {src.bundles} bundles, {pass1:.2f} s", prof)
    kept = tuple(
        sorted((a for a in accepted if isinstance(a, Accepted)), key=lambda a: (a.volunteer, a.session))
    )
    now = time.time_ns()
    job = PartJob(kept, layout.utc(now)[:10], 1, now)
    warm = dataclasses.replace(settings, dest=str(tmp / "dest-warm"))
    write_part(warm, dataclasses.replace(job, bundles=kept[:1]))  # pyarrow's first use imports pandas
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    write_part(settings, job)
    prof.disable()
    _top(f"pass 2: write_part() of {len(kept)} bundles, {time.perf_counter() - t0:.2f} s", prof)


def _top(title: str, prof: cProfile.Profile, n: int = 30) -> None:
    print(f"\n== {title}")
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(n)
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(n)
    print("-- by cumulative time")
    print("\n".join(line for line in out.getvalue().splitlines()[6:] if line.strip()))


def _load() -> str:
    """The 1-minute load average (the 2 cores are shared: it says how much)."""
    if sys.platform == "win32":
        return "unknown"
    return f"{os.getloadavg()[0]:.2f}"


def main(argv: Sequence[str] = ()) -> int:
    print(
        f"dataset build benchmarks — {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; load {_load()}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="optin-bench-dataset-") as name:
        tmp = Path(name)
        identity_file, recipient = synth.make_study_identity(tmp)
        if "--profile" in argv:
            profile(tmp, identity_file, recipient, frames_1080p="--1080p" in argv)
            return 0
        src = make_src(tmp / "src", recipient, VOLUNTEERS, SESSIONS, STEPS, seed=17)
        side_by_side(tmp, identity_file, src)
        memory(tmp, identity_file, recipient, src)
        if os.environ.get("OPTIN_BENCH_DATASET_1000", "1") != "0":
            thousand(tmp, identity_file, recipient)
    print(f"load at the end {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
