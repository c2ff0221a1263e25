"""Per-platform backends, chosen lazily behind one function.

:func:`select_backend` picks a backend by name: the argument, else the
``OPTIN_BACKEND`` environment variable, else the platform (Linux: ``xorg``,
Windows: ``win32``, macOS: ``darwin``).  Backend modules are imported only when
chosen, so Windows code is never imported on Linux and a missing dependency of
one backend cannot break another.  A failed import, in the module or in its
``make_backend()`` (where platform libraries such as pyobjc are imported),
becomes one :class:`~agent.errors.BackendUnavailable` that carries the fix
(after pynput's ``RESOLUTIONS``).  Naming a backend for another operating
system is refused before anything is imported.

Every backend module defines ``make_backend() -> Backend``.

``fake`` is a deterministic backend shipped in the package for tests and dry
runs (see :mod:`agent.backends.fake`).
"""

from __future__ import annotations

import importlib
import os
import sys

from agent.backends.base import Backend
from agent.errors import BackendUnavailable

#: Environment variable that forces a backend (like ``PYNPUT_BACKEND``).
ENV_VAR = "OPTIN_BACKEND"

#: Backends this version can load.
BACKENDS = ("fake", "xorg", "win32", "darwin")

#: Backends bound to one operating system: ``sys.platform`` prefix and the OS's name.
REQUIRED_PLATFORM = {"win32": ("win32", "Windows"), "darwin": ("darwin", "macOS")}

#: Names of the operating systems by ``sys.platform`` prefix, for messages.
OS_NAMES = {"linux": "Linux", "win32": "Windows", "darwin": "macOS"}

#: What to do when a backend module cannot be imported.
RESOLUTIONS = {
    "xorg": (
        "install python-xlib (pip install 'python-xlib>=0.33') and run optin in an X11 (Xorg) session "
        "with DISPLAY set"
    ),
    "fake": (
        "the fake backend is part of optin itself; "
        "reinstall optin (pip install --force-reinstall optin-agent)"
    ),
    "win32": (
        "the win32 backend needs only Python's ctypes, pynput and mss on Windows 10 or later; "
        "reinstall optin (pip install --force-reinstall optin-agent), and for password-field "
        "detection pip install 'comtypes>=1.2'"
    ),
    "darwin": (
        "on macOS install pyobjc (pip install 'pyobjc-framework-Quartz>=8' 'pyobjc-framework-Cocoa>=8'); "
        f"on another OS set {ENV_VAR}=fake for a dry run without capture"
    ),
}


#: Backends tried in order when neither the argument nor ``OPTIN_BACKEND`` names one.
PLATFORM_BACKENDS = {"linux": ("xorg",), "win32": ("win32",), "darwin": ("darwin",)}


def _os_name() -> str:
    for prefix, name in OS_NAMES.items():
        if sys.platform.startswith(prefix):
            return name
    return sys.platform


def _platform_default() -> tuple[str, ...] | None:
    for prefix, names in PLATFORM_BACKENDS.items():
        if sys.platform.startswith(prefix):
            return names
    return None


def _platform_candidates() -> tuple[str, ...]:
    names = _platform_default()
    if names is not None:
        return names
    msg = (
        f"optin {_version()} has no capture backend for {_os_name()} (sys.platform={sys.platform!r}); "
        "it records on Linux (X11), Windows and macOS. "
        f"Fix: record on one of those, or set {ENV_VAR}=fake for a dry run without capture."
    )
    raise BackendUnavailable(msg)


def _version() -> str:
    from agent import __version__

    return __version__


def select_backend(name: str | None = None) -> Backend:
    """Return a new backend instance.

    :param name: one of :data:`BACKENDS`; None means ``$OPTIN_BACKEND``, else
        the platform's default.
    :raises agent.errors.BackendUnavailable: the name is unknown, names a
        backend for another operating system, the platform has no backend, or
        the backend (its module or what its ``make_backend()`` imports) cannot
        be imported; the message lists the fix.

    The backend is not checked here; call :meth:`Backend.check_environment`
    before starting capture.
    """
    if name:
        source = "argument"
    else:
        name = os.environ.get(ENV_VAR, "").strip()
        source = ENV_VAR
    candidates = (_check_name(name, source),) if name else _platform_candidates()

    resolutions: list[str] = []
    for candidate in candidates:
        try:
            module = importlib.import_module(f"agent.backends.{candidate}")
            backend: Backend = module.make_backend()
        except ImportError as exc:
            resolutions.append(f"  {candidate}: cannot import it ({exc}). Fix: {RESOLUTIONS[candidate]}")
            continue
        return backend
    msg = f"no capture backend could be loaded (tried: {', '.join(candidates)})."
    raise BackendUnavailable(msg, resolutions)


def _check_name(name: str, source: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        fix = f"unset {ENV_VAR} or set it to one of them" if source == ENV_VAR else "use one of them"
        msg = f"unknown backend {name!r} (from {source}); valid names: {', '.join(BACKENDS)}. Fix: {fix}."
        raise BackendUnavailable(msg)
    required = REQUIRED_PLATFORM.get(name)
    if required is not None and not sys.platform.startswith(required[0]):
        msg = (
            f"backend {name!r} (from {source}) needs {required[1]}; this machine runs {_os_name()} "
            f"(sys.platform={sys.platform!r}). Fix: {_wrong_platform_fix(source)}."
        )
        raise BackendUnavailable(msg)
    return name


def _wrong_platform_fix(source: str) -> str:
    """How to pick a backend that runs here, worded for where the wrong name came from."""
    here = _platform_default()
    if source == ENV_VAR:
        default = f"unset {ENV_VAR} (the default here is {here[0]}), or " if here else ""
        return f"{default}set {ENV_VAR}=fake for a dry run without capture"
    native = f"use {' or '.join(here)} on {_os_name()}, or " if here else "use "
    return f"{native}fake for a dry run without capture"


__all__ = ["BACKENDS", "ENV_VAR", "Backend", "select_backend"]
