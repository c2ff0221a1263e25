"""The win32 and darwin backends on Linux: selection, refusal with the fix, and their pure logic.

Neither backend can run here; these tests call the functions that turn raw OS
answers (UTF-16 buffers, RECTs, window-list dictionaries, permission answers)
into events and messages, with fabricated answers, and drive the backends with
stand-ins for the OS layer.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import agent.backends
from agent.backends import darwin, select_backend, win32
from agent.backends.base import CLIPBOARD_TIMEOUT_S, MAX_PASTE_CHARS, TimedRead
from agent.backends.darwin import (
    DarwinBackend,
    Permissions,
    PollingFocusWatcher,
    bounds_geometry,
    focus_from_window_info,
    gui_session_problem,
    permission_problem,
    pick_front_window,
    responsible_app,
)
from agent.backends.darwin.native import Cocoa, Native
from agent.backends.win32 import (
    CLIPBOARD_READ_LIMIT,
    Win32Backend,
    decode_utf16,
    exe_name,
    idle_seconds_from_ticks,
    is_focus_event,
    lock_state,
    rect_geometry,
    session_problem,
    window_focus_from_win32,
)
from agent.backends.win32 import api as win32_api
from agent.backends.win32.uia import ApartmentWorker, Win32UiaBackend, password_state
from agent.errors import BackendUnavailable, EnvironmentProblem
from agent.events import Event, WindowFocus, now_ns

REPO = Path(__file__).resolve().parents[2]
LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(not LINUX, reason="checks refusal of the other OSes' backends on Linux")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPTIN_BACKEND", raising=False)


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# --- importing and selecting -----------------------------------------------------------------


def test_modules_import_on_linux_without_platform_libraries() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONPATH"] = str(REPO)
    code = (
        "import sys, agent.backends.win32, agent.backends.win32.uia, agent.backends.darwin\n"
        "heavy = ('comtypes', 'objc', 'Quartz', 'AppKit', 'CoreFoundation', 'pynput', 'mss')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    argv = [sys.executable, "-c", code]
    done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]"


def test_registry_knows_both_backends() -> None:
    assert {"win32", "darwin"} <= set(agent.backends.BACKENDS)
    assert agent.backends.PLATFORM_BACKENDS["win32"] == ("win32",)
    assert agent.backends.PLATFORM_BACKENDS["darwin"] == ("darwin",)
    assert agent.backends.PLATFORM_BACKENDS["linux"] == ("xorg",)
    assert "comtypes" in agent.backends.RESOLUTIONS["win32"]
    assert "pyobjc-framework-Quartz" in agent.backends.RESOLUTIONS["darwin"]


@linux_only
@pytest.mark.parametrize(("name", "os_name"), [("win32", "Windows"), ("darwin", "macOS")])
def test_selecting_another_os_backend_by_name_is_refused_with_the_fix(name: str, os_name: str) -> None:
    with pytest.raises(BackendUnavailable) as info:
        select_backend(name)
    message = str(info.value)
    assert f"backend {name!r} (from argument) needs {os_name}" in message
    assert "this machine runs Linux" in message
    assert "Fix: use xorg on Linux, or fake for a dry run" in message
    assert info.value.exit_code == 2


@linux_only
def test_selecting_another_os_backend_by_env_says_to_unset_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIN_BACKEND", "Darwin")
    with pytest.raises(BackendUnavailable) as info:
        select_backend()
    message = str(info.value)
    assert "(from OPTIN_BACKEND) needs macOS" in message
    assert "unset OPTIN_BACKEND (the default here is xorg)" in message
    assert "OPTIN_BACKEND=fake" in message


@pytest.mark.parametrize("name", ["win32", "darwin"])
def test_make_backend_refuses_the_wrong_os_itself(name: str) -> None:
    if sys.platform == name:
        pytest.skip("this is that OS")
    module = win32 if name == "win32" else darwin
    with pytest.raises(BackendUnavailable, match=f"the {name} backend needs"):
        module.make_backend()


@pytest.mark.skipif(sys.platform == "darwin", reason="pyobjc may be installed on macOS")
def test_missing_pyobjc_gives_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(BackendUnavailable) as info:
        select_backend()  # the platform default on "macOS"
    exc = info.value
    assert len(exc.resolutions) == 1
    message = str(exc)
    assert "darwin: cannot import it (No module named" in message
    assert "pip install 'pyobjc-framework-Quartz>=8' 'pyobjc-framework-Cocoa>=8'" in message
    assert "macOS" in message


@pytest.mark.skipif(hasattr(ctypes, "WinDLL"), reason="the Windows API is loadable here")
def test_win32_without_the_windows_api_is_one_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(BackendUnavailable) as info:
        select_backend("win32")
    message = str(info.value)
    assert "cannot load the Windows API" in message
    assert "Fix: run optin on Windows 10 or later" in message
    assert "OPTIN_BACKEND=fake" in message


def test_unsupported_platform_names_the_supported_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "sunos5")
    with pytest.raises(BackendUnavailable) as info:
        select_backend()
    message = str(info.value)
    assert "'sunos5'" in message
    assert "Linux (X11), Windows and macOS" in message
    assert "OPTIN_BACKEND=fake" in message


def test_import_error_inside_make_backend_becomes_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    class Module:
        @staticmethod
        def make_backend() -> None:
            msg = "No module named 'comtypes'"
            raise ImportError(msg)

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr("agent.backends.importlib.import_module", lambda name, package=None: Module)
    with pytest.raises(BackendUnavailable) as info:
        select_backend("win32")
    assert len(info.value.resolutions) == 1
    assert "win32: cannot import it (No module named 'comtypes')" in str(info.value)


# --- win32: pure logic -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "title",
    [
        "Inbox - Outlook",
        "Grüße aus Köln – Notepad",
        "東京の天気 - Microsoft Edge",
        "📄 Notes 🚀 — Word",  # astral characters: surrogate pairs in UTF-16
        "",
    ],
)
def test_utf16_titles_decode_exactly(title: str) -> None:
    raw = title.encode("utf-16-le") + b"\0\0"
    units = len(title.encode("utf-16-le")) // 2
    assert decode_utf16(raw, units) == title
    assert decode_utf16(raw) == title  # up to the NUL


@pytest.mark.skipif(sys.byteorder != "little", reason="Windows is little-endian; so is this buffer")
def test_utf16_from_a_ctypes_buffer_like_getwindowtextw_fills() -> None:
    title = "Ünïcödé 🎉 标题"
    units = title.encode("utf-16-le")
    count = len(units) // 2
    buf = (ctypes.c_uint16 * (count + 8))()
    ctypes.memmove(buf, units, len(units))
    assert decode_utf16(bytes(buf), count) == title


def test_utf16_stops_at_nul_and_at_the_reported_length() -> None:
    raw = "abc".encode("utf-16-le") + b"\0\0" + "garbage".encode("utf-16-le")
    assert decode_utf16(raw) == "abc"
    assert decode_utf16(raw, 2) == "ab"
    assert decode_utf16(raw, 1000) == "abc"  # never past the NUL or the buffer
    assert decode_utf16(b"a\0b", None) == "a"  # an odd trailing byte is ignored
    assert decode_utf16(b"", 5) == ""
    assert decode_utf16("x".encode("utf-16-le"), -1) == ""


def test_unpaired_surrogate_becomes_replacement_character() -> None:
    raw = b"A\0" + (0xD83D).to_bytes(2, "little") + b"B\0"  # a high surrogate with no low one
    text = decode_utf16(raw, 3)
    assert text == "A\ufffdB"
    text.encode("utf-8")  # always storable


def test_exe_name_keeps_only_the_file_name() -> None:
    assert exe_name(r"C:\Program Files\Mozilla Firefox\firefox.exe") == "firefox.exe"
    assert exe_name(r"\\?\C:\Windows\System32\notepad.exe") == "notepad.exe"
    path = r"C:\Users\Zoë Smith\AppData\Local\Programs\Microsoft VS Code\Code.exe"
    assert exe_name(path) == "Code.exe"  # the user's name in the path is not kept
    assert exe_name("") is None
    assert exe_name(None) is None
    assert exe_name("C:\\dir\\") is None


def test_rect_geometry() -> None:
    assert rect_geometry((100, 50, 900, 650)) == (100, 50, 800, 600)
    assert rect_geometry((-1920, 0, -960, 1080)) == (-1920, 0, 960, 1080)  # a monitor left of the primary
    assert rect_geometry((100, 50, 900, 650), minimized=True) is None
    assert rect_geometry((-32000, -32000, -31840, -31972)) is None  # where Windows parks minimised windows
    assert rect_geometry((10, 10, 10, 20)) is None
    assert rect_geometry(None) is None


def test_window_focus_from_win32_answers() -> None:
    t = now_ns()
    focus = window_focus_from_win32(
        t,
        title="Budget – Excel",
        class_name="XLMAIN",
        pid=4242,
        image_path=r"C:\Program Files\Microsoft Office\root\Office16\EXCEL.EXE",
        rect=(0, 0, 1280, 720),
    )
    assert focus == WindowFocus(t, "Budget – Excel", "EXCEL.EXE", 4242, 0, 0, 1280, 720)

    denied = window_focus_from_win32(
        t,
        title="",
        class_name="ConsoleWindowClass",
        pid=0,
        image_path=None,
        rect=(0, 0, 10, 10),
        minimized=True,
    )
    assert denied == WindowFocus(t, "", "ConsoleWindowClass", None)
    nothing = window_focus_from_win32(t, title=None, class_name=None, pid=None, image_path=None, rect=None)
    assert nothing == WindowFocus(t, None, None, None)


FG = 0x1234


@pytest.mark.parametrize(
    ("event", "hwnd", "id_object", "id_child", "expected"),
    [
        (win32.EVENT_SYSTEM_FOREGROUND, FG, 0, 0, True),
        (win32.EVENT_SYSTEM_FOREGROUND, 0x9999, 0, 0, True),  # the new foreground window
        (win32.EVENT_OBJECT_NAMECHANGE, FG, win32.OBJID_WINDOW, win32.CHILDID_SELF, True),
        (win32.EVENT_OBJECT_NAMECHANGE, FG, win32.OBJID_WINDOW, 3, False),  # a child element renamed
        (win32.EVENT_OBJECT_NAMECHANGE, FG, -4, 0, False),  # OBJID_CLIENT
        (win32.EVENT_OBJECT_NAMECHANGE, 0x9999, win32.OBJID_WINDOW, 0, False),  # a background window
        (win32.EVENT_OBJECT_NAMECHANGE, None, win32.OBJID_WINDOW, 0, False),
        (win32.EVENT_SYSTEM_MOVESIZEEND, FG, 0, 0, True),
        (win32.EVENT_SYSTEM_MINIMIZEEND, FG, 0, 0, True),
        (win32.EVENT_SYSTEM_MOVESIZEEND, 0x9999, 0, 0, False),
        (0x8005, FG, win32.OBJID_WINDOW, 0, False),  # EVENT_OBJECT_FOCUS is not hooked
    ],
)
def test_which_winevents_matter(
    event: int, hwnd: int | None, id_object: int, id_child: int, expected: bool
) -> None:
    assert is_focus_event(event, hwnd, id_object, id_child, FG) is expected


def test_hooked_event_ranges_cover_what_the_filter_accepts() -> None:
    hooked = {e for low, high in win32.HOOKED_EVENTS for e in range(low, high + 1)}
    for event in (
        win32.EVENT_SYSTEM_FOREGROUND,
        win32.EVENT_OBJECT_NAMECHANGE,
        win32.EVENT_SYSTEM_MOVESIZEEND,
        win32.EVENT_SYSTEM_MINIMIZESTART,
        win32.EVENT_SYSTEM_MINIMIZEEND,
    ):
        assert event in hooked


def test_session_problem() -> None:
    service = session_problem(0, True)
    assert service is not None
    assert "session 0" in service
    assert "Fix:" in service
    hidden = session_problem(2, False)
    assert hidden is not None
    assert "non-interactive window station" in hidden
    assert "Fix:" in hidden
    assert session_problem(1, True) is None
    assert session_problem(None, None) is None  # cannot tell: not refused


def utf16z(text: str) -> bytes:
    """``text`` as CF_UNICODETEXT holds it: UTF-16LE with a NUL, cut to what the backend copies."""
    return (text + "\0").encode("utf-16-le")[:CLIPBOARD_READ_LIMIT]


def test_win32_paste_text_decodes_and_caps() -> None:
    assert win32.paste_text(utf16z("Grüße 😀\r\nline two")) == "Grüße 😀\r\nline two"
    assert win32.paste_text(utf16z("abc") + b"\xff\xff" * 4) == "abc"  # GlobalSize may round up
    assert win32.paste_text(None) is None  # no CF_UNICODETEXT, or the clipboard stayed busy
    assert win32.paste_text(utf16z("")) is None
    at_cap = "a" * (MAX_PASTE_CHARS - 1) + "😀"
    assert win32.paste_text(utf16z(at_cap)) == at_cap
    assert win32.paste_text(utf16z("a" * (MAX_PASTE_CHARS + 1))) is None


def test_win32_clipboard_copy_limit_never_lets_a_long_text_through() -> None:
    astral = "😀" * MAX_PASTE_CHARS  # the longest UTF-16 a text at the cap can be
    assert win32.paste_text(utf16z(astral)) == astral
    for too_long in (
        "😀" * (MAX_PASTE_CHARS + 1),
        "b" * (3 * MAX_PASTE_CHARS),
        "😀" + "c" * 2 * MAX_PASTE_CHARS,
    ):
        raw = utf16z(too_long)
        assert len(raw) == CLIPBOARD_READ_LIMIT  # cut off mid-text, no NUL
        assert win32.paste_text(raw) is None


@pytest.mark.parametrize(
    ("now", "last", "expected"),
    [
        (10_000, 9_000, 1.0),
        (10_000, 10_000, 0.0),
        (5, 0xFFFFFFFF - 994, 1.0),  # GetTickCount wrapped after the last input (49.7 days)
        (0, 0xFFFFFFFF, 0.001),
        (1_000, 1_001, 0.0),  # the input came between the two calls
        (0x7FFFFFFF, 0, 0x7FFFFFFF / 1000),
    ],
)
def test_win32_idle_seconds_from_ticks(now: int, last: int, expected: float) -> None:
    assert idle_seconds_from_ticks(now, last) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("flags", "saver", "expected"),
    [
        (win32.WTS_SESSIONSTATE_LOCK, False, True),
        (win32.WTS_SESSIONSTATE_UNLOCK, False, False),
        (win32.WTS_SESSIONSTATE_UNLOCK, True, True),  # a screen saver without a lock
        (win32.WTS_SESSIONSTATE_UNLOCK, None, False),
        (win32.WTS_SESSIONSTATE_UNKNOWN, False, None),
        (-1, False, None),  # UNKNOWN as a signed LONG
        (None, False, None),
        (None, True, True),
        (None, None, None),
        (7, False, None),
    ],
)
def test_win32_lock_state(flags: int | None, saver: bool | None, expected: bool | None) -> None:
    assert lock_state(flags, saver) is expected


def test_timed_read_answers_raises_and_gives_up() -> None:
    reader = TimedRead("test-read")
    assert reader.call(lambda: "text", 1.0) == "text"
    assert reader.call(lambda: None, 1.0) is None
    with pytest.raises(OSError, match="busy"):
        reader.call(lambda: (_ for _ in ()).throw(OSError("busy")), 1.0)

    release = threading.Event()
    start = time.monotonic()
    assert reader.call(lambda: release.wait(5) and "late", 0.1) is None  # a hung owner
    assert 0.1 <= time.monotonic() - start < 1.0
    start = time.monotonic()
    assert reader.call(lambda: "never run", 1.0) is None  # the hung read still runs: no second thread
    assert time.monotonic() - start < 0.05
    assert [t.name for t in threading.enumerate()].count("test-read") == 1
    release.set()
    assert wait_for(lambda: "test-read" not in [t.name for t in threading.enumerate()])
    assert reader.call(lambda: "again", 1.0) == "again"


def test_password_state() -> None:
    assert password_state(1) is True
    assert password_state(0) is False
    assert password_state(True) is True
    assert password_state(None) is None
    assert password_state("yes") is None


# --- win32_uia: the apartment worker (plain threads; no COM here) ----------------------------


def test_apartment_worker_runs_calls_on_its_own_thread() -> None:
    seen: list[str] = []

    def setup() -> dict[str, int]:
        seen.append(threading.current_thread().name)
        return {"answer": 42}

    worker: ApartmentWorker[dict[str, int]] = ApartmentWorker(setup)
    try:
        assert worker.call(lambda ctx: (ctx["answer"], threading.current_thread().name), 2.0) == (
            42,
            "optin-uia",
        )
        assert seen == ["optin-uia"]  # setup ran once, on the worker
        assert worker.call(lambda ctx: ctx["answer"] + 1, 2.0) == 43
        assert seen == ["optin-uia"]

        def boom(_ctx: object) -> None:
            msg = "COM said no"
            raise OSError(msg)

        with pytest.raises(OSError, match="COM said no"):
            worker.call(boom, 2.0)
        assert worker.is_alive()
    finally:
        worker.close()
    assert wait_for(lambda: not worker.is_alive())
    with pytest.raises(RuntimeError):
        worker.call(lambda ctx: None, 0.1)


def test_apartment_worker_times_out_and_recovers() -> None:
    release = threading.Event()
    worker: ApartmentWorker[None] = ApartmentWorker(lambda: None)
    try:
        with pytest.raises(TimeoutError):
            worker.call(lambda _ctx: release.wait(5.0), 0.05)
        release.set()
        assert worker.call(lambda _ctx: "next", 2.0) == "next"
    finally:
        release.set()
        worker.close()


def test_apartment_worker_setup_failure_reaches_every_caller() -> None:
    def setup() -> None:
        msg = "No module named 'comtypes'"
        raise ModuleNotFoundError(msg)

    worker: ApartmentWorker[None] = ApartmentWorker(setup)
    try:
        for _ in range(2):
            with pytest.raises(ModuleNotFoundError):
                worker.call(lambda _ctx: True, 2.0)
    finally:
        worker.close()


# --- win32: the backend over a stand-in for user32/kernel32 ----------------------------------


class StubUser32:
    def __init__(self) -> None:
        self.taskbar = True

    def FindWindowW(self, cls: str, title: str | None) -> int:
        return 0x10 if self.taskbar and cls == "Shell_TrayWnd" else 0


class StubWinApi:
    def __init__(
        self, focus: WindowFocus | None, session: int | None = 1, visible: bool | None = True
    ) -> None:
        self.focus = focus
        self.session = session
        self.visible = visible
        self.user32 = StubUser32()
        #: What the clipboard holds (CF_UNICODETEXT bytes), or an exception to raise, or a hang.
        self.clipboard: bytes | Exception | None = None
        self.clipboard_hang = threading.Event()
        self.hanging = False
        self.ticks = (1_000, 4_000)  # (last input, now)
        self.flags: int | Exception | None = win32.WTS_SESSIONSTATE_UNLOCK
        self.saver: bool | Exception | None = False

    def read_focus(self) -> tuple[int | None, WindowFocus | None]:
        return (0x42 if self.focus else None), self.focus

    def session_id(self) -> int | None:
        return self.session

    def station_visible(self) -> bool | None:
        return self.visible

    def clipboard_bytes(self, deadline: float) -> bytes | None:
        if self.hanging:
            self.clipboard_hang.wait(5)
        if isinstance(self.clipboard, Exception):
            raise self.clipboard
        return self.clipboard

    def last_input_ticks(self) -> int | None:
        return self.ticks[0]

    def tick_count(self) -> int:
        if self.ticks[1] < 0:
            raise OSError("no ticks")
        return self.ticks[1]

    def session_flags(self) -> int | None:
        if isinstance(self.flags, Exception):
            raise self.flags
        return self.flags

    def screensaver_running(self) -> bool | None:
        if isinstance(self.saver, Exception):
            raise self.saver
        return self.saver


def test_win32_backend_over_stub_api(monkeypatch: pytest.MonkeyPatch) -> None:
    window = WindowFocus(now_ns(), "Doc — Notepad", "notepad.exe", 77, 0, 0, 640, 480)
    api = StubWinApi(window)
    backend = Win32Backend(api)  # type: ignore[arg-type]
    assert backend.NAME == "win32"
    assert backend.HAS_FOCUS_EVENTS
    assert not backend.HAS_SECURE_INPUT_DETECTION
    assert backend.secure_input_note is not None
    assert "pip install 'comtypes" in backend.secure_input_note
    assert backend.active_window() == window
    assert backend.secure_input_active() is None
    assert backend.tray_host_available() is True
    api.user32.taskbar = False
    assert backend.tray_host_available() is None

    if sys.platform != "win32":
        with pytest.raises(EnvironmentProblem, match="needs Windows"):
            backend.check_environment()
    monkeypatch.setattr(sys, "platform", "win32")
    backend.check_environment()
    api.session = 0
    with pytest.raises(EnvironmentProblem, match="session 0"):
        backend.check_environment()
    backend.close()
    backend.close()


def test_win32_backend_clipboard_idle_and_lock_over_stub_api(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = StubWinApi(None)
    backend = Win32Backend(api)  # type: ignore[arg-type]
    assert backend.read_clipboard() is None  # no text on the clipboard
    api.clipboard = utf16z("secret-token-123 ✓")
    assert backend.read_clipboard() == "secret-token-123 ✓"
    assert backend.read_clipboard("clipboard") == "secret-token-123 ✓"
    assert backend.read_clipboard("primary") is None  # Windows has no primary selection
    api.clipboard = utf16z("x" * (MAX_PASTE_CHARS + 1))
    assert backend.read_clipboard() is None
    api.clipboard = OSError("secret-token-123")
    assert backend.read_clipboard() is None
    api.clipboard, api.hanging = utf16z("late"), True
    start = time.monotonic()
    assert backend.read_clipboard() is None  # the owner hangs while rendering
    assert CLIPBOARD_TIMEOUT_S * 0.9 <= time.monotonic() - start < CLIPBOARD_TIMEOUT_S + 0.3
    api.hanging = False
    api.clipboard_hang.set()
    assert wait_for(lambda: backend.read_clipboard() == "late")
    assert "secret-token-123" not in caplog.text

    assert backend.idle_seconds() == pytest.approx(3.0)
    api.ticks = (0xFFFFFF00, 0x100)
    assert backend.idle_seconds() == pytest.approx(0.512)
    api.ticks = (None, 5)  # type: ignore[assignment]
    assert backend.idle_seconds() is None
    api.ticks = (1, -1)
    assert backend.idle_seconds() is None

    assert backend.screen_locked() is False
    api.flags = win32.WTS_SESSIONSTATE_LOCK
    assert backend.screen_locked() is True
    api.flags, api.saver = OSError("no wtsapi32"), True
    assert backend.screen_locked() is True
    api.saver = OSError("no SPI")
    assert backend.screen_locked() is None


class FakeUser32Clipboard:
    """user32's clipboard calls, busy for the first ``busy`` tries to open it."""

    def __init__(self, busy: int, handle: int, available: bool = True) -> None:
        self.busy = busy
        self.handle = handle
        self.available = available
        self.opened = 0
        self.closed = 0

    def OpenClipboard(self, hwnd: Any) -> bool:
        if self.busy > 0:
            self.busy -= 1
            return False
        self.opened += 1
        return True

    def CloseClipboard(self) -> bool:
        self.closed += 1
        return True

    def IsClipboardFormatAvailable(self, fmt: int) -> bool:
        assert fmt == win32.CF_UNICODETEXT
        return self.available

    def GetClipboardData(self, fmt: int) -> int:
        assert fmt == win32.CF_UNICODETEXT
        return self.handle


