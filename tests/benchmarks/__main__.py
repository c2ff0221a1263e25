"""Run every benchmark and print a table (see the package docstring)."""

from __future__ import annotations

import json
import os
import platform
import queue
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.events import Event, Frame, KeyPress, PointerMove, encode, now_ns

if TYPE_CHECKING:
    from agent.backends.virtual_display import VirtualDisplay


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    s = sorted(samples_ns)
    return s[len(s) // 2] / 1000, s[int(len(s) * 0.99)] / 1000


def _row(name: str, bare: str, ours: str, ratio: float | None) -> None:
    shown = f"{ratio:>8.2f}x" if ratio is not None else ""
    print(f"{name:<34} {bare:>22} {ours:>22} {shown}")


def bench_hook_callback(n: int = 200_000) -> None:
    """Per-event cost on the hook thread: bare put of a tuple vs optin's sink."""
    from agent.backends.fake import FakeBackend
    from agent.control import Recorder

    bare_q: queue.Queue[object] = queue.Queue(n + 1)
    bare: list[int] = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        bare_q.put_nowait((time.monotonic_ns(), i, i))
        bare.append(time.perf_counter_ns() - t0)

    from pyrage import x25519

    from agent.paths import dirs
    from agent.recorder_states import Intake
    from agent.study import demo_study_toml, parse_study

    study = parse_study(demo_study_toml(str(x25519.Identity.generate().to_public())))
    saved = os.environ.get("OPTIN_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["OPTIN_HOME"] = home
        rec = Recorder(dirs(), FakeBackend(), study)  # only the sink is measured: no session, no threads
    if saved is None:
        os.environ.pop("OPTIN_HOME", None)
    else:
        os.environ["OPTIN_HOME"] = saved
    rec._queue = queue.Queue(n + 1)
    rec._intake = Intake.OPEN  # the sink alone, as a started recorder has it
    ours: list[int] = []
    sink = rec._sink
    for i in range(n):
        t0 = time.perf_counter_ns()
        sink(PointerMove(now_ns(), i, i))
        ours.append(time.perf_counter_ns() - t0)
    b50, b99 = _percentiles(bare)
    o50, o99 = _percentiles(ours)
    _row("hook callback p50 (µs)", f"{b50:.2f}", f"{o50:.2f}", o50 / b50)
    _row("hook callback p99 (µs)", f"{b99:.2f}", f"{o99:.2f}", o99 / b99)


def _through_writer(events: Sequence[Event], batch: int, where: str | None = None) -> float:
    """Seconds to write ``events`` through a real SessionWriter (a fresh OPTIN_HOME in ``where``)."""
    from agent.paths import dirs
    from agent.store import format as fmt
    from agent.store.writer import SessionWriter

    with tempfile.TemporaryDirectory(dir=where) as tmp:
        os.environ["OPTIN_HOME"] = tmp
        _, public = fmt.generate_keypair()
        t0 = time.perf_counter()
        writer = SessionWriter.create(dirs(), public)
        for off in range(0, len(events), batch):
            writer.write_events(events[off : off + batch])
            writer.flush()
        writer.close({})
        return time.perf_counter() - t0


def _raw_aead(chunks: list[bytes]) -> float:
    """Seconds for AES-256-GCM alone over ``chunks``, in memory."""
    key = AESGCM(os.urandom(32))
    t0 = time.perf_counter()
    for chunk in chunks:
        key.encrypt(os.urandom(12), chunk, b"")
    return time.perf_counter() - t0


def bench_ingest(n: int = 300_000) -> None:
    """Small events to encrypted disk, beside raw AEAD over the same bytes and beside json+AEAD.

    optin: the whole SessionWriter path (typed events, encoding, framing, AEAD,
    file writes, fsync at least every second and at the seal).
    """
    events = [
        KeyPress(now_ns(), "a", None, 97, ()) if i % 3 else PointerMove(now_ns(), i, i) for i in range(n)
    ]
    blob = b"".join(encode(e) for e in events)
    raw_s = _raw_aead([blob[off : off + (1 << 20)] for off in range(0, len(blob), 1 << 20)])
    t0 = time.perf_counter()
    payload = b"".join(json.dumps({"k": e.KIND, "t": e.t_ns}).encode() for e in events)
    json_s = (
        time.perf_counter()
        - t0
        + _raw_aead([payload[off : off + (1 << 20)] for off in range(0, len(payload), 1 << 20)])
    )
    ours_s = _through_writer(events, 4096)
    _row("ingest (events/s) vs raw AEAD", f"{n / raw_s:,.0f}", f"{n / ours_s:,.0f}", raw_s / ours_s)
    _row("ingest (events/s) vs json+AEAD", f"{n / json_s:,.0f}", f"{n / ours_s:,.0f}", json_s / ours_s)


def _raw_aead_to_files(chunks: list[bytes], where: str | None) -> float:
    """Seconds for AES-256-GCM over ``chunks`` written to files in ``where`` with the store's
    durability policy and nothing else: a new file every 8 MiB, fsync at each file's end and
    at least every second (no framing, no commit, no encoding)."""
    key = AESGCM(os.urandom(32))
    with tempfile.TemporaryDirectory(dir=where) as tmp:
        t0 = last_sync = time.perf_counter()
        files, size = 0, 0
        fd = os.open(Path(tmp, "0"), os.O_WRONLY | os.O_CREAT, 0o600)
        for chunk in chunks:
            os.write(fd, key.encrypt(os.urandom(12), chunk, b""))
            size += len(chunk) + 16
            if size >= 8 << 20:
                os.fsync(fd)
                os.close(fd)
                files, size = files + 1, 0
                fd = os.open(Path(tmp, str(files)), os.O_WRONLY | os.O_CREAT, 0o600)
            elif time.perf_counter() - last_sync >= 1.0:
                os.fsync(fd)
                last_sync = time.perf_counter()
        os.fsync(fd)
        os.close(fd)
        return time.perf_counter() - t0


def bench_frames(n: int = 300, size: int = 200_000) -> None:
    """200 KB frames to encrypted files (MB/s), beside raw AEAD over the same bytes.

    Baselines: AES-GCM in memory (the design's comparison), and AES-GCM plus the
    same writes and fsyncs, on the disk and on a tmpfs (RAM: the store's own cost
    with the disk taken out).  Each is the best of three runs.
    """
    datas = [os.urandom(size) for _ in range(n)]  # incompressible, like encoded images
    frames = [Frame(now_ns(), 0, 0, 640, 480, "webp", "bench", d) for d in datas]
    mb = n * size / 1e6
    raw_s = min(_raw_aead(datas) for _ in range(3))
    _row("frames 200 KB (MB/s): raw AEAD", f"{mb / raw_s:,.0f}", "", None)
    places = [("disk", None)] + [("tmpfs", "/dev/shm")] * os.path.isdir("/dev/shm")
    for label, where in places:
        bare_s = min(_raw_aead_to_files(datas, where) for _ in range(3))
        ours_s = min(_through_writer(frames, 1, where) for _ in range(3))
        ours = f"{mb / ours_s:,.0f}"
        _row(f"  {label}: optin vs raw AEAD", "", ours, raw_s / ours_s)
        _row(f"  {label}: vs AEAD + same writes", f"{mb / bare_s:,.0f}", ours, bare_s / ours_s)
    bench_writer_memory(frames)


def bench_writer_memory(frames: list[Frame]) -> None:
    """Peak memory the writer allocates while storing the frames: bounded by one record, not by n."""
    import tracemalloc

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    _through_writer(frames, 1)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    total = sum(len(f.data) for f in frames) / 1e6
    print(f"{'writer peak allocation (MB)':<34} {f'{total:.0f} MB written':>22} {peak / 1e6:>22.1f}")


def _on_display(fn: Callable[[VirtualDisplay], None]) -> None:
    from agent.backends.virtual_display import VirtualDisplay, missing_tools

    if missing_tools():
        print(f"(skipped display benchmarks: missing {', '.join(missing_tools())})")
        return
    with VirtualDisplay(width=1920, height=1080) as vd:
        os.environ.update(vd.env)
        fn(vd)


def bench_display(vd: VirtualDisplay) -> None:
    """Screen grab (bare mss vs grab+encode) and hook stop latency (bare pynput vs ours)."""
    import mss

    from agent.backends import select_backend
    from agent.backends.xorg import unblock_record_listener

    vd.spawn(["xterm", "-geometry", "120x40+20+20", "-e", "ls -laR /usr/share/doc | head -n 200; sleep 60"])
    time.sleep(1.0)
    with mss.MSS() as m:
        region = m.monitors[0]
        bare = [_timed(lambda: m.grab(region)) for _ in range(20)]
    from agent.capture.screen import encode_frame

    grabber = select_backend("xorg").screen_grabber()
    last = grabber.shoot(now_ns())
    checks = []
    for _ in range(20):  # what the watcher does each tick on a static screen: a raw grab and a compare
        t0 = time.perf_counter()
        shot = grabber.shoot(now_ns())
        assert shot.same_pixels(last)
        checks.append((time.perf_counter() - t0) * 1000)
        last = shot
    encodes = [_timed(lambda: encode_frame(last, "bench")) for _ in range(10)]
    size = len(encode_frame(last, "bench").data)
    grabber.close()
    bm, cm, em = statistics.median(bare), statistics.median(checks), statistics.median(encodes)
    _row("static-screen tick 1080p (ms)", f"{bm:.1f} grab", f"{cm:.1f} grab+compare", cm / bm)
    _row("stored frame 1080p (ms)", f"{bm:.1f} grab", f"{em:.1f} webp encode", em / bm)
    print(f"{'':<34} {'':>22} {f'{size / 1024:.0f} KiB/frame':>22}")

    from pynput import keyboard, mouse

    bare_stop = []
    for i in range(3):
        listeners = [mouse.Listener(on_move=lambda x, y: None), keyboard.Listener(on_press=lambda k: None)]
        for listener in listeners:
            listener.start()
            listener.wait()
        vd.xdotool("mousemove", "--sync", str(10 + i), "5")
        time.sleep(0.2)
        t0 = time.perf_counter()
        for listener in listeners:
            listener.stop()
        for listener in listeners:
            listener.join(2.0)  # pynput alone: the thread may wait for the next input event
        bare_stop.append((time.perf_counter() - t0) * 1000)
        for listener in listeners:  # clean up the way optin does, so no thread outlives the display
            unblock_record_listener(listener)
            listener.join(2.0)
    hooks = select_backend("xorg").input_hooks(lambda e: None)
    ours_stop = []
    for i in range(5):
        hooks.start()
        vd.xdotool("mousemove", "--sync", str(20 + i), "6")
        time.sleep(0.2)
        ours_stop.append(_timed(hooks.stop))
    bs, os_ = statistics.median(bare_stop), statistics.median(ours_stop)
    _row("pause: hooks stopped (ms)", f"{bs:.1f} (joins cap 2 s)", f"{os_:.2f}", os_ / bs)


def bench_recorder(vd: VirtualDisplay) -> None:
    """The whole agent (xorg backend, all scopes) on the display: CPU idle and under scripted
    work, disk per hour of that work, and the pre-action frame's staleness (how long before the
    action the screen had changed since the frame's grab; 0: the frame was the screen)."""
    from pyrage import x25519

    from agent import consent
    from agent.backends import select_backend
    from agent.control import Recorder
    from agent.paths import dirs
    from agent.store import keys
    from agent.study import demo_study_toml, install_study

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OPTIN_HOME"] = tmp
        secret = Path(tmp, "pass")
        secret.write_text("bench passphrase\n")
        secret.chmod(0o600)
        os.environ["OPTIN_PASSPHRASE_FILE"] = str(secret)
        os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        study_path = Path(tmp, "study.toml")
        study_path.write_text(demo_study_toml(str(x25519.Identity.generate().to_public())))
        d = dirs()
        study = install_study(d, study_path)
        consent.grant(d, study, study.terms_sha256)
        keys.init_keys(d)
        term = vd.spawn(["xterm", "-T", "bench-work", "-geometry", "100x30+40+60"])
        time.sleep(1.0)
        rec = Recorder(d, select_backend("xorg"), study)
        rec.start()
        try:
            time.sleep(2.0)  # start frame and focus settle
            idle = _cpu_percent(lambda: time.sleep(10.0))
            t_work = time.monotonic()
            work = _cpu_percent(lambda: _typical_work(vd))
            work_s = time.monotonic() - t_work
            skews = sorted(rec._screen.skews_ns) if rec._screen is not None else []
        finally:
            rec.stop()
            term.terminate()
        stored = sum(f.stat().st_size for f in Path(d.sessions).rglob("*.seg"))
        frames = rec.counters.frames
    _row("agent CPU, static screen (%)", "", f"{idle:.2f}", None)
    _row("agent CPU, scripted work (%)", "", f"{work:.1f}", None)
    _row("disk per hour of that work (MB)", "", f"{stored / 1e6 * 3600 / (work_s + 12):.0f}", None)
    print(f"{'':<34} {'':>22} {f'{frames} frames, {stored / 1e6:.1f} MB':>22}")
    if skews:
        p50, p99 = skews[len(skews) // 2] / 1e6, skews[int(len(skews) * 0.99)] / 1e6
        _row("pre-action staleness p50/p99 (ms)", "", f"{p50:.0f} / {p99:.0f} (n={len(skews)})", None)


def _cpu_percent(fn: Callable[[], object]) -> float:
    """This process's CPU time (every thread) while ``fn`` runs, in % of one core."""
    c0, t0 = time.process_time(), time.monotonic()
    fn()
    return (time.process_time() - c0) / (time.monotonic() - t0) * 100


def _typical_work(vd: VirtualDisplay) -> None:
    """About 30 s of scripted typical work in the xterm: typing, clicks, scrolls, a command."""
    x = vd.xdotool
    x("search", "--sync", "--name", "bench-work", "windowactivate", "--sync")
    for i in range(6):
        x("mousemove", "--sync", str(200 + 40 * i), str(200 + 20 * i))
        x("click", "1")
        x("type", "--delay", "120", f"echo typical work {i}; ls /usr/share | head -n 5")
        x("key", "Return")
        x("click", "4")
        x("click", "5")
        time.sleep(1.0)


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> int:
    print(
        f"optin benchmarks — {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )
    print(f"{'benchmark':<34} {'bare library':>22} {'optin':>22} {'ratio':>9}")
    bench_hook_callback()
    bench_ingest()
    bench_frames()
    _on_display(bench_display)
    _on_display(bench_recorder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
