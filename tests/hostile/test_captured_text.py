"""Hostile captured text against the terminal password rule (P4: passwords never reach the disk of
a collector; P6: nothing leaves without mandatory redaction, which fails closed).

The input is what a session holds: keys, pastes, window geometry and frames, with the screen's
text as OCR read it.  Each case crafts one that could make a password typed at an echo-off
prompt leave as text — a huge paste, absurd window geometry, frames that are not images, OCR
that fails, screens full of look-alikes — and checks it does not, in bounded time.
``OPTIN_FUZZ_ROUNDS`` runs the randomised case longer (``make fuzz``).
"""

from __future__ import annotations

import io
import json
import random
import time
from collections.abc import Sequence
from typing import Any

from PIL import Image

from agent.events import Event, Frame, KeyPress, KeyRelease, Paste, Redacted, WindowFocus, to_dict
from agent.redact.policy import Policy, redact_session
from agent.redact.screen import OcrFailed, Word
from tests.hostile.conftest import Tally, fuzz_rounds

MS = 1_000_000
TERMINAL = WindowFocus(1, "alice@box: ~", "XTerm", 11, 0, 0, 400, 300)


class Session:
    """Keys typed into a terminal (40 ms a key), frames between them, and what OCR reads on each."""

    def __init__(self, focus: WindowFocus = TERMINAL) -> None:
        self.t = 10 * MS
        self.events: list[Event] = [focus]
        self.rows: dict[int, list[str]] = {}  # frame height -> its text rows
        self.broken: set[int] = set()  # heights OCR fails on

    def _tick(self) -> int:
        self.t += 40 * MS
        return self.t

    def type(self, value: str) -> Session:
        for ch in value:
            name, char = ("space", None) if ch == " " else (None, ch)
            self.events.append(KeyPress(self._tick(), char, name, None, ()))
            self.events.append(KeyRelease(self._tick(), char, name, None, ()))
        return self

    def paste(self, value: str) -> Session:
        t = self._tick()
        self.events.append(KeyPress(t, "v", None, None, ("ctrl",)))
        self.events.append(Paste(t + 1, value))
        self.events.append(KeyRelease(self._tick(), "v", None, None, ("ctrl",)))
        return self

    def enter(self) -> Session:
        self.events.append(KeyPress(self._tick(), None, "enter", None, ()))
        self.events.append(KeyRelease(self._tick(), None, "enter", None, ()))
        return self

    def show(self, *rows: str, data: bytes | None = None, ocr_fails: bool = False) -> Session:
        height = 100 + len(self.rows) + len(self.broken)  # one height per frame: each read whole
        if data is None:
            buf = io.BytesIO()
            Image.new("RGB", (400, height), "white").save(buf, format="PNG")
            data = buf.getvalue()
        self.events.append(Frame(self._tick(), 0, 0, 400, height, "png", "settled", data))
        if ocr_fails:
            self.broken.add(height)
        else:
            self.rows[height] = list(rows)
        return self

    def ocr(self) -> Any:
        rows, broken = self.rows, self.broken

        class Engine:
            name, version = "stand-in", "0"

            def __call__(self, image: Any, boxes: Sequence[tuple[int, int, int, int]]) -> list[Word]:
                if image.size[1] in broken:
                    raise OcrFailed("stand-in")
                out: list[Word] = []
                for i, row in enumerate(rows.get(image.size[1], ())):  # a crop reads nothing
                    x = 5
                    for w in row.split():
                        out.append(Word((x, 5 + 20 * i, x + 8 * len(w), 19 + 20 * i), w))
                        x += 8 * len(w) + 8
                return out

        return Engine()

    def export(self) -> list[Any]:
        return redact_session(self.events, Policy(ocr="required"), ocr=self.ocr()).events


def leaked(secret: str, events: Sequence[Any]) -> bool:
    """The secret, or its letters and digits in order, anywhere in the exported records."""
    blob = "\n".join(
        json.dumps(e.to_dict() if isinstance(e, Redacted) else to_dict(e), ensure_ascii=False)
        for e in events
        if not isinstance(e, Frame)
    )
    typed = "".join(e.char for e in events if isinstance(e, KeyPress) and e.char)
    core = "".join(c for c in secret if c.isalnum())
    return secret in blob or core in "".join(c for c in typed if c.isalnum())


