"""The export redaction policy: typed and pasted text, titles and frames, failing closed.

Each test builds the events a recorder would store and checks what would leave:
the secret's characters, its key codes and its per-key timing must be gone, and
everything around it kept.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from agent.errors import RedactorUnavailable
from agent.events import (
    ButtonPress,
    Event,
    Frame,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Redacted,
    TaskStart,
    WindowFocus,
    to_dict,
)
from agent.redact import policy
from agent.redact.policy import Policy, redact_session
from agent.redact.screen import MASK_RGB, OcrFailed, Word

EMAIL = "alice.canary@example.com"
CARD = "4111 1111 1111 1111"
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
EDITOR = WindowFocus(1, "notes.txt - gedit", "Gedit", 10)
TERMINAL = WindowFocus(1, "alice@box: ~", "XTerm", 11)

MS = 1_000_000


class Typist:
    """Builds the key events of a volunteer typing, 40 ms a key."""

    def __init__(self, t0: int = 10 * MS) -> None:
        self.t = t0
        self.events: list[Event] = []

    def _tick(self) -> int:
        self.t += 40 * MS
        return self.t

    def focus(self, focus: WindowFocus) -> Typist:
        self.events.append(WindowFocus(self._tick(), focus.title, focus.app_class, focus.pid))
        return self

    def key(self, char: str | None = None, name: str | None = None, mods: tuple[str, ...] = ()) -> Typist:
        vk = ord(char) if char and len(char) == 1 else None
        self.events.append(KeyPress(self._tick(), char, name, vk, mods))
        self.events.append(KeyRelease(self._tick(), char, name, vk, mods))
        return self

    def type(self, text: str) -> Typist:
        for ch in text:
            if ch == " ":
                self.key(None, "space")
            else:
                self.key(ch, None, ("shift",) if ch.isupper() else ())
        return self

    def paste(self, text: str | None) -> Typist:
        t = self._tick()
        self.events.append(KeyPress(t, "v", None, ord("v"), ("ctrl",)))
        self.events.append(Paste(t + 1, text))
        self.events.append(KeyRelease(self._tick(), "v", None, ord("v"), ("ctrl",)))
        return self

    def enter(self) -> Typist:
        return self.key(None, "enter")

    def backspace(self, n: int) -> Typist:
        for _ in range(n):
            self.key(None, "backspace")
        return self

    def click(self) -> Typist:
        self.events.append(ButtonPress(self._tick(), 5, 5, "left"))
        return self


TEXT_ONLY = Policy(ocr="off")


def exported(events: Sequence[Event], pol: Policy = TEXT_ONLY, ocr: Any = None) -> list[Any]:
    return redact_session(events, pol, ocr=ocr).events


def as_json(events: Sequence[Any]) -> str:
    return "\n".join(
        json.dumps(e.to_dict() if isinstance(e, Redacted) else to_dict(e), ensure_ascii=False) for e in events
    )


def typed_chars(events: Sequence[Any]) -> str:
    return "".join(e.char for e in events if isinstance(e, KeyPress) and e.char)


def leaks(secret: str, events: Sequence[Any]) -> bool:
    """Whether the secret (or its alphanumerics in order) can be read from the export."""
    blob = as_json(events)
    core = "".join(c for c in secret if c.isalnum())
    return secret in blob or core in "".join(c for c in typed_chars(events) if c.isalnum())


# --- typed text -------------------------------------------------------------------------------------


def test_a_typed_email_becomes_one_placeholder_and_the_rest_stays() -> None:
    events = Typist().focus(EDITOR).type(f"write to {EMAIL} today").enter().events
    out = exported(events)
    assert not leaks(EMAIL, out)
    (red,) = [e for e in out if isinstance(e, Redacted)]
    assert red.entity == "EMAIL"
    assert typed_chars(out) == "writetotoday"  # spaces are the space key (name only)
    assert sum(1 for e in out if isinstance(e, KeyPress) and e.name == "space") == 3
    first_secret_key = next(e for e in events if isinstance(e, KeyPress) and e.char == "a" and e.t_ns > 0)
    assert red.t_ns >= first_secret_key.t_ns  # the record stands where the span began


def _tasks(instruction: str) -> list[Event]:
    return [
        TaskStart(1 * MS, "free-0a1b2c3d", instruction, "volunteer"),
        TaskStart(2 * MS, "book-table", f"Book a table and mail {EMAIL}", "study"),
    ]


def test_a_volunteer_instruction_is_redacted_like_typed_text_and_a_study_one_is_not() -> None:
    red = redact_session(_tasks(f"mail {EMAIL} the card {CARD}"), TEXT_ONLY, ocr=None)
    volunteer, study = [e for e in red.events if isinstance(e, TaskStart)]
    assert volunteer.instruction == "mail [EMAIL] the card [CREDIT_CARD]"
    assert study.instruction == f"Book a table and mail {EMAIL}"  # the study's own words, as consented
    assert red.counts["instructions"] == {"EMAIL": 1, "CREDIT_CARD": 1}
    assert red.policy.describe()["version"] == "5"


def test_a_volunteer_instruction_is_dropped_when_the_study_drops_typed_text() -> None:
    red = redact_session(_tasks("book a table for two"), Policy(ocr="off", typed_text="drop"), ocr=None)
    volunteer, study = [e for e in red.events if isinstance(e, TaskStart)]
    assert (volunteer.instruction, study.instruction) == ("", f"Book a table and mail {EMAIL}")
    assert red.counts["instructions"] == {"ALL_TEXT": 1}


def test_a_session_without_a_volunteer_task_counts_no_instructions() -> None:
    red = redact_session(_tasks("x")[1:], TEXT_ONLY, ocr=None)
    assert "instructions" not in red.counts


def test_no_key_timing_survives_inside_the_span() -> None:
    events = Typist().focus(EDITOR).type(f"x {EMAIL} y").enter().events
    out = exported(events)
    red = next(e for e in out if isinstance(e, Redacted))
    keys_after_x = [e for e in out if isinstance(e, (KeyPress, KeyRelease)) and e.t_ns > red.t_ns]
    # the next key event after the record is the space after the address: nothing in between
    assert keys_after_x[0].name == "space"
    assert sum(isinstance(e, Redacted) for e in out) == 1


def test_a_card_typed_and_then_deleted_is_still_caught() -> None:
    events = Typist().focus(EDITOR).type(f"card {CARD}").backspace(len(CARD)).type("later").enter().events
    out = exported(events)
    assert not leaks(CARD, out)
    assert [e.entity for e in out if isinstance(e, Redacted)] == ["CREDIT_CARD"]
    assert typed_chars(out).endswith("later")


def test_a_card_with_a_typo_fixed_by_arrows_is_caught() -> None:
    t = Typist().focus(EDITOR).type("4111 1111 1111 111")  # one digit short
    t.key(None, "left").key(None, "left").key("1").key(None, "end").type(" ok").enter()
    out = exported(t.events)
    assert "CREDIT_CARD" in {e.entity for e in out if isinstance(e, Redacted)}
    assert "4111" not in typed_chars(out)


def test_pasted_token_goes_with_its_span() -> None:
    events = Typist().focus(EDITOR).type("token: ").paste(TOKEN).enter().events
    out = exported(events)
    assert not leaks(TOKEN, out)
    assert not any(isinstance(e, Paste) for e in out)
    assert "GITHUB_TOKEN" in {e.entity for e in out if isinstance(e, Redacted)}


def test_pasted_text_outside_spans_keeps_its_words() -> None:
    events = Typist().focus(EDITOR).paste("meeting notes").enter().events
    (paste,) = [e for e in exported(events) if isinstance(e, Paste)]
    assert paste.text == "meeting notes"


def test_a_paste_that_arrived_late_sorts_behind_its_key() -> None:
    t = Typist().focus(EDITOR).paste(TOKEN)
    paste = t.events.pop(-2)  # the recorder's clipboard thread was slower than the next key
    t.type("x").enter()
    t.events.append(paste)
    out = exported(t.events)
    assert not leaks(TOKEN, out)


def test_password_after_sudo_in_a_terminal_is_redacted_whole() -> None:
    events = Typist().focus(TERMINAL).type("sudo apt update").enter().type("Tr0ub4dor&3").enter()
    events.type("ls -l").enter()
    out = exported(events.events)
    assert not leaks("Tr0ub4dor&3", out)
    assert [e.entity for e in out if isinstance(e, Redacted)] == ["PASSWORD"]
    assert "sudoaptupdate" in typed_chars(out) and typed_chars(out).endswith("ls-l")


def test_one_word_after_a_normal_command_is_kept() -> None:
    events = Typist().focus(TERMINAL).type("echo hi").enter().type("ls").enter().events
    out = exported(events)
    assert not any(isinstance(e, Redacted) for e in out)


def test_the_prompt_rule_needs_a_terminal() -> None:
    events = Typist().focus(EDITOR).type("sudo apt update").enter().type("word").enter().events
    assert not any(isinstance(e, Redacted) for e in exported(events))


def test_drop_mode_removes_every_character_and_code() -> None:
    events = Typist().focus(EDITOR).type("plain words").paste("pasted").enter().events
    out = exported(events, Policy(ocr="off", typed_text="drop"))
    assert typed_chars(out) == ""
    assert all(e.vk is None for e in out if isinstance(e, (KeyPress, KeyRelease)) and e.name is None)
    assert all(e.text is None for e in out if isinstance(e, Paste))
    enter = [e for e in out if isinstance(e, KeyPress) and e.name == "enter"]
    assert enter and enter[0].vk is None  # special keys keep their names


# --- titles -----------------------------------------------------------------------------------------


def test_titles_are_redacted_or_dropped() -> None:
    events = [WindowFocus(1, f"Inbox ({EMAIL}) - Mail", "Thunderbird", 3)]
    (title,) = exported(events)
    assert title.title == "Inbox ([EMAIL]) - Mail" and title.app_class == "Thunderbird"
    (dropped,) = exported(events, Policy(ocr="off", window_titles="drop"))
    assert dropped.title is None
    red = redact_session(events, TEXT_ONLY, ocr=None)
    assert red.counts["titles"] == {"EMAIL": 1}


# --- frames -----------------------------------------------------------------------------------------


def frame(t: int, text_rows: Sequence[str], *, size: tuple[int, int] = (400, 120)) -> Frame:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i, _ in enumerate(text_rows):
        draw.rectangle((10, 10 + 30 * i, 300, 30 + 30 * i), fill=(10, 10, 10))
    buf = io.BytesIO()
    img.save(buf, format="WEBP", lossless=True)
    return Frame(t, 0, 0, size[0], size[1], "webp", "click", buf.getvalue())


class RowOcr:
    """Stand-in engine: row i of a frame 'reads' as the i-th text of the frame it was made from."""

    name = "stand-in"
    version = "0"

    def __init__(self, texts: dict[int, Sequence[str]], fail: frozenset[int] = frozenset()) -> None:
        self.texts = texts  # frame height marker -> texts (frames are told apart by their rows)
        self.fail = fail
        self.calls = 0

    def __call__(self, image: Any, boxes: Sequence[tuple[int, int, int, int]]) -> list[Word]:
        self.calls += 1
        key = image.size[1]
        if key in self.fail:
            raise OcrFailed("stand-in failure")
        words: list[Word] = []
        for i, text in enumerate(self.texts.get(key, ())):  # a crop (a terminal read again): nothing
            top = 10 + 30 * i
            if any(t <= top < b for _, t, _, b in boxes):
                x = 10
                for word in text.split():
                    words.append(Word((x, top, x + 8 * len(word), top + 20), word))
                    x += 8 * len(word) + 8
        return words


def pixels(f: Frame) -> Image.Image:
    return Image.open(io.BytesIO(f.data)).convert("RGB")


def test_required_ocr_without_an_engine_refuses() -> None:
    events = [frame(1, ["x"])]
    with pytest.raises(RedactorUnavailable, match="apt-get install tesseract-ocr"):
        redact_session(events, Policy(ocr="required"), ocr=None)


def test_required_ocr_is_not_needed_without_frames() -> None:
    red = redact_session(Typist().focus(EDITOR).type("hi").events, Policy(ocr="required"), ocr=None)
    assert red.frames_masked is False


def test_if_available_without_an_engine_exports_frames_as_captured_and_says_so() -> None:
    f = frame(1, ["x"])
    red = redact_session([f], Policy(ocr="if-available"), ocr=None)
    assert red.events == [f] and red.frames_masked is False
    assert red.evidence()["frames_masked_by_ocr"] is False


def test_ocr_masks_detected_text_and_typed_secrets() -> None:
    asked = frame(1, ["Token:"], size=(400, 60))  # a prompt that echoes what is typed
    t = Typist().focus(TERMINAL).type("s3cretpw").enter()
    f = frame(t.t + 1, [f"mail {EMAIL}", "pw s3cretpw", "nothing here"])
    ocr = RowOcr({60: ["Token:"], 120: [f"mail {EMAIL}", "pw s3cretpw", "nothing here"]})
    red = redact_session([asked, *t.events, f], Policy(ocr="required"), ocr=ocr)
    assert [e.entity for e in red.events if isinstance(e, Redacted)] == ["PASSWORD"]
    (out,) = [e for e in red.events if isinstance(e, Frame) and e.height == 120]
    img = pixels(out)
    assert img.getpixel((60, 15)) == MASK_RGB  # the address word (starts at x=50)
    assert img.getpixel((40, 45)) == MASK_RGB  # the typed password seen on screen
    assert red.counts["screen"] == {"EMAIL": 1, "TYPED": 1}
    assert red.frames_masked and red.evidence()["redactors"][-1]["name"] == "stand-in"


def test_drop_mode_still_masks_typed_secrets_on_screen() -> None:
    t = Typist().focus(EDITOR).type(f"mail {EMAIL}").enter()
    f = frame(t.t + 1, [f"mail {EMAIL}"])
    ocr = RowOcr({120: [f"mail {EMAIL}"]})
    red = redact_session([*t.events, f], Policy(ocr="required", typed_text="drop"), ocr=ocr)
    assert red.counts["screen"] == {"EMAIL": 1, "TYPED": 1}
    assert red.counts["typed"] == {"ALL_TEXT": 2 * (len("mail") + len(EMAIL))}  # presses and releases


def test_a_frame_the_engine_cannot_read_is_left_out_and_counted() -> None:
    good, bad = frame(1, ["a"], size=(400, 120)), frame(2, ["b"], size=(400, 90))
    ocr = RowOcr({120: ["a"], 90: ["b"]}, fail=frozenset({90}))
    red = redact_session([good, bad], Policy(ocr="required"), ocr=ocr)
    assert [e.t_ns for e in red.events] == [1]
    assert red.frames_left_out == 1 and red.evidence()["frames_left_out_ocr_failed"] == 1


def test_ocr_off_never_calls_the_engine() -> None:
    ocr = RowOcr({120: ["x"]})
    redact_session([frame(1, ["x"])], Policy(ocr="off"), ocr=ocr)
    assert ocr.calls == 0


# --- passwords typed into terminals (agent/redact/terminal.py) -------------------------------------

PW = "Qv7canaryPw2k"


class Screens:
    """Frames of a terminal as a session goes, and the stand-in engine that reads them.

    Each frame gets its own height (RowOcr tells frames apart by it), so each is read whole.
    """

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.texts: dict[int, Sequence[str]] = {}

    def show(self, t: int, *rows: str) -> None:
        height = 100 + 10 * len(self.frames)
        self.frames.append(frame(t, list(rows), size=(400, height)))
        self.texts[height] = list(rows)

    def ocr(self, fail: frozenset[int] = frozenset()) -> RowOcr:
        return RowOcr(self.texts, fail=fail)


def terminal_rule(red: policy.Redaction) -> dict[str, Any]:
    entry: dict[str, Any]  # the manifest's JSON-ready evidence
    (entry,) = [r for r in red.evidence()["redactors"] if r["name"] == "terminal-passwords"]
    return entry


def test_a_password_typed_blind_at_a_prompt_is_redacted_whole() -> None:
    t, screens = Typist().focus(TERMINAL), Screens()
    t.type("python3 getpw.py").enter()
    screens.show(t.t + 5 * MS, "$ python3 getpw.py", "Password:")
    t.type(PW).enter()
    screens.show(t.t + 5 * MS, "$ python3 getpw.py", "Password:", "$")
    t.type("ls").enter()
    screens.show(t.t + 5 * MS, "Password:", "$ ls", "notes.txt")
    red = redact_session([*t.events, *screens.frames], Policy(ocr="required"), ocr=screens.ocr())
    assert not leaks(PW, red.events)
    assert [e.entity for e in red.events if isinstance(e, Redacted)] == ["PASSWORD"]
    assert typed_chars(red.events) == "python3getpw.pyls"  # the echoed commands stay typed text
    assert terminal_rule(red) == {
        "name": "terminal-passwords",
        "version": "1",
        "rule": "screen+prompt",
        "fields": {"echo": 1, "prompt": 1},
    }


def test_with_the_screen_a_command_after_sudo_is_no_password() -> None:
    t, screens = Typist().focus(TERMINAL), Screens()
    t.type("sudo ls").enter()  # sudo remembered the password: no prompt
    screens.show(t.t + 5 * MS, "$ sudo ls", "notes.txt")
    t.type("pwd").enter()
    screens.show(t.t + 5 * MS, "$ sudo ls", "notes.txt", "$ pwd")
    red = redact_session([*t.events, *screens.frames], Policy(ocr="required"), ocr=screens.ocr())
    assert not any(isinstance(e, Redacted) for e in red.events)
    without = redact_session(t.events, TEXT_ONLY, ocr=None)  # the command rule alone takes it
    assert [e.entity for e in without.events if isinstance(e, Redacted)] == ["PASSWORD"]


def test_a_password_whose_frames_ocr_failed_on_is_still_redacted() -> None:
    t, screens = Typist().focus(TERMINAL), Screens()
    t.type("python3 getpw.py").enter()
    screens.show(t.t + 5 * MS, "$ python3 getpw.py", "Password:")
    t.type(PW).enter()
    screens.show(t.t + 5 * MS, f"$ echo {PW}")  # whatever it shows, it cannot be read
    red = redact_session(
        [*t.events, *screens.frames], Policy(ocr="required"), ocr=screens.ocr(fail=frozenset({110}))
    )
    assert not leaks(PW, red.events) and red.frames_left_out == 1


@pytest.mark.parametrize(
    ("pol", "ocr", "with_frames", "why"),
    [
        (TEXT_ONLY, None, True, "OCR off in the study's policy"),
        (Policy(ocr="if-available"), None, True, "no OCR engine"),
        (Policy(ocr="required"), None, False, "no frames (no screen scope)"),
    ],
)
def test_without_the_screen_the_command_rule_runs_and_the_manifest_says_why(
    pol: Policy, ocr: Any, with_frames: bool, why: str
) -> None:
    t = Typist().focus(TERMINAL).type("sudo -v").enter().type(PW).enter().type("echo hi").enter()
    events = [*t.events, frame(t.t + 1, ["x"])] if with_frames else t.events
    red = redact_session(events, pol, ocr=ocr)
    assert not leaks(PW, red.events)
    assert [e.entity for e in red.events if isinstance(e, Redacted)] == ["PASSWORD"]
    assert terminal_rule(red) == {
        "name": "terminal-passwords",
        "version": "1",
        "rule": "command",
        "fields": {"command": 1},
        "no_screen": why,
    }


COMMANDS = ["ls -la", "cd /tmp", "echo hello", "git status", "python3 -c 'print(1)'", "make test", "ls"]
ANSWERS = ["Tr0ub4dor&3", "correct horse battery", "4711", "Mq4benchPw9z", "s3cr3t-t0ken"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_blind_answers_never_leave_and_echoed_commands_never_become_passwords(data: st.DataObject) -> None:
    """Any mix of echoed commands and answers typed at prompts that turn echo off."""
    t, screens = Typist().focus(TERMINAL), Screens()
    shown: list[str] = []  # the terminal's lines
    answers: list[str] = []
    for _ in range(data.draw(st.integers(1, 6))):
        command = data.draw(st.sampled_from(COMMANDS))
        t.type(command).enter()
        shown.append(f"$ {command}")
        asks = data.draw(st.booleans())
        if asks:
            shown.append(data.draw(st.sampled_from(["Password:", "Enter PEM pass phrase:", "PIN:"])))
        screens.show(t.t + 5 * MS, *shown[-3:])
        if asks:
            answer = data.draw(st.sampled_from(ANSWERS))
            answers.append(answer)
            t.type(answer).enter()  # echo off: the screen does not show it
            shown.append("$")
            screens.show(t.t + 5 * MS, *shown[-3:])
    red = redact_session([*t.events, *screens.frames], Policy(ocr="required"), ocr=screens.ocr())
    for answer in answers:
        assert not leaks(answer, red.events)
    assert [e.entity for e in red.events if isinstance(e, Redacted)] == ["PASSWORD"] * len(answers)


# --- evidence ---------------------------------------------------------------------------------------


def test_evidence_names_policy_redactors_and_counts_never_values() -> None:
    events = Typist().focus(EDITOR).type(f"{EMAIL} {CARD}").enter().events
    red = redact_session(events, TEXT_ONLY, ocr=None)
    ev = red.evidence()
    blob = json.dumps(ev)
    assert EMAIL not in blob and "4111" not in blob
    assert ev["policy"]["name"] == policy.POLICY_NAME and len(ev["policy_sha256"]) == 64
    assert {r["name"] for r in ev["redactors"]} == {"detectors", "typed-text", "terminal-passwords"}
    assert ev["counts"]["typed"] == {"CREDIT_CARD": 1, "EMAIL": 1}


def test_policy_hash_changes_with_every_choice() -> None:
    hashes = {
        Policy().sha256(),
        Policy(ocr="off").sha256(),
        Policy(typed_text="drop").sha256(),
        Policy(window_titles="drop").sha256(),
    }
    assert len(hashes) == 4


def test_the_input_is_not_mutated_and_markers_pass() -> None:
    events = [
        Marker(1, "session_start", {}),
        *Typist().focus(EDITOR).type(EMAIL).events,
        PointerMove(99 * 10**9, 1, 2),
    ]
    before = list(events)
    out = exported(events)
    assert events == before
    assert out[0] == events[0] and out[-1] == events[-1]


# --- property: planted secrets never leak, whatever the typing around them --------------------------

SECRETS = [EMAIL, CARD, TOKEN, "DE89 3704 0044 0532 0130 00"]


def noisy_typing(draw: Any) -> tuple[list[Event], str]:
    secret = draw(st.sampled_from(SECRETS))
    before = draw(st.text(alphabet=string.ascii_lowercase + " ", max_size=12))
    after = draw(st.text(alphabet=string.ascii_lowercase + " ", max_size=12))
    t = Typist().focus(EDITOR).type(before + " ")
    typo_at = draw(st.integers(0, len(secret)))
    t.type(secret[:typo_at])
    if draw(st.booleans()):  # a typo fixed with backspace
        t.type("x").backspace(1)
    t.type(secret[typo_at:])
    if draw(st.booleans()):  # then deleted again
        t.backspace(len(secret))
    t.type(" " + after)
    if draw(st.booleans()):
        t.enter()
    return t.events, secret


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_planted_secrets_never_leak(data: st.DataObject) -> None:
    events, secret = noisy_typing(data.draw)
    out = exported(events)
    assert not leaks(secret, out)
