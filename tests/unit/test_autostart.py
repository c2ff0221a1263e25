"""Autostart entries: rendered exactly (and equal to the examples in packaging/), written where
each platform looks, removed again; uninstall removes them, and with --purge everything else."""

from __future__ import annotations

import json
import plistlib
import subprocess
import sys
from pathlib import Path

import pytest

from agent import autostart, cli
from agent.store import keys
from agent.store.reader import list_sessions
from tests.tools import Consented, require_tool

ROOT = Path(__file__).resolve().parents[2]
ARGV = ["/home/volunteer/optin/.venv/bin/python", "-m", "agent", "run"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    return home


def test_the_packaging_examples_are_what_the_code_writes() -> None:
    assert (ROOT / "packaging/linux/optin.desktop").read_text() == autostart.render("xdg", ARGV, {})
    assert (ROOT / "packaging/linux/optin.service").read_text() == autostart.render("systemd", ARGV, {})
    mac = ["/Users/volunteer/optin/.venv/bin/python", "-m", "agent", "run"]
    assert (ROOT / "packaging/macos/org.optin.agent.plist").read_text() == autostart.render(
        "launchagent", mac, {}
    )
    win = [r"C:\Users\volunteer\optin\.venv\Scripts\python.exe", "-m", "agent", "run"]
    assert (ROOT / "packaging/windows/optin.cmd").read_bytes() == autostart.render(
        "startup", win, {}
    ).encode()


def test_desktop_exec_quotes_what_the_spec_reserves() -> None:
    text = autostart.render_desktop(["/opt/my apps/py", "-m", "agent", "run"], {"OPTIN_HOME": "/data/$x"})
    exec_line = next(line for line in text.splitlines() if line.startswith("Exec="))
    # quoted, and inside quotes $ is backslash-escaped; the key's string value then doubles backslashes
    assert exec_line == 'Exec=env "OPTIN_HOME=/data/\\\\$x" "/opt/my apps/py" -m agent run'


def test_systemd_unit_quotes_and_escapes() -> None:
    text = autostart.render_systemd(["/opt/my apps/py", "-m", "agent", "run"], {"OPTIN_HOME": "/d/100%"})
    assert 'ExecStart="/opt/my apps/py" -m agent run' in text
    assert "Environment=OPTIN_HOME=/d/100%%" in text
    assert "WantedBy=graphical-session.target" in text and "Restart=on-failure" in text


def test_systemd_accepts_the_unit_it_would_get(tmp_path: Path) -> None:
    require_tool("systemd-analyze", hint="apt-get install systemd")
    unit = tmp_path / "optin.service"
    unit.write_text(
        autostart.render_systemd([sys.executable, "-m", "agent", "run"], {"OPTIN_HOME": "/x y/%h"})
    )
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace(sys.executable, "/nonexistent/python"))
    assert subprocess.run(
        ["systemd-analyze", "verify", str(broken)], capture_output=True, check=False
    ).returncode


def test_launchagent_plist() -> None:
    plist = plistlib.loads(autostart.render_launchagent(ARGV, {"OPTIN_HOME": "/x"}).encode())
    assert plist["Label"] == "org.optin.agent" and plist["ProgramArguments"] == ARGV
    assert plist["RunAtLoad"] is True and plist["EnvironmentVariables"] == {"OPTIN_HOME": "/x"}


def test_startup_batch_file_uses_pythonw_and_sets_the_environment() -> None:
    text = autostart.render_startup([r"C:\Py\python.exe", "-m", "agent", "run"], {"OPTIN_HOME": r"D:\o h"})
    assert text == '@echo off\r\nset "OPTIN_HOME=D:\\o h"\r\nstart "" "C:\\Py\\pythonw.exe" -m agent run\r\n'


def test_entries_live_where_each_platform_looks(tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "APPDATA": str(tmp_path / "roaming")}
    assert autostart.entry("xdg", home=tmp_path, env=env).path == tmp_path / "cfg/autostart/optin.desktop"
    assert (
        autostart.entry("systemd", home=tmp_path, env=env).path == tmp_path / "cfg/systemd/user/optin.service"
    )
    assert (
        autostart.entry("launchagent", home=tmp_path).path
        == tmp_path / "Library/LaunchAgents/org.optin.agent.plist"
    )
    startup = tmp_path / "roaming/Microsoft/Windows/Start Menu/Programs/Startup/optin.cmd"
    assert autostart.entry("startup", home=tmp_path, env=env).path == startup


def test_cli_enable_status_disable(home: Path, optin_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["autostart"]) == 0
    assert "does not start at login" in capsys.readouterr().out
    assert cli.main(["autostart", "enable"]) == 0
    desktop = home / ".config/autostart/optin.desktop"
    assert f"{desktop} written; it starts at your next login" in capsys.readouterr().out
    assert f"Exec=env OPTIN_HOME={optin_home} {sys.executable} -m agent run" in desktop.read_text()
    assert cli.main(["autostart", "enable", "--via", "systemd"]) == 0
    assert "systemctl --user enable optin.service" in capsys.readouterr().out
    wants = home / ".config/systemd/user/graphical-session.target.wants"
    wants.mkdir()
    (wants / "optin.service").symlink_to(
        home / ".config/systemd/user/optin.service"
    )  # as systemctl enable does
    assert cli.main(["autostart", "--json"]) == 0
    assert [e["kind"] for e in json.loads(capsys.readouterr().out)["installed"]] == ["xdg", "systemd"]
    assert cli.main(["autostart", "disable"]) == 0
    assert "daemon-reload" in capsys.readouterr().out
    assert not desktop.exists() and not (wants / "optin.service").is_symlink()
    assert cli.main(["autostart", "enable", "--via", "launchagent"]) == 2
    assert "not available here" in capsys.readouterr().err


def test_uninstall_keeps_data_and_purge_asks_first(
    home: Path, consented: Consented, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.stop()
    assert cli.main(["autostart", "enable"]) == 0
    assert cli.main(["uninstall"]) == 0
    out = capsys.readouterr().out
    assert "removed autostart entry" in out and "are kept" in out
    assert len(list_sessions(d)) == 1 and keys.load_recipient(d)

    assert cli.main(["uninstall", "--purge"]) == 2
    assert "--yes" in capsys.readouterr().err and len(list_sessions(d)) == 1  # nothing deleted
    assert cli.main(["uninstall", "--purge", "--yes", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sessions"] == 1 and "identity" in report["keys"] and "recipient" in report["keys"]
    assert not d.data.exists() and not d.config.exists()


def test_uninstall_refuses_while_optin_runs(
    home: Path, consented: Consented, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    try:
        assert cli.main(["uninstall", "--purge", "--yes"]) == 2
        assert "quit" in capsys.readouterr().err.lower()
        assert d.keys.exists()
    finally:
        rec.stop()
