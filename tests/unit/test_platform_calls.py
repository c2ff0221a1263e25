"""agent.backends.platform_calls: calls that differ by OS, behind one interface."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agent.backends import virtual_display
from agent.backends.platform_calls import signals_held


class _Ended(Exception):
    pass


@pytest.fixture
def raising_sigterm() -> Iterator[None]:
    def leave(signum: int, _frame: object) -> None:
        raise _Ended(signum)

    saved = signal.signal(signal.SIGTERM, leave)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, saved)


def test_a_signal_inside_is_handled_on_leaving_not_in_the_middle(raising_sigterm: None) -> None:
    steps = []
    with pytest.raises(_Ended), signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("after the signal")  # reached: the handler waits for the end of the block
    assert steps == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is not None and callable(signal.getsignal(signal.SIGTERM))


def test_nothing_held_runs_nothing_and_handlers_are_put_back(raising_sigterm: None) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with signals_held():
        pass
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_child_started_while_sigterm_arrives_is_tracked_and_stopped(
    raising_sigterm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo once left an xterm behind: SIGTERM landed between Popen and tracking it."""
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)  # arrives as the child exists, before it is tracked
        return proc

    monkeypatch.setattr(virtual_display.subprocess, "Popen", popen_then_sigterm)
    vd = virtual_display.VirtualDisplay()
    with pytest.raises(_Ended):
        vd.spawn([sys.executable, "-c", "import time; time.sleep(60)"], env=dict(os.environ))
    assert len(vd._procs) == 1  # what stop() will stop
    child = vd._procs[0]
    vd.stop()
    assert child.poll() is not None