class FakeKernel32Memory:
    """kernel32's GlobalLock/GlobalUnlock/GlobalSize over one real buffer."""

    def __init__(self, data: bytes, extra: int = 0) -> None:
        self.buffer = ctypes.create_string_buffer(data + b"\xee" * extra, len(data) + extra)
        self.locks = 0

    def GlobalSize(self, handle: int) -> int:
        return len(self.buffer)

    def GlobalLock(self, handle: int) -> int:
        self.locks += 1
        return ctypes.addressof(self.buffer)

    def GlobalUnlock(self, handle: int) -> bool:
        self.locks -= 1
        return True


def bare_win_api(user32: Any, kernel32: Any) -> Any:
    api = object.__new__(win32_api.Api)  # the Windows API cannot load here: give it stand-ins
    api.user32, api.kernel32 = user32, kernel32
    return api


def test_win32_clipboard_bytes_retries_copies_and_always_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(win32_api, "CLIPBOARD_RETRY_S", 0.001)
    text = "Grüße 😀"
    user32, kernel32 = FakeUser32Clipboard(busy=3, handle=0x77), FakeKernel32Memory(utf16z(text), extra=6)
    api = bare_win_api(user32, kernel32)
    raw = api.clipboard_bytes(time.monotonic() + 1.0)
    assert win32.paste_text(raw) == text
    assert (user32.opened, user32.closed, kernel32.locks) == (1, 1, 0)

    long_text = utf16z("z" * (2 * MAX_PASTE_CHARS + 50))
    user32, kernel32 = FakeUser32Clipboard(busy=0, handle=0x77), FakeKernel32Memory(long_text + b"\0" * 200)
    raw = bare_win_api(user32, kernel32).clipboard_bytes(time.monotonic() + 1.0)
    assert raw is not None and len(raw) == CLIPBOARD_READ_LIMIT  # never more than that is copied
    assert win32.paste_text(raw) is None

    user32 = FakeUser32Clipboard(busy=0, handle=0x77, available=False)
    assert bare_win_api(user32, kernel32).clipboard_bytes(time.monotonic() + 1.0) is None
    assert user32.closed == 1
    user32 = FakeUser32Clipboard(busy=0, handle=0)
    assert bare_win_api(user32, kernel32).clipboard_bytes(time.monotonic() + 1.0) is None
    assert user32.closed == 1

    user32 = FakeUser32Clipboard(busy=10**9, handle=0x77)  # another process keeps it open
    start = time.monotonic()
    assert bare_win_api(user32, kernel32).clipboard_bytes(time.monotonic() + 0.05) is None
    assert time.monotonic() - start < 0.5
    assert user32.closed == 0  # never opened, so never closed


