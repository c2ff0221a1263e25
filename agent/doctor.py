"""``optin doctor``: what works on this machine and how to fix what does not.

:func:`run_checks` looks at the display server, the X RECORD extension, the
tray host, the capture backend, the data directory, Python and the packages
optin needs, two optional tools (``age``, an OCR engine) and, on Linux, whether the
accessibility bus (AT-SPI) can tell the UI element under an action.  It never
hangs: every subprocess and every X connection has a timeout, the slow checks
run side by side, and the whole run takes well under 3 s.

Each :class:`Check` has ``ok``: True (works), False (broken: see ``fix``) or
None (optional and missing, not applicable, or cannot be told).  The checks
describe the machine whatever ``OPTIN_BACKEND`` says; the ``backend`` check
reports which backend would be used.

Exit codes (:func:`exit_code`): 0 when nothing failed, 2 when the display,
RECORD or backend check failed (an environment problem, as in
:class:`~agent.errors.EnvironmentProblem`), 1 when anything else failed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import OptinError

#: Seconds any one subprocess or X connection may take.
CHECK_TIMEOUT = 1.5

#: Checks whose failure is an environment problem (exit code 2).
ENVIRONMENT_CHECKS = frozenset({"display", "record", "permissions", "backend"})

#: Python modules optin needs, with the distribution that provides each.
REQUIRED_PACKAGES = {
    "pynput": "pynput",
    "mss": "mss",
    "PIL": "pillow",
    "cryptography": "cryptography",
    "pystray": "pystray",
    "pyrage": "pyrage",
    "platformdirs": "platformdirs",
}
if sys.platform.startswith("linux"):
    REQUIRED_PACKAGES["Xlib"] = "python-xlib"

#: Python modules that provide an OCR engine when tesseract is absent.

MIN_PYTHON = (3, 10)


@dataclass(frozen=True)
class Check:
    """The result of one check.

    :ivar ok: True works; False broken (see ``fix``); None optional and missing,
        not applicable, or unknown.
    :ivar detail: what was found (never captured content).
    :ivar fix: what to do; empty when there is nothing to do.
    """

    name: str
    ok: bool | None
    detail: str
    fix: str = ""


def _split_fix(message: str) -> tuple[str, str]:
    """Split an error message of the form ``"<what>. Fix: <fix>"``."""
    head, sep, fix = message.partition(" Fix: ")
    if not sep:
        return message, ""
    return head.rstrip("."), fix.rstrip(".")


def _run_version(command: str, timeout: float) -> tuple[str | None, str]:
    """``(first line of `command --version`, path)``; the line is None when it failed."""
    path = shutil.which(command)
    if path is None:
        return None, ""
    try:
        done = subprocess.run(
            [path, "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None, path
    out = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0 or not out:
        return None, path
    return out[0].strip(), path


# --- individual checks ------------------------------------------------------------------------


def check_python() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", True, f"Python {version}")
    need = ".".join(str(part) for part in MIN_PYTHON)
    return Check("python", False, f"Python {version} is too old", f"install Python {need} or newer")


def check_packages() -> Check:
    found: list[str] = []
    missing: list[str] = []
    for module, dist in REQUIRED_PACKAGES.items():
        try:
            spec = importlib.util.find_spec(module)  # never import: pynput raises with no display
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            missing.append(dist)
            continue
        try:
            found.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(dist)
    if missing:
        fix = "pip install " + " ".join(missing)
        return Check("packages", False, f"missing: {', '.join(missing)}", fix)
    return Check("packages", True, ", ".join(found))


def check_backend() -> Check:
    from agent.backends import ENV_VAR, select_backend

    try:
        backend = select_backend()
    except OptinError as exc:
        lines = str(exc).splitlines()
        detail, fix = _split_fix(lines[0])
        fixes = [fix] if fix else []
        fixes += [_split_fix(line.strip())[1] or line.strip() for line in lines[1:]]
        return Check("backend", False, detail, "; ".join(fixes))
    try:
        flags = [
            label
            for label, on in (
                ("active window", backend.HAS_ACTIVE_WINDOW),
                ("focus events", backend.HAS_FOCUS_EVENTS),
                ("window titles", backend.HAS_WINDOW_TITLES),
                ("tray detection", backend.HAS_TRAY_DETECTION),
                ("secure-input detection", backend.HAS_SECURE_INPUT_DETECTION),
            )
            if on
        ]
    finally:
        backend.close()
    forced = f", forced by {ENV_VAR}" if os.environ.get(ENV_VAR, "").strip() else ""
    return Check("backend", True, f"{backend.NAME}{forced} (can: {', '.join(flags) or 'nothing extra'})")


def check_x11(timeout: float = CHECK_TIMEOUT) -> list[Check]:
    """The ``display``, ``record`` and ``tray`` checks (one X connection for all three)."""
    if not sys.platform.startswith("linux"):
        na = f"not applicable on {sys.platform}"
        return [Check("display", None, na), Check("record", None, na), Check("tray", None, na)]
    try:
        from agent.backends import xorg
    except ImportError as exc:
        detail = f"cannot look at the X display: {exc}"
        return [
            Check("display", False, detail, "pip install 'python-xlib>=0.33'"),
            Check("record", None, "not checked: no X display"),
            Check("tray", None, "not checked: no X display"),
        ]

    not_checked = [
        Check("record", None, "not checked: no X display"),
        Check("tray", None, "not checked: no X display"),
    ]
    kind = xorg.session_type()
    if kind == "wayland":
        _, fix = _split_fix(xorg.WAYLAND_MESSAGE)
        shown = ", ".join(
            f"{var}={os.environ[var]}"
            for var in ("WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "DISPLAY")
            if os.environ.get(var)
        )
        detail = f"Wayland session ({shown}): pynput and mss cannot see Wayland clients"
        return [Check("display", False, detail, fix), *not_checked]
    if kind == "none":
        detail, fix = _split_fix(xorg.NO_DISPLAY_MESSAGE)
        return [Check("display", False, detail, fix), *not_checked]

    found = xorg.probe(timeout=timeout)
    if found.error is not None:
        detail, fix = _split_fix(xorg.connect_message(found.display, found.error))
        return [Check("display", False, detail, fix), *not_checked]
    checks = [Check("display", True, f"X11 on DISPLAY={found.display} ({found.vendor} {found.release})")]
    if found.has_record:
        checks.append(Check("record", True, f"RECORD extension present on DISPLAY={found.display}"))
    else:
        detail, fix = _split_fix(xorg.no_record_message(found.display))
        checks.append(Check("record", False, detail, fix))
    if found.tray_owner:
        checks.append(Check("tray", True, "a system tray owns _NET_SYSTEM_TRAY_S<screen>"))
    elif _tray_on_dbus():
        checks.append(Check("tray", True, "a StatusNotifier watcher (AppIndicator) is on the session bus"))
    else:
        checks.append(
            Check(
                "tray",
                False,
                "no system tray: nothing owns _NET_SYSTEM_TRAY_S<screen>, so the recording indicator "
                "cannot be shown and optin will not record",
                "start a system tray (your desktop's panel tray, or e.g. trayer) and run optin doctor again",
            )
        )
    return checks


def check_accessibility() -> Check:
    """Can optin see the UI element under an action (AT-SPI on Linux)?  A warning, never a failure:
    recording works without it, with no elements and no password fields seen on Linux."""
    name = "accessibility"
    if not sys.platform.startswith("linux"):
        return Check(name, None, f"not applicable on {sys.platform}")
    try:
        from agent.backends.xorg import a11y_bus
    except ImportError as exc:
        return Check(
            name, None, f"cannot look at the accessibility bus ({exc})", "pip install 'python-xlib>=0.33'"
        )
    without = "the UI element under each action and password fields are not seen"
    if not a11y_bus.typelib_present():
        return Check(
            name, None, f"the AT-SPI typelib (Atspi 2.0) is missing: {without}", a11y_bus.INSTALL_FIX
        )
    reachable, detail = a11y_bus.bus_status()
    if not reachable:
        fix = f"{a11y_bus.INSTALL_FIX}; run optin inside your desktop session (DBUS_SESSION_BUS_ADDRESS)"
        return Check(name, None, f"{detail}: {without}", fix)
    return Check(name, True, f"AT-SPI typelib present; {detail}")


def check_desktop() -> list[Check]:
    """``display``, ``tray`` and (macOS) ``permissions`` on Windows and macOS, as their backend
    sees them (Linux has :func:`check_x11`)."""
    from agent.backends import select_backend

    try:
        backend = select_backend()
    except OptinError as exc:
        detail, fix = _split_fix(str(exc).splitlines()[0])
        return [Check("display", False, detail, fix), Check("tray", None, "not checked: no backend")]
    try:
        found = backend.doctor_checks()
    except Exception as exc:  # the doctor reports every failure instead of crashing
        return [Check("display", False, f"could not ask the desktop ({type(exc).__name__})")]
    finally:
        backend.close()
    checks: list[Check] = []
    for item in found:
        if item.problem is not None:
            detail, fix = _split_fix(item.problem)
            checks.append(Check(item.name, False, detail, fix))
        else:
            checks.append(Check(item.name, True if item.known else None, item.fine))
    return checks


def _tray_on_dbus() -> bool:
    """Whether a StatusNotifier tray is on D-Bus (asked the way the tray view asks)."""
    try:
        from agent.ui.tray import status_notifier_watcher as ask
    except ImportError:
        return False
    return ask()


def check_data_dir() -> Check:
    from agent import paths

    try:
        data = paths.dirs().data
    except Exception as exc:  # the doctor reports every failure instead of crashing
        fix = "set OPTIN_HOME to a directory you own"
        if isinstance(exc, ImportError):
            fix = "pip install platformdirs"
        return Check("data-dir", False, f"cannot work out the data directory: {exc}", fix)
    if data.exists():
        if not data.is_dir():
            return Check(
                "data-dir", False, f"{data} exists but is not a directory", "move it away or set OPTIN_HOME"
            )
        try:
            paths.check_private_dir(data)
        except OptinError as exc:
            detail, fix = _split_fix(str(exc))
            return Check("data-dir", False, detail, fix)
        return Check("data-dir", True, f"{data} (private, mode 0700 or stricter)")
    parent = _nearest_existing(data)
    if not os.access(parent, os.W_OK | os.X_OK):
        return Check(
            "data-dir",
            False,
            f"{data} does not exist and {parent} is not writable",
            "set OPTIN_HOME to a directory you own",
        )
    return Check("data-dir", True, f"{data} does not exist yet; it will be created with mode 0700")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or "/")


def check_age(timeout: float = CHECK_TIMEOUT) -> Check:
    version, path = _run_version("age", timeout)
    if version is not None:
        return Check("age", True, f"{version} ({path})")
    if path:
        return Check(
            "age", None, f"{path} did not answer `age --version`", "reinstall age (apt-get install age)"
        )
    return Check(
        "age",
        None,
        "age is not on PATH (optional: optin encrypts with pyrage; operators decrypt bundles with age)",
        "apt-get install age",
    )


def check_ocr() -> Check:
    """Can export read text on screens (tesseract with English data)?

    Required when the installed study says ``[redaction] ocr = "required"`` (the
    default): export refuses without it.  Optional otherwise.
    """
    from agent.redact.screen import TesseractOcr

    required = _study_requires_ocr()
    engine = TesseractOcr.find()
    if engine is not None:
        return Check("ocr", True, f"tesseract {engine.version} with English data ({engine.binary})")
    where = (
        "tesseract is not on PATH" if shutil.which("tesseract") is None else "tesseract has no English data"
    )
    if required:
        return Check(
            "ocr",
            False,
            f"{where}; the study requires OCR redaction, so export refuses until it is installed",
            "apt-get install tesseract-ocr tesseract-ocr-eng",
        )
    return Check(
        "ocr",
        None,
        f"{where} (optional for this study: text inside screenshots is not OCR-masked)",
        "apt-get install tesseract-ocr tesseract-ocr-eng",
    )


def _study_requires_ocr() -> bool:
    """Whether the installed study requires OCR; True when no study is installed or it cannot be read."""
    from agent import paths
    from agent.study import installed_study

    try:
        return installed_study(paths.dirs()).redaction_ocr == "required"
    except Exception:  # no study yet, or a broken one: judge by the default, which requires it
        return True


# --- the whole run ----------------------------------------------------------------------------


def run_checks() -> list[Check]:
    """Run every check (in well under 3 s) and return them in a fixed order."""
    slow: dict[str, Callable[[], Any]] = {
        "x11": check_x11 if sys.platform.startswith("linux") else check_desktop,
        "age": check_age,
        "ocr": check_ocr,
        "keyring": check_keyring,
        "accessibility": check_accessibility,
    }
    with ThreadPoolExecutor(max_workers=len(slow), thread_name_prefix="optin-doctor") as pool:
        futures = {name: pool.submit(fn) for name, fn in slow.items()}
        fast = [check_python(), check_packages(), check_backend()]
        x11: list[Check] = futures["x11"].result()
        age: Check = futures["age"].result()
        ocr: Check = futures["ocr"].result()
        keyring: Check = futures["keyring"].result()
        accessibility: Check = futures["accessibility"].result()
    return [*x11, fast[2], fast[0], fast[1], check_data_dir(), keyring, age, ocr, accessibility]


def check_keyring() -> Check:
    """Is there an OS keyring for the private key? Optional: without one, a passphrase file is used."""
    try:
        from agent.store import keys

        backend = keys.keyring_backend()
    except Exception as exc:  # the doctor reports every failure instead of crashing
        return Check("keyring", None, f"could not ask the OS keyring ({type(exc).__name__})")
    if backend is None:
        return Check(
            "keyring",
            None,
            "no OS keyring: the private key is kept in a passphrase-protected file (docs/keys.md)",
        )
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    return Check("keyring", True, f"{name}: `optin keys init` keeps the private key there")


def exit_code(checks: Sequence[Check]) -> int:
    """0 if nothing failed, 2 if an environment check failed, 1 if anything else failed."""
    failed = {check.name for check in checks if check.ok is False}
    if failed & ENVIRONMENT_CHECKS:
        return 2
    return 1 if failed else 0


def render_text(checks: Sequence[Check]) -> str:
    """One aligned line per check (``ok``, ``FAIL`` or ``--``), with the fix indented beneath."""
    width = max((len(check.name) for check in checks), default=0)
    lines: list[str] = []
    for check in checks:
        status = "ok" if check.ok else ("FAIL" if check.ok is False else "--")
        lines.append(f"{status:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.ok is not True:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    return "\n".join(lines)


__all__ = [
    "Check",
    "check_accessibility",
    "check_age",
    "check_backend",
    "check_data_dir",
    "check_desktop",
    "check_ocr",
    "check_packages",
    "check_python",
    "check_x11",
    "exit_code",
    "render_text",
    "run_checks",
]
