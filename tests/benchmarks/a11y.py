"""The element under a point (AT-SPI2 on X11): optin's lookup against a bare desktop-wide one.

``python -m tests.benchmarks.a11y [--rounds N]`` (needs Xvfb, openbox, xdotool, the AT-SPI typelib
and zenity; about half a minute).  On a private display: three GTK 3 forms (two overlapping) and
``zenity --password``.  At the centre of every widget, in the same run, interleaved:

* *bare*: gi Atspi alone, the naive desktop-wide hit test: every application, every window whose
  extents contain the point, ``get_accessible_at_point`` down to the deepest element (it stops at
  the first hit, in bus order; it cannot know which window is on top);
* *optin*: :meth:`ElementFinder.element_at` (X11 stacking -> ``_NET_WM_PID`` -> that application ->
  descend -> actionable ancestor -> role, name, states, bounds, ancestor path);
* *worker*: :class:`ElementLookup`, from ``request()`` to the callback (what the recorder will wait).

Prints p50/p99 in milliseconds and the ratios, the first lookup of each, how many bare answers
came from a window that was not on top, and ``request()``'s own cost on the caller's thread.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
import time
from pathlib import Path
from typing import Any

FORM = Path(__file__).resolve().parents[1] / "display" / "a11y_form.py"


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    s = sorted(samples_ns)
    return s[len(s) // 2] / 1e6, s[min(len(s) - 1, int(len(s) * 0.99))] / 1e6


def _bare_lookup(atspi: Any, x: int, y: int) -> tuple[Any, int]:
    """The naive desktop-wide hit test: (deepest element, its application's pid) or (None, 0)."""
    coords = atspi.CoordType.SCREEN
    desktop = atspi.get_desktop(0)
    for i in range(desktop.get_child_count()):
        app = desktop.get_child_at_index(i)
        if app is None:
            continue
        for j in range(app.get_child_count()):
            window = app.get_child_at_index(j)
            if window is None or not window.contains(x, y, coords):
                continue
            node = window
            for _ in range(32):
                child = node.get_accessible_at_point(x, y, coords)
                if child is None or child == node:
                    break
                node = child
            if node != window:
                return node, app.get_process_id()
    return None, 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()

    from agent.backends.virtual_display import VirtualDisplay, missing_tools
    from agent.backends.xorg import a11y_bus

    if missing_tools() or not a11y_bus.typelib_present():
        print(f"(skipped: missing {', '.join(missing_tools()) or 'the AT-SPI typelib'})")
        return 0
    with VirtualDisplay(width=1280, height=800, tray=False) as vd:
        os.environ.update(vd.env)
        return _run(vd, args.rounds)


def _run(vd: Any, rounds: int) -> int:
    import json
    import select

    import gi

    gi.require_version("Atspi", "2.0")
    from gi.repository import Atspi

    from agent.backends.xorg.a11y import ElementFinder, finder_factory
    from agent.capture.element_lookup import ElementLookup, LookupResult

    env = {k: v for k, v in vd.env.items() if k != "NO_AT_BRIDGE"}
    points: list[tuple[int, int]] = []
    for title, x, y in (("bench a", 40, 60), ("bench b", 40, 120), ("bench c", 620, 60)):
        proc = vd.spawn([sys.executable, str(FORM), title, str(x), str(y)], env=env, stdout=True)
        ready, _, _ = select.select([proc.stdout], [], [], 20.0)
        if not ready:
            print("(the GTK form did not start)")
            return 1
        for rx, ry, rw, rh in json.loads(proc.stdout.readline()).values():
            points.append((rx + rw // 2, ry + rh // 2))
    vd.spawn(["zenity", "--password", "--title", "bench zenity"], env=env)
    time.sleep(2.0)  # every app on the bus

    finder = ElementFinder(call_timeout_s=1.0, budget_s=5.0)
    t0 = time.perf_counter_ns()
    first = finder.element_at(*points[0])
    first_ours = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    _bare_lookup(Atspi, *points[0])
    first_bare = time.perf_counter_ns() - t0
    ours: list[int] = []
    bare: list[int] = []
    bare_cpu = 0.0
    misses = wrong_window = 0
    for _ in range(rounds):
        for x, y in points:
            t0 = time.perf_counter_ns()
            found = finder.element_at(x, y)
            ours.append(time.perf_counter_ns() - t0)
            t0, c0 = time.perf_counter_ns(), time.process_time()
            _, pid = _bare_lookup(Atspi, x, y)
            bare.append(time.perf_counter_ns() - t0)
            bare_cpu += time.process_time() - c0
            misses += found.element is None
            wrong_window += bool(pid) and found.pid is not None and pid != found.pid
    finder.close()

    results: queue.Queue[LookupResult] = queue.Queue()
    worker = ElementLookup(results.put, finder_factory())
    worker.start()
    child = _lookup_child()
    through: list[int] = []
    requests: list[int] = []
    cpu0, child0 = time.process_time(), _cpu_of(child)
    for _ in range(rounds):
        for x, y in points:
            t0 = time.perf_counter_ns()
            worker.request(t0, x, y)
            requests.append(time.perf_counter_ns() - t0)
            done = results.get(timeout=5.0)
            through.append(time.perf_counter_ns() - done.t_ns)
    ours_cpu = time.process_time() - cpu0 + _cpu_of(child) - child0  # the recorder's side and its child
    worker.stop()
    asks = _after_queued_cost(rounds * len(points))

    b50, b99 = _percentiles(bare)
    o50, o99 = _percentiles(ours)
    w50, w99 = _percentiles(through)
    r50, r99 = _percentiles(requests)
    n = len(ours)
    print(f"element lookup on X11/AT-SPI, {n} lookups at {len(points)} points, {rounds} rounds")
    print(f"{'':<34} {'bare desktop-wide':>22} {'optin':>22} {'ratio':>9}")
    print(f"{'lookup p50 (ms)':<34} {b50:>22.2f} {o50:>22.2f} {o50 / b50:>8.2f}x")
    print(f"{'lookup p99 (ms)':<34} {b99:>22.2f} {o99:>22.2f} {o99 / b99:>8.2f}x")
    print(f"{'first lookup (ms)':<34} {first_bare / 1e6:>22.2f} {first_ours / 1e6:>22.2f}")
    print(f"{'worker request->answer p50/p99 (ms)':<34} {'':>22} {f'{w50:.2f} / {w99:.2f}':>22}")
    print(f"{'request() on the caller p50/p99 (µs)':<34} {'':>22} {f'{r50 * 1e3:.1f} / {r99 * 1e3:.1f}':>22}")
    print(f"{'bare answers from a covered window':<34} {wrong_window:>22} {'0 (by X11 order)':>22}")
    print(f"{'optin misses':<34} {'':>22} {misses:>22}")
    per_k = 1000 / n
    print(
        f"{'CPU per 1,000 lookups (s)':<34} {bare_cpu * per_k:>22.2f} {ours_cpu * per_k:>22.2f} "
        f"{ours_cpu / bare_cpu:>8.2f}x"
    )
    print(f"{'sink ask per action p50/p99 (µs)':<34} {'':>22} {f'{asks[0]:.1f} / {asks[1]:.1f}':>22}")
    return 0 if first.element is not None else 1


def _lookup_child() -> int | None:
    """The pid of this process's element lookup child (agent.backends.xorg.a11y_child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and b"a11y_child" in cmdline:
            return int(entry.name)
    return None


def _cpu_of(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` so far (0 when unknown)."""
    if pid is None or sys.platform == "win32":
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks: int = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _after_queued_cost(count: int) -> tuple[float, float]:
    """What the recorder's sink adds per action on a hook thread: RecorderElements.after_queued for
    clicks and keys with a worker that answers nothing (p50, p99 in microseconds)."""
    from agent.backends.fake import FakeBackend
    from agent.capture.element_lookup import ElementLookup as Worker
    from agent.elements import NO_FOCUS, Lookup
    from agent.events import ButtonPress, KeyPress
    from agent.recorder_elements import RecorderElements

    class Quiet:
        def element_at(self, x: int, y: int) -> Lookup:
            return Lookup(None, NO_FOCUS, None, None)

        def focused_element(self) -> Lookup:
            return Lookup(None, NO_FOCUS, None, None)

        def close(self) -> None:
            pass

    class Backend(FakeBackend):
        ELEMENT_API = "atspi"

        def element_lookup(self, on_result: Any, allow: Any = None) -> Any:
            return Worker(on_result, lambda _t, _b, _a: Quiet(), queue_size=count + 16)

    elements = RecorderElements(Backend(), lambda e: None, lambda: (), frozenset, keep_names=True)
    elements.start()
    samples: list[int] = []
    for i in range(count):
        event = ButtonPress(i, 10, 10, "left") if i % 2 else KeyPress(i, "a", None, 97, ())
        t0 = time.perf_counter_ns()
        elements.after_queued(event)
        samples.append(time.perf_counter_ns() - t0)
    elements.stop()
    p50, p99 = _percentiles(samples)
    return p50 * 1e3, p99 * 1e3


if __name__ == "__main__":
    sys.exit(main())