def test_win32_last_input_ticks_reads_lastinputinfo() -> None:
    class LASTINPUTINFO(ctypes.Structure):
        _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint32)]

    class User32:
        ok = True

        def GetLastInputInfo(self, ref: Any) -> bool:
            info = ref._obj
            assert info.cbSize == ctypes.sizeof(LASTINPUTINFO)
            info.dwTime = 0xFFFFFFF0
            return self.ok

    user32 = User32()
    api = bare_win_api(user32, SimpleNamespace(GetTickCount=lambda: 0x10))
    api.LASTINPUTINFO = LASTINPUTINFO
    assert api.last_input_ticks() == 0xFFFFFFF0
    assert idle_seconds_from_ticks(api.tick_count(), api.last_input_ticks()) == pytest.approx(0.032)
    user32.ok = False
    assert api.last_input_ticks() is None


def test_win32_uia_backend_says_cannot_tell_when_uia_fails() -> None:
    backend = Win32UiaBackend(StubWinApi(None))  # type: ignore[arg-type]
    assert backend.HAS_SECURE_INPUT_DETECTION
    assert backend.secure_input_note is None
    try:
        # No comtypes here: setup fails on the worker; the answer is "cannot tell", never an exception.
        assert backend.secure_input_active() is None
        assert backend.active_window() is None
    finally:
        backend.close()


