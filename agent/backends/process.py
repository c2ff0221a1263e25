"""Per-OS process hardening: no crash dump of optin's memory reaches the disk (P5).

:func:`forbid_dumps` does what the resource limit (``RLIMIT_CORE`` 0, set by
:mod:`agent.hardening` through :func:`agent.backends.platform_calls.forbid_core_files` on
every POSIX system) does not cover on each OS:

* **Linux**: ``prctl(PR_SET_DUMPABLE, 0)``.  The kernel then writes no core file
  for the process even when ``core_pattern`` pipes dumps to a helper
  (systemd-coredump, apport), which is not bound by ``RLIMIT_CORE``; it also
  stops other processes of the same user from attaching a debugger or reading
  ``/proc/<pid>/mem`` and ``environ``.  The flag is reset by ``execve``, so every
  optin process (the agent, its consent dialog, its review window) sets it itself.
* **macOS**: a core file is written only within ``RLIMIT_CORE``; nothing more.
* **Windows**: ``SetErrorMode`` keeps the crash dialog away and ``WerSetFlags``
  keeps the heap out of Windows Error Reporting's dumps.  An administrator's
  ``LocalDumps`` registry setting can still ask for full dumps: optin cannot
  turn that off for itself (docs/threat-model.md).

Written against each OS's documented API; only the Linux part is tested here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: ``<linux/prctl.h>``.
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
#: ``<errhandlingapi.h>``: no critical-error and no crash dialog boxes.
SEM_FAILCRITICALERRORS = 0x0001
SEM_NOGPFAULTERRORBOX = 0x0002
#: ``<werapi.h>``: leave the heap out of Windows Error Reporting dumps.
WER_FAULT_REPORTING_FLAG_NOHEAP = 1


class DumpsNotForbidden(OSError):
    """The OS refused to keep this process out of crash dumps (the message says which call)."""


def forbid_dumps() -> str:
    """Keep this process's memory out of crash dumps where the OS allows; return what was done.

    :raises DumpsNotForbidden: the OS call failed.
    """
    if sys.platform.startswith("linux"):
        _linux_not_dumpable()
        return "prctl(PR_SET_DUMPABLE, 0)"
    if sys.platform == "win32":
        _windows_no_dumps()
        return "SetErrorMode, WerSetFlags(NOHEAP)"
    return "resource limit only"


def dumpable() -> bool | None:
    """Whether the kernel would write a core of this process (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    return bool(_libc().prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))


def adopt_orphans() -> bool:
    """Linux: become this process's descendants' reaper, so daemons they start that outlive their
    parent (the accessibility bus launcher, its registry) are reparented here and can be stopped
    and reaped, not left to an init that may not reap them.  False elsewhere or when refused."""
    if not sys.platform.startswith("linux"):
        return False
    return bool(_libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def _linux_not_dumpable() -> None:
    libc = _libc()
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        msg = f"prctl(PR_SET_DUMPABLE, 0) failed (errno {err})"
        raise DumpsNotForbidden(err, msg)


def _windows_no_dumps() -> None:  # pragma: no cover - Windows only
    windll = getattr(ctypes, "windll", None)
    if windll is None:
        msg = "the Windows API is not reachable through ctypes"
        raise DumpsNotForbidden(msg)
    kernel32 = windll.kernel32
    kernel32.SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX)
    result = kernel32.WerSetFlags(WER_FAULT_REPORTING_FLAG_NOHEAP)
    if result != 0:  # an HRESULT: 0 is S_OK
        msg = f"WerSetFlags(NOHEAP) failed (HRESULT {result & 0xFFFFFFFF:#010x})"
        raise DumpsNotForbidden(msg)


__all__ = ["DumpsNotForbidden", "dumpable", "forbid_dumps"]