def test_p6_a_huge_paste_at_a_password_prompt_is_redacted_in_bounded_time(hostile: Tally) -> None:
    hostile.tried("P6 terminal passwords")
    secret = "Zq9" + "x7Kp" * 250_000  # a megabyte pasted at the prompt
    s = Session().type("python3 getpw.py").enter().show("$ python3 getpw.py", "Password:")
    s.paste(secret).enter().show("$ python3 getpw.py", "Password:", "$")
    started = time.perf_counter()
    out = s.export()
    assert time.perf_counter() - started < 60  # does not hang: bounded by the input's size
    assert not leaked(secret[:64], out) and not any(isinstance(e, Paste) and e.text for e in out)
    hostile.held("P6 terminal passwords")


def test_p6_absurd_window_geometry_fails_closed(hostile: Tally) -> None:
    for geometry in [
        (-(10**9), -(10**9), 1, 1),
        (10**9, 10**9, 10**9, 10**9),
        (0, 0, 0, 0),
        (5, 5, -40, -40),
    ]:
        hostile.tried("P6 terminal passwords")
        focus = WindowFocus(1, "t", "XTerm", 11, *geometry)
        s = Session(focus).type("python3 getpw.py").enter().show("$ python3 getpw.py", "Password:")
        s.type("Tr0ub4dor&3").enter().show("$ python3 getpw.py", "Password:", "$")
        assert not leaked("Tr0ub4dor&3", s.export())
        hostile.held("P6 terminal passwords")


def test_p6_frames_that_are_not_images_or_cannot_be_read_fail_closed(hostile: Tally) -> None:
    for data, fails in [
        (b"", False),
        (b"RIFF\x00\x00\x00\x00WEBPVP8L", False),
        (b"\x89PNG\r\n", False),
        (None, True),
    ]:
        hostile.tried("P6 terminal passwords")
        s = Session().type("python3 getpw.py").enter().show("$ python3 getpw.py", "Password:")
        s.type("Tr0ub4dor&3").enter().show("$ echo Tr0ub4dor&3", data=data, ocr_fails=fails)
        red = redact_session(s.events, Policy(ocr="required"), ocr=s.ocr())
        assert not leaked("Tr0ub4dor&3", red.events) and red.frames_left_out == 1
        hostile.held("P6 terminal passwords")


def _answer(rng: random.Random) -> str:
    """A made-up password with a digit at every third place (look-alikes on screen have none)."""
    n = rng.randrange(4, 24)
    return "".join(
        rng.choice("0123456789") if i % 3 == 0 else rng.choice("ACDEFGHJKMNPQRTUVWXY!#%&*") for i in range(n)
    )


def _noise(rng: random.Random) -> str:
    """Screen text with no digit and no letter OCR's folding turns into one (o i l s b z)."""
    words = [
        "".join(rng.choice("acdefghjkmnpqrtuvwxy") for _ in range(rng.randrange(2, 9))) for _ in range(6)
    ]
    return " ".join(words)


def test_p4_blind_answers_never_leave_whatever_the_screen_around_them(hostile: Tally) -> None:
    rng = random.Random(20261206)  # noqa: S311 - reproducible hostile data, not secrets
    for _ in range(fuzz_rounds(40)):
        s = Session()
        answers: list[str] = []
        for _ in range(rng.randrange(1, 5)):
            hostile.tried("P4 echo-off answers")
            s.type(_noise(rng)).enter()  # an echoed command
            prompt = rng.choice(["Password:", "Passphrase:", "PIN:", "Mot de passe :", "", "Enter code"])
            s.show(_noise(rng), _noise(rng), prompt, ocr_fails=rng.random() < 0.1)
            answer = _answer(rng)
            answers.append(answer)
            if rng.random() < 0.3:
                s.paste(answer)
            else:
                s.type(answer)
            s.enter()
            if rng.random() < 0.8:  # sometimes no frame follows at all
                s.show(_noise(rng), answer[: len(answer) // 3] + "~", _noise(rng))  # a third of it
        out = s.export()
        for answer in answers:
            assert not leaked(answer, out), answer
            hostile.held("P4 echo-off answers")
