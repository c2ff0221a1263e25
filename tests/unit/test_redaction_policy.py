from __future__ import annotations

from agent.events import Frame, KeyPress, KeyRelease, PointerMove, WindowFocus
from agent.redact import policy


def test_typed_characters_and_their_codes_never_survive() -> None:
    events = [
        KeyPress(1, "s", None, 115, ()),
        KeyRelease(2, "s", None, 115, ()),
        KeyPress(3, None, "enter", 65293, ()),
        KeyPress(4, None, None, None, ()),
        WindowFocus(5, "secret title", "XTerm", 1, 0, 0, 10, 10),
        PointerMove(6, 1, 2),
        Frame(7, 0, 0, 1, 1, "webp", "click", b"x"),
    ]
    out, counts = policy.redact_all(events)
    assert out[0] == KeyPress(1, None, None, None, ())
    assert out[1] == KeyRelease(2, None, None, None, ())
    assert out[2] == events[2]  # special keys keep name and code
    assert out[4].title is None and out[4].app_class == "XTerm"
    assert out[5:] == events[5:]
    assert counts == {"key_chars_dropped": 3, "titles_dropped": 1}
    assert events[0].char == "s"  # the input is not mutated


def test_evidence_names_the_policy() -> None:
    ev = policy.evidence({"x": 1})
    assert ev["policy"] == policy.POLICY_NAME
    assert len(ev["policy_sha256"]) == 64
    assert ev["frames_masked"] is False
