"""`optin status|pause|resume|delete-last` against a real `optin run` under Xvfb, over its control socket."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.events import Marker, PointerMove
from agent.ipc import socket_path
from agent.store import keys
from agent.store.reader import read_session
from tests.display.desktop import start_agent
from tests.tools import Consented


def optin(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *argv], capture_output=True, text=True, timeout=60, check=False
    )


def status() -> dict[str, Any]:
    out = optin("status", "--json")
    assert out.returncode in (0, 3), out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def test_the_command_line_pauses_and_resumes_the_running_agent(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        sock = os.lstat(socket_path(d))
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
        assert stat.S_IMODE(d.runtime.stat().st_mode) == 0o700
        assert wait_for(lambda: status()["state"] == "recording", 5)
        xdisplay.xdotool("mousemove", "--sync", "111", "222")
        time.sleep(0.3)

        out = optin("pause", "15m")
        assert out.returncode == 0 and "paused for 15m" in out.stdout, out.stderr
        s = status()
        assert s["state"] == "paused" and s["reason"] == "volunteer" and s["paused_until"]
        xdisplay.xdotool("mousemove", "--sync", "333", "444")  # not recorded: paused
        time.sleep(0.3)

        out = optin("resume")
        assert out.returncode == 0 and out.stdout.strip() == "optin is recording again", out.stderr
        xdisplay.xdotool("mousemove", "--sync", "555", "666")
        out = optin("exclude", "--app", "NoSuchApp", "--json")  # the real Recorder.exclude, over the wire
        assert out.returncode == 0 and json.loads(out.stdout)["app_class"] == "NoSuchApp", out.stderr
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert not socket_path(d).exists()  # removed on the way out
    out = optin("pause")
    assert out.returncode == 3 and "no optin agent is running for this user" in out.stderr
    assert optin("status").returncode == 3

    sid = next(p.name for p in d.sessions.iterdir())
    data = read_session(d, sid, keys.load_identity(d))
    markers = [e.marker for e in data.events if isinstance(e, Marker) and e.marker != "screen_layout"]
    assert markers == ["session_start", "pause", "resume", "session_stop"]
    moves = [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)]
    assert (111, 222) in moves and (555, 666) in moves and (333, 444) not in moves


def test_delete_last_reaches_the_running_agent(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: status()["state"] == "recording", 5)
        first = status()["session"]
        xdisplay.xdotool("mousemove", "--sync", "212", "121")  # recorded, then deleted
        time.sleep(0.3)
        out = optin("delete-last", "5m", "--json")
        assert out.returncode == 0, out.stderr
        assert [x["session_id"] for x in json.loads(out.stdout)["deleted"]] == [first]
        s = status()
        assert s["state"] == "recording" and s["session"] != first
        second = s["session"]
        xdisplay.xdotool("mousemove", "--sync", "343", "434")
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert [p.name for p in d.sessions.iterdir()] == [second]  # the first was crypto-shredded
    moves = [
        (e.x, e.y)
        for e in read_session(d, second, keys.load_identity(d)).events
        if isinstance(e, PointerMove)
    ]
    assert (343, 434) in moves and (212, 121) not in moves


def test_a_timed_pause_ends_by_itself_with_a_desktop_notification(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    _d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: status().get("state") == "recording", 10)
        assert optin("pause", "2s").returncode == 0
        paused = status()
        assert paused["state"] == "paused" and paused["paused_until"].endswith("Z")
        assert wait_for(lambda: status().get("state") == "recording", 10)  # by itself
        env = {**os.environ, **xdisplay.env}

        def notified() -> bool:
            subprocess.run(
                ["dunstctl", "close-all"], env=env, capture_output=True, check=False
            )  # into history
            out = subprocess.run(
                ["dunstctl", "history"], env=env, capture_output=True, text=True, check=False
            )
            return "recording again" in out.stdout

        assert wait_for(notified, 5), "no notification reached the desktop's notification daemon"
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
