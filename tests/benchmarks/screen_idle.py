"""What a still screen costs the screen watcher: X11 DAMAGE against polling against a bare loop.

``python -m tests.benchmarks.screen_idle [--seconds 60] [--keys 120]`` (needs Xvfb, openbox,
xterm and xdotool; about 8 minutes at the defaults).  On a private 1920x1080 display with an
xterm, in one process, one after the other:

* *bare*: ``mss.grab`` of the whole screen and a byte compare with the previous grab, 4 times a
  second (what polling costs at its least);
* *polling*: :class:`ScreenWatch` polling (``changes=None``: 4 fps while active, 1 fps after 5 s
  without input);
* *damage*: :class:`ScreenWatch` with :class:`DamageChanges` (grabs only what changed).

Each is measured over a still stretch of ``--seconds`` twice: right after typing into the xterm
(the watcher's active rate still applies) and after a long idle (``--idle`` seconds without input
first).  CPU is this process's CPU time (every thread) over the wall time, in % of one core; the
ratios are against *bare*.

Then ``--keys`` keys are typed into the xterm with xdotool (120 ms apart, words and Return), each
announced to the watcher as an action just before it is sent (as the input hooks would), and the
pre-action staleness (:attr:`ScreenWatch.skews_ns`) and grab age (:attr:`ScreenWatch.ages_ns`)
are printed as p50 / p99 for polling and for damage.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.backends.virtual_display import VirtualDisplay, missing_tools
from agent.events import Event, now_ns

TEXT = "echo the quick brown fox jumps over the lazy dog; ls /usr/share | head -n 3\n"


def _cpu_percent(fn: Callable[[], object]) -> float:
    c0, t0 = time.process_time(), time.monotonic()
    fn()
    return (time.process_time() - c0) / (time.monotonic() - t0) * 100


def _percentiles_ms(samples: list[int]) -> str:
    if not samples:
        return "-"
    s = sorted(samples)
    return f"{s[len(s) // 2] / 1e6:.0f} / {s[min(len(s) - 1, int(len(s) * 0.99))] / 1e6:.0f}"


class Bare:
    """A bare ``mss.grab`` + compare loop at 4 fps on its own thread."""

    def __init__(self, fps: float = 4.0) -> None:
        self._interval = 1.0 / fps
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.grabs = 0

    def _run(self) -> None:
        import mss

        with mss.MSS() as m:
            region = m.monitors[0]
            last = m.grab(region).raw
            while not self._stop.wait(self._interval):
                raw = m.grab(region).raw
                self.grabs += 1
                if raw != last:
                    last = raw

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _watch(mode: str, display: str) -> Any:
    from agent.backends.xorg.damage import DamageChanges
    from agent.capture.screen import MssGrabber, ScreenWatch

    if mode == "bare":
        return Bare()
    frames: list[Event] = []
    changes = DamageChanges(display) if mode == "damage" else None
    return ScreenWatch(MssGrabber(display), frames.append, changes=changes)


def _quiet(watch: Any) -> None:
    """Wait until the watcher has nothing pending (settled frame served, encoder idle)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        pending = getattr(watch, "_settle", None) is not None or (
            getattr(watch, "_encode", None) is not None and (not watch._encode.empty())
        )
        if not pending:
            break
        time.sleep(0.05)
    time.sleep(0.7)  # the encoder's last frame


def _type_line(vd: VirtualDisplay, title: str, watch: Any, text: str, delay_ms: int = 120) -> None:
    from agent.capture.screen import ScreenWatch

    vd.xdotool("search", "--name", f"^{title}$", "windowactivate", "--sync")
    for ch in text:
        if isinstance(watch, ScreenWatch):
            watch.action(now_ns(), "hotkey")  # every key gets a pre-action frame (a sample)
        vd.xdotool("key", "Return" if ch == "\n" else ("space" if ch == " " else _keysym(ch)))
        time.sleep(delay_ms / 1000)


def _keysym(ch: str) -> str:
    return {
        ";": "semicolon",
        "/": "slash",
        "|": "bar",
        "-": "minus",
        ".": "period",
    }.get(ch, ch)


def bench_idle(vd: VirtualDisplay, title: str, seconds: float, idle: float) -> dict[tuple[str, str], float]:
    results: dict[tuple[str, str], float] = {}
    for mode in ("bare", "polling", "damage"):
        for when in ("after activity", "after long idle"):
            watch = _watch(mode, vd.display)
            watch.start()
            try:
                time.sleep(2.0)
                _type_line(vd, title, watch, "echo still\n", delay_ms=60)
                _quiet(watch)
                if when == "after long idle":
                    time.sleep(idle)
                grabs0 = watch.grabs
                cpu = _cpu_percent(lambda: time.sleep(seconds))
                grabs = watch.grabs - grabs0
            finally:
                watch.stop()
            results[(mode, when)] = cpu
            extra = f", {watch.fallbacks} fallbacks" if mode == "damage" else ""
            print(f"  {mode:<8} {when:<16} {cpu:7.3f} % of a core ({grabs} grabs{extra})", flush=True)
    return results


def bench_staleness(vd: VirtualDisplay, title: str, keys: int) -> None:
    text = (TEXT * (keys // len(TEXT) + 1))[:keys]
    for mode in ("polling", "damage"):
        watch = _watch(mode, vd.display)
        watch.start()
        try:
            time.sleep(2.0)
            t0 = time.monotonic()
            cpu = _cpu_percent(functools.partial(_type_line, vd, title, watch, text))
            wall = time.monotonic() - t0
            stale, ages = list(watch.skews_ns), list(watch.ages_ns)
        finally:
            watch.stop()
        zero = sum(1 for s in stale if s == 0)
        print(
            f"  {mode:<8} staleness p50/p99 {_percentiles_ms(stale):>9} ms, grab age p50/p99 "
            f"{_percentiles_ms(ages):>11} ms (n={len(stale)}, {zero} current); "
            f"{watch.grabs} grabs ({watch.region_grabs} of parts), {watch.frames} frames stored "
            f"in {wall:.0f} s; "
            f"CPU {cpu:.2f} %",
            flush=True,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each still stretch")
    parser.add_argument("--idle", type=float, default=30.0, help="input-free wait before 'after long idle'")
    parser.add_argument("--keys", type=int, default=120, help="keys typed for the staleness run")
    args = parser.parse_args()
    if missing_tools():
        print(f"(skipped: missing {', '.join(missing_tools())})")
        return 0
    print(f"screen_idle on {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with VirtualDisplay(width=1920, height=1080, tray=False) as vd:
        os.environ.update(vd.env)
        title = "screen-idle-bench"
        vd.spawn(["xterm", "-T", title, "-geometry", "100x30+40+60"])
        time.sleep(1.5)
        print(f"still {args.seconds:g} s, CPU of this process (% of one core):")
        cpu = bench_idle(vd, title, args.seconds, args.idle)
        head = f"{'bare 4 fps':>12} {'polling':>12} {'damage':>12} {'polling/bare':>13} {'damage/bare':>12}"
        print(f"{'':<26} {head}")
        for when in ("after activity", "after long idle"):
            bare, poll, dmg = cpu[("bare", when)], cpu[("polling", when)], cpu[("damage", when)]
            print(
                f"{'still, ' + when:<26} {bare:11.3f}% {poll:11.3f}% {dmg:11.4f}% "
                f"{poll / bare:12.2f}x {dmg / bare:11.4f}x"
            )
        print(f"scripted typing, {args.keys} keys 120 ms apart, each an action:")
        bench_staleness(vd, title, args.keys)
    return 0


if __name__ == "__main__":
    sys.exit(main())
