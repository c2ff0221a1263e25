"""Logging, configured once.

Log lines carry states, counts and durations, never captured content: no keys,
no characters, no window titles, no pixels, no file names of frames.
``OPTIN_LOG_LEVEL`` overrides the level (default WARNING for commands, INFO for
the running agent).
"""

from __future__ import annotations

import logging
import os
import sys

_handler: logging.Handler | None = None


def setup_logging(default_level: str = "WARNING") -> None:
    """Configure the root logger once, to stderr (again if its handler was taken off since)."""
    global _handler  # noqa: PLW0603 - logging is process-wide by nature
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        return
    level_name = os.environ.get("OPTIN_LOG_LEVEL", default_level).upper()
    level = logging.getLevelName(level_name)
    if not isinstance(level, int):
        level = logging.WARNING
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("optin %(levelname)s %(name)s: %(message)s"))
    root.addHandler(_handler)
    root.setLevel(level)
