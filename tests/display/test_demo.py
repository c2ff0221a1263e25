"""`optin demo` end to end, as a new user runs it: exit 0, a summary, nothing left behind."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.display.conftest import need_tools


def _our_stack() -> set[int]:
    out = subprocess.run(["ps", "-eo", "pid=,comm="], capture_output=True, text=True, check=True).stdout
    names = {"Xvfb", "openbox", "trayer", "dunst", "dbus-daemon", "xterm"}
    return {
        int(pid)
        for pid, _, comm in (line.strip().partition(" ") for line in out.splitlines())
        if comm in names
    }


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
    assert counts["button_press"] >= 4 and counts["key_press"] >= 20 and counts["scroll"] >= 6
    assert summary["frames"] >= 2 and summary["bundle_bytes"] > 0 and summary["bytes_stored"] > 0
    assert summary["loss"]["dropped_events"] == 0
    assert summary["seconds_taken"] < 60
    assert _our_stack() <= before  # every process the demo started is gone


def test_demo_rejects_a_bad_duration() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--seconds", "-1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    assert "--seconds -1" in out.stderr and "between 1 and 600" in out.stderr
