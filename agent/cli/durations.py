"""Durations on the command line (``pause 15m``, ``delete-last 1h``): text to seconds."""

from __future__ import annotations

import re

from agent.errors import UsageError

__all__ = ["DURATION_FORMS", "parse_duration"]

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
DURATION_FORMS = "a duration like 90s, 15m, 1h or 2h30m"


def parse_duration(text: str) -> int:
    """Seconds in ``90s``, ``15m``, ``1h``, ``2h30m``, ``1h5m10s``.

    :raises UsageError: anything else, or zero.
    """
    match = _DURATION.fullmatch(text.strip().lower())
    if not text.strip() or match is None:
        msg = f"{text!r} is not a duration; use {DURATION_FORMS}"
        raise UsageError(msg)
    hours, minutes, secs = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + secs
    if total <= 0:
        msg = f"{text!r} is zero; use {DURATION_FORMS}"
        raise UsageError(msg)
    return total
