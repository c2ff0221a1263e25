"""Test helpers shared across test directories."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import pytest

if TYPE_CHECKING:
    from agent.backends.fake import FakeBackend, FakeFocus, FakeInput, FakeScreen
    from agent.paths import Dirs
    from agent.study import Study

#: What the ``consented`` fixture (tests/conftest.py) gives: the store's dirs and the installed study.
Consented: TypeAlias = "tuple[Dirs, Study]"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until its value is true or ``timeout`` seconds pass; returns the last value
    (so a test can wait for a thing and use it: ``w := ...`` and ``w``)."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(interval)


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


def fake_backend() -> FakeBackend:
    """``select_backend("fake")``, typed as the :class:`~agent.backends.fake.FakeBackend` it is."""
    from agent.backends import select_backend
    from agent.backends.fake import FakeBackend

    backend = select_backend("fake")
    assert isinstance(backend, FakeBackend)
    return backend


def hooks_of(backend: FakeBackend) -> FakeInput:
    """The fake backend's latest input hooks, which the test knows were started."""
    hooks = backend.last_input
    assert hooks is not None, "no input hooks were started"
    return hooks


def focus_of(backend: FakeBackend) -> FakeFocus:
    """The fake backend's latest focus watcher, which the test knows was started."""
    focus = backend.last_focus
    assert focus is not None, "no focus watcher was started"
    return focus


def screen_of(backend: FakeBackend) -> FakeScreen:
    """The fake backend's latest screen watcher source, which the test knows was started."""
    screen = backend.last_screen
    assert screen is not None, "no screen was started"
    return screen