@pytest.mark.skipif(win32.comtypes_available(), reason="comtypes is installed here")
def test_comtypes_is_reported_missing() -> None:
    assert win32.comtypes_available() is False


# --- darwin: pure logic ----------------------------------------------------------------------


def cg_window(
    pid: int,
    owner: str,
    name: str | None = None,
    *,
    bounds: tuple[float, float, float, float] = (0, 25, 800, 600),
    layer: int = 0,
    alpha: float = 1.0,
) -> dict[str, Any]:
    """One entry as CGWindowListCopyWindowInfo returns it (keys are the kCGWindow* names)."""
    entry: dict[str, Any] = {
        "kCGWindowOwnerPID": pid,
        "kCGWindowOwnerName": owner,
        "kCGWindowLayer": layer,
        "kCGWindowAlpha": alpha,
        "kCGWindowBounds": dict(zip(("X", "Y", "Width", "Height"), bounds, strict=True)),
        "kCGWindowNumber": 1000 + pid,
    }
    if name is not None:  # absent without Screen Recording permission
        entry["kCGWindowName"] = name
    return entry


SCREEN = [
    cg_window(90, "Window Server", "Menubar", bounds=(0, 0, 1440, 25), layer=25),
    cg_window(91, "Dock", "Dock", bounds=(0, 850, 1440, 50), layer=20),
    cg_window(92, "Ghost", "invisible", alpha=0.0),
    cg_window(93, "Helper", "tiny", bounds=(0, 0, 1, 1)),
    cg_window(501, "Safari", "Résumé — 東京", bounds=(10.4, 40.6, 1200, 760.5)),
    cg_window(502, "Terminal", "zsh — 80×24", bounds=(300, 200, 570, 380)),
    cg_window(501, "Safari", "Other tab window", bounds=(50, 60, 700, 500)),
]


