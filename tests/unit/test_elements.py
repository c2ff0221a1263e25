"""agent.elements: what an element lookup answers, without a display."""

from __future__ import annotations

import pytest

from agent.elements import Element


def test_an_elements_captured_words_stay_out_of_its_repr() -> None:
    """Names, ancestor names and automation ids are captured content: a %r in a log line or an
    exception message must not carry them."""
    element = Element(
        role="password text",
        name="canary-name-7731",
        states=("editable", "focused", "password"),
        bounds=(10, 20, 300, 30),
        app="gtk-form",
        pid=4242,
        path=(("frame", "canary-window-7731"), ("panel", "")),
        automation_id="canary-id-7731",
    )
    shown = repr(element)
    assert "canary" not in shown
    assert "password text" in shown and "(10, 20, 300, 30)" in shown  # what helps debugging stays


def test_a_lookup_budget_bounds_calls_and_time_and_skips_a_stalled_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one budget every finder (AT-SPI, UI Automation, AX) counts with."""
    import time

    from agent import elements

    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])  # the clock agent.elements reads
    budget = elements.LookupBudget(0.05, max_calls=3)
    budget.start()
    for _ in range(3):
        budget.spend()
    with pytest.raises(elements.OutOfTime):
        budget.spend()  # the call bound
    budget.start(budget_s=0.01)
    now[0] += 0.02
    with pytest.raises(elements.OutOfTime):
        budget.check()  # the deadline
    budget.stalled(42)
    budget.stalled(None)  # a stall before the process was known: nothing to skip
    assert budget.skipped(42) and not budget.skipped(7)
    now[0] += elements.STALL_SKIP_S + 0.001
    assert not budget.skipped(42)  # skipped for STALL_SKIP_S only
