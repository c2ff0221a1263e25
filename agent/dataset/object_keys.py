"""The names of DEST's objects: the grammar of docs/dataset.md "Object names", checked before any use.

Every DEST-relative key passes :func:`check_key` before a store sees it, so no input (a session id,
a SRC name, a path in a version manifest) can choose where an object goes. Pure: no I/O.
"""

from __future__ import annotations

import datetime
import re

from agent.errors import ObjectKeyRefused

#: docs/dataset.md, "Object names": the grammar every DEST-relative path must match.
KEY_GRAMMAR = re.compile(r"[A-Za-z0-9_=./-]{1,200}", re.ASCII)
#: One path component: a literal, a number or a hex digest, with dot-separated extensions
#: (``v000042.wids.json``, ``<32 hex>.index.jsonl``), or ``ingest_date=YYYY-MM-DD``.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*", re.ASCII)
_DATE_COMPONENT = re.compile(r"ingest_date=(\d{4})-(\d{2})-(\d{2})", re.ASCII)
#: Folders below DEST a key may have at most (``tables/sessions/ingest_date=.../<part>.parquet``: 3).
MAX_DEPTH = 6


def check_key(key: str) -> str:
    """``key`` when it is a DEST-relative object name of the layout, else
    :class:`~agent.errors.ObjectKeyRefused`.

    The spec's grammar (``[A-Za-z0-9_=./-]{1,200}``, no ``..``, no ``//``, no leading ``/``), and
    stricter: every component starts with a letter or digit (no ``.``, ``..``, hidden or temporary
    names, no trailing ``/``), at most :data:`MAX_DEPTH` folders deep, and an ``ingest_date=``
    component is a real date.
    """
    why = key_problem(key)
    if why:
        shown = ascii(key[:80]) + ("…" if len(key) > 80 else "")
        msg = (
            f"refused the object key {shown}: {why}. A DEST key is built only from literals, decimal "
            "numbers, the build's UTC date and hex digests (docs/dataset.md, Object names). Fix: this is a "
            "bug in the caller, or a version manifest naming a path no optin writes (rebuild or restore DEST)"
        )
        raise ObjectKeyRefused(msg)
    return key


def key_problem(key: str) -> str:  # noqa: PLR0911 - one return per rule
    """Why ``key`` is not an object name of the layout, or ``""`` when it is one."""
    if not isinstance(key, str):
        return "not a string"
    if not key.isascii() or not KEY_GRAMMAR.fullmatch(key):
        return "it has characters outside A-Z a-z 0-9 _ = . / - (or is empty, or over 200 characters)"
    if key.startswith("/") or "//" in key or ".." in key:
        return "it is absolute, or has '//' or '..'"
    parts = key.split("/")
    if len(parts) - 1 > MAX_DEPTH:
        return f"it is more than {MAX_DEPTH} folders deep"
    for part in parts:
        date = _DATE_COMPONENT.fullmatch(part)
        if date:
            try:
                datetime.date(int(date[1]), int(date[2]), int(date[3]))
            except ValueError:
                return "its ingest_date= is not a date"
            continue
        if not _COMPONENT.fullmatch(part):
            return "a component is empty, starts with '.', '-' or '_', or has '=' outside ingest_date="
    return ""


def check_prefix(prefix: str) -> str:
    """A list prefix: a key, a key followed by ``/``, or empty (everything)."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix
