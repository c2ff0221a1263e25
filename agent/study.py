"""The study a volunteer consents to.

A study file is TOML written by the study operator (docs/study.md has every key)::

    [study]
    id = "web-tasks-2026"
    name = "Everyday web tasks"
    contact = "Dr. A. Researcher <study@example.org>"
    consent_version = "3"
    scopes = ["pointer", "keyboard", "screen", "window_titles"]
    recipients = ["age1..."]          # the study's age public key(s): who can read exports
    consent_text = \"\"\"...\"\"\"

    [[deny]]                          # optional, any number: never capture these windows
    label = "Our HR system"
    app_class = "hr-client*"          # glob on the application (WM_CLASS class, exe, bundle id)
    title = "salary|payroll"          # regular expression on the window title

    [retention]                       # optional
    days = 30
    max_gib = 2.0
    after_export = "keep"             # or "delete": shred a session once it is exported

    [capture]                         # optional
    idle_pause_minutes = 10
    pause_hotkey = "<ctrl>+<alt>+p"

    [redaction]                       # optional
    ocr = "required"                  # or "if-available", "off"
    typed_text = "redact"             # or "drop"
    window_titles = "redact"          # or "drop"

    [tasks]                           # optional: "off", "list", "free" or "both"
    mode = "list"                     # default: "list" with [[task]] entries, else "off"

    [[task]]                          # optional, at most 500: what the volunteer is asked to do
    id = "book-flight"                # unique; lower-case letters, digits, ".", "_", "-"
    instruction = "Book the cheapest flight from Paris to Rome next Friday."
    url = "https://example.org/flights"   # optional hint (http/https); or app = "Firefox"
    time_limit_minutes = 15           # optional, 1..1440

The consent text's SHA-256 (over its UTF-8 bytes) is what a volunteer agrees
to: a changed text is a new consent.  ``optin run --study FILE`` installs a
study; the installed copy lives in the config directory.

Validation is strict (an unknown key is an error: a typo must not silently
drop a deny rule) and every problem is one line, ``FILE:LINE: <dotted key> <what
is wrong>[. Fix: ...]``, such as ``study.toml:7: study.scopes has 'microphone';
allowed scopes are ...``.  ``tomllib`` keeps no positions, so
:class:`agent.toml_lines.TomlLines` finds the lines itself with a small scanner of
the TOML source.  Messages never quote the consent text.

This module is the entry callers import: reading and installing study files, the demo's
study, and (re-exported) the model (:mod:`agent.study_model`: :class:`Study`, its
defaults, the terms a receipt binds) and the check (:mod:`agent.study_check`:
:func:`parse_study`).  A new setting is a field and its default in ``study_model.py``
and its check in ``study_check.py``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.errors import StudyError
from agent.paths import Dirs, ensure_private_dir, write_private_file
from agent.study_check import MAX_DENY_LABEL, MAX_RECIPIENTS, parse_study
from agent.study_model import (
    DEFAULT_IDLE_PAUSE_MINUTES,
    DEFAULT_PAUSE_HOTKEY,
    DEFAULT_RETENTION_DAYS,
    DEFAULT_RETENTION_MAX_GIB,
    IDLE_PAUSE_MINUTES_RANGE,
    MAX_TASK_APP,
    MAX_TASK_INSTRUCTION,
    MAX_TASK_URL,
    MAX_TASKS,
    REDACTION_CHOICES,
    RETENTION_DAYS_RANGE,
    RETENTION_MAX_GIB_RANGE,
    SCOPES,
    TASK_ID_PATTERN,
    TASK_MODES,
    TASK_TIME_LIMIT_MINUTES_RANGE,
    TERMS_IN_WORDS,
    TERMS_VERSION,
    Study,
    StudyTask,
    changed_terms,
    terms_digest,
)

#: The largest study file read (a consent text of a few pages is a few KiB).
MAX_STUDY_BYTES = 1024 * 1024


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        msg = f"{source}:{line}: not UTF-8 text (byte {exc.start}). Fix: save the file as UTF-8"
        raise StudyError(msg) from None


def _read(path: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_STUDY_BYTES` (a FIFO or device is refused
    without waiting on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        msg = f"cannot read study file {path}: {exc.strerror}"
        raise StudyError(msg) from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            msg = f"cannot read study file {path}: it is not a regular file. Fix: the path of the .toml file"
            raise StudyError(msg)
        if info.st_size > MAX_STUDY_BYTES:
            msg = (
                f"study file {path} has {info.st_size} bytes; a study file has at most {MAX_STUDY_BYTES} "
                "(a consent text of a few pages is a few KiB). Fix: check that this is the study file"
            )
            raise StudyError(msg)
        try:
            data = fh.read(MAX_STUDY_BYTES + 1)
        except OSError as exc:
            msg = f"cannot read study file {path}: {exc.strerror}"
            raise StudyError(msg) from exc
    if len(data) > MAX_STUDY_BYTES:  # it grew while being read
        msg = (
            f"study file {path} has more than {MAX_STUDY_BYTES} bytes. Fix: check that this is the study file"
        )
        raise StudyError(msg)
    return data


def load_study_file(path: Path) -> Study:
    """Read and validate a study file."""
    return parse_study(_decode(_read(path), str(path)), source=str(path))


def installed_path(dirs: Dirs) -> Path:
    """Where the installed study lives."""
    return dirs.config / "study.toml"


def install_study(dirs: Dirs, path: Path) -> Study:
    """Validate ``path`` and make it the installed study (the very bytes validated)."""
    data = _read(path)
    study = parse_study(_decode(data, str(path)), source=str(path))
    ensure_private_dir(dirs.config)
    write_private_file(installed_path(dirs), data)
    return study


def installed_study(dirs: Dirs) -> Study:
    """The installed study.

    :raises StudyError: none is installed, or the installed copy is damaged (the message says how
        to install it again).
    """
    path = installed_path(dirs)
    if not path.exists():
        msg = (
            "no study is installed. Fix: optin run --study FILE "
            "(the study file comes from the study's operator)"
        )
        raise StudyError(msg)
    try:
        return load_study_file(path)
    except StudyError as exc:
        msg = (
            f"{exc}\nThe installed copy of the study is damaged or was changed. Fix: install the study file "
            "again: optin run --study FILE (from the study's operator)"
        )
        raise StudyError(msg) from None


def demo_study_toml(recipient: str) -> str:
    """A study file for ``optin demo``, encrypting to a throwaway recipient."""
    return f'''[study]
id = "optin-demo"
name = "optin demo (private virtual display)"
contact = "nobody: this study exists only inside optin demo"
consent_version = "1"
scopes = ["pointer", "keyboard", "screen", "window_titles"]
recipients = ["{recipient}"]
consent_text = """
This is the optin demo. It records a scripted volunteer on a private virtual
display that optin starts and stops itself. Nothing on your own screen is
recorded. The recording is encrypted on disk and exported to a throwaway key
that is deleted when the demo ends.
"""
'''


__all__ = [
    "DEFAULT_IDLE_PAUSE_MINUTES",
    "DEFAULT_PAUSE_HOTKEY",
    "DEFAULT_RETENTION_DAYS",
    "DEFAULT_RETENTION_MAX_GIB",
    "IDLE_PAUSE_MINUTES_RANGE",
    "MAX_DENY_LABEL",
    "MAX_RECIPIENTS",
    "MAX_STUDY_BYTES",
    "MAX_TASKS",
    "MAX_TASK_APP",
    "MAX_TASK_INSTRUCTION",
    "MAX_TASK_URL",
    "REDACTION_CHOICES",
    "RETENTION_DAYS_RANGE",
    "RETENTION_MAX_GIB_RANGE",
    "SCOPES",
    "TASK_ID_PATTERN",
    "TASK_MODES",
    "TASK_TIME_LIMIT_MINUTES_RANGE",
    "TERMS_IN_WORDS",
    "TERMS_VERSION",
    "Study",
    "StudyTask",
    "changed_terms",
    "demo_study_toml",
    "install_study",
    "installed_path",
    "installed_study",
    "load_study_file",
    "parse_study",
    "terms_digest",
]
