"""The volunteer's own deny rules ("Exclude this app"), kept across restarts.

``config/exclusions.json`` (0600) holds ``{"rules": [DenyRule.to_json(), ...],
"check": HEX}``: application classes and title patterns the volunteer chose, no
captured content.  ``check`` is the SHA-256 of ``optin exclusions v1``, a zero
byte, the key id of the volunteer's recipient, a zero byte and the rules as
canonical JSON: a flipped bit, or a file copied from another volunteer's optin, no
longer matches.  Without a usable recipient (no keys yet, or one that recording
refuses anyway) the file is written without a check and read without checking
it.  The check is no secret: someone who can write the config folder can write a
matching file, or delete it, as they could delete any file (docs/threat-model.md).
A file written by optin 0.1.0 has no check; it is read as it is and written with
one the next time it changes.

A file that exists but cannot be used (unreadable, not JSON, a rule optin can no
longer run, such as a title pattern written for Python's backtracking engine) is
refused with the file, the rule's number and the fix: recording does not start
without the windows the volunteer excluded (P4: fail closed).  The message never
quotes a pattern.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any

from agent.canonical_json import canonical
from agent.deny_rules import DenyRule, rule_for_app, title_pattern_problem
from agent.errors import OptinError, UsageError
from agent.paths import Dirs, ensure_private_dir, write_private_file

_FILE = "exclusions.json"
#: Largest exclusions file read (bytes): a few thousand rules.
MAX_BYTES = 4 * 1024 * 1024


def load(dirs: Dirs) -> tuple[DenyRule, ...]:
    """The volunteer's rules, oldest first (none when the file does not exist).

    :raises UsageError: the file exists but cannot be used; the message says which
        rule and the fix.
    """
    path = dirs.config / _FILE
    fix = (
        f"Fix: correct it, or remove {path} and add your exclusions again with `optin exclude` "
        "(until then optin does not record)"
    )
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return ()
    except OSError as exc:
        msg = f"your exclusions in {path} cannot be read ({exc.strerror or type(exc).__name__}). {fix}"
        raise UsageError(msg) from None
    if len(data) > MAX_BYTES:
        msg = f"your exclusions file {path} is larger than {MAX_BYTES} bytes. {fix}"
        raise UsageError(msg)
    try:
        raw: Any = json.loads(data.decode("utf-8"))
        items = raw["rules"]
        check = raw.get("check")
        if not isinstance(items, list) or not (check is None or isinstance(check, str)):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        msg = f'your exclusions file {path} is not {{"rules": [...], "check": ...}} in JSON. {fix}'
        raise UsageError(msg) from None
    expected = _check(dirs, items)
    if check is not None and expected is not None and not hmac.compare_digest(check, expected):
        msg = (
            f"your exclusions file {path} is damaged, or was not written by your optin "
            f"(its check does not match its rules and your key). {fix}"
        )
        raise UsageError(msg)
    rules: list[DenyRule] = []
    for number, item in enumerate(items, 1):
        try:
            rules.append(DenyRule.from_json(item))
        except ValueError as exc:
            msg = f"rule {number} of your exclusions in {path} cannot be used: {exc}. {fix}"
            raise UsageError(msg) from None
    return tuple(rules)


def volunteer_rule(app_class: str | None, title: str | None) -> DenyRule:
    """The rule ``optin exclude`` and the tray's "Exclude this app" add: exactly an application
    class, or a title pattern (with the class too when both are given).

    :raises UsageError: neither is given, or the title is not a pattern optin can run
        (the message says why and the fix, never the pattern).
    """
    try:
        if title is None:
            if not app_class:
                msg = "name an application class (--app CLASS) or a title pattern (--title PATTERN)"
                raise ValueError(msg)
            return rule_for_app(app_class)
        problem = title_pattern_problem(title)
        if problem is not None:
            msg = f"the title pattern {problem}"
            raise ValueError(msg)
        return DenyRule("excluded by the volunteer", app_class=app_class, title=title)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add(dirs: Dirs, rule: DenyRule) -> None:
    """Append ``rule`` (atomic, durable, 0600); a rule already there is not added twice.

    :raises UsageError: the existing file cannot be used (see :func:`load`).
    """
    rules = load(dirs)
    if rule in rules:
        return
    ensure_private_dir(dirs.config)
    items = [r.to_json() for r in (*rules, rule)]
    check = _check(dirs, items)
    data = json.dumps({"rules": items} | ({"check": check} if check else {}), indent=1) + "\n"
    write_private_file(dirs.config / _FILE, data.encode("utf-8"))


def _check(dirs: Dirs, items: Sequence[object]) -> str | None:
    """The ``check`` of ``items`` for this volunteer, or None without a usable recipient."""
    from agent.store import keys

    try:
        key = keys.key_id(keys.load_recipient(dirs))
    except OptinError:
        return None  # no keys yet, or a recipient that recording refuses by itself
    blob = b"optin exclusions v1\x00" + key.encode("ascii") + b"\x00" + canonical(items)
    return hashlib.sha256(blob).hexdigest()


__all__ = ["MAX_BYTES", "add", "load", "volunteer_rule"]
