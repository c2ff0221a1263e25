"""A text field being typed into: the :class:`Field` the replay returns, the caret-and-selection
buffer that builds it, and the editing operations keys map to (pure).

:mod:`agent.keyboard.replay` walks the key events and decides which key does what
(the module docstring there has the rules); this module holds what a key *does* to a
field: insert at the caret replacing the selection, delete (remembering the text
before each deletion, :attr:`Field.erased`), move by character, word or line, and the
key tables for ordinary fields (:data:`SHORTCUTS`), terminals' readline
(:data:`READLINE`, :data:`READLINE_ALT`) and macOS's Cocoa bindings (:data:`COCOA`).
The text handled here is captured content: nothing in this module prints, logs or puts
it into an exception message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

#: Focused-window classes (X11 WM_CLASS class, Windows executable, macOS bundle id; compared
#: case-insensitively, ``.exe`` stripped) whose keys go to a shell's line editor.
TERMINAL_CLASSES = frozenset(
    {
        # X11
        "xterm",
        "uxterm",
        "urxvt",
        "rxvt",
        "urxvt-unicode",
        "gnome-terminal",
        "gnome-terminal-server",
        "org.gnome.terminal",
        "org.gnome.console",
        "kgx",
        "ptyxis",
        "org.gnome.ptyxis",
        "konsole",
        "org.kde.konsole",
        "yakuake",
        "alacritty",
        "kitty",
        "foot",
        "footclient",
        "xfce4-terminal",
        "terminator",
        "tilix",
        "com.gexperts.tilix",
        "st",
        "st-256color",
        "wezterm",
        "org.wezfurlong.wezterm",
        "lxterminal",
        "mate-terminal",
        "qterminal",
        "sakura",
        "terminology",
        "guake",
        "tilda",
        "ghostty",
        "com.mitchellh.ghostty",
        "terminal",
        # Windows (executable names)
        "windowsterminal",
        "openconsole",
        "conhost",
        "cmd",
        "powershell",
        "pwsh",
        "mintty",
        "wsl",
        "bash",
        # macOS (bundle identifiers)
        "com.apple.terminal",
        "com.googlecode.iterm2",
        "iterm2",
        "net.kovidgoyal.kitty",
        "io.alacritty",
    }
)


#: Fields up to this long keep their text before every deletion, longer ones before each run.
ERASE_EACH_BELOW = 256


@dataclass(frozen=True)
class Field:
    """The typing into one focused text field.

    :ivar text: the field's final text (as far as the keys tell).
    :ivar cells: for each character of ``text``, the index (into the events given to
        :func:`~agent.keyboard.replay.reconstruct`) of the event that produced it: a KeyPress, or a Paste.
    :ivar typed: every character ever inserted, in order, including ones deleted later
        (pasted text included).
    :ivar typed_events: the provenance of each character of ``typed``.
    :ivar first: index of the first event of this field (a key press or a paste).
    :ivar last: index of the last event of this field (a key press, release or paste;
        the release of a field's last key may come after the next field's first event).
    :ivar app_class: the focused window's class when the field started (None: unknown).
    :ivar uncertain: the caret model broke (undo, overwrite mode, unknown paste...): the
        text may differ from what the field shows.
    :ivar ended_by: ``click``, ``focus``, ``tab``, ``enter``, ``escape``,
        ``navigation``, ``shortcut``, ``interrupt``, ``marker`` or ``end``.
    :ivar links: ``(event, tied event)`` index pairs, sorted: each key press of the field
        with its release, a composed character's letter with its dead key.
        :func:`~agent.keyboard.replay.key_windows` takes a tied event along whenever the first is in a window.
    :ivar erased: the field's text and cells as they were right before each deletion
        (backspace, cut, typing over a selection; in fields longer than
        :data:`ERASE_EACH_BELOW` characters, before each run of deletions): a secret typed
        and then deleted is whole in one of them, where ``typed`` may have a deleted typo
        inside it.
    """

    text: str
    cells: tuple[int, ...]
    typed: str
    typed_events: tuple[int, ...]
    first: int
    last: int
    app_class: str | None
    uncertain: bool
    ended_by: str
    links: tuple[tuple[int, int], ...] = ()
    erased: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def streams(self) -> list[tuple[str, str]]:
        """Every ``(stream, text)`` worth scanning: ``text``, ``typed`` and ``erased:K``."""
        out = [("text", self.text), ("typed", self.typed)]
        out += [(f"erased:{k}", text) for k, (text, _) in enumerate(self.erased)]
        return out


def is_terminal(app_class: str | None) -> bool:
    """Whether a window class is a terminal emulator (:data:`TERMINAL_CLASSES`)."""
    if not app_class:
        return False
    name = app_class.strip().lower()
    if name.endswith(".exe"):
        name = name[:-4]
    return name in TERMINAL_CLASSES


def _isword(c: str) -> bool:
    return c.isalnum() or c == "_"


class FieldBuffer:
    """A field being built (mutable); :meth:`freeze` makes the :class:`Field`."""

    __slots__ = (
        "anchor",
        "app_class",
        "caret",
        "chars",
        "deleting",
        "ended_by",
        "erased",
        "first",
        "last",
        "links",
        "paste_pending",
        "prov",
        "terminal",
        "typed",
        "typed_ev",
        "uncertain",
    )

    def __init__(self, first: int, app_class: str | None) -> None:
        self.chars: list[str] = []
        self.prov: list[int] = []
        self.typed: list[str] = []
        self.typed_ev: list[int] = []
        self.links: list[tuple[int, int]] = []
        self.erased: list[tuple[str, tuple[int, ...]]] = []
        self.deleting = False
        self.caret = 0
        self.anchor: int | None = None
        self.first = first
        self.last = first
        self.app_class = app_class
        self.terminal = is_terminal(app_class)
        self.uncertain = False
        self.paste_pending = 0
        self.ended_by = "end"

    def freeze(self) -> Field:
        return Field(
            text="".join(self.chars),
            cells=tuple(self.prov),
            typed="".join(self.typed),
            typed_events=tuple(self.typed_ev),
            first=self.first,
            last=self.last,
            app_class=self.app_class,
            uncertain=self.uncertain,
            ended_by=self.ended_by,
            links=tuple(sorted(self.links)),
            erased=tuple(self.erased),
        )

    # -- editing -------------------------------------------------------------------------------

    def selection(self) -> tuple[int, int] | None:
        a = self.anchor
        if a is None or a == self.caret:
            return None
        return (a, self.caret) if a < self.caret else (self.caret, a)

    def delete(self, lo: int, hi: int) -> None:
        if lo < hi:
            # the text before each deletion, kept for detection (only before each run in a
            # long field: a short one is where a typo right after a secret is fixed and the
            # whole thing deleted in one run)
            if not self.deleting or len(self.chars) <= ERASE_EACH_BELOW:
                self.erased.append(("".join(self.chars), tuple(self.prov)))
                self.deleting = True
            del self.chars[lo:hi]
            del self.prov[lo:hi]
        self.caret = lo
        self.anchor = None

    def delete_selection(self) -> bool:
        sel = self.selection()
        self.anchor = None
        if sel is None:
            return False
        self.delete(*sel)
        return True

    def insert(self, s: str, i: int) -> None:
        sel = self.selection()
        if sel is not None:
            self.delete(*sel)
        self.anchor = None
        c = self.caret
        n = len(s)
        if c == len(self.chars):
            self.chars.extend(s)
            self.prov.extend([i] * n)
        else:
            self.chars[c:c] = s
            self.prov[c:c] = [i] * n
        self.caret = c + n
        self.deleting = False
        self.typed.extend(s)
        self.typed_ev.extend([i] * n)

    def move(self, pos: int, select: bool) -> None:
        if select:
            if self.anchor is None:
                self.anchor = self.caret
        else:
            self.anchor = None
        self.caret = pos

    # -- positions -----------------------------------------------------------------------------

    def line_start(self) -> int:
        chars = self.chars
        p = self.caret
        while p > 0 and chars[p - 1] != "\n":
            p -= 1
        return p

    def line_end(self) -> int:
        chars = self.chars
        n = len(chars)
        p = self.caret
        while p < n and chars[p] != "\n":
            p += 1
        return p

    def word_left(self, pos: int, unix: bool = False) -> int:
        """Start of the word before ``pos`` (``unix``: whitespace-delimited, readline ctrl+W)."""
        chars = self.chars
        if unix:
            while pos > 0 and chars[pos - 1].isspace():
                pos -= 1
            while pos > 0 and not chars[pos - 1].isspace():
                pos -= 1
            return pos
        while pos > 0 and not _isword(chars[pos - 1]):
            pos -= 1
        while pos > 0 and _isword(chars[pos - 1]):
            pos -= 1
        return pos

    def word_right(self, pos: int, windows: bool) -> int:
        """Where a word jump right lands: the next word's start (Windows) or this word's end."""
        chars = self.chars
        n = len(chars)
        if windows:
            start = pos
            while pos < n and _isword(chars[pos]):
                pos += 1
            if pos == start:
                while pos < n and not _isword(chars[pos]) and not chars[pos].isspace():
                    pos += 1
            while pos < n and chars[pos].isspace():
                pos += 1
            return pos
        while pos < n and not _isword(chars[pos]):
            pos += 1
        while pos < n and _isword(chars[pos]):
            pos += 1
        return pos


# -- editing operations (the tables below map keys to them) ---------------------------------------


def _line_start(b: FieldBuffer) -> None:
    b.move(b.line_start(), False)


def _line_end(b: FieldBuffer) -> None:
    b.move(b.line_end(), False)


def _char_left(b: FieldBuffer) -> None:
    b.move(max(b.caret - 1, 0), False)


def _char_right(b: FieldBuffer) -> None:
    b.move(min(b.caret + 1, len(b.chars)), False)


def _word_left(b: FieldBuffer) -> None:
    b.move(b.word_left(b.caret), False)


def _word_right(b: FieldBuffer) -> None:
    b.move(b.word_right(b.caret, False), False)


def backspace(b: FieldBuffer) -> None:
    """Delete the selection, else the character before the caret."""
    if not b.delete_selection() and b.caret > 0:
        b.delete(b.caret - 1, b.caret)


def delete_forward(b: FieldBuffer) -> None:
    """Delete the selection, else the character after the caret."""
    if not b.delete_selection() and b.caret < len(b.chars):
        b.delete(b.caret, b.caret + 1)


def kill_to_start(b: FieldBuffer) -> None:
    """Delete from the line's start to the caret."""
    b.delete(b.line_start(), b.caret)


