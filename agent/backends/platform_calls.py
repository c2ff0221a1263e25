"""Calls whose form differs by OS, in one place, with a branch for each platform optin runs on.

Modules above :mod:`agent.backends` call these instead of ``fcntl``, ``msvcrt``,
``resource``, ``signal`` and ``socket`` specifics, so the rest of the code reads the
same on Linux, macOS and Windows.  Each function has one ``if sys.platform`` with a
branch per OS (after age's per-OS helpers); where macOS does what Linux does (POSIX),
its docstring says so.  The Linux branches are tested in
``tests/unit/test_platform_calls.py``; the Windows and macOS branches are written
against each OS's documented API, cannot run here, and are type-checked by
``make lint`` (``mypy --platform win32`` and ``--platform darwin``).

=====================  ==========================  ====================  ==========================
What                   Linux                       macOS                 Windows
=====================  ==========================  ====================  ==========================
exclusive lock         ``flock`` (advisory)        as Linux              ``msvcrt.locking`` (one
                                                                         byte, mandatory; files only)
overwrite in place     ``os.pwrite`` + ``fsync``   as Linux              seek, write, ``fsync``
peer of a Unix socket  ``SO_PEERCRED``             ``LOCAL_PEERCRED``,   none: no control socket
                                                   ``LOCAL_PEERPID``
owner of a file        ``getuid``/``geteuid``      as Linux              none (no uid owner)
runtime dir            ``$XDG_RUNTIME_DIR`` or     platformdirs          platformdirs
                       the data dir's ``run``
ending signals         TERM, HUP, INT              as Linux              TERM, INT (no SIGHUP)
end a process group    ``killpg``                  as Linux              the process alone
core files             ``RLIMIT_CORE`` 0           as Linux              none (see ``process.py``)
=====================  ==========================  ====================  ==========================
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import struct
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

# --- exclusive locks ------------------------------------------------------------------------------


def try_lock(fd: int) -> bool:
    """Take the exclusive lock of the file open as ``fd`` without waiting: True when taken,
    False when another open file holds it.  Held until :func:`release_lock` or until ``fd``
    is closed.

    * **Linux, macOS**: ``flock(LOCK_EX | LOCK_NB)``.  Advisory (only other lockers are
      stopped), owned by the open file description, so another ``open`` of the same file,
      in this process too, is refused; works on a directory.
    * **Windows**: ``msvcrt.locking(LK_NBLCK)`` of the file's first byte.  Mandatory (no
      other handle can read or write that byte; optin's lock files hold no data), owned by
      the handle, so another ``open`` is refused as on Linux; only files (a directory cannot
      be opened as a descriptor there: :data:`agent.store.safe_fs.WRITER_LOCK` is False).
      Closing ``fd`` releases it too, but ``LockFileEx``'s documentation allows the OS a
      moment for that: release first where another taker follows at once.

    :raises OSError: the lock could not be asked for (for instance ``fd`` is not lockable).
    """
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)  # the range starts at the file position
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EDEADLOCK):
                return False
            raise
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def release_lock(fd: int) -> None:
    """Release the lock :func:`try_lock` took on ``fd`` (closing ``fd`` releases it too).

    * **Linux, macOS**: ``flock(LOCK_UN)``.
    * **Windows**: ``msvcrt.locking(LK_UNLCK)`` of the first byte.
    """
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def probe_lock(fd: int) -> bool:
    """Whether another open file holds the lock of the file open as ``fd`` (a new open of it).

    Nobody holding it, it is taken and released at once; the holder's lock is never
    disturbed (both OSes tie the lock to the open file, not to the process).  Same on every
    OS: :func:`try_lock` and :func:`release_lock` carry the differences.
    """
    if not try_lock(fd):
        return True
    release_lock(fd)
    return False


# --- overwriting in place (crypto-shredding) ------------------------------------------------------


def overwrite_durably(fd: int, offset: int, data: bytes) -> None:
    """Write ``data`` over the bytes of the file open as ``fd`` from ``offset`` on, in place,
    then ``fsync``: only that range changes, the file's size only if it was shorter.

    * **Linux, macOS**: ``os.pwrite`` (the file position is left alone), then ``os.fsync``.
    * **Windows** (no ``pwrite``): ``lseek`` to ``offset``, ``os.write``, then ``os.fsync``
      (``_commit``: ``FlushFileBuffers``); ``fd`` must be open in binary mode (``O_BINARY``),
      or the C runtime would turn ``\\n`` into ``\\r\\n``.
    """
    if sys.platform == "win32":
        _seek_and_write(fd, offset, data)
    else:
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += _advanced(os.pwrite(fd, view[done:], offset + done))
    os.fsync(fd)


def _seek_and_write(fd: int, offset: int, data: bytes) -> None:
    """Windows' way, which works everywhere (tested on Linux too); it moves the file position."""
    view = memoryview(data)
    os.lseek(fd, offset, os.SEEK_SET)
    done = 0
    while done < len(view):
        done += _advanced(os.write(fd, view[done:]))


