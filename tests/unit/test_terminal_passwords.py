"""The terminal password rule: prompts that ask for a secret, text the screen showed, and the fields.

The screen is given as frame reads (what OCR read, where, when) made here by hand, and frames
rendered with Pillow where a rule reads pixels; the real display and tesseract are in
tests/display/test_echo_off_prompts.py.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

import pytest
from PIL import Image, ImageDraw, ImageFont

from agent.events import Event, Frame, KeyPress, KeyRelease, Marker, WindowFocus
from agent.keyboard import replay
from agent.redact import terminal
from agent.redact.screen import Box, FrameRead, OcrFailed, Word
from agent.redact.terminal import ScreenText, asks_for_secret, last_lines, password_fields, shown

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
MS = 1_000_000
S = 1_000_000_000

# --- prompts ----------------------------------------------------------------------------------------

ASKING = [
    "Password:",
    "Password: ",
    "[sudo] password for alice:",
    "Enter PEM pass phrase:",
    "Verifying - Enter PEM pass phrase:",
    "Enter passphrase for key '/home/alice/.ssh/id_ed25519':",
    "Password for 'https://alice@github.com':",
    "Enter passphrase (empty for no passphrase):",
    "Enter same passphrase again:",
    "enter AES-256-CBC encryption password:",
    "PIN:",
    "Enter PIN for 'PIV Card':",
    "Token:",
    "Enter secret:",
    "Passwort:",
    "Mot de passe :",
    "Contraseña:",
    "Passphrase: |",  # the cursor block, as OCR reads it
    "Password:fl",
    "Passw0rd:",  # OCR's 0 for o
    "Do you want to store this password?",
]
NOT_ASKING = [
    "alice@pin:~$",
    "alice@token:~/secrets$",
    "$ cat tokens.txt",
    "Username for 'https://github.com':",
    "Enter file in which to save the key (/root/.ssh/id_ed25519):",
    "passwd: password updated successfully",
    "Password: $",  # the shell's prompt came back after it
    "Tokens used: 12 of 50",
    "the secret is out",
    "Compass:",
    "Spinning:",
    "",
]


@pytest.mark.parametrize("line", ASKING)
def test_a_line_that_asks_for_a_secret(line: str) -> None:
    assert asks_for_secret(line)


@pytest.mark.parametrize("line", NOT_ASKING)
def test_a_line_that_does_not_ask(line: str) -> None:
    assert not asks_for_secret(line)


def test_a_hostile_line_is_read_in_bounded_time() -> None:
    assert not asks_for_secret("password " * 100_000 + "$")
    assert asks_for_secret("x" * 1_000_000 + " Password:")


# --- shown ------------------------------------------------------------------------------------------


def seen(*rows: str) -> list[Any]:
    """The index ``shown`` searches, built from OCR lines (words split on spaces)."""
    words = [
        [Word((10 * i, 20 * n, 10 * i + 9, 20 * n + 14), w) for i, w in enumerate(row.split())]
        for n, row in enumerate(rows)
    ]
    return [terminal._index(words)]


def test_a_command_on_screen_is_shown() -> None:
    assert shown("ls -la", seen("total 8", "$ ls -la"))
    assert shown("echo hello", seen("$ echo hello", "hello", "$"))


def test_ocr_confusions_case_and_punctuation_are_folded() -> None:
    assert shown("ls -la", seen("$ 1s -lalf"))  # l read as 1, the cursor block as f
    assert shown("python3 -c 'print(1)'", seen("$ python3 -c ‘print(l)'"))
    assert shown("cd /tmp/Old", seen("$ cd /tmp/0ld"))


def test_a_long_text_survives_one_misread_in_six() -> None:
    assert shown("git commit -m 'fix the parser'", seen("$ git cornmit -m 'fix the parzer'"))
    assert not shown("git commit -m 'fix the parser'", seen("$ gxt cxmmxt -m 'fxx the pxrxer'"))


def test_a_wrapped_command_is_shown() -> None:
    assert shown("echo abcdefghijklmnopqrstuvwxyz", seen("$ echo abcdefghijklm", "nopqrstuvwxyz"))


def test_the_start_of_a_command_the_screen_then_lost_is_enough() -> None:
    assert shown("clear", seen("$ clea"))  # seen while typing; clear wiped it after Enter
    assert shown("vim notes.txt", seen("$ vim note"))  # 60 % of it
    assert not shown("vim notes.txt", seen("$ vim"))


def test_a_short_text_must_start_or_end_a_word() -> None:
    assert shown("ls", seen("$ ls"))
    assert shown("atus", seen("$ git status"))  # typed after a Tab completion
    assert not shown("tat", seen("$ git status"))
    assert not shown("Pw9x", seen("$ xPw9xy"))


def test_a_short_text_run_into_the_cursor_is_shown() -> None:
    assert shown(":wq", seen("one", "two", "wall"))  # OCR's reading of ":wq" and the block
    assert not shown(":wq", seen("wall one"))  # only where a line ends
    assert not shown(":wq", seen("one", "xyzzy"))


def test_punctuation_alone_is_looked_for_as_typed() -> None:
    assert shown("!!", seen("$ !!", "echo hi"))
    assert shown("..", seen("$ cd .."))
    assert not shown("!!", seen("$ echo hi"))


def test_a_password_nowhere_on_screen_is_not_shown() -> None:
    assert not shown("Qv7canaryPw2k", seen("$ python3 -c 'import getpass; getpass.getpass()'", "Password:"))
    assert not shown("Qv7canaryPw2k", [])
    assert not shown("", seen("anything"))


def test_a_hostile_screen_is_searched_in_bounded_time() -> None:
    big = seen(*(["a" * 200] * 400))  # 80,000 letters, a 3-gram of the text at every place
    started = time.perf_counter()
    assert not shown("aaab" * 12, big)
    assert time.perf_counter() - started < 30  # does not hang (bounded by the screen's size)


# --- the screen over time ---------------------------------------------------------------------------

RECT = (100, 50, 700, 450)  # the terminal window, in screen coordinates
TERM = WindowFocus(1, "xterm", "XTerm", 7, RECT[0], RECT[1], RECT[2] - RECT[0], RECT[3] - RECT[1])


def read(t: int, rows: dict[int, str], *, regions: Sequence[Box] | None = None) -> FrameRead:
    """A frame read at ``t``: ``rows`` maps a screen row's top (in the window) to its text."""
    words: list[Word] = []
    for y, row in rows.items():
        x = RECT[0] + 5
        for w in row.split():
            words.append(Word((x, RECT[1] + y, x + 8 * len(w), RECT[1] + y + 14), w))
            x += 8 * len(w) + 8
    whole = ((0, 0, 1000, 800),)
    return FrameRead(t, 0, 0, 1000, 800, tuple(regions) if regions is not None else whole, tuple(words))