def test_pick_front_window_takes_the_first_normal_window() -> None:
    assert pick_front_window(SCREEN) is SCREEN[4]
    assert pick_front_window(SCREEN, front_pid=502) is SCREEN[5]
    assert pick_front_window(SCREEN, front_pid=501) is SCREEN[4]
    assert pick_front_window(SCREEN, front_pid=777) is None  # frontmost app without a window
    assert pick_front_window([]) is None
    assert pick_front_window(SCREEN[:4]) is None


def test_focus_from_window_info() -> None:
    t = now_ns()
    focus = focus_from_window_info(t, SCREEN[4], app_class="com.apple.Safari")
    assert focus == WindowFocus(t, "Résumé — 東京", "com.apple.Safari", 501, 10, 41, 1200, 760)
    unnamed = focus_from_window_info(t, cg_window(502, "Terminal"))  # no Screen Recording permission
    assert unnamed == WindowFocus(t, None, "Terminal", 502, 0, 25, 800, 600)
    windowless = focus_from_window_info(t, None, pid=777, app_class="com.apple.finder")
    assert windowless == WindowFocus(t, None, "com.apple.finder", 777)
    assert focus_from_window_info(t, None) is None


def test_bounds_geometry() -> None:
    assert bounds_geometry({"X": -1440.0, "Y": 0.0, "Width": 1440.0, "Height": 900.0}) == (
        -1440,
        0,
        1440,
        900,
    )
    assert bounds_geometry({"X": 0, "Y": 0, "Width": 10}) is None
    assert bounds_geometry({"X": True, "Y": 0, "Width": 10, "Height": 10}) is None
    assert bounds_geometry(None) is None