def _advanced(written: int) -> int:
    if written <= 0:  # a regular file never takes nothing; better an error than a loop
        raise OSError(errno.EIO, "the file took no bytes of an overwrite")
    return written


# --- the peer of a Unix socket --------------------------------------------------------------------

#: ``struct ucred`` (Linux ``SO_PEERCRED``): pid, uid, gid.
_UCRED = struct.Struct("3i")
#: ``struct xucred`` (macOS ``<sys/ucred.h>``): cr_version, cr_uid, cr_ngroups, cr_groups[NGROUPS=16].
_XUCRED = struct.Struct("IIh16I")
_XUCRED_VERSION = 0
#: ``<sys/un.h>`` on macOS: the level of ``LOCAL_*`` options, and the option that gives the peer's pid.
_SOL_LOCAL = 0
_LOCAL_PEERPID = 0x002
_PID = struct.Struct("i")

#: Longest path a Unix socket can be bound to, in bytes (``sockaddr_un.sun_path`` less its NUL).
if sys.platform == "win32":
    UNIX_PATH_MAX = 107  # afunix.h has 108 bytes; unused: Python has no AF_UNIX on Windows
elif sys.platform == "darwin":
    UNIX_PATH_MAX = 103  # 104 bytes
else:
    UNIX_PATH_MAX = 107  # 108 bytes on Linux


def peer_credentials_available() -> bool:
    """Whether this system has Unix sockets and tells who is at the other end of one
    (without it, the agent serves no control socket).

    * **Linux**: ``AF_UNIX`` and ``SO_PEERCRED``.
    * **macOS**: ``AF_UNIX`` and ``LOCAL_PEERCRED``.
    * **Windows**: no (Python has no ``AF_UNIX`` there).
    """
    if sys.platform == "win32":
        return False
    if sys.platform == "darwin":
        return hasattr(socket, "AF_UNIX") and hasattr(socket, "LOCAL_PEERCRED")
    return hasattr(socket, "AF_UNIX") and hasattr(socket, "SO_PEERCRED")


def unix_stream_socket() -> socket.socket:
    """A new ``AF_UNIX`` ``SOCK_STREAM`` socket.

    * **Linux, macOS**: ``socket.socket(AF_UNIX, SOCK_STREAM)``.
    * **Windows**: :class:`OSError` (``EAFNOSUPPORT``): Python has no ``AF_UNIX`` there.
    """
    if sys.platform == "win32":
        raise OSError(errno.EAFNOSUPPORT, "Python has no Unix sockets on Windows")
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)


def peer_credentials(conn: socket.socket) -> tuple[int, int]:
    """``(pid, uid)`` of the process at the other end of the connected Unix socket ``conn``
    (the uid is its effective uid when it connected).

    * **Linux**: ``getsockopt(SOL_SOCKET, SO_PEERCRED)``, a ``struct ucred``.
    * **macOS**: ``getsockopt(SOL_LOCAL, LOCAL_PEERCRED)``, a ``struct xucred`` (what
      ``getpeereid`` reads), and ``LOCAL_PEERPID`` for the pid.
    * **Windows**: none; :class:`OSError` (:func:`peer_credentials_available` is False).

    :raises OSError: the system did not say (the caller refuses the connection).
    """
    if sys.platform == "win32":
        raise OSError(errno.EAFNOSUPPORT, "no peer credentials on Windows")
    if sys.platform == "darwin":
        raw = conn.getsockopt(_SOL_LOCAL, socket.LOCAL_PEERCRED, _XUCRED.size)
        raw_pid = conn.getsockopt(_SOL_LOCAL, _LOCAL_PEERPID, _PID.size)
        if len(raw) < _XUCRED.size or len(raw_pid) < _PID.size:
            raise OSError(errno.EPROTO, "short peer credentials")
        version, uid, *_groups = _XUCRED.unpack(raw[: _XUCRED.size])
        if version != _XUCRED_VERSION:
            raise OSError(errno.EPROTO, f"struct xucred version {version}")
        (pid,) = _PID.unpack(raw_pid[: _PID.size])
        return pid, uid
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, _gid = _UCRED.unpack(raw)
    return pid, uid


# --- who owns files -------------------------------------------------------------------------------


