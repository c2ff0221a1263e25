"""``optin doctor`` checks, without a display."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from agent import doctor
from agent.doctor import Check, exit_code, render_text, run_checks
from tests.tools import require_tool

NAMES = [
    "display",
    "record",
    "tray",
    "backend",
    "python",
    "packages",
    "data-dir",
    "keyring",
    "age",
    "ocr",
    "accessibility",
]


@pytest.fixture(autouse=True)
def _no_display(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "OPTIN_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPTIN_HOME", str(tmp_path / "home"))


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def test_no_display_gives_every_check_and_exit_code_2() -> None:
    start = time.monotonic()
    checks = run_checks()
    assert time.monotonic() - start < 3.0
    assert [check.name for check in checks] == NAMES
    found = by_name(checks)
    assert found["display"].ok is False
    assert "DISPLAY is not set" in found["display"].detail
    assert found["display"].fix
    assert found["record"].ok is None
    assert found["tray"].ok is None
    assert found["python"].ok is True
    assert found["data-dir"].ok is True
    assert "will be created" in found["data-dir"].detail
    assert exit_code(checks) == 2


def test_render_text_shows_status_and_every_fix() -> None:
    checks = run_checks()
    text = render_text(checks)
    lines = text.splitlines()
    assert lines[0].startswith("FAIL")
    for check in checks:
        assert check.name in text
        if check.fix and check.ok is not True:
            assert f"fix: {check.fix}" in text
    status_lines = [line for line in lines if not line.startswith(" ")]
    assert len(status_lines) == len(checks)
    columns = {line.index(check.detail) for line, check in zip(status_lines, checks, strict=True)}
    assert len(columns) == 1  # details are aligned


def test_checks_are_json_serialisable() -> None:
    checks = run_checks()
    data = json.loads(json.dumps([asdict(check) for check in checks]))
    assert [item["name"] for item in data] == NAMES
    assert set(data[0]) == {"name", "ok", "detail", "fix"}


def test_wayland_is_an_environment_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    checks = run_checks()
    display = by_name(checks)["display"]
    assert display.ok is False
    assert "Wayland" in display.detail
    assert "X11" in display.fix
    assert exit_code(checks) == 2


@pytest.mark.parametrize(
    ("failing", "expected"),
    [(None, 0), ("tray", 1), ("data-dir", 1), ("packages", 1), ("record", 2), ("display", 2), ("backend", 2)],
)
def test_exit_code(failing: str | None, expected: int) -> None:
    checks = [Check(name, name != failing, "d", "" if name != failing else "do this") for name in NAMES]
    checks.append(Check("ocr-optional", None, "missing", "apt-get install tesseract-ocr"))
    assert exit_code(checks) == expected


def test_unknown_forced_backend_fails_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_BACKEND", "bogus")
    check = doctor.check_backend()
    assert check.ok is False
    assert "'bogus'" in check.detail
    assert "OPTIN_BACKEND" in check.fix


def test_data_dir_permissions(tmp_path: Path) -> None:
    data = tmp_path / "home" / "data"
    data.mkdir(parents=True, mode=0o700)
    data.chmod(0o700)
    assert doctor.check_data_dir().ok is True
    data.chmod(0o755)
    check = doctor.check_data_dir()
    assert check.ok is False
    assert "0755" in check.detail
    assert "chmod 700" in check.fix


def test_ocr_missing_fails_when_the_study_requires_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    monkeypatch.setattr(
        "agent.doctor.shutil.which", lambda cmd: None if cmd == "tesseract" else real_which(cmd)
    )
    monkeypatch.setattr("agent.redact.screen.shutil.which", lambda cmd: None)
    monkeypatch.setattr(doctor, "_study_requires_ocr", lambda: True)
    check = doctor.check_ocr()
    assert check.ok is False
    assert "requires OCR" in check.detail
    assert check.fix == "apt-get install tesseract-ocr tesseract-ocr-eng"
    assert exit_code([check]) == 1
    monkeypatch.setattr(doctor, "_study_requires_ocr", lambda: False)
    check = doctor.check_ocr()
    assert check.ok is None and "optional" in check.detail
    assert exit_code([check]) == 0


def test_ocr_found(monkeypatch: pytest.MonkeyPatch) -> None:
    require_tool("tesseract")
    check = doctor.check_ocr()
    assert check.ok is True and "with English data" in check.detail


def test_a_hanging_tool_does_not_hang_the_doctor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_age = bin_dir / "age"
    fake_age.write_text("#!/bin/sh\nexec sleep 30\n")
    fake_age.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.monotonic()
    check = doctor.check_age(timeout=0.3)
    assert time.monotonic() - start < 2.0
    assert check.ok is None
    assert "did not answer" in check.detail


def test_packages_checked_without_importing_pynput(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    imported: list[str] = []
    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__

    def spy(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr("builtins.__import__", spy)
    already = "pynput" in sys.modules
    doctor.check_packages()
    assert already or "pynput" not in sys.modules
    assert "pynput" not in imported


def test_keyring_check_is_optional_and_says_where_the_key_goes() -> None:
    (check,) = [c for c in doctor.run_checks() if c.name == "keyring"]
    assert check.ok is None  # the suite forces the fail backend: no OS keyring
    assert "passphrase-protected file" in check.detail
