"""`optin demo` end to end, as a new user runs it: exit 0, a summary, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.display.conftest import need_tools


def _our_stack() -> dict[int, str]:
    """PID → command line of every process of the kinds the demo starts, the agent included."""
    out = subprocess.run(["ps", "-eo", "pid=,comm=,args="], capture_output=True, text=True, check=True).stdout
    names = {"Xvfb", "openbox", "trayer", "dunst", "dbus-daemon", "xterm"}
    pids = {}
    for line in out.splitlines():
        pid, comm, args = [*line.split(None, 2), "", ""][:3]
        if comm in names or "-m agent run" in args:
            pids[int(pid)] = args
    return pids


def _left_behind(before: dict[int, str]) -> dict[int, str]:
    """The demo's kinds of process that were not there before (none, when the demo cleaned up)."""
    return {pid: args for pid, args in _our_stack().items() if pid not in before}


def test_demo_runs_the_whole_chain_and_cleans_up() -> None:
    need_tools("age")
    before = _our_stack()
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["checks"] == "passed"
    counts = summary["events_by_kind"]
    assert counts["button_press"] >= 4 and counts["key_press"] >= 10 and counts["scroll"] >= 6
    assert summary["frames"] >= 2 and summary["bundle_bytes"] > 0 and summary["bytes_stored"] > 0
    assert summary["loss"]["dropped_events"] == 0
    assert set(summary["redaction"]["typed"]) == {"EMAIL", "CREDIT_CARD"}  # typed secrets, redacted
    assert summary["redaction"]["screen"]  # and masked where the terminal showed them
    assert summary["task"]["id"] == "sign-in" and summary["task"]["outcome"] == "done"
    assert summary["elements"]["api"] == "atspi" and summary["elements"]["steps_with"] >= 1
    assert summary["elements"]["example"].startswith("text")  # the form's entry, through AT-SPI
    assert not _left_behind(before)  # every process the demo started is gone


def test_demo_rejects_a_bad_duration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "--seconds -1" in out.stderr and "between 1 and 600" in out.stderr


def test_demo_stopped_midway_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGTERM while the agent records: every process and the throwaway keys are gone."""
    import glob
    import os
    import select
    import signal

    need_tools("age")
    before = _our_stack()
    tmp_before = set(glob.glob("/tmp/optin-demo-*"))
    demo = subprocess.Popen(
        [sys.executable, "-m", "agent", "demo", "--seconds", "30"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr = demo.stderr
    assert stderr is not None
    try:
        seen = ""
        while "agent recording session" not in seen:
            ready, _, _ = select.select([stderr], [], [], 30)
            line = stderr.readline() if ready else ""
            assert line, f"the demo did not reach recording: {seen}"
            seen += line
        os.kill(demo.pid, signal.SIGTERM)
        rc = demo.wait(30)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        stderr.close()
    assert rc == 128 + signal.SIGTERM
    assert not _left_behind(before)
    assert set(glob.glob("/tmp/optin-demo-*")) <= tmp_before
