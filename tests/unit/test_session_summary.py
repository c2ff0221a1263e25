"""The one renderer of a session's summary: the exact texts the review window, ``optin export
--approve``, ``optin inspect`` and ``optin demo`` print (pinned: a change here is a change users see)."""

from __future__ import annotations

from typing import Any

from agent import demo
from agent.session_summary import (
    counts_line,
    counts_text,
    loss_text,
    pairs_text,
    redactions_by_place,
    redactions_text,
    size_text,
    words,
)

#: A prepared session's summary (agent.export.bundle.Prepared.summary).
PREPARED: dict[str, Any] = {
    "session": "20261206T070000Z-abcd1234",
    "duration_s": 12.36,
    "steps": 6,
    "by_action": {"click": 2, "type": 1, "key": 3},
    "events": 80,
    "frames": 1,
    "redactions": {"screen": 5, "titles": 0, "typed": 2},
    "loss": {"clean_stop": False, "dropped_events": 3, "frame_failures": 0, "cuts": 1, "cut_s": 2.25},
}


def test_words_and_sizes() -> None:
    assert [words(n, "step") for n in (0, 1, 2)] == ["0 steps", "1 step", "2 steps"]
    assert words(1, "entry", "entries") == "1 entry" and words(3, "entry", "entries") == "3 entries"
    sizes = [size_text(n) for n in (0, 1023, 1024, 1536, 1024 * 1024 - 1, 1024 * 1024, 5 * 1024 * 1024 + 1)]
    assert sizes == ["0 bytes", "1023 bytes", "1 kB", "2 kB", "1024 kB", "1.0 MB", "5.0 MB"]


def test_the_review_window_header() -> None:
    assert counts_text(PREPARED) == "6 steps (click 2, type 1, key 3) · 1 frame · 12.4 s"
    assert counts_text({}) == "0 steps · 0 frames · 0.0 s"
    assert redactions_text(PREPARED) == "Redacted: screen 5, typed 2"
    assert redactions_text({"redactions": {"screen": 0}}) == "Redacted: nothing found to redact"
    assert loss_text(PREPARED) == (
        "Left out: the recording ended without a clean stop; 3 events dropped under load; "
        "1 part you cut (2.2 s)"
    )
    assert loss_text({"loss": {"clean_stop": True, "frames_left_out_ocr_failed": 2}}) == (
        "Left out: 2 frames left out (their text could not be read)"
    )
    assert loss_text({"loss": {"clean_stop": True, "dropped_events": 0}}) == "" == loss_text({})


def test_the_line_export_approve_prints() -> None:
    assert (
        counts_line(PREPARED)
        == "6 steps (click 2, type 1, key 3), 1 frames, 80 events, 7 redactions, 12.36 s"
    )
    empty = {**PREPARED, "by_action": {}, "redactions": {}, "steps": 0}
    assert counts_line(empty) == "0 steps (none), 1 frames, 80 events, 0 redactions, 12.36 s"


def test_redactions_per_place_and_entity() -> None:
    counts = {"typed": {"EMAIL": 1, "CREDIT_CARD": 1}, "titles": {}, "screen": {"EMAIL": 2}}
    assert redactions_by_place(counts) == "typed EMAIL 1, CREDIT_CARD 1; screen EMAIL 2"
    assert redactions_by_place({"typed": {}}) == "nothing" and redactions_by_place({}, empty="none") == "none"
    shown = redactions_by_place(counts, place=str.upper, entities=lambda found: str(len(found)))
    assert shown == "TYPED 2; SCREEN 1"  # inspect passes its own escaping of bundle strings
    assert pairs_text({"a\x1b": 1}, key=ascii, value=lambda v: f"<{v}>") == "'a\\x1b' <1>"
    assert pairs_text({}) == "" and pairs_text({}, empty="none") == "none"


def test_the_demo_summary() -> None:
    summary = {
        "seconds_taken": 9.4,
        "session": "20261206T070000Z-abcd1234",
        "display": "1280x800",
        "events_by_kind": {"frame": 4, "key_press": 60, "button_press": 4},
        "frames": 4,
        "steps": {"count": 7, "by_action": {"click": 4, "type": 2, "scroll": 1}},
        "task": {"id": "sign-in", "outcome": "done", "steps": 7},
        "elements": {
            "api": "atspi",
            "steps_with": 3,
            "example": "text in dialog 'optin demo sign-in'",
            "lookups": {"found": 2, "not_accessible": 5},
        },
        "loss": {"clean_stop": True, "dropped_events": 0},
        "bytes_stored": 81234,
        "bundle_bytes": 40321,
        "bundle_members": 7,
        "redaction": {"typed": {"EMAIL": 1, "CREDIT_CARD": 1}, "titles": {}, "screen": {"EMAIL": 2}},
    }
    assert demo.render_summary(summary).splitlines() == [
        "optin demo: all checks passed in 9.4 s",
        "  session        20261206T070000Z-abcd1234 on a 1280x800 private display",
        "  events         frame 4, key_press 60, button_press 4",
        "  frames         4",
        "  steps          7 (click 4, type 2, scroll 1)",
        "  task           sign-in: done, 7 steps",
        "  elements       3 steps with their UI element (atspi), e.g. text in dialog 'optin demo sign-in'; "
        "lookups: found 2, not_accessible 5",
        "  loss           clean_stop True, dropped_events 0",
        "  stored         81234 bytes, encrypted",
        "  bundle         40321 bytes, 7 members, decrypted with `age -d`, signature and hashes checked by "
        "`optin inspect`",
        "  redacted       typed EMAIL 1, CREDIT_CARD 1; screen EMAIL 2",
    ]
