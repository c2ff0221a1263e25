"""Backend selection, the fake backend, and the X11 environment check without a display."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from agent.backends import select_backend
from agent.backends.base import CLIPBOARD_TIMEOUT_S, MAX_PASTE_CHARS, Backend
from agent.backends.fake import DEFAULT_WINDOW, FakeBackend, FakeFocus, FakeInput, FakeScreen
from agent.capture.screen import encode_frame
from agent.errors import BackendUnavailable, EnvironmentProblem
from agent.events import Event, KeyPress, PointerMove, WindowFocus, now_ns

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPTIN_BACKEND", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE"):
        monkeypatch.delenv(var, raising=False)


# --- selection ---------------------------------------------------------------------------------


def test_select_fake_by_name_returns_a_new_instance_each_time() -> None:
    first = select_backend("fake")
    second = select_backend("fake")
    assert isinstance(first, FakeBackend)
    assert first is not second


def test_env_override_selects_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_BACKEND", " Fake ")
    assert isinstance(select_backend(), FakeBackend)


def test_argument_wins_over_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_BACKEND", "no-such-backend")
    assert isinstance(select_backend("fake"), FakeBackend)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the platform default is xorg on Linux only")
def test_linux_default_is_xorg_and_import_needs_no_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    backend = select_backend()
    assert backend.NAME == "xorg"
    assert backend.HAS_ACTIVE_WINDOW
    assert backend.HAS_FOCUS_EVENTS
    backend.close()


def test_unknown_name_lists_valid_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_BACKEND", "wayland")
    with pytest.raises(BackendUnavailable) as info:
        select_backend()
    message = str(info.value)
    assert "'wayland'" in message
    assert "OPTIN_BACKEND" in message
    assert "fake, xorg" in message
    assert "Fix:" in message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("platform", ["freebsd14", "sunos5"])
def test_platforms_without_backend_are_refused_clearly(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    with pytest.raises(BackendUnavailable) as info:
        select_backend()
    message = str(info.value)
    assert f"sys.platform={platform!r}" in message and "Linux (X11), Windows and macOS" in message
    assert "OPTIN_BACKEND=fake" in message


@pytest.mark.skipif(sys.platform == "win32", reason="naming win32 on Windows is the right OS")
def test_backend_of_another_os_is_refused_before_any_import(monkeypatch: pytest.MonkeyPatch) -> None:
    imported: list[str] = []
    monkeypatch.setattr(
        "agent.backends.importlib.import_module", lambda name, package=None: imported.append(name)
    )
    with pytest.raises(BackendUnavailable, match="needs Windows"):
        select_backend("win32")
    assert imported == []


def test_import_error_becomes_one_message_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken_import(name: str, package: str | None = None) -> Any:
        calls.append(name)
        msg = "No module named 'Xlib'"
        raise ImportError(msg)

    monkeypatch.setattr("agent.backends.importlib.import_module", broken_import)
    with pytest.raises(BackendUnavailable) as info:
        select_backend("xorg")
    exc = info.value
    assert calls == ["agent.backends.xorg"]
    assert isinstance(exc, EnvironmentProblem)
    assert len(exc.resolutions) == 1
    message = str(exc)
    assert "No module named 'Xlib'" in message
    assert "python-xlib" in message
    assert "xorg" in message


def test_backend_contract_is_enforced() -> None:
    class Incomplete(Backend):
        def check_environment(self) -> None:
            return None

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


def test_importing_xorg_backend_does_not_import_pynput() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONPATH"] = str(REPO)
    code = "import sys, agent.backends.xorg; print('pynput' in sys.modules)"
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "False"


# --- the fake backend --------------------------------------------------------------------------


def test_fake_input_delivers_only_while_started() -> None:
    backend = FakeBackend()
    got: list[Event] = []
    hooks = backend.input_hooks(got.append)
    assert backend.last_input is hooks
    move = PointerMove(now_ns(), 10, 20)

    assert hooks.emit(move) is False
    assert not hooks.is_alive()
    hooks.start()
    assert hooks.is_alive()
    assert hooks.emit(move) is True
    hooks.stop()
    assert hooks.emit(move) is False
    assert got == [move]
    assert hooks.delivered == 1


def test_fake_input_replays_its_script_once() -> None:
    script: list[Event] = [PointerMove(1, 0, 0), KeyPress(2, "a", None, 97)]
    backend = FakeBackend(input_script=script)
    got: list[Event] = []
    hooks = backend.input_hooks(got.append)
    assert got == []
    hooks.start()
    assert got == script
    hooks.stop()
    hooks.start()
    assert got == script


def test_fake_focus_emits_initial_window_changes_and_no_duplicates() -> None:
    backend = FakeBackend()
    got: list[Event] = []
    watcher = backend.focus_watcher(got.append)
    assert isinstance(watcher, FakeFocus)
    assert backend.last_focus is watcher

    backend.focus_window("before start", "Nobody")  # not started: nothing delivered
    assert got == []
    watcher.start()
    assert len(got) == 1
    assert isinstance(got[0], WindowFocus)
    assert got[0].title == "before start"

    backend.focus_window("Inbox", "Thunderbird", 77)
    backend.focus_window("Inbox", "Thunderbird", 77)  # identical: not repeated
    backend.clear_focus()
    watcher.stop()
    backend.focus_window("after stop", "Nobody")

    titles = [e.title for e in got if isinstance(e, WindowFocus)]
    assert titles == ["before start", "Inbox", None]
    assert isinstance(got[1], WindowFocus)
    assert got[1].pid == 77
    assert got[1].app_class == "Thunderbird"


def test_fake_active_window_is_stamped_now() -> None:
    backend = FakeBackend()
    before = now_ns()
    window = backend.active_window()
    assert window is not None
    assert window.title == DEFAULT_WINDOW.title
    assert window.t_ns >= before
    backend.clear_focus()
    assert backend.active_window() is None


def test_fake_screen_shoots_what_was_painted() -> None:
    backend = FakeBackend()
    screen = backend.screen_grabber()
    assert isinstance(screen, FakeScreen)
    assert backend.last_screen is screen
    first = screen.shoot(now_ns())
    screen.paint((255, 0, 0))
    second = screen.shoot(now_ns())
    assert (first.width, first.height) == (64, 48) and first.monitors == ((0, 0, 64, 48),)
    assert len(second.pixels) == 64 * 48 * 4 and second.pixels[:4] == bytes((0, 0, 255, 255))  # BGRA
    assert not first.same_pixels(second) and second.same_pixels(screen.shoot(now_ns()))
    frame = encode_frame(second, "click")
    image = Image.open(io.BytesIO(frame.data))
    assert image.format == "WEBP" and image.size == (64, 48) and frame.reason == "click"
    assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    screen.close()
    with pytest.raises(RuntimeError):
        screen.shoot(now_ns())


def test_fake_environment_and_tray() -> None:
    backend = FakeBackend()
    backend.check_environment()
    assert backend.tray_host_available() is True
    assert isinstance(backend.input_hooks(lambda _e: None), FakeInput)
    broken = FakeBackend(problem="no X display: DISPLAY is not set. Fix: run in X11.", tray_host=None)
    with pytest.raises(EnvironmentProblem, match="DISPLAY is not set"):
        broken.check_environment()
    assert broken.tray_host_available() is None


def test_fake_clipboard_answers_what_was_set_within_the_cap() -> None:
    backend = FakeBackend()
    assert backend.read_clipboard() is None  # empty at first
    backend.set_clipboard("pasted ✓ 😀")
    assert backend.read_clipboard() == "pasted ✓ 😀"
    assert backend.read_clipboard("clipboard") == "pasted ✓ 😀"
    assert backend.read_clipboard("primary") is None  # a separate selection
    backend.set_clipboard("selected", source="primary")
    assert backend.read_clipboard("primary") == "selected"
    backend.set_clipboard("")
    assert backend.read_clipboard() is None
    backend.set_clipboard("a" * MAX_PASTE_CHARS)
    assert backend.read_clipboard() == "a" * MAX_PASTE_CHARS
    backend.set_clipboard("a" * (MAX_PASTE_CHARS + 1))
    assert backend.read_clipboard() is None
    backend.set_clipboard(None)
    assert backend.read_clipboard() is None
    assert backend.clipboard_reads == ["clipboard"] * 3 + ["primary"] * 2 + ["clipboard"] * 4


def test_base_backend_reads_no_clipboard_and_knows_no_idle_or_lock() -> None:
    class Minimal(Backend):
        def check_environment(self) -> None:
            pass

        def active_window(self) -> WindowFocus | None:
            return None

        def focus_watcher(self, sink: Any) -> Any:
            return None

        def tray_host_available(self) -> bool | None:
            return None

    backend = Minimal()
    assert backend.read_clipboard() is None
    assert backend.read_clipboard("primary") is None
    assert backend.idle_seconds() is None
    assert backend.screen_locked() is None


# --- xorg.check_environment without a display -------------------------------------------------


@pytest.fixture
def xorg() -> Any:
    from agent.backends import xorg

    return xorg


def test_wayland_session_is_refused(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("DISPLAY", ":0")  # XWayland sets it too; Wayland still wins
    with pytest.raises(EnvironmentProblem) as info:
        xorg.XorgBackend().check_environment()
    message = str(info.value)
    assert "Wayland" in message
    assert "Fix: log in to an X11 (Xorg) session" in message
    assert "\n" not in message


def test_wayland_session_type_is_refused(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.setenv("XDG_SESSION_TYPE", "wayland")
    with pytest.raises(EnvironmentProblem, match="Wayland"):
        xorg.XorgBackend().check_environment()


def test_missing_display_is_refused(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(EnvironmentProblem) as info:
        xorg.XorgBackend().check_environment()
    message = str(info.value)
    assert "DISPLAY is not set" in message
    assert "optin demo" in message
    assert info.value.exit_code == 2


def test_unreachable_display_fails_quickly(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    if Path("/tmp/.X11-unix/X987").exists():
        pytest.skip("display :987 exists on this machine")
    monkeypatch.setenv("DISPLAY", ":987")
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem) as info:
        xorg.XorgBackend().check_environment()
    assert time.monotonic() - start < 2.0
    message = str(info.value)
    assert "DISPLAY=:987" in message
    assert "Fix:" in message
    assert "\n" not in message


def test_display_that_never_answers_does_not_hang(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    def stuck(_name: str, _timeout: float) -> Any:
        time.sleep(3)
        raise AssertionError("unreachable")

    monkeypatch.setenv("DISPLAY", ":42")
    monkeypatch.setattr(xorg.connection, "CONNECT_TIMEOUT", 0.2)
    monkeypatch.setattr(xorg.connection, "connect", stuck)
    start = time.monotonic()
    with pytest.raises(EnvironmentProblem, match="no answer within"):
        xorg.XorgBackend().check_environment()
    assert time.monotonic() - start < 1.5


def test_missing_record_extension_is_refused(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.setenv("DISPLAY", ":5")
    monkeypatch.setattr(xorg, "probe", lambda name, timeout=None: xorg.XProbe(display=name, has_record=False))
    with pytest.raises(EnvironmentProblem) as info:
        xorg.XorgBackend().check_environment()
    message = str(info.value)
    assert "DISPLAY=:5 has no RECORD extension" in message
    assert "+extension RECORD" in message


def test_probe_reports_instead_of_raising(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    assert xorg.probe().error == "DISPLAY is not set"
    assert not xorg.probe().connected


def test_focus_watcher_start_without_display_raises(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    if Path("/tmp/.X11-unix/X987").exists():
        pytest.skip("display :987 exists on this machine")
    monkeypatch.setenv("DISPLAY", ":987")
    backend = xorg.XorgBackend()
    watcher = backend.focus_watcher(lambda _e: None)
    with pytest.raises(EnvironmentProblem):
        watcher.start()
    assert not watcher.is_alive()
    watcher.stop()  # harmless after a failed start
    assert backend.tray_host_available() is None
    with pytest.raises(EnvironmentProblem):
        backend.active_window()


def test_input_scopes_drop_unconsented_events_at_the_source() -> None:
    backend = FakeBackend()
    got: list[Event] = []
    hooks = backend.input_hooks(got.append, pointer=True, keyboard=False)
    hooks.start()
    move, key = PointerMove(now_ns(), 1, 2), KeyPress(now_ns(), "s", None, 115)
    hooks.emit(move)
    hooks.emit(key)
    assert got == [move]
    with pytest.raises(ValueError, match="neither"):
        backend.input_hooks(got.append, pointer=False, keyboard=False)
    assert backend.name == "fake"


# --- xorg clipboard without a display ---------------------------------------------------------


def test_xorg_decode_selection(xorg: Any) -> None:
    assert xorg.decode_selection("Grüße 😀".encode(), utf8=True) == "Grüße 😀"
    assert xorg.decode_selection("Grüße".encode("latin-1"), utf8=False) == "Grüße"  # ICCCM STRING
    assert xorg.decode_selection(b"text\0", utf8=True) == "text"  # a C terminator some owners send
    assert xorg.decode_selection(b"bad \xff utf-8", utf8=True) == "bad \ufffd utf-8"
    assert xorg.decode_selection(b"", utf8=True) is None
    assert xorg.decode_selection(b"\0", utf8=False) is None
    at_cap = "é" * MAX_PASTE_CHARS
    assert xorg.decode_selection(at_cap.encode(), utf8=True) == at_cap
    assert xorg.decode_selection((at_cap + "x").encode(), utf8=True) is None
    assert len(("😀" * MAX_PASTE_CHARS).encode()) < xorg.MAX_PASTE_BYTES  # the byte cap never cuts a text


def test_xorg_read_clipboard_without_a_display_is_none(monkeypatch: pytest.MonkeyPatch, xorg: Any) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    assert xorg.XorgBackend().read_clipboard() is None
    assert xorg.XorgBackend(display=":0").read_clipboard("secondary") is None  # not a source
    if not Path("/tmp/.X11-unix/X987").exists():
        start = time.monotonic()
        assert xorg.XorgBackend(display=":987").read_clipboard() is None
        assert time.monotonic() - start < CLIPBOARD_TIMEOUT_S + 0.25


def test_xorg_read_clipboard_gives_up_on_a_display_that_never_answers(
    monkeypatch: pytest.MonkeyPatch, xorg: Any
) -> None:
    def stuck(_name: str, _timeout: float) -> Any:
        time.sleep(2)
        raise AssertionError("unreachable")

    monkeypatch.setattr(xorg.connection, "connect", stuck)
    start = time.monotonic()
    assert xorg.XorgBackend(display=":42").read_clipboard() is None
    assert time.monotonic() - start < CLIPBOARD_TIMEOUT_S + 0.25
