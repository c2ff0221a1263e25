"""`optin run` for real: the tray icon is shown while it records (P2), its menu pauses the
hooks themselves (P3), and SIGTERM seals the session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.control import read_status
from agent.events import ButtonPress, ButtonRelease, KeyPress, Marker, PointerMove
from agent.paths import Dirs
from agent.store import keys
from agent.store.reader import read_session
from tests.display.conftest import need_tools
from tests.display.desktop import panel, right_click_icon, start_agent, tray_menu, wait_window
from tests.tools import Consented


def _menu_until(xdisplay: VirtualDisplay, d: Dirs, state: str, *keys_: str) -> None:
    """Use the tray menu until the agent reaches ``state`` (up to three tries)."""
    for _ in range(3):
        tray_menu(xdisplay, *keys_)
        if wait_for(lambda: _state(d) == state, 3):
            return
        xdisplay.xdotool("key", "Escape")
    pytest.fail(f"the tray menu did not bring the agent to {state!r}")


def _icon_colour_seen(xdisplay: VirtualDisplay, colour: tuple[int, int, int]) -> bool:
    """Is a pixel of (about) ``colour`` visible in the tray panel, as a person would see it?"""
    import mss

    x, y, w, h = panel(xdisplay)
    with mss.MSS() as m:
        shot = m.grab({"left": x, "top": y, "width": w, "height": h})
    return any(
        all(abs(a - b) < 40 for a, b in zip(shot.pixel(px, py), colour, strict=True))
        for px in range(shot.width)
        for py in range(shot.height)
    )


RED = (200, 30, 30)  # recording, as agent/ui/tray.py draws it
AMBER = (230, 160, 20)  # paused


def _state(d: Dirs) -> str | None:
    s = read_status(d)
    return s["state"] if s else None


def _status(d: Dirs) -> dict[str, Any]:
    """The running agent's status (JSON: its values are whatever the agent wrote)."""
    status = read_status(d)
    assert status is not None, "the agent wrote no status"
    return status


def test_tray_pause_stops_capture_and_sigterm_seals(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        assert wait_for(lambda: _icon_colour_seen(xdisplay, RED), 3)  # the indicator, on screen
        maps = Path(f"/proc/{agent.pid}/maps").read_text(encoding="utf-8")
        assert "libLLVM" not in maps and "libGLX" not in maps  # the tray draws no GL: 53 MB kept out
        xdisplay.xdotool("mousemove", "--sync", "111", "222")
        _menu_until(xdisplay, d, "paused", "Down", "Right", "Return")  # Pause > For 15 minutes
        assert wait_for(lambda: _icon_colour_seen(xdisplay, AMBER), 3)
        t_paused = time.monotonic_ns()
        xdisplay.xdotool("mousemove", "--sync", "333", "444")
        xdisplay.xdotool("type", "paused")
        t_resume = time.monotonic_ns()
        _menu_until(xdisplay, d, "recording", "Down", "Return")  # now: Resume
        # input while optin's own menu is still up (it closes just after the state changes) is optin's
        # own and left out, and the own-window watcher hears of its closing a moment later
        # (agent/backends/xorg/own_ui.py): the volunteer's next move comes after that, as a person's would
        time.sleep(1.0)
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
    markers = [e.marker for e in data.events if isinstance(e, Marker) and e.marker != "screen_layout"]
    assert markers == ["session_start", "pause", "resume", "session_stop"]
    pause = next(e for e in data.events if isinstance(e, Marker) and e.marker == "pause")
    resume = next(e for e in data.events if isinstance(e, Marker) and e.marker == "resume")
    assert pause.t_ns < t_paused and t_resume < resume.t_ns
    during = [e for e in data.events if pause.t_ns < e.t_ns < resume.t_ns]
    assert during == []  # no event or frame time-stamped inside the pause
    moves = [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)]
    assert (111, 222) in moves and (555, 666) in moves and (333, 444) not in moves
    assert "paused" not in "".join(e.char or "" for e in data.events if isinstance(e, KeyPress))
    # the right-click on the tray icon and the keys that walked its menu were optin's own: left out
    assert not [e for e in data.events if isinstance(e, (ButtonPress, ButtonRelease))]
    assert not [e for e in data.events if isinstance(e, KeyPress) and e.name in ("down", "enter")]


