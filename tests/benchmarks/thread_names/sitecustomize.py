"""``python -m tests.benchmarks.agent_memory``: which of the agent's threads spends the idle CPU.

Put on the agent's PYTHONPATH only by that benchmark, with ``OPTIN_BENCH_THREADS`` naming a file;
acts only in ``python -m agent run``: each thread, as it starts, appends its native id and its
Python name to the file (Linux shows only the process name for Python's threads).  Nothing else.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.agent_process import is_agent_run

_OUT = os.environ.get("OPTIN_BENCH_THREADS", "")


def _note(tid: int, name: str) -> None:
    try:
        with Path(_OUT).open("a", encoding="utf-8") as f:
            f.write(f"{tid} {name}\n")
    except OSError:
        pass


if _OUT and is_agent_run():
    _start = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def _named(self: threading.Thread) -> None:
        _note(threading.get_native_id(), self.name)
        _start(self)

    threading.Thread._bootstrap_inner = _named  # type: ignore[attr-defined]
    _note(os.getpid(), "MainThread")
