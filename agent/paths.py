"""Where optin keeps its files.

Everything lives under one root when ``OPTIN_HOME`` is set (tests, the demo,
portable installs); otherwise platformdirs gives the OS conventions.  Every
directory is created 0700 and checked: a directory that another user owns or
can write to is refused, because the store's promises depend on it.  The files
optin trusts are checked the same way (:func:`check_private_file`,
:func:`check_private_files`): a file another user owns or that group or others
can write to is refused, a secret file that they can read too, each with the
exact ``chmod`` that fixes it.

An ``OPTIN_HOME`` that cannot hold optin's files (a file, ``/dev/null``, a
directory inside ``/proc``, ``/sys`` or ``/dev``) is refused by :func:`dirs`
itself; a directory that cannot be written (read-only, or not ours) is refused
where optin first needs to write there (:func:`ensure_private_dir`,
:func:`write_private_file`): an :class:`EnvironmentProblem` (exit 2) that names
the path and the fix, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.backends import platform_calls
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


#: System pseudo-filesystems that cannot hold optin's files (``OPTIN_HOME`` inside them is refused).
_PSEUDO_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))


class PathProblem(EnvironmentProblem, OSError):
    """A file or directory optin needs cannot be used; the message names it and says the fix.

    Also an :class:`OSError` (with the original ``errno`` and ``strerror``), so code
    that handles file-system failures keeps handling it; the command line shows the
    message and exits 2.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


def dirs() -> Dirs:
    """Return the agent's directories (not created).

    :raises EnvironmentProblem: ``OPTIN_HOME`` is not a directory optin can use.
    """
    home = os.environ.get("OPTIN_HOME")
    if home:
        root = _home_root(home)
        return Dirs(config=root / "config", data=root / "data", runtime=root / "run")
    import platformdirs

    data = Path(platformdirs.user_data_dir(APP, appauthor=False))
    return Dirs(
        config=Path(platformdirs.user_config_dir(APP, appauthor=False)),
        data=data,
        runtime=platform_calls.runtime_dir(APP, data),
    )


def _home_root(home: str) -> Path:
    """``OPTIN_HOME`` resolved, or an :class:`EnvironmentProblem` saying why it cannot be used."""
    fix = "Fix: set OPTIN_HOME to a directory of your own (it is created if missing), or unset it"
    try:
        root = Path(home).expanduser().resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, an unreadable parent
        msg = f"OPTIN_HOME={home} cannot be resolved ({type(exc).__name__}). {fix}"
        raise EnvironmentProblem(msg) from None
    for pseudo in _PSEUDO_ROOTS:
        if root == pseudo or pseudo in root.parents:
            msg = f"OPTIN_HOME={home} is inside {pseudo}, a system pseudo-filesystem. {fix}"
            raise EnvironmentProblem(msg)
    probe = root
    while True:  # the path itself, or the nearest part of it that exists, must be a directory
        try:
            st = probe.stat()
        except (FileNotFoundError, NotADirectoryError):
            if probe.parent == probe:
                break
            probe = probe.parent
            continue
        except OSError as exc:
            msg = (
                f"OPTIN_HOME={home}: {probe} cannot be examined ({exc.strerror or type(exc).__name__}). {fix}"
            )
            raise EnvironmentProblem(msg) from None
        if not stat.S_ISDIR(st.st_mode):
            what = "the path" if probe == root else f"{probe}, a part of the path,"
            msg = f"OPTIN_HOME={home}: {what} is {_kind(st.st_mode)}, not a directory. {fix}"
            raise EnvironmentProblem(msg)
        break
    return root


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _path_problem(path: Path, action: str, exc: OSError) -> PathProblem:
    """A :class:`PathProblem` for a failed ``action`` on ``path`` (carrying the errno)."""
    why = exc.strerror or type(exc).__name__
    if isinstance(exc, (NotADirectoryError, FileExistsError)):
        fix = (
            "a part of the path is a file, not a directory. Fix: point OPTIN_HOME at a directory of your own"
        )
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = (
            "optin needs to write there. Fix: make it writable for your user, or set OPTIN_HOME to a "
            "directory you can write to"
        )
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "Fix: free disk space, or set OPTIN_HOME to a directory on another disk"
    else:
        fix = "Fix: check the path, or set OPTIN_HOME to a directory of your own"
    problem = PathProblem(f"cannot {action} {path} ({why}); {fix}")
    problem.errno, problem.strerror = exc.errno, exc.strerror
    return problem


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) with mode 0700 and check that it is ours alone.

    (A directory that exists but cannot be written is reported by the first write
    into it: :func:`write_private_file`, or the store's own message.)

    :raises EnvironmentProblem: the directory cannot be created, is owned by
        another user, or is open to group or others (the message says the fix).
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise _path_problem(path, "create the directory", exc) from None
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """Refuse a directory that someone else owns or that group or others can read or write."""
    try:
        st = path.stat()
    except OSError as exc:
        raise _path_problem(path, "examine", exc) from None
    if not stat.S_ISDIR(st.st_mode):
        msg = f"{path} is {_kind(st.st_mode)}, not a directory. Fix: move it away (optin needs a folder)"
        raise EnvironmentProblem(msg)
    uid = platform_calls.user_id()
    if uid is not None and st.st_uid != uid:
        msg = (
            f"{path} is owned by uid {st.st_uid}, not by you (uid {uid}); "
            "optin keeps its data only in directories you own. Fix: use your own OPTIN_HOME."
        )
        raise EnvironmentProblem(msg)
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_IRGRP | stat.S_IROTH):
        msg = f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; optin needs it private. Fix: chmod 700 {path}"
        raise EnvironmentProblem(msg)


