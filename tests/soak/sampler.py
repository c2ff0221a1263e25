"""Read a process and its descendants from /proc (Linux): memory, CPU, threads, open files.

Nothing here reads what a process holds (no memory contents; of a command line only the module or
program name): only counters the kernel keeps.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if sys.platform == "win32":  # also tells mypy --platform win32 not to check the rest
    raise ImportError("the soak reads /proc: Linux only")

CLK_TCK = os.sysconf("SC_CLK_TCK")
_KB = re.compile(rb"^(\w+):\s+(\d+) kB", re.MULTILINE)


@dataclass(frozen=True)
class ProcStat:
    """One process at one instant; ``cpu_ticks`` is utime + stime (cumulative)."""

    pid: int
    ppid: int
    name: str  #: see :func:`role`
    rss_kb: int
    pss_kb: int
    #: private pages (``Private_Clean`` + ``Private_Dirty`` + ``Private_Hugetlb``): what this process
    #: alone holds, whatever else maps the same libraries
    uss_kb: int
    cpu_ticks: int
    threads: int
    fds: int


def children(pid: int) -> list[int]:
    """Direct children of every thread of ``pid`` (empty when it is gone)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            out += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before their children."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += children(p)
    return out


def role(pid: int) -> str:
    """What the process is, in a word: ``X`` for ``python -m agent X``, else its program's name."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except OSError:
        return "?"
    for i, arg in enumerate(argv[:-2]):
        if arg == "-m":
            return argv[i + 1] + (f" {argv[i + 2]}" if argv[i + 1] == "agent" else "")
    return Path(argv[0]).name if argv and argv[0] else "?"


def read(pid: int) -> ProcStat | None:
    """``pid`` now, or None when it has gone (or is a zombie with no memory)."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    kb = {k.decode(): int(v) for k, v in _KB.findall(rollup)}
    if "Rss" not in kb:
        return None
    # comm is in parentheses and may hold spaces or parentheses: split after the last ")"
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, num_threads 20
    utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0) + kb.get("Private_Hugetlb", 0)
    return ProcStat(
        pid, int(fields[1]), role(pid), kb["Rss"], kb.get("Pss", 0), uss, utime + stime, threads, fds
    )


class CpuMeter:
    """CPU % of a core per pid between two calls (first call of a pid: 0)."""

    def __init__(self) -> None:
        self._last: dict[int, tuple[float, int]] = {}

    def percent(self, stat: ProcStat, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        prev = self._last.get(stat.pid)
        self._last[stat.pid] = (now, stat.cpu_ticks)
        if prev is None or now <= prev[0]:
            return 0.0
        return 100.0 * (stat.cpu_ticks - prev[1]) / CLK_TCK / (now - prev[0])
