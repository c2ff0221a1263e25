"""``python -m tests.soak --inject-leak``: proof that the soak fails on a real leak in the real agent.

Put on the agent's PYTHONPATH only by the soak when asked; acts only in ``python -m agent run``: a
daemon thread keeps 1 MiB more every second and opens one more file every 10 s.  The soak must then
fail on agent RSS, PSS and open files.  Never used otherwise.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any


def _leak() -> None:
    kept: list[Any] = []
    while True:
        time.sleep(1.0)
        kept.append(bytearray(b"x" * (1 << 20)))  # written, so resident
        if len(kept) % 11 == 0:
            kept.append(Path(os.devnull).open("rb"))  # noqa: SIM115 - kept open on purpose


def _is_agent_run() -> bool:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[1:4] == [b"-m", b"agent", b"run"]


if _is_agent_run():
    threading.Thread(target=_leak, name="soak-injected-leak", daemon=True).start()
