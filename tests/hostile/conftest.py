"""The standing hostile-input suite: every case names the promise it guards, and the run prints counts.

A test takes the ``hostile`` fixture and calls ``hostile.tried(promise)`` for each crafted input it
throws at optin and ``hostile.held(promise)`` when optin refused or survived it as it must (a case
that breaks a promise fails its test; the counts say how many inputs were tried). ``make test`` runs
the fast rounds; ``make fuzz`` sets ``OPTIN_FUZZ_ROUNDS`` for longer randomised rounds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator

import pytest

_TRIED: Counter[str] = Counter()
_HELD: Counter[str] = Counter()


def fuzz_rounds(default: int) -> int:
    """How many randomised rounds a case runs: ``OPTIN_FUZZ_ROUNDS`` (``make fuzz``) or ``default``."""
    raw = os.environ.get("OPTIN_FUZZ_ROUNDS", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


class Tally:
    """Counts of crafted inputs per promise (e.g. ``"P9 store tampering"``)."""

    def tried(self, promise: str, n: int = 1) -> None:
        _TRIED[promise] += n

    def held(self, promise: str, n: int = 1) -> None:
        _HELD[promise] += n


@pytest.fixture
def hostile() -> Iterator[Tally]:
    yield Tally()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _TRIED:
        return
    terminalreporter.section("hostile inputs: tried / held, by promise")
    for promise in sorted(_TRIED):
        terminalreporter.write_line(f"{promise:<48} {_TRIED[promise]:>7} tried {_HELD[promise]:>7} held")