def _kill_to_end(b: FieldBuffer) -> None:
    b.delete(b.caret, b.line_end())


def kill_word_back(b: FieldBuffer) -> None:
    """Delete the word before the caret."""
    b.delete(b.word_left(b.caret), b.caret)


def _kill_word_forward(b: FieldBuffer) -> None:
    b.delete(b.caret, b.word_right(b.caret, False))


def _rubout_unix_word(b: FieldBuffer) -> None:
    b.delete(b.word_left(b.caret, unix=True), b.caret)


def _select_all(b: FieldBuffer) -> None:
    b.anchor = 0
    b.caret = len(b.chars)


def _cut(b: FieldBuffer) -> None:
    if not b.delete_selection() and b.chars:
        b.uncertain = True  # some editors cut the whole line


def unknown(b: FieldBuffer) -> None:
    """The key did something the caret model cannot follow: the field becomes uncertain."""
    b.uncertain = True


def _nothing(b: FieldBuffer) -> None:
    pass


Op = Callable[[FieldBuffer], None]
#: A key's meaning: an editing operation, or the reason it ends the field.
Action = Op | str

#: ctrl/cmd + letter in an ordinary text field; other ASCII letters and digits end it ("shortcut").
SHORTCUTS: dict[str, Action] = {
    "a": _select_all,
    "x": _cut,
    "z": unknown,
    "y": unknown,
    **dict.fromkeys("cvbius", _nothing),
}
SHORTCUTS.update({k: "shortcut" for k in "defghjklmnopqrtw0123456789"})
#: ctrl + letter in a terminal: the emacs mode of readline (zsh's zle and PSReadLine agree).
READLINE: dict[str, Action] = {
    "a": _line_start,
    "e": _line_end,
    "b": _char_left,
    "f": _char_right,
    "h": backspace,
    "d": delete_forward,
    "u": kill_to_start,
    "k": _kill_to_end,
    "w": _rubout_unix_word,
    "c": "interrupt",
    "z": "interrupt",
    "g": "interrupt",
    "p": "navigation",
    "n": "navigation",
    "j": "enter",
    "m": "enter",
    "i": "tab",
    **dict.fromkeys("yrstxo_", unknown),
}
#: alt + letter in a terminal.
READLINE_ALT: dict[str, Action] = {"b": _word_left, "f": _word_right, "d": _kill_word_forward}
#: ctrl + letter on macOS: the Cocoa text system's emacs bindings.
COCOA: dict[str, Action] = {
    "a": _line_start,
    "e": _line_end,
    "b": _char_left,
    "f": _char_right,
    "h": backspace,
    "d": delete_forward,
    "k": _kill_to_end,
    "p": "navigation",
    "n": "navigation",
    **dict.fromkeys("yto", unknown),
}
#: Named keys that always end the field.
ENDERS = {
    "tab": "tab",
    "enter": "enter",
    "kp_enter": "enter",
    "esc": "escape",
    "escape": "escape",
    "page_up": "navigation",
    "page_down": "navigation",
}


__all__ = [
    "COCOA",
    "ENDERS",
    "ERASE_EACH_BELOW",
    "READLINE",
    "READLINE_ALT",
    "SHORTCUTS",
    "TERMINAL_CLASSES",
    "Action",
    "Field",
    "FieldBuffer",
    "Op",
    "backspace",
    "delete_forward",
    "is_terminal",
    "kill_to_start",
    "kill_word_back",
    "unknown",
]
