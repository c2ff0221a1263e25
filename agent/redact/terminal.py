"""Passwords typed into terminals: fields a prompt asked for, or whose text the screen never showed.

A terminal program that asks for a password (``sudo``, ``getpass``, ``read -s``, ``openssl``,
``gpg``, ``ssh-keygen``, git's credential prompt, database clients...) turns echo off: the
volunteer types blind, and the keys reach the store like any others.  Detectors cannot tell
such a field from a command; the screen can.  Pure given the frame reads and the OCR engine
(no file, nothing logged: fields and screen text are captured content, and nothing here puts
them into a message).

**With the screen** (the session has frames and OCR read them, :mod:`agent.redact.screen`):
a field typed in a terminal (:func:`agent.keyboard.editing.is_terminal`) and ended by Enter (or
ctrl+C, or capture stopping: :data:`ENDINGS`) is a password when

* **echo**: its text appears on none of the screens from its first key to
  :data:`AFTER_NS` after its last (the terminal window's part of what OCR read, with
  whitespace, punctuation, case and OCR's O/0, I/l/1, S/5, B/8, Z/2 confusions folded,
  see :func:`shown`), or
* **prompt**: the last line of text in the terminal window when its first key went down
  asks for a password, passphrase, PIN, secret or token (:func:`asks_for_secret`).

**Without the screen** (no screen scope, OCR off or no engine): the older command rule alone
— up to :data:`PROMPTED_FIELDS` one-word fields entered right after a command that asks for a
password (``sudo``, ``ssh``, ``passwd``, ``openssl genrsa -aes256``...).  The manifest says
which of the two ran (:func:`evidence`).
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agent.events import Event, KeyPress, WindowFocus
from agent.export.frame_data import frame_pixels
from agent.keyboard.editing import Field, is_terminal
from agent.redact.screen import Box, FrameRead, OcrFailed, OcrFn, Word, canonical, lines

#: Version of these rules (the manifest names it).
RULES_VERSION = "1"
#: How long after a field's last key the screen is still looked at (the settled frame comes
#: at most 500 ms after an action, plus one grab interval).
AFTER_NS = 1_000_000_000
#: How a field may end to be looked at: Enter, ctrl+C / ctrl+Z at the prompt, or capture
#: stopping before Enter (a pause, a deny rule, the session's end: the keys typed blind are
#: stored all the same).  Not Escape, Tab, arrows, clicks or focus changes: an editor's
#: commands (vim's ``dd``, ``ciw``) end that way and are never shown as typed.
ENDINGS = frozenset({"enter", "interrupt", "marker", "end"})
#: Only this much of a field's text (letters and digits) is looked for on screen.
LOOK_FOR = 48
#: Only this much of a window's text (letters and digits) is searched (a 4K terminal holds less).
MAX_SEEN = 40_000
#: Only the end of a line this long is read for a prompt (a prompt ends its line).
PROMPT_TAIL = 300
#: Pixels a word's centre may lie outside the terminal window's rectangle (borders).
SLACK = 8
#: At most this many frames of a field are read again in its terminal window alone.
LOOKS = 4

# --- the command rule (no screen) -------------------------------------------------------------------

#: Fields typed after one of these commands in a terminal are passwords when they are one word.
ASKS_FOR_PASSWORD = re.compile(
    r"^\s*(?:\S+\s+)*?(?:sudo|su|doas|pkexec|passwd|ssh|scp|sftp|ssh-add|ssh-keygen|kinit|gpg|gpg2|"
    r"(?:mysql|mariadb|mysqldump)\b.*\s-p|psql|docker\s+login|podman\s+login|"
    r"git\s+(?:push|pull|clone|fetch)|openssl\s+(?:genrsa|genpkey|req|rsa|ec|pkcs12|pkcs8|enc|passwd)|"
    r"cryptsetup|age\s+(?:.*\s)?-p|zip\s+(?:.*\s)?-e|vault\s+login)(?:\s|$)"
)
#: How many one-word fields after such a command are taken as passwords (passwd asks three times).
PROMPTED_FIELDS = 3

# --- the prompt rule --------------------------------------------------------------------------------

#: A line that asks for a secret: one of the words, then up to the colon or question mark
#: that ends the line.  What may follow it is a cursor block, which OCR reads as a glyph or
#: two (``f``, ``|``, ``j``), but no shell prompt sign: ``alice@pin:~$`` does not ask.
_ASKS = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|pass\s?phrase|passcode|pin|secret|token|"
    r"passwort|kennwort|mot\s+de\s+passe|contrase[ñn]a|senha|wachtwoord|l[öo]senord|salasana|"
    r"has[łl]o|heslo)\b.{0,120}?[:?：]\s*(?:[^\s$#%>~]{1,2}\s*){0,2}$"
)
#: How a prompt's last line ends: a colon or question mark, perhaps a cursor read as a glyph.
_ENDS = re.compile(r"[:?：]\s*(?:[^\s$#%>~]{1,2}\s*){0,2}$")
#: OCR's digit-for-letter readings inside a prompt's words.
_FOLD = str.maketrans({"0": "o", "1": "l", "|": "l", "5": "s"})


def asks_for_secret(line: str) -> bool:
    """Whether a terminal line (as OCR read it) asks for a password, passphrase, PIN, secret or token.

    The word must come before a colon or question mark that ends the line: ``Password:``,
    ``[sudo] password for alice:``, ``Enter PEM pass phrase:``, ``Password for
    'https://alice@github.com':``, ``Enter passphrase (empty for no passphrase):``.  A shell
    prompt (``alice@pin:~$``) or output that merely names a secret does not ask.
    """
    text = " ".join(line[-4 * PROMPT_TAIL :].split())[-PROMPT_TAIL:]
    return bool(_ASKS.search(text) or _ASKS.search(text.translate(_FOLD)))


# --- what the screen showed -------------------------------------------------------------------------

Rect = tuple[int, int, int, int]  # left, top, right, bottom in virtual-screen pixels


@dataclass(frozen=True, slots=True)
class _Seen:
    """Letters and digits of the lines in a window, joined, with where OCR words start and end,
    and the last word of each line (where a line's cursor is, after what was just typed)."""

    text: str
    starts: frozenset[int]
    ends: frozenset[int]
    tails: tuple[str, ...]
    #: Every character OCR read, case folded, without spaces (for text without letters or digits).
    raw: str


def _index(shown_lines: Sequence[Sequence[Word]]) -> _Seen:
    parts: list[str] = []
    raw: list[str] = []
    starts: set[int] = set()
    ends: set[int] = set()
    tails: list[str] = []
    pos = 0
    for words in shown_lines:
        last = ""
        for word in words:
            raw.append(word.text.casefold())
            piece = canonical(word.text)
            if piece and pos < MAX_SEEN:
                starts.add(pos)
                parts.append(piece)
                pos += len(piece)
                ends.add(pos)
                last = piece
        if last:
            tails.append(last)
    joined = "".join("".join(raw).split())
    return _Seen("".join(parts), frozenset(starts), frozenset(ends), tuple(tails), joined[:MAX_SEEN])


def _need(n: int) -> int:
    """How much of a text's start must be seen: all of a short one, 60 % of a longer one."""
    return n if n <= 4 else max(4, -(-3 * n // 5))


def shown(typed: str, seen_texts: Iterable[_Seen]) -> bool:
    """Whether ``typed`` (a field's text) shows in any of ``seen_texts``.

    Letters and digits only, folded like :func:`agent.redact.screen.canonical`; the first
    :data:`LOOK_FOR` of them are looked for.  Shown means: its start, at least all of a text
    up to 4 characters and 60 % of a longer one (a frame taken while it was being typed shows
    a part; a command like ``clear`` then wipes it), found exactly — beginning where an OCR
    word begins, or, for the whole text, ending where one ends, when it is shorter than 6 —
    or, from 6 characters on, with at most one OCR error (substitution, insertion or
    deletion) in 6 on top of those; a text of 2 to 5 also when a line's last word (where
    the cursor is) is that text with one character misread and at most two more run into
    the cursor block.  A text with no letter or digit (``!!``, ``..``) is looked for as
    typed, spaces aside.
    """
    t = canonical(typed)[:LOOK_FOR]
    if not t:  # punctuation alone ("!!", ".."): looked for as it is
        bare = "".join(typed.casefold().split())[:LOOK_FOR]
        return bool(bare) and any(bare in seen.raw for seen in seen_texts)
    need = _need(len(t))
    grams = {t[i : i + 3] for i in range(len(t) - 2)} if len(t) >= 6 else set()
    for seen in seen_texts:
        if _exact(t, need, seen):
            return True
        if 2 <= len(t) < 6 and any(_at_cursor(t, tail) for tail in seen.tails):
            return True
        if grams and any(g in seen.text for g in grams) and _close(t, max(need, 6), seen.text):
            return True
    return False


def _at_cursor(t: str, tail: str) -> bool:
    """Whether a line's last word is a short ``t`` misread once, or run into the cursor block.

    OCR reads ``:wq`` and the block after it as ``wall``: one character off, two added.
    """
    if not len(t) <= len(tail) <= len(t) + 2:
        return False
    return sum(a != b for a, b in zip(t, tail[: len(t)], strict=True)) <= 1


def _exact(t: str, need: int, seen: _Seen) -> bool:
    for p in range(len(t), need - 1, -1):
        piece = t[:p]
        at = seen.text.find(piece)
        while at >= 0:
            if p >= 6 or at in seen.starts or (p == len(t) and at + p in seen.ends):
                return True
            at = seen.text.find(piece, at + 1)
    return False


def _close(t: str, need: int, hay: str) -> bool:
    """Whether a prefix of ``t`` is in ``hay`` within one edit in six, ``need`` matching besides (Sellers)."""
    if need > len(t):
        return False
    windows = _windows(t, hay)
    for lo, hi in windows:
        s = hay[lo:hi]
        row = [0] * (len(s) + 1)  # D[0][j] = 0: a match may start anywhere
        for i in range(1, len(t) + 1):
            ch = t[i - 1]
            new = [i] + [0] * len(s)
            for j in range(1, len(s) + 1):
                new[j] = min(row[j - 1] + (ch != s[j - 1]), row[j] + 1, new[j - 1] + 1)
            row = new
            least = min(row)
            if least <= i // 6 and i - least >= need:  # the errors come on top of what must match
                return True
            if least > len(t) // 6:
                break  # never close enough again: the least distance only grows
    return False


def _windows(t: str, hay: str) -> list[tuple[int, int]]:
    """Stretches of ``hay`` where a close match of ``t`` could lie: around its exact 3-grams."""
    slack = len(t) // 6 + 1
    spans: list[tuple[int, int]] = []
    for i in range(len(t) - 2):
        gram = t[i : i + 3]
        at = hay.find(gram)
        while at >= 0:
            spans.append((max(0, at - i - slack), min(len(hay), at - i + len(t) + slack)))
            at = hay.find(gram, at + 1)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


# --- the screen over time ---------------------------------------------------------------------------


@dataclass
class _Ask:
    """What is asked of the screen for one field."""

    text: str
    rect: Rect | None
    prompt_at: int  # index of the frame shown when the field's first key went down (-1: none)
    first: int  # the frames from the one after that...
    last: int  # ...to this one (inclusive) are the field's evidence
    prompt: bool = False
    seen: bool = False


class ScreenText:
    """What OCR read on a session's screens, replayed in time (regions read again replace older words).

    :param reads: :func:`agent.redact.screen.read_frames` of the session's frames.
    :param frames: those frames (same order), and ``ocr`` the engine that read them: a field
        whose text the reads of changed regions do not show is looked for again in its
        terminal window alone, on up to :data:`LOOKS` frames — OCR reads a terminal much better
        without the title bar (and, when a region takes it in, the desktop beside it).
        Without them, the reads alone.
    """

    def __init__(
        self, reads: Sequence[FrameRead], frames: Sequence[Any] = (), ocr: OcrFn | None = None
    ) -> None:
        self.reads = list(reads)
        self.times = [r.t_ns for r in self.reads]
        self.frames = list(frames)
        if self.frames and [f.t_ns for f in self.frames] != self.times:
            msg = "the frames given are not the ones that were read"
            raise ValueError(msg)
        self.ocr = ocr if self.frames else None
        #: Frames read again in a terminal window (for the manifest and benchmarks: a count).
        self.looks = 0

    def ask(self, fields: Sequence[tuple[Field, Rect | None, int, int]]) -> list[tuple[bool, bool]]:
        """For each ``(field, window rect, first key t_ns, last key t_ns)``: (prompt asked, text shown)."""
        asks: list[_Ask] = []
        at: dict[int, list[_Ask]] = {}
        for fld, rect, t0, t1 in fields:
            before = bisect.bisect_right(self.times, t0) - 1
            end = bisect.bisect_right(self.times, t1 + AFTER_NS) - 1
            ask = _Ask(fld.text, rect, before, before + 1, end)
            asks.append(ask)
            for k in range(max(before, 0), end + 1):
                at.setdefault(k, []).append(ask)
        state: list[Word] | None = []
        for k, read in enumerate(self.reads):
            state = _replay(state, read)
            if state is None:
                continue  # OCR failed here: nothing known (the echo rule then finds nothing)
            for ask in at.get(k, ()):
                shown_lines = _window_lines(state, read, ask.rect)
                if k == ask.prompt_at:
                    ask.prompt = _asks_in(shown_lines)
                elif not ask.seen:
                    ask.seen = shown(ask.text, [_index(shown_lines)])
        if self.ocr is not None:
            for ask in asks:
                if not ask.seen:
                    ask.seen = self._look_again(ask, self.ocr)
                if not ask.prompt and ask.prompt_at >= 0 and not any(c.isspace() for c in ask.text):
                    ask.prompt = self._prompt_again(ask, self.ocr)
        return [(a.prompt, a.seen) for a in asks]

    def _prompt_again(self, ask: _Ask, ocr: OcrFn) -> bool:
        """Whether OCR of the window's last two lines of text alone, when typing began, asks for a secret.

        Asked only for one-word fields (passwords, PINs and tokens are; most commands are
        not), to keep the reading cheap: one strip of two text lines.
        """
        if self.reads[ask.prompt_at].words is None:
            return False
        crop = self._window_crop(ask.prompt_at, ask.rect)
        strip = None if crop is None else last_lines(crop)
        if crop is None or strip is None:
            return False
        self.looks += 1
        try:
            line = crop.crop((0, strip[0], crop.size[0], strip[1]))
            words = ocr(line, [(0, 0, line.size[0], line.size[1])])
        except OcrFailed:
            return False
        return _asks_in([list(ln.words) for ln in lines(words)])

    def _look_again(self, ask: _Ask, ocr: OcrFn) -> bool:
        """Whether OCR of the terminal window alone shows the field's text on one of its frames."""
        ks = list(range(ask.first, ask.last + 1))
        if len(ks) > LOOKS:
            ks = ks[: LOOKS // 2] + ks[-(LOOKS - LOOKS // 2) :]
        for k in ks:
            if self.reads[k].words is None:
                continue  # left out: it shows nothing
            words = self._window_words(k, ask.rect, ocr)
            if words is not None and shown(ask.text, [_index([list(ln.words) for ln in lines(words)])]):
                return True
        return False

    def _window_words(self, k: int, rect: Rect | None, ocr: OcrFn) -> list[Word] | None:
        """OCR of frame ``k`` cropped to ``rect`` (None if the engine failed or the window is off it)."""
        crop = self._window_crop(k, rect)
        if crop is None:
            return None
        self.looks += 1
        try:
            return list(ocr(crop, [(0, 0, crop.size[0], crop.size[1])]))
        except OcrFailed:
            return None

    def _window_crop(self, k: int, rect: Rect | None) -> Any | None:
        """Frame ``k`` cropped to ``rect`` (None: the window is not on it)."""
        read = self.reads[k]
        box = (0, 0, read.width, read.height)
        if rect is not None:
            box = (
                max(0, rect[0] - read.left),
                max(0, rect[1] - read.top),
                min(read.width, rect[2] - read.left),
                min(read.height, rect[3] - read.top),
            )
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            return None
        return frame_pixels(self.frames[k]).crop(box)


#: Pixels at a window's right edge left out when looking for text rows (a scroll bar).
_SCROLLBAR = 24
#: Grey levels a pixel must differ from the background by to be ink.
_INK = 60


def last_lines(window: Any, n: int = 2) -> tuple[int, int] | None:
    """Rows ``(top, bottom)`` of the last ``n`` lines of text in a window's image, or None if it is blank.

    Text lines are runs of rows holding ink (pixels far from the most common grey level, the
    background); the rightmost :data:`_SCROLLBAR` pixels are left out.
    """
    grey = window.convert("L")
    width, height = grey.size
    body = grey.crop((0, 0, max(1, width - _SCROLLBAR), height))
    hist = body.histogram()
    bg = max(range(256), key=hist.__getitem__)
    ink = body.point([255 if abs(v - bg) > _INK else 0 for v in range(256)])
    rows = ink.getprojection()[1]
    runs: list[tuple[int, int]] = []
    y = 0
    while y < height:
        if rows[y]:
            start = y
            while y < height and rows[y]:
                y += 1
            if runs and start - runs[-1][1] <= 2:  # a dot above a letter, an underline
                runs[-1] = (runs[-1][0], y)
            else:
                runs.append((start, y))
        y += 1
    if not runs:
        return None
    top, bottom = runs[-min(n, len(runs))][0], runs[-1][1]
    return max(0, top - 4), min(height, bottom + 4)


def _asks_in(shown_lines: Sequence[Sequence[Word]]) -> bool:
    """Whether the last line of text (or the last two, for a prompt that wrapped) asks for a secret."""
    tail = [" ".join(w.text for w in line) for line in shown_lines[-2:]]
    if not tail:
        return False
    if asks_for_secret(tail[-1]):
        return True
    return len(tail) == 2 and _ENDS.search(tail[-1]) is not None and asks_for_secret(" ".join(tail))


def _replay(state: list[Word] | None, read: FrameRead) -> list[Word] | None:
    """The words on screen after ``read``: its words, and the earlier ones outside its regions."""
    if read.words is None:
        return None
    if read.whole or state is None:
        return list(read.words) if read.whole else None
    kept = [w for w in state if not any(_meets(w.box, r) for r in read.regions)]
    return kept + list(read.words)


def _meets(a: Box, b: Box) -> bool:
    """Whether two boxes share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _window_lines(state: Sequence[Word], read: FrameRead, rect: Rect | None) -> list[list[Word]]:
    """The lines of words whose centre lies in ``rect`` (all of them without one), top to bottom."""
    if rect is not None:
        left, top, right, bottom = (
            rect[0] - read.left - SLACK,
            rect[1] - read.top - SLACK,
            rect[2] - read.left + SLACK,
            rect[3] - read.top + SLACK,
        )
        state = [
            w
            for w in state
            if left <= (w.box[0] + w.box[2]) / 2 <= right and top <= (w.box[1] + w.box[3]) / 2 <= bottom
        ]
    found = lines(state)
    found.sort(key=lambda ln: (min(w.box[1] for w in ln.words), ln.words[0].box[0]))
    return [list(ln.words) for ln in found]


# --- the fields -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    """Terminal fields taken as passwords, and by which rule (a field may meet both screen rules)."""

    fields: tuple[Field, ...]
    rules: dict[str, int]
    with_screen: bool


def password_fields(fields: Sequence[Field], events: Sequence[Event], screen: ScreenText | None) -> Found:
    """The terminal fields that are passwords: by the screen rules when ``screen`` is given, else by command.

    :param events: the events ``fields`` were reconstructed from (their indices point here).
    """
    if screen is None:
        found = command_fields(fields)
        return Found(tuple(found), {"command": len(found)}, with_screen=False)
    focus = _focus_index(events)
    asked: list[tuple[Field, Rect | None, int, int]] = []
    for fld in fields:
        if fld.ended_by in ENDINGS and is_terminal(fld.app_class) and fld.text:
            rect = _rect(events, focus, fld.first)
            asked.append((fld, rect, events[fld.first].t_ns, _last_key(events, fld)))
    answers = screen.ask(asked)
    rules: Counter[str] = Counter({"prompt": 0, "echo": 0})
    out: list[Field] = []
    for (fld, *_), (prompt, seen) in zip(asked, answers, strict=True):
        if prompt:
            rules["prompt"] += 1
        if not seen:
            rules["echo"] += 1
        if prompt or not seen:
            out.append(fld)
    return Found(tuple(out), dict(rules), with_screen=True)


def command_fields(fields: Sequence[Field]) -> list[Field]:
    """One-word fields entered in a terminal right after a command that asks for a password."""
    out: list[Field] = []
    left = 0
    app: str | None = None
    for fld in fields:
        if (
            left
            and fld.app_class == app
            and fld.ended_by == "enter"
            and fld.text
            and not any(c.isspace() for c in fld.text)
        ):
            out.append(fld)
            left -= 1
            continue
        left = 0
        if fld.ended_by == "enter" and is_terminal(fld.app_class) and ASKS_FOR_PASSWORD.match(fld.text):
            left, app = PROMPTED_FIELDS, fld.app_class
    return out


def _focus_index(events: Sequence[Event]) -> list[int]:
    return [i for i, e in enumerate(events) if isinstance(e, WindowFocus)]


def _rect(events: Sequence[Event], focus: list[int], at: int) -> Rect | None:
    """The focused window's rectangle at event ``at``, if the OS told it."""
    k = bisect.bisect_right(focus, at) - 1
    if k < 0:
        return None
    ev: Any = events[focus[k]]
    if ev.x is None or ev.y is None or not ev.width or not ev.height:
        return None
    return (ev.x, ev.y, ev.x + ev.width, ev.y + ev.height)


def _last_key(events: Sequence[Event], fld: Field) -> int:
    """Time of the field's last key press (its Enter)."""
    for i in range(fld.last, fld.first - 1, -1):
        if isinstance(events[i], KeyPress):
            return events[i].t_ns
    return events[fld.last].t_ns


def evidence(found: Found, why_not: str | None) -> dict[str, Any]:
    """The manifest's entry: which rules ran (``screen+prompt``, or ``command`` alone and why) and counts."""
    entry: dict[str, Any] = {
        "name": "terminal-passwords",
        "version": RULES_VERSION,
        "rule": "screen+prompt" if found.with_screen else "command",
        "fields": dict(sorted(found.rules.items())),
    }
    if not found.with_screen:
        entry["no_screen"] = why_not or "no screen"
    return entry


__all__ = [
    "AFTER_NS",
    "ASKS_FOR_PASSWORD",
    "RULES_VERSION",
    "Found",
    "ScreenText",
    "asks_for_secret",
    "command_fields",
    "evidence",
    "password_fields",
    "shown",
]