def user_id() -> int | None:
    """This process's real uid, to compare with a file's owner.

    * **Linux, macOS**: ``os.getuid()``.
    * **Windows**: None (files have no uid owner there; ``st_uid`` is always 0).
    """
    if sys.platform == "win32":
        return None
    return os.getuid()


def effective_user_id() -> int | None:
    """This process's effective uid, to compare with a socket peer's.

    * **Linux, macOS**: ``os.geteuid()``.
    * **Windows**: None.
    """
    if sys.platform == "win32":
        return None
    return os.geteuid()


# --- where a running agent keeps its runtime files ------------------------------------------------


def runtime_dir(app: str, data: Path) -> Path:
    """The folder of ``app``'s runtime files (lock, control socket); ``data`` is its data folder.

    * **Linux**: ``$XDG_RUNTIME_DIR/<app>`` (platformdirs); without ``XDG_RUNTIME_DIR`` (cron,
      ``su``, containers) ``<data>/run``, private under the data folder, instead of
      platformdirs' guess.  Other POSIX systems: platformdirs.
    * **macOS**: platformdirs (``~/Library/Caches/TemporaryItems/<app>``).
    * **Windows**: platformdirs (``%LOCALAPPDATA%\\Temp\\<app>``).
    """
    import platformdirs

    if sys.platform == "win32" or sys.platform == "darwin":
        pass  # platformdirs knows the place
    elif sys.platform.startswith("linux") and not os.environ.get("XDG_RUNTIME_DIR"):
        return data / "run"
    return Path(platformdirs.user_runtime_dir(app, appauthor=False))


# --- signals and processes ------------------------------------------------------------------------

#: The signals that ask a process to end, Ctrl-C aside: SIGTERM, and SIGHUP (the terminal or the
#: login session went away) where it exists.  Windows has no SIGHUP.
TERMINATE_SIGNALS: tuple[signal.Signals, ...]
if sys.platform == "win32":
    TERMINATE_SIGNALS = (signal.SIGTERM,)
else:
    TERMINATE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)

#: The signals that end optin's long-running commands: :data:`TERMINATE_SIGNALS` and SIGINT.
ENDING_SIGNALS: tuple[signal.Signals, ...] = (*TERMINATE_SIGNALS, signal.SIGINT)


@contextlib.contextmanager
def signals_held(signals: tuple[signal.Signals, ...] = ENDING_SIGNALS) -> Iterator[None]:
    """Run the Python handlers of ``signals`` that arrive inside only on leaving, in arrival order.

    For a step a handler that raises must not cut in two: start a child process and
    record it, so that whoever stops it on the way out knows it exists.  The signal
    mask is left alone (a child would inherit a blocked one); the handlers are swapped
    for a recorder instead.  Handlers only run on the main thread: elsewhere this does
    nothing.  Signals left at their default action (end the process) are not held.
    The same on every OS (``signal.signal`` is portable; :data:`ENDING_SIGNALS` differs).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    saved = {}
    for sig in signals:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, lambda signum, _frame: arrived.append(signum))
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for signum in arrived:
            signal.raise_signal(signum)


def end_process_group(pid: int, *, kill: bool = False) -> None:
    """Ask the process group that ``pid`` leads (a child started with ``start_new_session``) to
    end: SIGTERM, or SIGKILL with ``kill``.

    * **Linux, macOS**: ``os.killpg``.
    * **Windows**: no such groups; the process alone is ended (``os.kill`` is
      ``TerminateProcess`` there, whatever the signal); its own children are not reached.

    :raises ProcessLookupError: there is no such group (process).
    :raises PermissionError: it is not ours to signal.
    """
    if sys.platform == "win32":
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError as exc:
            if isinstance(exc, PermissionError):
                raise
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}") from exc
        return
    os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)


# --- resource limits ------------------------------------------------------------------------------


def forbid_core_files() -> bool:
    """Set this process's core-file limit (the soft ``RLIMIT_CORE``, which children inherit) to 0,
    leaving the hard limit as it is; False where the OS has no such limit.

    * **Linux, macOS**: ``resource.setrlimit(RLIMIT_CORE, (0, hard))``.
    * **Windows**: no resource limits: False (:mod:`agent.backends.process` does what can be done).

    :raises OSError: the OS refused.
    :raises ValueError: the OS refused the values.
    """
    if sys.platform == "win32":
        return False
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    return True


__all__ = [
    "ENDING_SIGNALS",
    "TERMINATE_SIGNALS",
    "UNIX_PATH_MAX",
    "effective_user_id",
    "end_process_group",
    "forbid_core_files",
    "overwrite_durably",
    "peer_credentials",
    "peer_credentials_available",
    "probe_lock",
    "release_lock",
    "runtime_dir",
    "signals_held",
    "try_lock",
    "unix_stream_socket",
]
