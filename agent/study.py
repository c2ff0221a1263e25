"""The study a volunteer consents to.

A study file is TOML written by the study operator::

    [study]
    id = "web-tasks-2026"
    name = "Everyday web tasks"
    contact = "Dr. A. Researcher <study@example.org>"
    consent_version = "3"
    scopes = ["pointer", "keyboard", "screen", "window_titles"]
    recipients = ["age1..."]          # the study's age public key(s): who can read exports
    consent_text = \"\"\"...\"\"\"

The consent text's SHA-256 (over its UTF-8 bytes) is what a volunteer agrees
to: a changed text is a new consent.  ``optin run --study FILE`` installs a
study; the installed copy lives in the config directory.  (The full study file
— deny rules, retention, validation with line numbers — comes with the consent
issue.)
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import StudyError
from agent.paths import Dirs, ensure_private_dir, write_private_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: Every capture scope a study can ask for.
SCOPES = ("pointer", "keyboard", "screen", "window_titles")

_REQUIRED = ("id", "name", "contact", "consent_version", "consent_text", "scopes", "recipients")


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file."""

    id: str
    name: str
    contact: str
    consent_version: str
    consent_text: str
    scopes: tuple[str, ...]
    recipients: tuple[str, ...]

    @property
    def text_sha256(self) -> str:
        """Hex SHA-256 of the consent text: what a volunteer agrees to."""
        return hashlib.sha256(self.consent_text.encode("utf-8")).hexdigest()


def parse_study(text: str, *, source: str = "<study>") -> Study:
    """Parse and validate a study file's text.

    :raises StudyError: naming the file, the key and the fix.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{source}: not valid TOML: {exc}"
        raise StudyError(msg) from exc
    table = doc.get("study")
    if not isinstance(table, dict):
        msg = f"{source}: missing the [study] table. Fix: start the file with [study] (see docs/study.md)"
        raise StudyError(msg)
    missing = [k for k in _REQUIRED if k not in table]
    if missing:
        msg = f"{source}: [study] is missing {', '.join(missing)}"
        raise StudyError(msg)
    for key in ("id", "name", "contact", "consent_version", "consent_text"):
        _require_str(table, key, source)
    scopes = _require_str_list(table, "scopes", source)
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        msg = f"{source}: study.scopes has {bad or 'nothing'}; allowed scopes are {', '.join(SCOPES)}"
        raise StudyError(msg)
    recipients = _require_str_list(table, "recipients", source)
    for r in recipients:
        if not r.startswith("age1"):
            msg = f"{source}: study.recipients entry {r!r} is not an age public key (age1...)"
            raise StudyError(msg)
    if not recipients:
        msg = f"{source}: study.recipients is empty; a study needs at least one age public key"
        raise StudyError(msg)
    return Study(
        id=table["id"],
        name=table["name"],
        contact=table["contact"],
        consent_version=table["consent_version"],
        consent_text=table["consent_text"],
        scopes=tuple(scopes),
        recipients=tuple(recipients),
    )


def _require_str(table: dict[str, Any], key: str, source: str) -> str:
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        msg = f"{source}: study.{key} must be a non-empty string"
        raise StudyError(msg)
    return value


def _require_str_list(table: dict[str, Any], key: str, source: str) -> list[str]:
    value = table[key]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"{source}: study.{key} must be a list of strings"
        raise StudyError(msg)
    return list(value)


def load_study_file(path: Path) -> Study:
    """Read and validate a study file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read study file {path}: {exc.strerror}"
        raise StudyError(msg) from exc
    return parse_study(text, source=str(path))


def installed_path(dirs: Dirs) -> Path:
    return dirs.config / "study.toml"


def install_study(dirs: Dirs, path: Path) -> Study:
    """Validate ``path`` and make it the installed study."""
    study = load_study_file(path)
    ensure_private_dir(dirs.config)
    write_private_file(installed_path(dirs), path.read_bytes())
    return study


def installed_study(dirs: Dirs) -> Study:
    """The installed study.

    :raises StudyError: none is installed (the message says how to install one).
    """
    path = installed_path(dirs)
    if not path.exists():
        msg = (
            "no study is installed. Fix: optin run --study FILE "
            "(the study file comes from the study's operator)"
        )
        raise StudyError(msg)
    return load_study_file(path)


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
