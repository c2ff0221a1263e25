"""Test helpers shared across test directories."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def unavailable(why: str) -> NoReturn:
    """A test's real dependency is missing: fail with CI=true (the real tests are the point),
    skip locally saying why."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(why)
    pytest.skip(why)


def require_tool(*commands: str, hint: str = "run: make system-deps") -> None:
    """Fail (with CI=true) or skip (locally, saying why) when a command the test needs is missing."""
    missing = [c for c in commands if shutil.which(c) is None]
    if not missing:
        return
    unavailable(f"this test needs {', '.join(missing)} on PATH ({hint})")
