"""Per-platform backends, chosen lazily behind one function.

:func:`select_backend` picks a backend by name: the argument, else the
``OPTIN_BACKEND`` environment variable, else the platform (Linux: ``xorg``).
Backend modules are imported only when chosen, so Windows code is never
imported on Linux and a missing dependency of one backend cannot break
another.  A failed import becomes one :class:`~agent.errors.BackendUnavailable`
that carries the fix (after pynput's ``RESOLUTIONS``).

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
BACKENDS = ("fake", "xorg")

#: Backends planned but not built in this version, with the OS they serve.
NOT_BUILT = {"win32": "Windows", "darwin": "macOS"}

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
}


#: Backends tried in order when neither the argument nor ``OPTIN_BACKEND`` names one.
PLATFORM_BACKENDS = {"linux": ("xorg",)}


def _platform_candidates() -> tuple[str, ...]:
    for prefix, names in PLATFORM_BACKENDS.items():
        if sys.platform.startswith(prefix):
            return names
    os_name = NOT_BUILT.get(sys.platform, sys.platform)
    msg = (
        f"optin {_version()} has no capture backend for {os_name} (sys.platform={sys.platform!r}); "
        "only Linux with an X11 session is supported in this version. "
        f"Fix: record on Linux/X11, or set {ENV_VAR}=fake for a dry run without capture."
    )
    raise BackendUnavailable(msg)


def _version() -> str:
    from agent import __version__

    return __version__


def select_backend(name: str | None = None) -> Backend:
    """Return a new backend instance.

    :param name: ``"xorg"`` or ``"fake"``; None means ``$OPTIN_BACKEND``, else
        the platform's default.
    :raises agent.errors.BackendUnavailable: the name is unknown, the platform
        has no backend yet, or the backend's module cannot be imported; the
        message lists the fix.

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
        except ImportError as exc:
            resolutions.append(f"  {candidate}: cannot import it ({exc}). Fix: {RESOLUTIONS[candidate]}")
            continue
        backend: Backend = module.make_backend()
        return backend
    msg = f"no capture backend could be loaded (tried: {', '.join(candidates)})."
    raise BackendUnavailable(msg, resolutions)


def _check_name(name: str, source: str) -> str:
    name = name.strip().lower()
    if name in NOT_BUILT:
        msg = (
            f"backend {name!r} (from {source}) is not built in optin {_version()}: "
            f"{NOT_BUILT[name]} is not supported yet. Fix: use one of {', '.join(BACKENDS)}."
        )
        raise BackendUnavailable(msg)
    if name not in BACKENDS:
        fix = f"unset {ENV_VAR} or set it to one of them" if source == ENV_VAR else "use one of them"
        msg = f"unknown backend {name!r} (from {source}); valid names: {', '.join(BACKENDS)}. Fix: {fix}."
        raise BackendUnavailable(msg)
    return name


__all__ = ["BACKENDS", "ENV_VAR", "Backend", "select_backend"]