GRANTED = Permissions(accessibility=True, input_monitoring=0, screen_recording=True)


def test_permissions_all_granted_or_unknown_is_no_problem() -> None:
    assert permission_problem(GRANTED, "Terminal") is None
    old_macos = Permissions(accessibility=True, input_monitoring=None, screen_recording=None)
    assert permission_problem(old_macos, "Terminal") is None
    assert permission_problem(Permissions(None, None, None), "Terminal") is None


@pytest.mark.parametrize(
    ("permissions", "named"),
    [
        (Permissions(False, 0, True), ["Accessibility"]),
        (Permissions(True, 1, True), ["Input Monitoring"]),
        (Permissions(True, 2, True), ["Input Monitoring"]),  # never decided: still has to be switched on
        (Permissions(True, 0, False), ["Screen Recording"]),
        (Permissions(False, 1, False), ["Accessibility", "Input Monitoring", "Screen Recording"]),
    ],
)
def test_missing_permissions_make_one_message_with_the_fix(
    permissions: Permissions, named: list[str]
) -> None:
    message = permission_problem(permissions, "iTerm")
    assert message is not None
    assert message.count("Fix:") == 1
    assert "System Settings › Privacy & Security" in message
    assert "add iTerm" in message
    assert "quit iTerm completely" in message
    for pane in ("Accessibility", "Input Monitoring", "Screen Recording"):
        assert (pane in message) is (pane in named)


def test_responsible_app() -> None:
    assert responsible_app({"TERM_PROGRAM": "Apple_Terminal"}) == "Terminal"
    assert responsible_app({"TERM_PROGRAM": "iTerm.app"}) == "iTerm"
    assert "your terminal app" in responsible_app({})
    assert "your terminal app" in responsible_app({"TERM_PROGRAM": "tmux"})


def test_gui_session_problem() -> None:
    ssh = gui_session_problem(False, None)
    assert ssh is not None
    assert "SSH" in ssh
    assert "Fix:" in ssh
    switched = gui_session_problem(True, False)
    assert switched is not None
    assert "fast user switching" in switched
    assert gui_session_problem(True, True) is None
    assert gui_session_problem(True, None) is None


# --- darwin: the polling focus watcher ------------------------------------------------------


class Screen:
    """What the watcher's ``read`` sees; a test changes it."""

    def __init__(self, focus: WindowFocus | None) -> None:
        self.focus = focus
        self.error: Exception | None = None
        self.reads = 0

    def read(self) -> WindowFocus | None:
        self.reads += 1
        if self.error is not None:
            raise self.error
        return None if self.focus is None else WindowFocus(now_ns(), *_fields(self.focus))


def _fields(focus: WindowFocus) -> tuple[Any, ...]:
    return (focus.title, focus.app_class, focus.pid, focus.x, focus.y, focus.width, focus.height)


def focuses(events: list[Event]) -> list[WindowFocus]:
    return [e for e in events if isinstance(e, WindowFocus)]


def test_polling_watcher_emits_initial_changes_and_no_duplicates() -> None:
    screen = Screen(WindowFocus(0, "Inbox", "com.apple.mail", 10))
    got: list[Event] = []
    watcher = PollingFocusWatcher(screen.read, got.append, interval=0.005)
    watcher.start()
    try:
        assert [f.title for f in focuses(got)] == ["Inbox"]  # before start() returned
        assert watcher.is_alive()
        reads = screen.reads
        assert wait_for(lambda: screen.reads > reads + 3)
        assert len(got) == 1  # unchanged: not repeated

        screen.focus = WindowFocus(0, "Inbox (3)", "com.apple.mail", 10)  # a title change
        assert wait_for(lambda: len(got) == 2)
        screen.focus = None
        assert wait_for(lambda: len(got) == 3)
    finally:
        watcher.stop()
    assert not watcher.is_alive()
    screen.focus = WindowFocus(0, "after stop", "x", 1)
    time.sleep(0.03)
    assert [f.title for f in focuses(got)] == ["Inbox", "Inbox (3)", None]
    assert focuses(got)[2] == WindowFocus(focuses(got)[2].t_ns, None, None, None)