class Keys:
    """Key events typed into the terminal from ``t0``, 50 ms a key."""

    def __init__(self, t0: int) -> None:
        self.t = t0
        self.events: list[Event] = []

    def type(self, value: str) -> Keys:
        for ch in value:
            self.t += 50 * MS
            name = "space" if ch == " " else None
            char = None if ch == " " else ch
            self.events.append(KeyPress(self.t, char, name, None, ()))
            self.events.append(KeyRelease(self.t + 10 * MS, char, name, None, ()))
        return self

    def enter(self) -> Keys:
        self.t += 50 * MS
        self.events.append(KeyPress(self.t, None, "enter", None, ()))
        self.events.append(KeyRelease(self.t + 10 * MS, None, "enter", None, ()))
        return self


def decide(events: Sequence[Event], reads: Sequence[FrameRead]) -> terminal.Found:
    ordered = sorted(events, key=lambda e: e.t_ns)
    return password_fields(replay.reconstruct(ordered), ordered, ScreenText(reads))


def test_an_echoed_command_is_kept_and_a_blind_answer_is_a_password() -> None:
    k = Keys(1 * S).type("python3 -c 'import getpass; getpass.getpass()'").enter()
    cmd_done = k.t
    k.t += 1 * S
    k.type("Qv7canaryPw2k").enter()
    reads = [
        read(cmd_done - 100 * MS, {0: "$ python3 -c 'import getpass; getpass.getpass()'"}),
        read(cmd_done + 400 * MS, {0: "$ python3 -c 'import getpass; getpass.getpass()'", 20: "Password:"}),
        read(
            k.t + 400 * MS, {0: "$ python3 -c 'import getpass; getpass.getpass()'", 20: "Password:", 40: "$"}
        ),
    ]
    found = decide([TERM, *k.events], reads)
    assert [f.text for f in found.fields] == ["Qv7canaryPw2k"]
    assert found.rules == {"prompt": 1, "echo": 1} and found.with_screen


def test_a_prompt_read_in_an_earlier_frame_still_counts() -> None:
    """Places outside a frame's changed regions keep what an earlier frame read there."""
    k = Keys(3 * S).type("tok3n-value-shown").enter()  # a prompt that echoes
    reads = [
        read(1 * S, {0: "$ ./login", 20: "Token:"}),
        read(2 * S, {}, regions=[(0, 0, 1000, 40)]),  # the title bar changed, above the window
        read(k.t + 300 * MS, {20: "Token: tok3n-value-shown"}, regions=[(100, 60, 700, 100)]),
    ]
    found = decide([TERM, *k.events], reads)
    assert [f.text for f in found.fields] == ["tok3n-value-shown"]
    assert found.rules == {"prompt": 1, "echo": 0}


