"""The volunteer's own deny rules ("Exclude this app"), kept across restarts.

``config/exclusions.json`` (0600) holds ``{"rules": [DenyRule.to_json(), ...]}``:
application classes and title patterns the volunteer chose, no captured content.
An unreadable file is reported and treated as holding no rules, never as a
reason to record less carefully: optin's default rules always apply.
"""

from __future__ import annotations

import json
import logging

from agent.capture.deny import DenyRule, rule_for_app
from agent.errors import UsageError
from agent.paths import Dirs, ensure_private_dir, write_private_file

logger = logging.getLogger(__name__)

_FILE = "exclusions.json"


def load(dirs: Dirs) -> tuple[DenyRule, ...]:
    """The volunteer's rules, oldest first."""
    path = dirs.config / _FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return tuple(DenyRule.from_json(item) for item in raw["rules"])
    except FileNotFoundError:
        return ()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.error("%s is unreadable (%s); your exclusions are not applied", path, type(exc).__name__)
        return ()


def volunteer_rule(app_class: str | None, title: str | None) -> DenyRule:
    """The rule ``optin exclude`` and the tray's "Exclude this app" add: exactly an application
    class, or a title pattern (with the class too when both are given).

    :raises UsageError: neither is given, or the title is not a valid regular expression.
    """
    try:
        if title is None:
            if not app_class:
                msg = "name an application class (--app CLASS) or a title pattern (--title PATTERN)"
                raise ValueError(msg)
            return rule_for_app(app_class)
        return DenyRule("excluded by the volunteer", app_class=app_class, title=title)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def add(dirs: Dirs, rule: DenyRule) -> None:
    """Append ``rule`` (atomic, durable, 0600); a rule already there is not added twice."""
    rules = load(dirs)
    if rule in rules:
        return
    ensure_private_dir(dirs.config)
    data = json.dumps({"rules": [r.to_json() for r in (*rules, rule)]}, indent=1) + "\n"
    write_private_file(dirs.config / _FILE, data.encode("utf-8"))


__all__ = ["add", "load", "volunteer_rule"]