def test_polling_watcher_survives_read_errors_without_logging_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    screen = Screen(WindowFocus(0, "Bank — Safari", "com.apple.Safari", 5))
    got: list[Event] = []
    watcher = PollingFocusWatcher(screen.read, got.append, interval=0.005)
    with caplog.at_level(logging.DEBUG, logger="agent.backends.darwin"):
        watcher.start()
        try:
            screen.error = RuntimeError("window 'Secret plans' vanished")
            reads = screen.reads
            assert wait_for(lambda: screen.reads > reads + 3)
            screen.error = None
            screen.focus = WindowFocus(0, "Secret plans", "com.apple.TextEdit", 6)
            assert wait_for(lambda: len(got) == 2)
        finally:
            watcher.stop()
    assert "RuntimeError" in caplog.text
    assert "Secret plans" not in caplog.text
    assert "Bank" not in caplog.text
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1  # not once per poll


def test_polling_watcher_stop_from_the_sink_does_not_deadlock() -> None:
    screen = Screen(WindowFocus(0, "a", "b", 1))
    got: list[Event] = []
    watcher: PollingFocusWatcher

    def sink(event: Event) -> None:
        got.append(event)
        if len(got) == 2:
            watcher.stop()

    watcher = PollingFocusWatcher(screen.read, sink, interval=0.005)
    watcher.start()
    screen.focus = WindowFocus(0, "c", "b", 1)
    assert wait_for(lambda: not watcher.is_alive())
    assert len(got) == 2


def test_darwin_paste_text() -> None:
    assert darwin.paste_text("copied ✓ 😀") == "copied ✓ 😀"
    assert darwin.paste_text(None) is None  # no plain text on the pasteboard
    assert darwin.paste_text("") is None
    assert darwin.paste_text("a" * MAX_PASTE_CHARS) == "a" * MAX_PASTE_CHARS
    assert darwin.paste_text("a" * (MAX_PASTE_CHARS + 1)) is None

    class NSStringLike:  # pyobjc hands back an NSString proxy
        def __str__(self) -> str:
            return "from an NSString"

    assert darwin.paste_text(NSStringLike()) == "from an NSString"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (12.5, 12.5),
        (0, 0.0),
        (3, 3.0),
        (-0.25, 0.0),
        (math.nan, None),
        (math.inf, None),
        (None, None),
        (True, None),
    ],
)
def test_darwin_idle_from_event_source(answer: object, expected: float | None) -> None:
    assert darwin.idle_from_event_source(answer) == expected


def test_darwin_locked_from_session() -> None:
    unlocked = {"kCGSSessionOnConsoleKey": True, "kCGSSessionUserNameKey": "volunteer"}
    assert darwin.locked_from_session(unlocked) is False  # the key is there only while locked
    assert darwin.locked_from_session({**unlocked, darwin.SCREEN_IS_LOCKED: True}) is True
    assert darwin.locked_from_session({**unlocked, darwin.SCREEN_IS_LOCKED: 1}) is True
    assert darwin.locked_from_session({**unlocked, darwin.SCREEN_IS_LOCKED: False}) is False
    assert darwin.locked_from_session(None) is None  # no window-server session
    assert darwin.locked_from_session(unlocked, display_asleep=True) is True
    assert darwin.locked_from_session(None, display_asleep=True) is True
    assert darwin.locked_from_session(unlocked, display_asleep=None) is False


# --- darwin: the backend over stand-ins for pyobjc and the C functions -----------------------


class StubCocoa:
    def __init__(self, focus: WindowFocus | None = None) -> None:
        self.focus = focus
        self.session_answer: tuple[bool, bool | None] = (True, True)
        self.session_error: Exception | None = None
        self.pasteboard: str | Exception | None = None
        self.idle: float | Exception | None = 2.5
        self.locked: bool | Exception | None = False
        self.release = threading.Event()
        self.hanging = False

    def read_focus(self) -> WindowFocus | None:
        return self.focus

    def pasteboard_text(self) -> str | None:
        if self.hanging:
            self.release.wait(5)
        if isinstance(self.pasteboard, Exception):
            raise self.pasteboard
        return self.pasteboard

    def idle_seconds(self) -> float | None:
        if isinstance(self.idle, Exception):
            raise self.idle
        return self.idle

    def screen_locked(self) -> bool | None:
        if isinstance(self.locked, Exception):
            raise self.locked
        return self.locked

    def session(self) -> tuple[bool, bool | None]:
        if self.session_error is not None:
            raise self.session_error
        return self.session_answer


class StubNative:
    def __init__(self) -> None:
        self.answer = GRANTED
        self.secure: bool | None = False
        self.secure_error: Exception | None = None

    def permissions(self) -> Permissions:
        return self.answer

    def secure_input(self) -> bool | None:
        if self.secure_error is not None:
            raise self.secure_error
        return self.secure


def test_darwin_backend_over_stubs(monkeypatch: pytest.MonkeyPatch) -> None:
    window = WindowFocus(now_ns(), "Notes", "com.apple.Notes", 300, 0, 25, 800, 600)
    cocoa, native = StubCocoa(window), StubNative()
    backend = DarwinBackend(cocoa, native)  # type: ignore[arg-type]
    assert backend.NAME == "darwin"
    assert not backend.HAS_FOCUS_EVENTS  # polled, by design
    assert backend.HAS_SECURE_INPUT_DETECTION
    assert backend.active_window() == window
    assert isinstance(backend.focus_watcher(lambda _e: None), PollingFocusWatcher)

    assert backend.secure_input_active() is False
    native.secure = True
    assert backend.secure_input_active() is True
    native.secure_error = OSError("boom")
    assert backend.secure_input_active() is None

    assert backend.tray_host_available() is True
    cocoa.session_answer = (False, None)
    assert backend.tray_host_available() is None
    cocoa.session_error = RuntimeError("no window server")
    assert backend.tray_host_available() is None
    cocoa.session_error = None

    if sys.platform != "darwin":
        with pytest.raises(EnvironmentProblem, match="needs macOS"):
            backend.check_environment()
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("TERM_PROGRAM", "Apple_Terminal")
    with pytest.raises(EnvironmentProblem, match="SSH"):
        backend.check_environment()
    cocoa.session_answer = (True, True)
    backend.check_environment()
    native.answer = Permissions(accessibility=True, input_monitoring=2, screen_recording=False)
    with pytest.raises(EnvironmentProblem) as info:
        backend.check_environment()
    assert "Input Monitoring (key events); Screen Recording" in str(info.value)
    assert "add Terminal" in str(info.value)
    backend.close()


