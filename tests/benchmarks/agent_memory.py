"""The running agent's memory and idle CPU on a private 1920x1080 display, beside the bare libraries.

``python -m tests.benchmarks.agent_memory [SECONDS]`` (default 60 s of scripted work; part of
``make bench``, not collected by pytest).  Two processes are measured the same way, one after the
other, on the same display with the same scripted work (typing, clicks and scrolls in an xterm,
a command's output, focus switches to a second xterm):

* **optin**: ``python -m agent run`` as a volunteer starts it (tray icon, consent, the xorg
  backend, every scope);
* **bare**: pynput's mouse and keyboard listeners and an mss grab of the whole screen compared
  with the last one at 4 a second: the libraries' floor for the same watching, with nothing
  stored.

Sampled every 0.5 s from /proc: RSS and PSS (``smaps_rollup``) of the process alone (the agent's
children, the element-lookup processes, are reported apart); VmHWM reset three seconds after
start (``clear_refs``), so the peak is the work's and not the start's (the first run's key
creation, scrypt's 128 MiB, is the start's); CPU over 10 s right after the last action and over
30 s after a minute without input, that one also thread by thread (the agent's thread names come
from tests/benchmarks/thread_names/sitecustomize.py, on its PYTHONPATH only); and the resident
memory at the end by kind of mapping (smaps).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.backends.virtual_display import VirtualDisplay
from agent.demo import agent_env
from agent.paths import optin_command
from tests.soak import sampler
from tests.soak.driver import await_recording, consent

assert sys.platform != "win32", "POSIX only (/proc, os.pread, resource)"  # mypy: not checked as win32

BARE = r"""
import sys, time
import mss
from pynput import keyboard, mouse
listeners = [mouse.Listener(on_move=lambda *a: None, on_click=lambda *a: None, on_scroll=lambda *a: None),
             keyboard.Listener(on_press=lambda k: None, on_release=lambda k: None)]
for l in listeners:
    l.start(); l.wait()
print("ready", flush=True)
with mss.MSS() as m:
    last = None
    while True:
        shot = m.grab(m.monitors[0])
        raw = shot.raw
        if raw != last:
            last = raw
        time.sleep(0.25)
"""


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    stat = sampler.read(pid)
    return 0.0 if stat is None else stat.cpu_ticks / os.sysconf("SC_CLK_TCK")


def _idle_cpu(pid: int, seconds: float) -> float:
    c0, t0 = _cpu_s(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (_cpu_s(pid) - c0) / (time.monotonic() - t0)


def _thread_ticks(pid: int) -> dict[int, int]:
    """CPU ticks (user + system) of each of ``pid``'s threads."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def _idle_by_thread(pid: int, seconds: float, names: Path | None) -> tuple[float, dict[str, float]]:
    """The process's CPU over ``seconds`` (% of a core), and each thread's that spent any, by the
    Python name ``names`` recorded (tests/benchmarks/thread_names)."""
    c0, t0, before = _cpu_s(pid), time.monotonic(), _thread_ticks(pid)
    time.sleep(seconds)
    after, elapsed = _thread_ticks(pid), time.monotonic() - t0
    total = 100 * (_cpu_s(pid) - c0) / elapsed
    known: dict[int, str] = {}
    with contextlib.suppress(OSError):
        for line in names.read_text().splitlines() if names is not None else []:
            tid, _, name = line.partition(" ")
            known[int(tid)] = name
    hz = os.sysconf("SC_CLK_TCK")
    by: dict[str, float] = {}
    for thread, ticks in after.items():
        spent = ticks - before.get(thread, 0)
        if spent > 0:
            name = known.get(thread, f"thread {thread}")
            by[name] = by.get(name, 0.0) + 100 * spent / hz / elapsed
    return total, by


def _memory_parts(pid: int) -> dict[str, float]:
    """The process's resident memory (MB) by kind of mapping: anonymous, the main heap, shared
    memory (mss's grab buffer), mapped files (libraries, fonts)."""
    parts = {"anonymous": 0, "heap": 0, "shared memory": 0, "files": 0}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            name = head[5] if len(head) > 5 else ""
        elif head and head[0] == "Rss:":
            kb = int(head[1])
            if not name or (name.startswith("[") and name != "[heap]"):
                parts["anonymous"] += kb
            elif name == "[heap]":
                parts["heap"] += kb
            elif name.startswith(("/memfd:", "/dev/shm", "/SYSV")):
                parts["shared memory"] += kb
            else:
                parts["files"] += kb
    return {k: v / 1024 for k, v in parts.items()}