def test_a_prompt_beside_a_change_on_its_rows_is_still_known() -> None:
    """A region read on the prompt's rows, beside the window, replaces only the words inside it
    (full-width bands dropped the prompt with them, and the field then looked echoed)."""
    k = Keys(3 * S).type("tok3n-value-shown").enter()
    reads = [
        read(1 * S, {0: "$ ./login", 20: "Token:"}),
        read(2 * S, {}, regions=[(750, 60, 1000, 90)]),  # a clock beside the window, on the prompt's rows
        read(k.t + 300 * MS, {20: "Token: tok3n-value-shown"}, regions=[(100, 60, 700, 100)]),
    ]
    found = decide([TERM, *k.events], reads)
    assert [f.text for f in found.fields] == ["tok3n-value-shown"]
    assert found.rules == {"prompt": 1, "echo": 0}
    across = [*reads[:1], read(2 * S, {}, regions=[(0, 60, 1000, 90)]), *reads[2:]]  # the control
    assert decide([TERM, *k.events], across).rules == {"prompt": 0, "echo": 0}


def test_no_frame_after_the_first_key_means_not_shown() -> None:
    k = Keys(5 * S).type("ls").enter()
    found = decide([TERM, *k.events], [read(1 * S, {0: "$"})])
    assert [f.text for f in found.fields] == ["ls"]  # the screen never showed it: fail closed


def test_a_frame_ocr_failed_on_shows_nothing() -> None:
    k = Keys(1 * S).type("echo hello").enter()
    failed = FrameRead(k.t + 200 * MS, 0, 0, 1000, 800, ((0, 0, 1000, 800),), None)
    found = decide([TERM, *k.events], [read(0, {0: "$"}), failed])
    assert [f.text for f in found.fields] == ["echo hello"]
    later = read(k.t + 300 * MS, {0: "$ echo hello"}, regions=[(100, 50, 700, 80)])  # a part: still unknown
    assert [f.text for f in decide([TERM, *k.events], [read(0, {}), failed, later]).fields] == ["echo hello"]


def test_text_shown_outside_the_terminal_window_does_not_count() -> None:
    k = Keys(1 * S).type("hunter2hunter").enter()
    elsewhere = FrameRead(
        k.t + 200 * MS, 0, 0, 1000, 800, ((0, 0, 1000, 800),), (Word((800, 600, 900, 614), "hunter2hunter"),)
    )
    assert [f.text for f in decide([TERM, *k.events], [elsewhere]).fields] == ["hunter2hunter"]
    no_geometry = WindowFocus(1, "xterm", "XTerm", 7)
    assert decide([no_geometry, *k.events], [elsewhere]).fields == ()  # the whole screen then


def test_which_terminal_fields_are_looked_at() -> None:
    editor = WindowFocus(1, "notes", "Gedit", 8, *RECT[:2], 600, 400)
    k = Keys(1 * S).type("blind typing").enter()
    assert decide([editor, *k.events], []).fields == ()  # not a terminal
    k = Keys(1 * S).type("ddciw")
    k.events.append(KeyPress(k.t + 50 * MS, None, "esc", None, ()))  # vim's commands, never shown
    assert decide([TERM, *k.events], []).fields == ()
    k = Keys(1 * S).type("Qv7canaryPw2k")
    k.events.append(KeyPress(k.t + 50 * MS, "c", None, None, ("ctrl",)))  # ctrl+C at the prompt
    assert [f.text for f in decide([TERM, *k.events], []).fields] == ["Qv7canaryPw2k"]
    k = Keys(1 * S).type("Qv7canaryPw2k")  # typed blind, then the volunteer paused, or stopped
    paused = [TERM, *k.events, Marker(k.t + 100 * MS, "pause", {})]
    assert [f.text for f in decide(paused, []).fields] == ["Qv7canaryPw2k"]
    assert [f.text for f in decide([TERM, *k.events], []).fields] == ["Qv7canaryPw2k"]


def test_without_the_screen_the_command_rule_alone() -> None:
    k = Keys(1 * S).type("sudo apt update").enter().type("Tr0ub4dor3").enter().type("echo hi").enter()
    ordered = [TERM, *k.events]
    found = password_fields(replay.reconstruct(ordered), ordered, None)
    assert [f.text for f in found.fields] == ["Tr0ub4dor3"]
    assert found.rules == {"command": 1} and not found.with_screen
    entry = terminal.evidence(found, "no frames (no screen scope)")
    assert entry["rule"] == "command" and entry["no_screen"] == "no frames (no screen scope)"
    assert terminal.evidence(decide(ordered, []), None)["rule"] == "screen+prompt"


