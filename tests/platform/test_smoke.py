"""Smoke test of the real capture backend on its own operating system (Windows, macOS).

The win32 and darwin backends are unit-tested on Linux through their pure parts
(tests/unit/test_backends_win32_darwin.py); only here do they run against the real
OS: ``optin doctor --json`` in a subprocess, the focused window, the focus watcher
and one screen grab, all through :func:`agent.backends.select_backend` and the
:class:`~agent.backends.base.Backend` methods.  The GitHub Actions jobs for
windows-latest and macos-latest run it (.github/workflows/ci.yml).

On Linux every test here is skipped: that is another operating system, not a
missing dependency (the X11 backend has its own tests under tests/display/).
The assertions hold whatever the runner's desktop allows (a macOS runner may lack
the privacy permissions): what must not happen is a crash, a wrong type, a hang, or
a doctor whose exit code disagrees with its own checks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from agent.backends import select_backend
from agent.capture import Hooks
from agent.doctor import Check, exit_code
from agent.events import Event, WindowFocus, now_ns

#: The backend each operating system must load by default (``sys.platform`` → backend name).
NATIVE = {"win32": "win32", "darwin": "darwin"}

pytestmark = pytest.mark.skipif(
    sys.platform not in NATIVE,
    reason=f"smoke test of the Windows and macOS backends on their own OS; this is {sys.platform} "
    "(the X11 backend is tested under tests/display/)",
)

#: Generous bound for one doctor run (it promises well under 3 s), to prove it does not hang.
DOCTOR_TIMEOUT_S = 120


def _native() -> str:
    return NATIVE[sys.platform]


def _doctor_json() -> tuple[int, list[dict[str, Any]]]:
    env = {**os.environ, "PYTHONUTF8": "1"}
    env.pop("OPTIN_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--json"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=DOCTOR_TIMEOUT_S,
        check=False,
    )
    print(proc.stdout)  # shown by pytest when a test fails: what this runner's desktop allows
    assert proc.stderr.count("Traceback") == 0, proc.stderr
    checks = json.loads(proc.stdout)
    assert isinstance(checks, list)
    return proc.returncode, checks


def test_doctor_loads_the_native_backend_and_exits_as_its_checks_say() -> None:
    code, checks = _doctor_json()
    by_name = {c["name"]: c for c in checks}
    assert by_name["backend"]["ok"] is True, by_name["backend"]
    assert by_name["backend"]["detail"].startswith(_native()), by_name["backend"]
    assert by_name["python"]["ok"] is True, by_name["python"]
    assert by_name["packages"]["ok"] is True, by_name["packages"]
    display = by_name["display"]
    # the backend answered (True, or False with a fix); "could not ask the desktop" is a crash
    assert display["ok"] is not None, display
    assert not display["detail"].startswith("could not ask the desktop"), display
    if display["ok"] is False:
        assert display["fix"], display
    assert "tray" in by_name
    if sys.platform == "darwin":
        assert "permissions" in by_name
    assert code == exit_code([Check(**c) for c in checks])


def test_backend_reads_the_focused_window() -> None:
    backend = select_backend()
    try:
        assert _native() == backend.NAME
        for _ in range(3):  # the first call loads the OS libraries; later ones reuse them
            focus = backend.active_window()
            assert focus is None or isinstance(focus, WindowFocus)
            if focus is not None:
                assert 0 < focus.t_ns <= now_ns()
                assert focus.pid is None or focus.pid > 0
                assert focus.width is None or focus.width >= 0
                assert focus.height is None or focus.height >= 0
        assert backend.tray_host_available() in (True, False, None)
        assert backend.screen_locked() in (True, False, None)
        idle = backend.idle_seconds()
        assert idle is None or idle >= 0
    finally:
        backend.close()


def test_focus_watcher_starts_and_stops() -> None:
    backend = select_backend()
    seen: list[Event] = []
    try:
        watcher: Hooks = backend.focus_watcher(seen.append)
        watcher.start()
        assert watcher.is_alive()
        time.sleep(0.5)
        watcher.stop()
        deadline = time.monotonic() + 10
        while watcher.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watcher.is_alive()
        assert all(isinstance(e, WindowFocus) for e in seen)
    finally:
        backend.close()


def test_one_screen_grab() -> None:
    backend = select_backend()
    try:
        grabber = backend.screen_grabber()
        try:
            t_ns = now_ns()
            shot = grabber.shoot(t_ns)
        finally:
            grabber.close()
    finally:
        backend.close()
    assert shot.t_ns == t_ns
    assert shot.width > 0
    assert shot.height > 0
    assert len(shot.pixels) == shot.width * shot.height * 4
    assert shot.monitors, "mss found no monitor"
    for left, top, width, height in shot.monitors:  # every monitor lies in the virtual screen
        assert shot.left <= left
        assert shot.top <= top
        assert left + width <= shot.left + shot.width
        assert top + height <= shot.top + shot.height
