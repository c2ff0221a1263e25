"""A private X11 desktop for the demo and the tests: Xvfb, openbox, dunst, trayer.

Never touches the user's display: Xvfb picks a free display number itself
(``-displayfd``), and a private D-Bus session daemon serves the tray's GTK
backend and the notification daemon.  Everything started here is stopped by
PID in :meth:`VirtualDisplay.stop`, in reverse order, even after errors.
Pitfalls handled (see platform-lab): the ``-displayfd`` pipe stays open while
Xvfb runs; dunst is started with DISPLAY set rather than bus-activated;
``NO_AT_BRIDGE=1`` keeps at-spi daemons away; RECORD is enabled explicitly.
Each desktop has its own ``XDG_RUNTIME_DIR`` (a private temporary directory,
removed at :meth:`VirtualDisplay.stop`): without it the accessibility bus that
the session bus starts on demand (``at-spi-bus-launcher``) listens on one fixed
path under the home directory, ``~/.cache/at-spi/bus``, which a second desktop
of the same user takes over (measured, at-spi2-core 2.46).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from agent.backends.platform_calls import end_process_group, signals_held
from agent.backends.process import adopt_orphans
from agent.errors import EnvironmentProblem

#: System commands the private desktop needs, with the Debian package that has each.
REQUIRED_TOOLS = {
    "Xvfb": "xvfb",
    "openbox": "openbox",
    "dunst": "dunst",
    "trayer": "trayer",
    "dbus-daemon": "dbus",
    "xdotool": "xdotool",
    "xterm": "xterm",
    "xset": "x11-xserver-utils",
}

#: How to install them: `make system-deps` installs everything the demo and the tests need.
APT_HINT = (
    "run `make system-deps` in the optin checkout, or: sudo apt-get update && sudo apt-get install -y "
    "--no-install-recommends " + " ".join(sorted(set(REQUIRED_TOOLS.values()))) + " xfonts-base"
)


def missing_tools(tools: dict[str, str] | None = None) -> list[str]:
    """Commands of ``tools`` (default: :data:`REQUIRED_TOOLS`) not on PATH."""
    return [name for name in (tools or REQUIRED_TOOLS) if shutil.which(name) is None]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class VirtualDisplay:
    """Start with :meth:`start` (or ``with VirtualDisplay() as vd``); read :attr:`env`."""

    def __init__(
        self,
        width: int = 1280,
        height: int = 800,
        *,
        tray: bool = True,
        desktop: bool = True,
        record: bool = True,
        adopt_daemons: bool = False,
    ) -> None:
        """
        :param adopt_daemons: make this process the reaper of what the desktop's session bus
            starts (Linux ``PR_SET_CHILD_SUBREAPER``), so :meth:`stop` reaps them and no zombie is
            left to an init that may not reap; for a process that owns the desktop alone (the
            demo), not for a test runner whose other children must go to init.
        :param tray: start trayer (a system tray); needs ``desktop``.
        :param desktop: start openbox and dunst; without it only Xvfb (and D-Bus) run.
        :param record: enable the RECORD extension (off: a display where input capture cannot work;
            Xvfb then also lacks XTEST, so xdotool cannot drive it).
        """
        self.width = width
        self.height = height
        self.tray = tray and desktop
        self.desktop = desktop
        self.record = record
        self.display = ""
        self._tray_proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._displayfd_read: int | None = None
        self._x: Any = None
        self._runtime_dir: str | None = None
        self._adopt_daemons = adopt_daemons

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> VirtualDisplay:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the whole stack; on any failure stop what started and raise."""
        missing = missing_tools()
        if missing:
            msg = f"the private display needs {', '.join(missing)}, not installed. Fix: {APT_HINT}"
            raise EnvironmentProblem(msg)
        try:
            self._start_dbus()
            self._start_xvfb()
            self._start_rest()
        except BaseException:
            self.stop()
            raise

    def _start_dbus(self) -> None:
        # a private runtime directory (mode 0700) for everything the session bus starts, the
        # accessibility bus included, and for the programs on this desktop; the daemons the bus
        # starts outlive it: they are stopped with the desktop (and reaped here when adopted)
        if self._adopt_daemons:
            adopt_orphans()
        self._runtime_dir = tempfile.mkdtemp(prefix="optin-xdg-runtime-")
        env = {**os.environ, "XDG_RUNTIME_DIR": self._runtime_dir}
        self.env["XDG_RUNTIME_DIR"] = self._runtime_dir
        proc = self._spawn(
            ["dbus-daemon", "--session", "--nofork", "--print-address=1"], env=env, stdout=True
        )
        address = _read_line(proc, timeout=5.0)
        if not address:
            msg = "the private D-Bus session daemon did not start (dbus-daemon printed no address)"
            raise EnvironmentProblem(msg)
        self.env["DBUS_SESSION_BUS_ADDRESS"] = address

    def _start_xvfb(self) -> None:
        r, w = os.pipe()
        self._displayfd_read = r
        screen = f"{self.width}x{self.height}x24"
        cmd = [
            "Xvfb",
            "-displayfd",
            str(w),
            "-screen",
            "0",
            screen,
            "-nolisten",
            "tcp",
            "+extension" if self.record else "-extension",
            "RECORD",
        ]
        with signals_held():  # a SIGTERM now must find the child tracked, or it outlives us
            proc = subprocess.Popen(
                cmd,
                pass_fds=(w,),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            self._track(proc)
        os.close(w)
        ready, _, _ = select.select([r], [], [], 10.0)
        number = os.read(r, 16).decode().strip() if ready else ""
        # keep r open: Xvfb dies ("Cannot write display number") if it is closed early
        if not number:
            msg = f"Xvfb did not start within 10 s (exit code {proc.poll()})"
            raise EnvironmentProblem(msg)
        self.display = f":{number}"
        base = {k: v for k, v in os.environ.items() if k not in ("WAYLAND_DISPLAY", "XAUTHORITY")}
        base.update(self.env)
        base.update(DISPLAY=self.display, NO_AT_BRIDGE="1", XDG_SESSION_TYPE="x11")
        self.env = base

    def _start_rest(self) -> None:
        from Xlib import display as xdisplay

        self._x = xdisplay.Display(self.display)
        if not self.desktop:
            return
        self._spawn(["openbox", "--sm-disable"], env=self.env)
        if not wait_for(self._has_wm, 10.0):
            msg = "openbox did not start on the private display"
            raise EnvironmentProblem(msg)
        self._spawn(["dunst"], env=self.env)
        if self.tray:
            self.start_tray()

    def start_tray(self) -> None:
        """Start trayer and wait until it owns the system tray selection."""
        self._tray_proc = self._spawn(
            ["trayer", "--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32"],
            env=self.env,
        )
        if not wait_for(self.tray_host_present, 10.0):
            msg = "trayer did not provide a system tray on the private display"
            raise EnvironmentProblem(msg)

    def stop_tray(self) -> None:
        """Stop trayer (the tray icons lose their host) and wait until the selection is free."""
        if self._tray_proc is not None:
            stop_process(self._tray_proc)
            self._tray_proc = None
        wait_for(lambda: not self.tray_host_present(), 5.0)

    def stop(self) -> None:
        """Stop every process started here, newest first; idempotent."""
        if self._x is not None:
            with contextlib.suppress(Exception):  # the server may already be gone
                self._x.close()
            self._x = None
        # the daemons the session bus started, found while they live (a zombie has no environment)
        daemons = _session_pids(self._runtime_dir) if self._runtime_dir and Path("/proc").is_dir() else []
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs = []
        _stop_daemons(daemons)
        if self._displayfd_read is not None:
            os.close(self._displayfd_read)
            self._displayfd_read = None
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None

    # -- helpers ---------------------------------------------------------------------------------

    def spawn(
        self, argv: list[str], *, env: dict[str, str] | None = None, stdout: bool = False, stderr: Any = None
    ) -> subprocess.Popen[bytes]:
        """Start a program on the private display; it is stopped with the display.

        :param env: the environment (default: :attr:`env`); it should include :attr:`env`.
        :param stdout: give the process a readable stdout pipe.
        :param stderr: a file to receive its stderr (default: discarded).
        """
        return self._spawn(argv, env=self.env if env is None else env, stdout=stdout, stderr=stderr)

    def search(self, title: str) -> list[str]:
        """Ids of the windows whose title is exactly ``title`` (none yet: empty).

        xdotool matches WM_NAME, where Tk stores a title's UTF-8 bytes as Latin-1 text, so each
        non-ASCII character (the "—" of optin's dialogs) matches any few characters there.
        """
        pattern = "".join(".+" if ord(c) > 127 else re.escape(c) for c in title)
        out = subprocess.run(
            ["xdotool", "search", "--name", f"^{pattern}$"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.split()

    def _spawn(
        self, argv: list[str], env: Any, *, stdout: bool = False, stderr: Any = None
    ) -> subprocess.Popen[bytes]:
        with signals_held():  # a SIGTERM now must find the child tracked, or it outlives us
            proc = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL if stderr is None else stderr,
                start_new_session=True,
            )
            self._track(proc)
        return proc

    def _track(self, proc: subprocess.Popen[bytes]) -> None:
        """Remember ``proc``; with OPTIN_PIDFILE set, also append its PID there.

        CI kills every PID in that file on exit, so even a test run killed
        mid-way leaves no display stack behind.
        """
        self._procs.append(proc)
        pidfile = os.environ.get("OPTIN_PIDFILE")
        if pidfile:
            with open(pidfile, "a", encoding="ascii") as f:  # noqa: PTH123 - one line, appended
                f.write(f"{proc.pid}\n")

    def _has_wm(self) -> bool:
        root = self._x.screen().root
        prop = root.get_full_property(self._x.intern_atom("_NET_SUPPORTING_WM_CHECK"), 0)
        return prop is not None and bool(prop.value)

    def tray_host_present(self) -> bool:
        atom = self._x.intern_atom(f"_NET_SYSTEM_TRAY_S{self._x.get_default_screen()}")
        return bool(self._x.get_selection_owner(atom))

    def xdotool(self, *args: str, timeout: float = 10.0) -> str:
        """Run xdotool on the private display; return its stdout."""
        out = subprocess.run(
            ["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            msg = f"xdotool {args[0]} failed with exit code {out.returncode}"
            raise EnvironmentProblem(msg)
        return out.stdout


def _read_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    if proc.stdout is None:
        return ""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().decode().strip() if ready else ""


def _session_pids(runtime_dir: str) -> list[int]:
    """This user's processes whose environment names ``runtime_dir`` as ``XDG_RUNTIME_DIR``: the
    daemons this desktop's session bus started (the accessibility bus launcher, its bus, the
    registry), which outlive the bus that started them."""
    if sys.platform == "win32":  # no /proc, no session bus of this kind
        return []
    marker = f"XDG_RUNTIME_DIR={runtime_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            with (entry / "environ").open("rb") as fh:
                environ = fh.read(1 << 20)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _stop_daemons(pids: list[int], timeout: float = 3.0) -> None:
    """Stop (TERM, then KILL) and reap what :func:`_session_pids` found; quiet."""
    if sys.platform == "win32":
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if not _reaped(pid)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return


def _reaped(pid: int) -> bool:
    """Whether ``pid`` is gone: reaped here (adopted: this process is the desktop's subreaper), or
    no longer in /proc.  A zombie whose parent still lives is not gone yet: once that parent ends
    it comes here to be reaped."""
    if sys.platform == "win32":
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not (yet) our child
        return not Path(f"/proc/{pid}").exists()
    return done == pid


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate ``proc`` and its process group; kill if it does not exit in time."""
    if proc.poll() is None:
        try:
            end_process_group(proc.pid)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                end_process_group(proc.pid, kill=True)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
