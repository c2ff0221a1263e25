"""The command line contract: names, exit codes, clear messages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli
from agent.cli.output import progress_bar
from tests.tools import Consented

CONTRACT = [
    "run",
    "consent",
    "status",
    "pause",
    "resume",
    "delete-last",
    "exclude",
    "sessions",
    "purge",
    "verify",
    "review",
    "export",
    "inspect",
    "unpack",
    "keys",
    "redact-text",
    "doctor",
    "demo",
]


def test_help_lists_every_contract_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], capture_output=True, text=True, check=True
    )
    listed = set(re.findall(r"^    ([a-z-]+)", out.stdout, flags=re.MULTILINE))
    assert set(CONTRACT) <= listed, set(CONTRACT) - listed


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "consent" in capsys.readouterr().out


def test_consent_show_and_grant_scripted(study_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["consent", "show", "--study", str(study_file)]) == 0
    out = capsys.readouterr().out
    found = re.search(r"consent sha256: ([0-9a-f]{64})", out)
    text_found = re.search(r"text sha256: ([0-9a-f]{64})", out)
    assert found is not None and text_found is not None
    digest, text_digest = found.group(1), text_found.group(1)
    assert "consent: not given" in out
    assert cli.main(["consent", "grant", "--accept-text-sha256", "f" * 64]) == 2
    assert "does not match" in capsys.readouterr().err
    assert cli.main(["consent", "grant", "--accept-text-sha256", text_digest]) == 2
    assert "consent text alone" in capsys.readouterr().err
    assert cli.main(["consent", "grant", "--accept-text-sha256", digest, "--scopes", "pointer"]) == 0
    assert cli.main(["consent", "show", "--json"]) == 0
    assert '"granted": true' in capsys.readouterr().out
    assert cli.main(["consent", "withdraw"]) == 0


def test_status_when_no_agent_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == 3  # 3: no agent runs (like LSB `status`)
    assert "not running" in capsys.readouterr().out


def test_sessions_empty_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["sessions"]) == 0
    assert "no sessions" in capsys.readouterr().out
    assert cli.main(["sessions", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_run_without_a_study_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run"]) == 2
    assert "optin run --study FILE" in capsys.readouterr().err


def test_run_without_consent_records_nothing(
    study_file: Path, optin_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", "--study", str(study_file)]) == 2
    assert "consent grant --accept-text-sha256" in capsys.readouterr().err
    assert not (optin_home / "data" / "sessions").exists()


def _run_subprocess(env_changes: dict[str, str | None], optin_home: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = dict(os.environ)
    for k, v in env_changes.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return subprocess.run(
        [sys.executable, "-m", "agent", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"DISPLAY": None, "WAYLAND_DISPLAY": None, "XDG_SESSION_TYPE": None}, "DISPLAY is not set"),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "Wayland"),
        ({"DISPLAY": ":987", "WAYLAND_DISPLAY": None, "XDG_SESSION_TYPE": None}, ":987"),
    ],
    ids=["no-display", "wayland", "unreachable-display"],
)
def test_bad_environment_one_line_exit_2(
    consented: Consented, optin_home: Path, changes: dict[str, str | None], needle: str
) -> None:
    out = _run_subprocess(changes, optin_home)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert needle in lines[0] and "Fix" in lines[0]
    assert not (optin_home / "data" / "sessions").exists() or not any(
        (optin_home / "data" / "sessions").iterdir()
    )


def test_verify_clean_then_tampered(consented: Consented, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from agent.backends import select_backend
    from agent.control import Recorder

    d, study = consented
    rec = Recorder(d, select_backend("fake"), study)
    rec.start()
    rec.stop()
    assert rec.session_id is not None
    assert cli.main(["verify", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    seg = next((d.sessions / rec.session_id).glob("*.seg"))
    blob = bytearray(seg.read_bytes())
    blob[-5] ^= 0x01
    seg.write_bytes(bytes(blob))
    assert cli.main(["verify", rec.session_id]) == 1
    out = capsys.readouterr().out
    assert seg.name in out and "authentication" in out


def test_export_progress_bar_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert progress_bar("x") is None  # captured stderr is not a terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = progress_bar("S: reading screens", width=10)
    assert bar is not None
    bar(3, 10)
    bar(10, 10)
    err = capsys.readouterr().err
    assert "\rS: reading screens [###-------] 3/10" in err
    assert err.endswith("\rS: reading screens [##########] 10/10\n")


def test_a_reader_that_leaves_early_gets_no_traceback(tmp_path: Path) -> None:
    """``optin redact-text < big | head -1``: the reader closes the pipe after one line."""
    source = tmp_path / "lines.txt"
    source.write_text("\n".join(f"line {i} alice@example.com" for i in range(50_000)) + "\n")
    with source.open() as stdin:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "redact-text"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # as head does
        err = proc.stderr.read()
        proc.stderr.close()
        proc.wait(30)
    assert first == "line 0 [EMAIL]\n" and "Traceback" not in err and "BrokenPipe" not in err
