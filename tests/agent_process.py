"""Whether this process is the agent (``python -m agent run``): the check the test-only
``sitecustomize`` modules make (tests/soak/leak, tests/benchmarks/thread_names), which are put on
the agent's PYTHONPATH beside the repository and must act in that process only."""

from __future__ import annotations

from pathlib import Path


def is_agent_run() -> bool:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argv[1:4] == [b"-m", b"agent", b"run"]
