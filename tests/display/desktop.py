"""Driving the private desktop as a person does: start `optin run`, use the tray icon's menu,
wait for a window to have the focus.  Shared by the real-display tests."""

from __future__ import annotations

import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for


def start_agent(tmp_path: Path, argv: list[str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``optin run`` (or ``argv``) and wait for its "recording session" line."""
    with (tmp_path / "agent-stderr.txt").open("wb") as err:
        agent = subprocess.Popen(
            argv or [sys.executable, "-m", "agent", "run"],
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    assert agent.stdout is not None
    ready, _, _ = select.select([agent.stdout], [], [], 20)
    line = agent.stdout.readline().decode() if ready else ""
    if not line.startswith("optin: recording session"):
        stop_process(agent)
        pytest.fail(f"the agent did not start: {(tmp_path / 'agent-stderr.txt').read_text()[-2000:]}")
    return agent


def panel(xdisplay: VirtualDisplay) -> tuple[int, int, int, int]:
    panel = xdisplay.xdotool("search", "--classname", "^panel$").split()[0]
    geo = dict(kv.split("=") for kv in xdisplay.xdotool("getwindowgeometry", "--shell", panel).split())
    return tuple(int(geo[k]) for k in ("X", "Y", "WIDTH", "HEIGHT"))  # type: ignore[return-value]


def right_click_icon(xdisplay: VirtualDisplay) -> None:
    """Right-click the tray icon.  The pointer first goes elsewhere: `mousemove --sync` to where it
    already is waits forever for a motion that never comes."""
    x, y, w, h = panel(xdisplay)
    xdisplay.xdotool("mousemove", "--sync", str(x + w - 40), str(y + h + 40))
    xdisplay.xdotool("mousemove", "--sync", str(x + w - 12), str(y + h // 2))
    xdisplay.xdotool("click", "3")


def tray_menu(xdisplay: VirtualDisplay, *keys_: str) -> None:
    """Right-click the tray icon and walk its menu with the keyboard."""
    right_click_icon(xdisplay)
    time.sleep(0.5)  # the menu maps asynchronously; a missed menu fails the state check below
    xdisplay.xdotool("key", *keys_)


def wait_window(xdisplay: VirtualDisplay, title: str) -> str:
    found: list[str] = []

    def focused() -> bool:
        found[:] = xdisplay.search(title)
        return bool(found) and xdisplay.xdotool("getwindowfocus").strip() == found[0]

    assert wait_for(focused, 20), f"no focused window titled {title!r}"
    time.sleep(0.3)
    return found[0]
