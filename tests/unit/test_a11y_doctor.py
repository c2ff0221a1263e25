"""The accessibility (AT-SPI) pieces that need no display: the doctor's check against a real
private session bus, a bus that never answers, no bus at all; the worker without a display."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.doctor import check_accessibility
from tests.tools import require_tool

if sys.platform == "win32":
    pytest.skip("AT-SPI is Linux only (and Windows has no Unix sockets)", allow_module_level=True)
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="AT-SPI is Linux only")


def _need_typelib() -> None:
    from agent.backends.xorg import a11y_bus
    from tests.tools import unavailable

    if not a11y_bus.typelib_present():
        unavailable(f"needs the AT-SPI typelib: {a11y_bus.INSTALL_FIX}")


@pytest.fixture
def session_bus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private D-Bus session daemon (the system's service files: org.a11y.Bus among them)."""
    require_tool("dbus-daemon", hint="apt-get install dbus")
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={"PATH": "/usr/bin:/bin", "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10.0)
        assert ready, "dbus-daemon printed no address"
        address = proc.stdout.readline().decode().strip()
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        yield address
    finally:
        proc.kill()  # SIGKILL: a launcher it started would otherwise tidy up paths; none is started
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_reachable_bus_is_ok(session_bus: str) -> None:
    _need_typelib()
    if not Path("/usr/share/dbus-1/services/org.a11y.Bus.service").exists():
        from tests.tools import unavailable

        unavailable("needs at-spi2-core (org.a11y.Bus.service): apt-get install at-spi2-core")
    check = check_accessibility()
    assert check.ok is True, check
    assert "starts on demand" in check.detail


def test_no_session_bus_is_a_warning_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _need_typelib()
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    check = check_accessibility()
    assert check.ok is None  # a warning, never a failure
    assert "no session bus" in check.detail
    assert "apt-get install gir1.2-atspi-2.0 at-spi2-core" in check.fix


def test_a_bus_that_never_answers_does_not_hang_the_doctor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile: a socket that accepts and says nothing (a stalled bus)."""
    _need_typelib()
    path = tmp_path / "bus"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={path}")
    try:
        t0 = time.monotonic()
        check = check_accessibility()
        assert time.monotonic() - t0 < 3.0
        assert check.ok is None
        assert check.fix
    finally:
        stop.set()
        thread.join(2.0)
        for conn in accepted:
            conn.close()
        server.close()


def test_the_worker_without_a_display_drops_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.backends.xorg.a11y import finder_factory
    from agent.capture.element_lookup import ElementLookup

    monkeypatch.delenv("DISPLAY", raising=False)
    worker = ElementLookup(lambda r: None, finder_factory())
    assert not worker.request(1, 10, 10)  # not started: dropped at once, counted
    assert worker.start() is False  # no display: it says so, never raises
    assert not worker.request_focus(2)
    assert worker.dropped == 2
    worker.stop()
