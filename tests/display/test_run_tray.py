"""`optin run` for real: the tray icon is shown while it records (P2), its menu pauses the
hooks themselves (P3), and SIGTERM seals the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import read_status
from agent.events import KeyPress, Marker, PointerMove
from agent.store import keys
from agent.store.reader import read_session
from tests.display.conftest import need_tools


def _start_agent() -> subprocess.Popen[bytes]:
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent", "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    assert agent.stdout is not None
    line = agent.stdout.readline().decode()
    assert line.startswith("optin: recording session"), agent.stderr.read().decode() if agent.stderr else line
    return agent


def _tray_menu(xdisplay: VirtualDisplay, *keys_: str) -> None:
    """Right-click the tray icon and walk its menu with the keyboard."""
    panel = xdisplay.xdotool("search", "--classname", "^panel$").split()[0]
    geo = dict(kv.split("=") for kv in xdisplay.xdotool("getwindowgeometry", "--shell", panel).split())
    x, y, w, h = (int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))
    xdisplay.xdotool("mousemove", "--sync", str(x + w - 12), str(y + h // 2))
    xdisplay.xdotool("click", "3")
    time.sleep(0.5)
    xdisplay.xdotool("key", *keys_)


def _state(d) -> str | None:
    s = read_status(d)
    return s["state"] if s else None


def test_tray_pause_stops_capture_and_sigterm_seals(xdisplay: VirtualDisplay, consented) -> None:
    d, _study = consented
    agent = _start_agent()
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        assert xdisplay.tray_host_present()
        xdisplay.xdotool("mousemove", "--sync", "111", "222")
        _tray_menu(xdisplay, "Down", "Return")  # first enabled item: Pause
        assert wait_for(lambda: _state(d) == "paused", 5)
        t_paused = time.monotonic_ns()
        xdisplay.xdotool("mousemove", "--sync", "333", "444")
        xdisplay.xdotool("type", "paused")
        t_resume = time.monotonic_ns()
        _tray_menu(xdisplay, "Down", "Return")  # now: Resume
        assert wait_for(lambda: _state(d) == "recording", 5)
        xdisplay.xdotool("mousemove", "--sync", "555", "666")
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert read_status(d) is None  # the agent is gone

    sid = next(p.name for p in d.sessions.iterdir())
    data = read_session(d, sid, keys.load_identity(d))
    assert data.all_sealed and not data.problems
    markers = [e.marker for e in data.events if isinstance(e, Marker)]
    assert markers == ["session_start", "pause", "resume", "session_stop"]
    pause = next(e for e in data.events if isinstance(e, Marker) and e.marker == "pause")
    resume = next(e for e in data.events if isinstance(e, Marker) and e.marker == "resume")
    assert pause.t_ns < t_paused and t_resume < resume.t_ns
    during = [e for e in data.events if pause.t_ns < e.t_ns < resume.t_ns]
    assert during == []  # no event or frame time-stamped inside the pause
    moves = [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)]
    assert (111, 222) in moves and (555, 666) in moves and (333, 444) not in moves
    assert "paused" not in "".join(e.char or "" for e in data.events if isinstance(e, KeyPress))


def test_no_tray_no_capture(consented, optin_home) -> None:
    need_tools()
    with VirtualDisplay(tray=False) as vd:
        out = subprocess.run(
            [sys.executable, "-m", "agent", "run"],
            env=dict(vd.env, OPTIN_HOME=str(optin_home)),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert out.returncode == 2
    assert "no system tray" in out.stderr
    assert not (optin_home / "data" / "sessions").exists()
