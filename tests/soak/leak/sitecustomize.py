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

from tests.agent_process import is_agent_run


def _leak() -> None:
    kept: list[Any] = []
    while True:
        time.sleep(1.0)
        kept.append(bytearray(b"x" * (1 << 20)))  # written, so resident
        if len(kept) % 11 == 0:
            kept.append(Path(os.devnull).open("rb"))  # noqa: SIM115 - kept open on purpose


if is_agent_run():
    threading.Thread(target=_leak, name="soak-injected-leak", daemon=True).start()
