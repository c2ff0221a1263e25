"""The X11 backend against a real X server (Xvfb + openbox + trayer, from the ``xdisplay`` fixture)."""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.backends.virtual_display import VirtualDisplay, stop_process
from agent.backends.xorg import XorgBackend
from agent.events import Event, WindowFocus
from tests.display.conftest import need_tools
from tests.tools import wait_until

pytestmark = pytest.mark.display

REPO = Path(__file__).resolve().parents[2]


def xdotool(*args: str) -> str:
    done = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=10, check=True)
    return done.stdout


@contextmanager
def xterm(title: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """An xterm titled ``title`` on the test display: ``(process, window id)``; always stopped."""
    proc = subprocess.Popen(
        ["xterm", "-T", title, "-geometry", "60x10+40+40", "-e", "sleep", "60"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def find() -> str:
            argv = ["xdotool", "search", "--name", f"^{title}$"]
            out = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False).stdout.split()
            return out[0] if out else ""

        wid = wait_until(find, 5.0)
        assert wid, f"xterm {title!r} did not map within 5 s"
        yield proc, wid
    finally:
        stop_process(proc)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def activate(wid: str, timeout: float = 5.0) -> None:
    """Activate ``wid`` until the window manager keeps the focus there.

    openbox focuses a newly mapped window a moment after it maps, which can undo an activation
    made just before (a flake seen in CI): activate again until the active window stays ``wid``.
    """

    def kept() -> bool:
        xdotool("windowactivate", "--sync", wid)
        time.sleep(0.05)
        return xdotool("getactivewindow").strip() == wid

    assert wait_until(kept, timeout, 0.05), f"window {wid} never kept the focus"


def test_check_environment_passes_with_record(backend: XorgBackend) -> None:
    backend.check_environment()


@contextmanager
def xvfb_without_record() -> Iterator[str]:
    """A second, bare Xvfb started with ``-extension RECORD``; yields its display name."""
    need_tools()
    with VirtualDisplay(320, 240, desktop=False, record=False) as vd:
        yield vd.display


def test_check_environment_without_record_fails_fast(xdisplay: Any) -> None:
    with xvfb_without_record() as name:
        code = (
            "import sys\n"
            "from agent.backends import select_backend\n"
            "from agent.errors import EnvironmentProblem\n"
            "try:\n"
            "    select_backend('xorg').check_environment()\n"
            "except EnvironmentProblem as exc:\n"
            "    print(exc)\n"
            "    sys.exit(exc.exit_code)\n"
        )
        env = dict(os.environ, DISPLAY=name, PYTHONPATH=str(REPO))
        argv = [sys.executable, "-c", code]
        # the timeout is the "never hangs" check: pynput's own listener would wait forever
        done = subprocess.run(
            argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=20, check=False
        )
    assert done.returncode == 2, done.stderr
    assert f"DISPLAY={name} has no RECORD extension" in done.stdout
    assert "+extension RECORD" in done.stdout


def test_input_hooks_without_record_fail_instead_of_hanging(xdisplay: Any) -> None:
    """Even past the environment check, a listener that dies (no RECORD) is an error, not a hang."""
    with xvfb_without_record() as name:
        code = (
            "import sys\n"
            "from agent.backends import select_backend\n"
            "from agent.errors import EnvironmentProblem\n"
            "hooks = select_backend('xorg').input_hooks(lambda e: None)\n"
            "try:\n"
            "    hooks.start()\n"
            "except EnvironmentProblem as exc:\n"
            "    hooks.stop()\n"
            "    print(exc)\n"
            "    sys.exit(exc.exit_code)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=dict(os.environ, DISPLAY=name, PYTHONPATH=str(REPO)),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,  # pynput's own wait()/stop() would block here forever
            check=False,
        )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "listener did not start" in done.stdout


def test_optin_run_without_record_says_so_in_one_line(xdisplay: Any, consented: Any, optin_home: Any) -> None:
    with xvfb_without_record() as name:
        done = subprocess.run(
            [sys.executable, "-m", "agent", "run"],
            env=dict(os.environ, DISPLAY=name),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "has no RECORD extension" in line and "Fix" in line
    assert not (optin_home / "data" / "sessions").exists()


def test_active_window_reads_xterm_title_class_pid_and_geometry(backend: XorgBackend) -> None:
    title = unique("optin-active")
    with xterm(title) as (proc, wid):
        activate(wid)
        focus = wait_until(lambda: (w := backend.active_window()) is not None and w.title == title and w, 5.0)
        assert isinstance(focus, WindowFocus), "active_window never reported the xterm"
        assert focus.app_class == "XTerm"
        assert focus.pid == proc.pid
        assert focus.width is not None and focus.width > 0
        assert focus.height is not None and focus.height > 0
        assert focus.x is not None and focus.x >= 0
        assert focus.y is not None and focus.y >= 0


def test_non_ascii_title_is_decoded(backend: XorgBackend) -> None:
    with xterm(unique("optin-utf8")) as (_proc, wid):
        activate(wid)
        xdotool("set_window", "--name", "Grüße €", wid)
        focus = wait_until(
            lambda: (w := backend.active_window()) is not None and w.title == "Grüße €" and w, 5.0
        )
        assert isinstance(focus, WindowFocus), "the UTF-8 title was not decoded"


class Collector:
    """A sink that records events and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def titles(self) -> list[str | None]:
        with self._cond:
            return [e.title for e in self.events if isinstance(e, WindowFocus)]

    def wait_for_title(self, title: str, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    bool(self.events)
                    and isinstance(self.events[-1], WindowFocus)
                    and self.events[-1].title == title
                ),
                timeout,
            )


def test_focus_watcher_follows_activation_and_title_changes(backend: XorgBackend) -> None:
    first, second, renamed = unique("optin-first"), unique("optin-second"), unique("optin-renamed")
    with xterm(first) as (_p1, wid1), xterm(second) as (_p2, wid2):
        activate(wid1)
        assert wait_until(lambda: (w := backend.active_window()) is not None and w.title == first, 5.0)
        sink = Collector()
        watcher = backend.focus_watcher(sink)
        watcher.start()
        try:
            assert watcher.is_alive()
            threads = [t for t in threading.enumerate() if t.name == "optin-focus"]
            assert threads and all(t.daemon for t in threads)
            assert sink.titles()[:1] == [first], "no initial WindowFocus on start"

            xdotool("windowactivate", "--sync", wid2)
            assert sink.wait_for_title(second, 1.0), "no focus event for the second xterm"
            xdotool("windowactivate", "--sync", wid1)
            assert sink.wait_for_title(first, 1.0), "no focus event on switching back"
            xdotool("set_window", "--name", renamed, wid1)
            assert sink.wait_for_title(renamed, 1.0), "no event when the active window's title changed"
            time.sleep(0.2)
        finally:
            watcher.stop()
    assert not watcher.is_alive()  # stopped when stop() returns (latency: make bench)
    count = len(sink.events)
    focus_events = [e for e in sink.events if isinstance(e, WindowFocus)]
    assert len(focus_events) == count
    values = [dataclasses.replace(e, t_ns=0) for e in focus_events]
    for before, after in itertools.pairwise(values):
        assert before != after, "identical consecutive WindowFocus events"
    time.sleep(0.1)
    assert len(sink.events) == count, "an event arrived after stop()"


def test_focus_watcher_can_be_restarted(backend: XorgBackend) -> None:
    with xterm(unique("optin-restart")) as (_proc, wid):
        activate(wid)
        sink = Collector()
        watcher = backend.focus_watcher(sink)
        for _ in range(2):
            watcher.start()
            watcher.stop()
        assert not watcher.is_alive()
        assert len(sink.events) == 2  # one initial event per start


def test_tray_host_available_with_trayer(backend: XorgBackend) -> None:
    assert wait_until(lambda: backend.tray_host_available() is True, 5.0)


def test_vanished_window_gives_none_or_a_window_never_an_error(backend: XorgBackend) -> None:
    with xterm(unique("optin-vanish")) as (proc, wid):
        xdotool("windowactivate", "--sync", wid)
        proc.kill()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            result = backend.active_window()
            assert result is None or isinstance(result, WindowFocus)


# --- optin's own windows ------------------------------------------------------------------------


def test_own_ui_covers_this_process_windows_and_not_others(backend: XorgBackend) -> None:
    import Xlib.display

    own = backend.own_ui({os.getpid()})
    mine = Xlib.display.Display()
    try:
        root = mine.screen().root
        popup = root.create_window(
            300, 200, 80, 40, 0, mine.screen().root_depth, override_redirect=True, background_pixel=0
        )
        with xterm(unique("not-optin")) as (_proc, wid):
            # the other process's window has the focus first (openbox focuses a new window a
            # moment after it maps; until then an earlier test's window may still be active)
            activate(wid)
            own.start()
            assert wait_until(lambda: not own.covers(310, 210) and not own.has_focus, 5.0)
            popup.map()
            mine.sync()
            own.rescan()
            assert wait_until(lambda: own.covers(310, 210), 5.0), "own popup never seen"
            assert own.covers(300, 200) and own.covers(379, 239)
            assert not own.covers(299, 210) and not own.covers(380, 210) and not own.covers(310, 240)
            assert not own.covers(60, 60)  # the xterm belongs to another process
            assert own.has_focus  # a mapped own popup (a menu) has the keyboard
            popup.unmap()
            mine.sync()
            assert wait_until(lambda: not own.covers(310, 210) and not own.has_focus, 5.0)
            popup.destroy()
            mine.sync()
    finally:
        own.stop()
        mine.close()
    assert not own.is_alive()


def settled_origin(display: Any, window: Any, timeout: float = 10.0) -> tuple[int, int]:
    """``window``'s root position once it is viewable and has stayed put for half a second."""
    from Xlib import X

    root = display.screen().root
    seen: list[tuple[int, int]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if window.get_attributes().map_state == X.IsViewable:
            origin = root.translate_coords(window, 0, 0)
            seen.append((int(origin.x), int(origin.y)))
            if len(seen) >= 5 and len(set(seen[-5:])) == 1:
                return seen[-1]
        time.sleep(0.1)
    raise AssertionError(f"window never settled: positions {seen[-5:]}")


def test_own_ui_follows_an_own_window_moved_inside_another_program_without_walking_the_tree(
    backend: XorgBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tray host moves the icon inside its own window, and the root hears nothing of it: the
    watcher measures the own windows it knows again every RESCAN_INTERVAL (two round trips each),
    and walks the whole window tree only on a change under the root or every FULL_RESCAN_INTERVAL."""
    import Xlib.display

    from agent.backends.xorg import own_ui

    monkeypatch.setattr(own_ui, "RESCAN_INTERVAL", 0.1)
    own = backend.own_ui({os.getpid()})
    assert isinstance(own, own_ui.OwnUiWatcher)
    walks: list[int] = []
    real = own._own_windows

    def counting(display: Any) -> Any:
        walks.append(1)
        return real(display)

    monkeypatch.setattr(own, "_own_windows", counting)
    mine = Xlib.display.Display()
    try:
        with xterm(unique("host")) as (_proc, wid):  # stands for the tray host: another program's window
            host = mine.create_resource_object("window", int(wid))
            # xdotool finds the xterm by its name before the window manager has framed and placed it
            x, y = settled_origin(mine, host)
            icon = host.create_window(5, 5, 24, 24, 0, mine.screen().root_depth, background_pixel=0)
            icon.map()
            mine.sync()
            x, y = x + 5, y + 5
            own.start()
            assert wait_until(lambda: own.covers(x + 1, y + 1), 5.0), "own window inside the host not seen"
            time.sleep(0.3)  # several RESCAN_INTERVALs with nothing changed
            walked = len(walks)
            icon.configure(x=60, y=40)  # the host moves the icon: only the host's children hear of it
            mine.sync()
            assert wait_until(lambda: own.covers(x + 56, y + 36) and not own.covers(x + 1, y + 1), 5.0)
            assert len(walks) == walked, "a move inside the host walked the whole window tree"
            icon.destroy()  # gone: the next look finds it missing and walks the tree again
            mine.sync()
            assert wait_until(lambda: not own.covers(x + 56, y + 36), 5.0)
    finally:
        own.stop()
        mine.close()


def test_screen_saver_tells_locked_and_idle(backend: XorgBackend, xdisplay: Any) -> None:
    xdisplay.xdotool("mousemove", "--sync", "17", "19")  # input: idle starts again from 0
    idle = backend.idle_seconds()
    assert idle is not None and 0 <= idle < 5
    assert backend.screen_locked() is False
    env = dict(os.environ, DISPLAY=xdisplay.display)
    subprocess.run(["xset", "s", "activate"], env=env, check=True)
    try:
        assert wait_until(lambda: backend.screen_locked() is True, 5.0), "screen saver never reported on"
    finally:
        subprocess.run(["xset", "s", "reset"], env=env, check=True)
    assert wait_until(lambda: backend.screen_locked() is False, 5.0)
