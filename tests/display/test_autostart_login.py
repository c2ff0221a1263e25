"""Log out and in again, as the desktop does it: the agent the autostart entry starts at login
comes back in the state the volunteer left it in (here: paused until they resume), with the same
study, consent, keys and sessions."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agent import cli
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.paths import Dirs
from agent.recorder_status import read_status
from agent.store.reader import list_sessions
from tests.display.desktop import start_agent
from tests.tools import Consented


def _exec_argv(desktop: Path) -> list[str]:
    """The Exec key of a desktop entry as the desktop splits it (string escapes, then quoting)."""
    line = next(x for x in desktop.read_text().splitlines() if x.startswith("Exec="))
    return shlex.split(line.removeprefix("Exec=").replace("\\\\", "\\"))


def _service_argv(unit: Path) -> tuple[list[str], dict[str, str]]:
    """ExecStart= and Environment= of a systemd unit, as the user manager would run them."""
    lines = unit.read_text().splitlines()
    unescape: Callable[[str], str] = lambda v: v.replace("%%", "%").replace("$$", "$")  # noqa: E731 - specifiers, variables
    argv = shlex.split(
        unescape(next(x for x in lines if x.startswith("ExecStart=")).removeprefix("ExecStart="))
    )
    env: dict[str, str] = {}
    for line in lines:
        if line.startswith("Environment="):
            for item in shlex.split(unescape(line.removeprefix("Environment="))):
                key, _, value = item.partition("=")
                env[key] = value
    return argv, env


def _state(d: Dirs) -> str | None:
    status = read_status(d)
    return status["state"] if status else None


@pytest.mark.parametrize("via", ["xdg", "systemd"])
def test_after_logging_in_again_the_agent_is_as_it_was_left(
    xdisplay: VirtualDisplay, consented: Consented, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    d, _study = consented
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert cli.main(["autostart", "enable", "--via", via]) == 0
    if via == "xdg":
        argv = _exec_argv(tmp_path / "home/.config/autostart/optin.desktop")
        assert argv[0] == "env" and argv[-3:] == ["-m", "agent", "run"]
    else:  # the user service's command line and environment (no systemd user manager runs here)
        argv, env = _service_argv(tmp_path / "home/.config/systemd/user/optin.service")
        assert env == {"OPTIN_HOME": os.environ["OPTIN_HOME"]} and argv[-3:] == ["-m", "agent", "run"]
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), *argv]

    agent = start_agent(tmp_path, argv)  # the first login
    try:
        assert wait_for(lambda: _state(d) == "recording", 5)
        paused = subprocess.run(
            [sys.executable, "-m", "agent", "pause"], capture_output=True, text=True, check=False
        )
        assert paused.returncode == 0, paused.stderr
        assert wait_for(lambda: _state(d) == "paused", 5)
        os.killpg(agent.pid, signal.SIGTERM)  # logging out ends the session's processes
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert read_status(d) is None

    agent = start_agent(tmp_path, argv)  # logging in again
    try:
        assert wait_for(lambda: _state(d) == "paused", 5)
        status = read_status(d)
        assert status is not None and status["reason"]  # and it says why: the volunteer's pause
        os.killpg(agent.pid, signal.SIGTERM)
        assert agent.wait(15) == 0
    finally:
        stop_process(agent)
    assert len(list_sessions(d)) == 2  # the same store: one session per login