def test_losing_the_tray_pauses_capture_until_it_is_back(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        xdisplay.stop_tray()  # the panel dies: no indicator anywhere
        assert wait_for(lambda: _state(d) == "paused", 5)
        assert _status(d)["reason"] == "no indicator"
        xdisplay.xdotool("mousemove", "--sync", "77", "88")  # not recorded: nobody can see it records
        xdisplay.start_tray()  # GTK re-embeds the icon in the new tray
        assert wait_for(lambda: _state(d) == "recording", 10)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    sid = next(p.name for p in d.sessions.iterdir())
    events = read_session(d, sid, keys.load_identity(d)).events
    assert (77, 88) not in [(e.x, e.y) for e in events if isinstance(e, PointerMove)]
    pause = next(e for e in events if isinstance(e, Marker) and e.marker == "pause")
    assert pause.detail["reason"] == "no indicator"


def test_no_tray_no_capture(consented: Consented, optin_home: Path) -> None:
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


def test_doctor_on_a_working_display(xdisplay: VirtualDisplay) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    checks = {c["name"]: c for c in json.loads(out.stdout)}
    assert checks["display"]["ok"] is True and xdisplay.display in checks["display"]["detail"]
    assert checks["record"]["ok"] is True
    assert checks["tray"]["ok"] is True
    assert out.returncode in (0, 1)  # 1 only if an unrelated check (say the data dir) fails here
    assert all(
        c["ok"] is not False for n, c in checks.items() if n in ("display", "record", "tray", "backend")
    )


def test_ctrl_c_seals_and_one_agent_at_a_time(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        second = subprocess.run(
            [sys.executable, "-m", "agent", "run"], capture_output=True, text=True, timeout=30, check=False
        )
        assert second.returncode == 2 and "already running" in second.stderr
        xdisplay.xdotool("mousemove", "--sync", "123", "321")
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGINT)  # Ctrl-C in the terminal that runs optin
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    (sid,) = [p.name for p in d.sessions.iterdir()]
    data = read_session(d, sid, keys.load_identity(d))
    assert data.all_sealed and not data.problems
    assert [e.marker for e in data.events if isinstance(e, Marker) and e.marker != "screen_layout"] == [
        "session_start",
        "session_stop",
    ]
    assert not (d.runtime / "status.json").exists()


def test_tray_deletes_the_last_minutes_and_recording_goes_on(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        first = _status(d)["session"]
        xdisplay.xdotool("mousemove", "--sync", "212", "121")  # recorded, then deleted
        time.sleep(0.3)
        for _ in range(3):  # Delete the last > 5 minutes
            tray_menu(xdisplay, "Down", "Down", "Right", "Return")
            if wait_for(lambda: (read_status(d) or {}).get("session") not in (None, first), 5):
                break
            xdisplay.xdotool("key", "Escape")
        second = _status(d)["session"]
        assert second != first and _state(d) == "recording"
        xdisplay.xdotool("mousemove", "--sync", "343", "434")  # recorded in the new session
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert [p.name for p in d.sessions.iterdir()] == [second]  # the first was crypto-shredded
    data = read_session(d, second, keys.load_identity(d))
    moves = [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)]
    assert (343, 434) in moves and (212, 121) not in moves


def test_tray_opt_out_asks_then_stops_withdraws_and_deletes_everything(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    from agent import consent

    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        xdisplay.xdotool("mousemove", "--sync", "101", "202")
        # status, Pause, Delete the last, Exclude this app, Review and export, Withdraw consent, Opt out
        tray_menu(xdisplay, "Down", "Down", "Down", "Down", "Down", "Down", "Return")
        wait_window(xdisplay, "optin — Opt out of the study?")
        xdisplay.xdotool("key", "Tab")  # the focus starts on Cancel
        xdisplay.xdotool("key", "Return")
        assert agent.wait(20) == 0
    finally:
        stop_process(agent)
    assert consent.current_receipt(d) is None
    assert not any(d.sessions.iterdir()) if d.sessions.exists() else True
    assert read_status(d) is None


def test_tray_screenshots_for_the_guide(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    """The icon docks in the tray and its menu opens; saved for docs/volunteer-guide.md when
    OPTIN_SAVE_SCREENSHOTS=1 (a person looks at them there)."""
    import mss
    from PIL import Image

    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        assert wait_for(lambda: _icon_colour_seen(xdisplay, RED), 3)  # docked, red
        right_click_icon(xdisplay)
        time.sleep(0.8)
        with mss.MSS() as m:
            shot = m.grab({"left": 0, "top": 0, "width": xdisplay.width, "height": xdisplay.height})
        xdisplay.xdotool("key", "Escape")
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    image = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
    menu = image.crop((max(0, xdisplay.width - 560), 0, xdisplay.width, 240))
    assert len(menu.getcolors(maxcolors=1 << 16) or ()) > 10  # something was drawn there: the menu
    if os.environ.get("OPTIN_SAVE_SCREENSHOTS") == "1":
        out = Path(__file__).resolve().parents[2] / "docs" / "img"
        out.mkdir(exist_ok=True)
        menu.save(out / "tray-menu.png")


def test_tray_exclude_this_app_keeps_the_focused_app_out(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    d, _study = consented
    term = xdisplay.spawn(["xterm", "-T", "exclude-me", "-geometry", "60x10+100+100"])
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: bool(xdisplay.search("exclude-me")), 10)
        xdisplay.xdotool("windowactivate", "--sync", xdisplay.search("exclude-me")[0])
        assert wait_for(lambda: _state(d) == "recording", 5)
        xdisplay.xdotool("type", "--delay", "20", "before")
        for _ in range(3):  # status, Pause, Delete the last, Exclude this app
            tray_menu(xdisplay, "Down", "Down", "Down", "Return")
            if wait_for((d.config / "exclusions.json").exists, 3):
                break
            xdisplay.xdotool("key", "Escape")
        rules = json.loads((d.config / "exclusions.json").read_text())["rules"]
        assert rules == [{"label": "XTerm", "app_class": "XTerm"}]
        assert wait_for(lambda: _status(d)["filtered"], 3)  # the icon's shield: a protected window
        xdisplay.xdotool("type", "--delay", "20", "after")
        time.sleep(0.3)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
        stop_process(term)
    sid = next(p.name for p in d.sessions.iterdir())
    typed = "".join(
        e.char or "" for e in read_session(d, sid, keys.load_identity(d)).events if isinstance(e, KeyPress)
    )
    assert typed == "before"


def test_tray_review_and_export_opens_the_window_on_what_was_recorded(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path
) -> None:
    """The menu item seals the session so far (recording goes on in a new one) and opens the
    review window on it; what is done in the window is not recorded."""
    d, _study = consented
    agent = start_agent(tmp_path)
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        first = _status(d)["session"]
        xdisplay.xdotool("mousemove", "--sync", "212", "121")
        time.sleep(0.3)
        title = f"optin review — {first}"
        for _ in range(3):  # status, Pause, Delete the last, Exclude this app, Review and export
            tray_menu(xdisplay, "Down", "Down", "Down", "Down", "Return")
            if wait_for(lambda: bool(xdisplay.search(title)), 60):
                break
            xdisplay.xdotool("key", "Escape")
        windows = xdisplay.search(title)
        assert windows, f"no review window: {(tmp_path / 'agent-stderr.txt').read_text()[-2000:]}"
        second = _status(d)["session"]
        assert second != first and _state(d) == "recording"
        xdisplay.xdotool("windowactivate", "--sync", windows[0])
        xdisplay.xdotool("key", "Escape")
        assert wait_for(lambda: not xdisplay.search(title), 10)
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    data = read_session(d, first, keys.load_identity(d))
    assert (212, 121) in [(e.x, e.y) for e in data.events if isinstance(e, PointerMove)]
    later = read_session(d, second, keys.load_identity(d))
    assert not [e for e in later.events if isinstance(e, KeyPress)]  # Escape went to an own window
