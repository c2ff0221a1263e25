"""The remembered pause and the absence rule (pure parts of pausing)."""

from __future__ import annotations

import stat

import pytest

from agent import pausing
from agent.errors import UsageError
from agent.paths import Dirs


def test_a_pause_is_remembered_privately_until_it_runs_out(dirs: Dirs) -> None:
    assert pausing.load(dirs) is None
    pausing.save(dirs, pausing.VolunteerPause(since=100.0, until=200.0))
    assert stat.S_IMODE((dirs.config / "pause.json").stat().st_mode) == 0o600
    assert pausing.load(dirs, now=150.0) == pausing.VolunteerPause(100.0, 200.0)
    assert pausing.load(dirs, now=200.0) is None  # ran out while the agent was stopped
    pausing.save(dirs, pausing.VolunteerPause(since=100.0, until=None))
    assert pausing.load(dirs, now=1e12) is not None  # until resumed
    pausing.clear(dirs)
    pausing.clear(dirs)  # idempotent
    assert pausing.load(dirs) is None


@pytest.mark.parametrize(
    "text",
    [
        '{"since": "x"}',
        "",
        "{",
        '{"until": 5}',
        "[" * 5000,
        '{"since": 1e999}x',
        '{"since": 100, "until": true}',  # a bool is no time
        '{"since": true, "until": null}',
        '{"since": 1e308, "until": 200}',  # a start after now
        '{"since": 900, "until": null}',
    ],
)
def test_a_damaged_pause_file_is_a_pause_until_resumed(dirs: Dirs, text: str) -> None:
    """The volunteer paused; a damaged record of it must not restart recording (fail closed)."""
    dirs.config.mkdir(parents=True, exist_ok=True)
    (dirs.config / "pause.json").write_text(text)
    pause = pausing.load(dirs, now=150.0)
    assert pause == pausing.VolunteerPause(150.0, None) and pause.active(1e12)


def test_a_duration_no_float_can_hold_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="at most"):
        pausing.check_seconds(10**400, what="a pause", limit=pausing.MAX_PAUSE_S)


@pytest.mark.parametrize(
    ("locked", "idle", "limit", "why"),
    [
        (True, 0.0, 600.0, "screen locked"),
        (False, 600.0, 600.0, "idle"),
        (False, 599.9, 600.0, None),
        (None, None, 600.0, None),  # the backend cannot tell: never pause on a guess
        (False, 10_000.0, 0.0, None),  # 0 turns the idle pause off
        (True, 10_000.0, 0.0, "screen locked"),
    ],
)
def test_absence_reason(locked: bool | None, idle: float | None, limit: float, why: str | None) -> None:
    assert pausing.absence_reason(locked, idle, limit) == why


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (0, "positive"),
        (-1.0, "positive"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (1e308, "at most"),
        (pausing.MAX_PAUSE_S + 1, "at most"),
        (True, "number of seconds"),
        ("15m", "number of seconds"),
    ],
)
def test_pause_durations_are_finite_positive_and_bounded(value: object, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        pausing.check_seconds(value, what="a pause", limit=pausing.MAX_PAUSE_S)


def test_pause_durations_within_bounds_pass() -> None:
    assert pausing.check_seconds(900, what="a pause", limit=pausing.MAX_PAUSE_S) == 900.0
    assert pausing.check_seconds(pausing.MAX_PAUSE_S, what="a pause", limit=pausing.MAX_PAUSE_S) > 0


@pytest.mark.parametrize("until", ["1e308", "Infinity", "NaN", "1e400"])
def test_a_pause_file_with_an_end_no_clock_shows_lasts_until_resumed(dirs: Dirs, until: str) -> None:
    dirs.config.mkdir(parents=True, exist_ok=True)
    (dirs.config / "pause.json").write_text(f'{{"since": 100.0, "until": {until}}}')
    pause = pausing.load(dirs, now=150.0)
    assert pause is not None and pause.until is None  # the volunteer's pause is kept, shown sanely
    from agent.recorder_status import Counters, snapshot

    shown = snapshot(
        state="paused",
        reason="volunteer",
        error=None,
        session=None,
        study="s",
        scopes=(),
        counters=Counters(),
        pause=pausing.VolunteerPause(100.0, 1e308),
        filtered=False,
    )
    assert shown["paused_until"] == "resumed"


@pytest.mark.parametrize("until", ["0", "100", "99.5", "-5"])
def test_a_pause_that_ends_before_it_starts_lasts_until_resumed(dirs: Dirs, until: str) -> None:
    """One flipped digit in a timed pause's end must not end the pause (fail closed)."""
    dirs.config.mkdir(parents=True, exist_ok=True)
    (dirs.config / "pause.json").write_text(f'{{"since": 100, "until": {until}}}')
    assert pausing.load(dirs, now=150.0) == pausing.VolunteerPause(100.0, None)