def test_darwin_backend_clipboard_idle_and_lock_over_stubs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cocoa = StubCocoa()
    backend = DarwinBackend(cocoa, StubNative())  # type: ignore[arg-type]
    assert backend.read_clipboard() is None
    cocoa.pasteboard = "one-time code 424242"
    assert backend.read_clipboard() == "one-time code 424242"
    assert backend.read_clipboard("primary") is None  # macOS has no primary selection
    cocoa.pasteboard = RuntimeError("one-time code 424242")
    assert backend.read_clipboard() is None
    cocoa.pasteboard, cocoa.hanging = "late", True
    start = time.monotonic()
    assert backend.read_clipboard() is None  # a promised-data provider that hangs
    assert CLIPBOARD_TIMEOUT_S * 0.9 <= time.monotonic() - start < CLIPBOARD_TIMEOUT_S + 0.3
    cocoa.hanging = False
    cocoa.release.set()
    assert wait_for(lambda: backend.read_clipboard() == "late")
    assert "424242" not in caplog.text

    assert backend.idle_seconds() == 2.5
    cocoa.idle = RuntimeError("no Quartz")
    assert backend.idle_seconds() is None
    assert backend.screen_locked() is False
    cocoa.locked = True
    assert backend.screen_locked() is True
    cocoa.locked = RuntimeError("no window server")
    assert backend.screen_locked() is None


def bare_cocoa(quartz: Any = None, appkit: Any = None) -> Any:
    cocoa: Any = object.__new__(Cocoa)  # pyobjc is not installed here: give it stand-ins
    cocoa.objc = SimpleNamespace(autorelease_pool=contextlib.nullcontext)
    cocoa.quartz, cocoa.appkit = quartz, appkit
    return cocoa


def test_darwin_cocoa_glue_asks_the_documented_apis() -> None:
    asked: list[Any] = []

    class Pasteboard:
        def stringForType_(self, kind: str) -> str | None:
            asked.append(kind)
            return "pasted"

    appkit = SimpleNamespace(
        NSPasteboard=SimpleNamespace(generalPasteboard=Pasteboard),
        NSPasteboardTypeString="public.utf8-plain-text",
    )
    session: dict[str, Any] | None = {"kCGSessionOnConsoleKey": True}
    asleep = [False]

    def seconds_since(state: int, kind: int) -> float:
        asked.append((state, kind))
        return 61.0

    quartz = SimpleNamespace(
        kCGEventSourceStateHIDSystemState=1,
        kCGAnyInputEventType=0xFFFFFFFF,
        CGEventSourceSecondsSinceLastEventType=seconds_since,
        CGSessionCopyCurrentDictionary=lambda: session,
        CGMainDisplayID=lambda: 69733248,
        CGDisplayIsAsleep=lambda display: asleep[0],
    )
    cocoa = bare_cocoa(quartz, appkit)
    assert cocoa.pasteboard_text() == "pasted"
    assert cocoa.idle_seconds() == 61.0
    assert asked == ["public.utf8-plain-text", (1, 0xFFFFFFFF)]
    assert cocoa.screen_locked() is False
    session = {darwin.SCREEN_IS_LOCKED: True}
    assert cocoa.screen_locked() is True
    session = None
    assert cocoa.screen_locked() is None
    asleep[0] = True
    assert cocoa.screen_locked() is True

    def broken(display: int) -> bool:
        raise RuntimeError("no CGDisplayIsAsleep")

    quartz.CGDisplayIsAsleep = broken
    session = {}
    assert cocoa.screen_locked() is False  # the session dictionary still answers


def test_darwin_native_calls_degrade_to_cannot_tell_without_the_frameworks() -> None:
    if sys.platform == "darwin":
        pytest.skip("the frameworks exist here")
    native = Native()
    assert native.permissions() == Permissions(None, None, None)
    assert native.secure_input() is None


def test_doctor_on_macos_names_the_session_the_permissions_and_the_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent import doctor

    cocoa, native = StubCocoa(), StubNative()
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setenv("TERM_PROGRAM", "iTerm.app")
    monkeypatch.setattr(
        "agent.backends.select_backend",
        lambda *_a: DarwinBackend(cocoa, native),  # type: ignore[arg-type]  # stand-ins
    )
    cocoa.session_answer = (True, True)
    checks = {c.name: c for c in doctor.check_desktop()}
    assert [checks[n].ok for n in ("display", "permissions", "tray")] == [True, True, True]
    native.answer = Permissions(accessibility=False, input_monitoring=0, screen_recording=False)
    checks = {c.name: c for c in doctor.check_desktop()}
    assert checks["permissions"].ok is False
    assert (
        "Accessibility" in checks["permissions"].detail and "Screen Recording" in checks["permissions"].detail
    )
    assert "add iTerm" in checks["permissions"].fix
    assert doctor.exit_code(list(checks.values())) == 2  # an environment problem: scripts can tell
    cocoa.session_answer = (False, None)
    assert "SSH" in {c.name: c for c in doctor.check_desktop()}["display"].detail


def test_doctor_on_windows_names_the_session_and_the_taskbar(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import doctor

    api = StubWinApi(None)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(
        "agent.backends.select_backend",
        lambda *_a: Win32Backend(api),  # type: ignore[arg-type]  # a stand-in
    )
    checks = {c.name: c for c in doctor.check_desktop()}
    assert checks["display"].ok is True and checks["tray"].ok is True
    api.user32.taskbar = False
    api.session = 0
    checks = {c.name: c for c in doctor.check_desktop()}
    assert checks["display"].ok is False and "session 0" in checks["display"].detail and checks["display"].fix
    assert checks["tray"].ok is None  # cannot tell: another shell may host the icon
