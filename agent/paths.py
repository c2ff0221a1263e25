"""Where optin keeps its files.

Everything lives under one root when ``OPTIN_HOME`` is set (tests, the demo,
portable installs); otherwise platformdirs gives the OS conventions.  Every
directory is created 0700 and checked: a directory that another user owns or
can write to is refused, because the store's promises depend on it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.errors import EnvironmentProblem, UsageError

APP = "optin"


@dataclass(frozen=True)
class Dirs:
    """The agent's directories."""

    config: Path
    data: Path
    runtime: Path

    @property
    def sessions(self) -> Path:
        return self.data / "sessions"

    @property
    def keys(self) -> Path:
        return self.data / "keys"

    @property
    def exports(self) -> Path:
        return self.data / "exports"


def dirs() -> Dirs:
    """Return the agent's directories (not created)."""
    home = os.environ.get("OPTIN_HOME")
    if home:
        root = Path(home).expanduser().resolve()
        return Dirs(config=root / "config", data=root / "data", runtime=root / "run")
    import platformdirs

    data = Path(platformdirs.user_data_dir(APP, appauthor=False))
    if sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        # No login session runtime dir (cron, su, containers): keep runtime files private under data.
        runtime = data / "run"
    else:
        runtime = Path(platformdirs.user_runtime_dir(APP, appauthor=False))
    return Dirs(
        config=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        data=data,
        runtime=runtime,
    )


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and check that it is ours alone.

    :raises EnvironmentProblem: the directory is owned by another user or is
        writable by group or others.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """Refuse a directory that someone else owns or can write to."""
    st = path.stat()
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        msg = (
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            "optin keeps its data only in directories you own. Fix: use your own OPTIN_HOME."
        )
        raise EnvironmentProblem(msg)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRGRP | stat.S_IROTH):
        msg = f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; optin needs it private. Fix: chmod 700 {path}"
        raise EnvironmentProblem(msg)


def write_private_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from the first byte.

    The data goes to a uniquely named temporary file beside ``path`` (created
    ``O_EXCL`` with mode 0600, so never readable by others even briefly), which is
    renamed over ``path``.  With ``durable`` the file and the rename are fsynced.
    On any failure the temporary file is removed.  Callers pass only ciphertext
    or metadata: this is not a way to put captured content on disk.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where directories cannot be opened)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def agent_lock(d: Dirs) -> Iterator[None]:
    """Hold the one-agent-per-user lock (``flock`` on a file in the runtime dir) while inside.

    :raises UsageError: another optin agent of this user holds it.
    """
    ensure_private_dir(d.runtime)
    fd = os.open(d.runtime / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.name == "posix":  # Windows and macOS agents are not built yet
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                msg = "optin is already running for this user (see `optin status`); one agent at a time"
                raise UsageError(msg) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


def optin_command(*args: str) -> list[str]:
    """The command line that runs ``optin ARGS`` again: this Python with ``-m agent``, or the
    packaged app's own executable (PyInstaller sets ``sys.frozen``)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "agent", *args]