def _work(vd: VirtualDisplay, seconds: float) -> None:
    """Scripted typical work for about ``seconds``: the xterm of :func:`tests.benchmarks.__main__`'s
    typical work, and a switch to a second xterm and back every round."""
    end = time.monotonic() + seconds
    x = vd.xdotool
    i = 0
    while time.monotonic() < end:
        x("search", "--sync", "--name", "bench-work", "windowactivate", "--sync")
        x("mousemove", "--sync", str(200 + 40 * (i % 6)), str(200 + 20 * (i % 6)))
        x("click", "1")
        x("type", "--delay", "120", f"echo typical work {i}; ls /usr/share | head -n 5")
        x("key", "Return")
        x("click", "4")
        x("click", "5")
        x("search", "--sync", "--name", "bench-other", "windowactivate", "--sync")
        x("type", "--delay", "120", "ls")
        x("key", "Return")
        i += 1
        time.sleep(0.5)


def measure(
    vd: VirtualDisplay, start: Callable[[], subprocess.Popen[bytes]], work_s: float, names: Path | None = None
) -> dict[str, Any]:
    proc = start()
    try:
        time.sleep(3.0)  # start-up (keys, imports, the first frame) is not the work
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        rows: list[tuple[int, int, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                me = sampler.read(proc.pid)
                kids = [s for s in map(sampler.read, sampler.descendants(proc.pid)) if s is not None]
                if me is not None:
                    rows.append((me.rss_kb, me.pss_kb, sum(k.pss_kb for k in kids)))
                stop.wait(0.5)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        c0, t0 = _cpu_s(proc.pid), time.monotonic()
        _work(vd, work_s)
        work_cpu = 100 * (_cpu_s(proc.pid) - c0) / (time.monotonic() - t0)
        peak = _status_kb(proc.pid, "VmHWM")
        after = _idle_cpu(proc.pid, 10.0)
        stop.set()
        thread.join(2.0)
        time.sleep(50.0)
        long_idle, threads = _idle_by_thread(proc.pid, 30.0, names)
        parts = _memory_parts(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
    return {
        "rss": statistics.median(r[0] for r in rows) / 1024,
        "pss": statistics.median(r[1] for r in rows) / 1024,
        "children_pss": statistics.median(r[2] for r in rows) / 1024,
        "peak": peak / 1024,
        "work_cpu": work_cpu,
        "after": after,
        "long_idle": long_idle,
        "threads": threads,
        "parts": parts,
    }


def main(argv: list[str]) -> int:
    from agent.backends.virtual_display import missing_tools

    work_s = float(argv[0]) if argv else 60.0
    if missing_tools():
        print(f"(skipped: missing {', '.join(missing_tools())})")
        return 0
    print(
        f"agent memory — {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"1920x1080, {work_s:.0f} s of scripted work"
    )
    with tempfile.TemporaryDirectory() as tmp, VirtualDisplay(width=1920, height=1080) as vd:
        work = Path(tmp)
        for title, where in (("bench-work", "+40+60"), ("bench-other", "+900+300")):
            vd.spawn(["xterm", "-T", title, "-geometry", f"100x30{where}"])
        time.sleep(1.0)
        env = agent_env(vd, work)
        consent(env, work)
        names = work / "threads.txt"  # tests/benchmarks/thread_names: the agent's thread names
        here = Path(__file__).resolve()
        env["PYTHONPATH"] = os.pathsep.join([str(here.with_name("thread_names")), str(here.parents[2])])
        env["OPTIN_BENCH_THREADS"] = str(names)

        def agent() -> subprocess.Popen[bytes]:
            log = (work / "agent.log").open("wb")
            proc = vd.spawn(optin_command("run"), env=env, stdout=True, stderr=log)
            await_recording(proc, work / "agent.log")
            return proc

        def bare() -> subprocess.Popen[bytes]:
            proc = vd.spawn([sys.executable, "-c", BARE], env=vd.env, stdout=True)
            assert proc.stdout is not None
            proc.stdout.readline()
            return proc

        ours = measure(vd, agent, work_s, names)
        floor = measure(vd, bare, work_s)
    print(f"{'':<38} {'bare libraries':>16} {'optin agent':>14} {'ratio':>7}")
    rows = (
        ("RSS during the work, median (MB)", "rss", "{:.0f}"),
        ("PSS during the work, median (MB)", "pss", "{:.0f}"),
        ("peak RSS during the work (MB)", "peak", "{:.0f}"),
        ("CPU during the work (% of a core)", "work_cpu", "{:.1f}"),
        ("CPU, 10 s right after it (%)", "after", "{:.2f}"),
        ("CPU, 30 s after a minute idle (%)", "long_idle", "{:.2f}"),
    )
    for label, key, fmt in rows:
        ratio = ours[key] / floor[key] if floor[key] else float("nan")
        print(f"{label:<38} {fmt.format(floor[key]):>16} {fmt.format(ours[key]):>14} {ratio:>6.2f}x")
    print(f"{'children (element lookups), PSS (MB)':<38} {'':>16} {ours['children_pss']:>14.0f}")
    print("the agent's threads over the 30 idle seconds (% of a core):")
    for name, pct in sorted(ours["threads"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<36} {pct:>6.2f}")
    print("the agent's resident memory at the end, by mapping (MB):")
    for part, mb in ours["parts"].items():
        print(f"  {part:<36} {mb:>6.1f}   (bare: {floor['parts'][part]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