def check_private_file(path: Path, *, secret: bool = False) -> None:
    """Refuse a file optin trusts that someone else owns or that group or others can write
    to (for a ``secret`` file: can read, too).

    :raises EnvironmentProblem: with the exact ``chmod`` (or the owner) and the fix.
    """
    try:
        st = path.stat()
    except OSError as exc:
        raise _path_problem(path, "examine", exc) from None
    uid = platform_calls.user_id()
    if uid is not None and st.st_uid != uid:
        msg = (
            f"{path} is owned by uid {st.st_uid}, not by you (uid {uid}); optin trusts only "
            f"files you own. Fix: remove it, or make it yours: chown {uid} {path}"
        )
        raise EnvironmentProblem(msg)
    if os.name != "posix":
        return
    mode = stat.S_IMODE(st.st_mode)
    open_bits = 0o077 if secret else 0o022
    if mode & open_bits:
        who = "read or written" if secret else "written"
        msg = (
            f"{path} has mode {mode:04o}: group or others can have it {who}, and optin "
            f"{'keeps secrets' if secret else 'relies on what it says'} there. Fix: chmod 600 {path}"
        )
        raise EnvironmentProblem(msg)


def check_private_files(directory: Path, *, secret: bool = False) -> None:
    """Check ``directory`` like :func:`check_private_dir` and every file in it like
    :func:`check_private_file` (nothing to check when the directory does not exist)."""
    if not directory.exists():
        return
    check_private_dir(directory)
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise _path_problem(directory, "list", exc) from None
    for entry in entries:
        if entry.is_file():
            check_private_file(entry, secret=secret)


def write_private_file(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` atomically with ``data``, mode 0600 from the first byte.

    The data goes to a uniquely named temporary file beside ``path`` (created
    ``O_EXCL`` with mode 0600, so never readable by others even briefly), which is
    renamed over ``path``.  With ``durable`` the file and the rename are fsynced.
    On any failure the temporary file is removed.  Callers pass only ciphertext
    or metadata: this is not a way to put captured content on disk.
    """
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    except OSError as exc:
        raise _path_problem(path, "write", exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        tmp.replace(path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, PathProblem):
            raise _path_problem(path, "write", exc) from None
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
    """Hold the one-agent-per-user lock (an exclusive lock on a file in the runtime dir:
    :func:`agent.backends.platform_calls.try_lock`) while inside.

    :raises UsageError: another optin agent of this user holds it.
    """
    with runtime_lock(
        d, "agent.lock", "optin is already running for this user (see `optin status`); one agent at a time"
    ):
        yield


@contextlib.contextmanager
def runtime_lock(d: Dirs, name: str, busy: str) -> Iterator[None]:
    """Hold the exclusive lock of ``<runtime>/<name>`` while inside (released when the process ends).

    :raises UsageError: ``busy``: another process of this user holds it.
    """
    ensure_private_dir(d.runtime)
    fd = os.open(d.runtime / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if not platform_calls.try_lock(fd):
            raise UsageError(busy)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def optin_command(*args: str) -> list[str]:
    """The command line that runs ``optin ARGS`` again: this Python with ``-m agent``, or the
    packaged app's own executable (PyInstaller sets ``sys.frozen``)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "agent", *args]


def display_path(path: Path, home: Path | None = None) -> str:
    """``path`` as a person reads it: ``~/...`` under the home directory, else in full."""
    try:
        home = Path.home() if home is None else home
        rel = path.relative_to(home)
    except (ValueError, RuntimeError, KeyError):  # not under home, or no home at all
        return str(path)
    return "~" if str(rel) == "." else f"~/{rel}"
