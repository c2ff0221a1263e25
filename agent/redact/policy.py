"""The export redaction policy: one pure function, failing closed.

This first policy (``skeleton-1``) is deliberately blunt, until the detectors
of the redaction issue exist: every typed character and every window title is
removed before export, and so is the key code of character keys (an X keysym
spells the character); names and codes survive only for non-character keys
(``enter``, ``ctrl``...), so the timing and shape of typing stay usable while
no text leaves.  Pointer, scroll and focus geometry are kept.  Frames are
kept as the volunteer's screen showed them — the volunteer sees this in the
README and the manifest (``frames_masked: false``) until screen redaction lands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from agent.events import Event, KeyPress, KeyRelease, WindowFocus

#: Name and version of this policy (goes into the manifest).
POLICY_NAME = "skeleton-1"

_RULES = {
    "key_char": "drop",
    "key_code_for_character_keys": "drop",
    "window_title": "drop",
    "frames": "keep-unmasked",
}


def policy_sha256() -> str:
    """Hash of the rules, so a manifest names exactly the policy that ran."""
    blob = json.dumps({"name": POLICY_NAME, "rules": _RULES}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def redact_event(event: Event) -> Event:
    """Return the exportable form of ``event`` (never mutates it)."""
    if isinstance(event, (KeyPress, KeyRelease)):
        if event.name is None:  # a character key: its key code (keysym) would spell the text
            return dataclasses.replace(event, char=None, vk=None)
        return dataclasses.replace(event, char=None)
    if isinstance(event, WindowFocus):
        return dataclasses.replace(event, title=None)
    return event


def evidence(counts: dict[str, int]) -> dict[str, Any]:
    """What the manifest records about redaction."""
    return {
        "policy": POLICY_NAME,
        "policy_sha256": policy_sha256(),
        "rules": dict(_RULES),
        "redactors": ["drop-typed-text", "drop-window-titles"],
        "frames_masked": False,
        "counts": dict(sorted(counts.items())),
    }


def redact_all(events: list[Event]) -> tuple[list[Event], dict[str, int]]:
    """Redact every event; return the result and counts of what was removed."""
    out: list[Event] = []
    counts = {"key_chars_dropped": 0, "titles_dropped": 0}
    for ev in events:
        red = redact_event(ev)
        if isinstance(ev, (KeyPress, KeyRelease)) and (ev.char is not None or ev.name is None):
            counts["key_chars_dropped"] += 1
        elif isinstance(ev, WindowFocus) and ev.title is not None:
            counts["titles_dropped"] += 1
        out.append(red)
    return out, counts