@pytest.mark.parametrize(
    "command",
    [
        "sudo -v",
        "ssh alice@example.org",
        "openssl genrsa -aes256 -out k.pem 2048",
        "gpg --symmetric notes.txt",
        "ssh-keygen -t ed25519",
        "age -p -o x.age notes.txt",
        "docker login",
        "mysql -u root -p",
    ],
)
def test_commands_that_ask_for_a_password(command: str) -> None:
    assert terminal.ASKS_FOR_PASSWORD.match(command)


@pytest.mark.parametrize("command", ["ls -la", "openssl x509 -in c.pem -text", "git status", "sudoku"])
def test_commands_that_do_not(command: str) -> None:
    assert not terminal.ASKS_FOR_PASSWORD.match(command)


# --- reading a terminal window again ----------------------------------------------------------------


def terminal_image(rows: Sequence[str], size: tuple[int, int] = (1000, 800)) -> Image.Image:
    img = Image.new("RGB", size, (0, 0, 0))  # the desktop
    draw = ImageDraw.Draw(img)
    draw.rectangle(RECT, fill=(255, 255, 255))
    font = ImageFont.truetype(FONT, 14)
    for i, row in enumerate(rows):
        draw.text((RECT[0] + 4, RECT[1] + 4 + 20 * i), row, fill=(0, 0, 0), font=font)
    return img


def frame_of(t: int, img: Image.Image) -> Frame:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Frame(t, 0, 0, img.size[0], img.size[1], "png", "settled", buf.getvalue())


class CropOcr:
    """Stand-in engine for crops: reads ``text`` when the crop is the window (or a strip of it)."""

    def __init__(self, by_height: dict[int, str], fail: bool = False) -> None:
        self.by_height = by_height
        self.fail = fail
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, image: Any, boxes: Sequence[Box]) -> list[Word]:
        assert list(boxes) == [(0, 0, *image.size)]  # a crop is read whole
        self.sizes.append(image.size)
        if self.fail:
            raise OcrFailed("stand-in")
        value = self.by_height.get(image.size[1], "")
        return [Word((5 + 60 * i, 5, 60 + 60 * i, 19), w) for i, w in enumerate(value.split())]


def test_a_field_the_band_reads_missed_is_read_again_in_its_window() -> None:
    k = Keys(1 * S).type("ls -la").enter()
    img = terminal_image(["$ ls -la", "total 0"])
    reads = [read(k.t + 200 * MS, {0: "bo echo-off"})]  # what full-width bands gave on a real screen
    ocr = CropOcr({RECT[3] - RECT[1]: "$ 1s -la total 0"})
    ordered = [TERM, *k.events]
    screen = ScreenText(reads, [frame_of(k.t + 200 * MS, img)], ocr)
    assert password_fields(replay.reconstruct(ordered), ordered, screen).fields == ()
    assert ocr.sizes == [(RECT[2] - RECT[0], RECT[3] - RECT[1])] and screen.looks == 1
    failing = ScreenText(reads, [frame_of(k.t + 200 * MS, img)], CropOcr({}, fail=True))
    assert [f.text for f in password_fields(replay.reconstruct(ordered), ordered, failing).fields] == [
        "ls -la"
    ]


def test_a_one_word_field_has_its_prompt_read_again_in_a_strip() -> None:
    img = terminal_image(["$ ./login", "Token:"])
    k = Keys(2 * S).type("tok3nvalue").enter()
    reads = [read(1 * S, {0: "$ ./login", 20: "X"}), read(k.t + 200 * MS, {20: "Token: tok3nvalue"})]
    strip = last_lines(img.crop(RECT))
    assert strip is not None
    ocr = CropOcr({strip[1] - strip[0]: "$ ./login Token:"})
    frames = [frame_of(1 * S, img), frame_of(k.t + 200 * MS, img)]
    ordered = [TERM, *k.events]
    found = password_fields(replay.reconstruct(ordered), ordered, ScreenText(reads, frames, ocr))
    assert [f.text for f in found.fields] == ["tok3nvalue"] and found.rules == {"prompt": 1, "echo": 0}


def test_last_lines_finds_the_rows_of_the_last_two_lines_of_text() -> None:
    window = terminal_image(["first", "second", "third"]).crop(RECT)
    top, bottom = last_lines(window) or (0, 0)
    assert 20 <= top <= 26 and 56 <= bottom <= 66  # rows 2 and 3 (tops at 24 and 44, 14 px type)
    assert last_lines(Image.new("RGB", (200, 100), "white")) is None
    dark = Image.new("RGB", (300, 100), (20, 20, 20))
    ImageDraw.Draw(dark).text((4, 40), "Password:", fill=(230, 230, 230), font=ImageFont.truetype(FONT, 14))
    assert last_lines(dark) is not None
