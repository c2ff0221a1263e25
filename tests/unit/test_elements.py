"""agent.elements: what an element lookup answers, without a display."""

from __future__ import annotations

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
