"""Typed-text reconstruction: replay key events into the text of each focused field.

Pure: no I/O, no display, no logging.  The text handled here is captured content:
nothing in this module prints, logs or puts it into an exception message.

:func:`reconstruct` walks an event sequence (in recording order) and returns one
:class:`~agent.keyboard.editing.Field` per stretch of typing into one text field.  Every character remembers
the event that produced it (its *provenance*: the :class:`~agent.events.KeyPress`, or
the :class:`~agent.events.Paste` for pasted text), so a span a detector finds in the
text maps back to exactly those events; :func:`key_windows` turns such spans into
event-index windows to redact.

**Field boundaries.**  A field ends on a mouse button press (any button), a change of
the focused window (a :class:`~agent.events.WindowFocus` whose class, pid or geometry
differs; a title-only change, as editors and browsers make while one types, keeps the
field), Tab, Enter (``enter``/``kp_enter``, shift+Enter included), Escape (it closes
popups and dialogs and reverts some editors: the caret model is safer restarted),
up/down/page up/page down (the caret moves to a line we never saw: the field ends with
``ended_by="navigation"`` and the next key starts a fresh field, which is *not*
uncertain: a field is always "what was typed since it began"), alt+left/right outside
macOS (browser back/forward), a ctrl/super (cmd) shortcut with a letter or digit that
is not an editing shortcut (ctrl+L, ctrl+T, ctrl+F... move the keyboard focus without
any focus event: ``"shortcut"``), and every marker but ``screen_layout``.  The key that
ends a field belongs to it.  Scrolls, pointer moves, button releases and frames are
ignored.

**Keys** (``char``/``name``/``modifiers`` as :mod:`agent.capture.input` records them;
modifiers are taken from each event's ``modifiers``, never from our own tracking):

* a character inserts at the caret, replacing the selection; ``name == "space"`` is
  ``" "``.  With ctrl (but not alt_gr) or super held it is a shortcut: A select all,
  X cut, C copy, V paste (the text arrives as the following Paste event), Z/Y undo/redo
  (the field becomes uncertain), B/I/U/S nothing.  Windows' control characters
  (``"\\x01"`` for ctrl+A) are read as their letters.  On Windows ctrl+alt+character
  is AltGr (text); elsewhere alt+letter is a menu accelerator (ends the field) except
  on macOS, where option+key types the character the OS reports.
* **Caps lock.**  Measured on X11 (pynput 1.8, Xvfb, see the tests): pynput applies
  shift but never caps lock (caps lock, a gives ``"a"``; caps lock, shift+a gives
  ``"A"``), and pynput's Windows translator builds its table from shift/ctrl/alt only,
  so it does the same; on macOS the OS string already has caps lock applied.  So,
  except on macOS, the caps lock state is tracked from ``caps_lock`` presses (a held,
  auto-repeating key toggles once) and, while it is on, a one-character cased letter
  is upper-cased without shift and lower-cased with shift.  Both are no-ops when the
  OS already applied caps lock.  The state at the start of a recording is unknown and
  assumed off.
* **Dead keys (X11).**  pynput reports a dead key as its spacing accent (``"´"``, keysym
  0xFE50-0xFE93) and the next key as the bare letter.  They are composed here (NFC);
  the composed character's provenance is the letter, and the dead key's press is tied
  to it (:attr:`Field.links`).  A pair that does not compose inserts both characters
  and makes the field uncertain.
* **AltGr (X11).**  With ISO_Level3_Shift (keysym 0xFE03, no name), pynput reports the
  *base* character (AltGr+q on a German layout gives ``"q"``, not ``"@"``): characters
  typed while it is held are inserted but the field is uncertain.
* backspace/delete delete the selection, else one character; ctrl+backspace and
  alt+backspace delete a word back, ctrl+delete a word forward (macOS: alt for words,
  cmd+backspace to the line start).
* left/right move the caret (shift: extend the selection from its anchor; ctrl, or alt
  on macOS: by word; cmd on macOS: to the line's ends); a plain arrow collapses a
  selection to its left/right end.  home/end go to the line's start/end, with ctrl to
  the text's (shift selects); on macOS home/end only scroll (the field becomes
  uncertain) and cmd+up/down go to the text's ends.
* insert (overwrite mode), undo/redo, a Paste without text, a paste key whose Paste
  never arrives before the next key, ctrl+X with nothing selected (some editors cut the
  line), terminal yank/search/transpose: the field becomes uncertain.
* **Terminals** (:func:`~agent.keyboard.editing.is_terminal`): readline keys ctrl+U/K/W
  (kill to line start, to end, a word back), ctrl+A/E (line start/end, not select all),
  ctrl+B/F, ctrl+H (backspace), ctrl+D (delete forward; on an empty line it ends the field),
  alt+B/F/D; ctrl+C and ctrl+Z end the field (``"interrupt"``), ctrl+P/N and
  up/down (history) end it (``"navigation"``).
* Key repeat (presses without releases) works; releases never change text, but each
  one is tied to its press so redaction can take both (X11 reports a release with the
  state at release time: shift+2 may be released as ``"2"``; an unmatched release is
  tied to the newest held character key if that went down within 2 s).  Held keys are
  forgotten at markers: capture pauses there, and a release lost in the gap must not
  tie a press to a release minutes later.

Fields in which nothing was inserted and nothing went uncertain (modifier taps, a lone
shortcut) are not reported.  Known limits: IME (CJK) input, dictation and emoji pickers
produce text that never arrives as keys; autocompletion, autocorrect, snippets and
autofill insert text we never see; dead keys on Windows and macOS are not composed
(Windows reports the accent and the letter); the caret position inside pre-existing
text is unknown (a field starts empty at caret 0); multi-line editing beyond one line
is not modelled (up/down end the field).
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from agent.events import ButtonPress, Event, KeyPress, KeyRelease, Marker, Paste, WindowFocus
from agent.keyboard import editing
from agent.keyboard.editing import Field, FieldBuffer
from agent.keyboard.names import MODIFIER_NAMES, paste_chord

#: Version of the reconstruction rules; bump when the same events give different fields.
TEXT_VERSION = 1
#: Markers that do not end a field.
_KEEP_MARKERS = frozenset({"screen_layout"})
#: X11 keysyms: dead keys, and the level-3/level-5 shift keys pynput does not name.
_DEAD_FIRST, _DEAD_LAST = 0xFE50, 0xFE93
_LEVEL_SHIFTS = frozenset({0xFE03, 0xFE11})
#: An unmatched release is tied to the newest held character key only if that went down this recently.
_FALLBACK_NS = 2_000_000_000
#: Spacing accents (what pynput reports for a dead key) to their combining marks.
_COMBINING = {
    "`": "\u0300",
    "´": "\u0301",
    "'": "\u0301",
    "^": "\u0302",
    "~": "\u0303",
    "¯": "\u0304",
    "˘": "\u0306",
    "˙": "\u0307",
    "¨": "\u0308",
    '"': "\u0308",
    "˚": "\u030a",
    "°": "\u030a",
    "˝": "\u030b",
    "ˇ": "\u030c",
    "¸": "\u0327",
    ",": "\u0327",
    "˛": "\u0328",
}


class _Replay:
    """The state machine behind :func:`reconstruct`."""

    def __init__(self, backend: str | None) -> None:
        self.fixed = backend is not None
        self.mac = self.win = False
        self.set_backend(backend)
        self.buf: FieldBuffer | None = None
        self.done: list[FieldBuffer] = []
        self.app_class: str | None = None
        self.focus_key: tuple[object, ...] | None = None
        self.caps = False
        self.caps_held = False
        self.level3: set[int] = set()
        self.dead: tuple[str, int] | None = None
        #: nothing unusual pending (caps lock off, no dead key, no level-3 shift): the fast path may run.
        self.plain = True
        # held keys: identity -> [(field, press index)...]; named keys by name (or keysym),
        # character keys by their lower-cased character.
        self.held_named: dict[object, list[tuple[FieldBuffer, int]]] = {}
        self.held_chars: dict[str, list[tuple[FieldBuffer, int]]] = {}
        self.events: Sequence[Event] = ()
        self.named: dict[str, Callable[[FieldBuffer, str, tuple[str, ...]], None]] = {
            "left": self.arrow,
            "right": self.arrow,
            "home": self.home_end,
            "end": self.home_end,
            "up": self.vertical,
            "down": self.vertical,
            "backspace": self.backspace,
            "delete": self.delete,
            "insert": self.insert_key,
        }
        self.others: dict[type, Callable[[int, Any], None]] = {
            KeyRelease: self.release,
            Paste: self.paste,
            ButtonPress: self.click,
            WindowFocus: self.focus,
            Marker: self.marker,
        }

    def set_backend(self, backend: str | None) -> None:
        self.mac = backend == "darwin"
        self.win = backend == "win32"

    def refresh(self) -> None:
        self.plain = not self.caps and self.dead is None and not self.level3

    # -- the loop ------------------------------------------------------------------------------

    def run(self, events: Sequence[Event]) -> list[Field]:
        self.events = events
        held_chars = self.held_chars
        others = self.others
        for i, ev in enumerate(events):
            if type(ev) is not KeyPress:
                handler = others.get(type(ev))
                if handler is not None:
                    handler(i, ev)
                continue
            buf = self.buf
            if buf is None:
                buf = self.buf = FieldBuffer(i, self.app_class)
            buf.last = i
            ch = ev.char
            if ch is None:
                self.named_key(i, ev, buf)
                continue
            entry = held_chars.setdefault(ch.lower(), [])
            entry.append((buf, i))
            if (
                self.plain
                and not ev.modifiers
                and len(ch) == 1
                and " " <= ch < "\x7f"
                and buf.anchor is None
                and buf.caret == len(buf.chars)
                and not buf.paste_pending
            ):
                # fast path: plain ASCII typing at the end of the field
                buf.chars.append(ch)
                buf.prov.append(i)
                buf.typed.append(ch)
                buf.typed_ev.append(i)
                buf.caret += 1
                buf.deleting = False
            else:
                self.char_key(i, ev, buf, ch)
        self.end("end")
        return [b.freeze() for b in self.done if b.typed or b.uncertain]

    # -- boundaries ----------------------------------------------------------------------------

    def end(self, reason: str) -> None:
        self.dead = None
        self.refresh()
        buf = self.buf
        if buf is None:
            return
        if buf.paste_pending:
            buf.uncertain = True
        buf.ended_by = reason
        self.done.append(buf)
        self.buf = None

    def click(self, i: int, ev: ButtonPress) -> None:
        self.end("click")

    def focus(self, i: int, ev: WindowFocus) -> None:
        key = (ev.app_class, ev.pid, ev.x, ev.y, ev.width, ev.height)
        if key != self.focus_key:
            self.end("focus")
            self.focus_key = key
        self.app_class = ev.app_class

    def marker(self, i: int, ev: Marker) -> None:
        if ev.marker == "session_start" and not self.fixed:
            backend = ev.detail.get("backend") if isinstance(ev.detail, Mapping) else None
            self.set_backend(backend if isinstance(backend, str) else None)
        if ev.marker not in _KEEP_MARKERS:
            self.end("marker")
            # capture stops and starts at markers: a key held across one lost its release
            self.held_named.clear()
            self.held_chars.clear()

    # -- releases and pastes -------------------------------------------------------------------

    def release(self, i: int, ev: KeyRelease) -> None:
        name = ev.name
        if name is None and ev.char is not None:
            entry = self.held_chars.pop(ev.char.lower(), None)
        else:
            if name == "caps_lock":
                self.caps_held = False
            elif name is None and ev.vk in _LEVEL_SHIFTS:
                self.level3.discard(ev.vk)
                self.refresh()
            entry = self.held_named.pop(name if name is not None else ev.vk, None)
            if entry is None and name in MODIFIER_NAMES:
                return
        if entry is None:
            # X11 reports a release with the state at release time (shift+2 released as "2"):
            # tie it to the newest held character key, if that one went down just before.
            if not self.held_chars:
                return
            newest = next(reversed(self.held_chars))
            last_press = self.events[self.held_chars[newest][-1][1]]
            if not 0 <= ev.t_ns - last_press.t_ns <= _FALLBACK_NS:
                return
            entry = self.held_chars.pop(newest)
        for buf, p in entry:
            buf.links.append((p, i))
            buf.last = max(buf.last, i)

    def paste(self, i: int, ev: Paste) -> None:
        buf = self.buf
        if buf is None:
            buf = self.buf = FieldBuffer(i, self.app_class)
        buf.last = i
        self.dead = None
        self.refresh()
        if buf.paste_pending:
            buf.paste_pending -= 1
        if ev.text is None:
            buf.uncertain = True
        elif ev.text:
            buf.insert(ev.text, i)

    # -- named keys ----------------------------------------------------------------------------

    def named_key(self, i: int, ev: KeyPress, buf: FieldBuffer) -> None:
        name = ev.name
        ident: object = name if name is not None else ev.vk
        self.held_named.setdefault(ident, []).append((buf, i))
        if name is None:
            if ev.vk in _LEVEL_SHIFTS:
                self.level3.add(ev.vk)
                self.refresh()
        elif name in MODIFIER_NAMES:
            if name == "caps_lock" and not self.caps_held:
                self.caps_held = True
                self.caps = not self.caps
                self.refresh()
        elif name == "space":
            self.char_key(i, ev, buf, " ")
        else:
            self.before_edit(ev, buf)
            self.dead = None
            self.refresh()
            reason = editing.ENDERS.get(name)
            if reason is not None:
                self.end(reason)
                return
            handler = self.named.get(name)
            if handler is not None:
                handler(buf, name, ev.modifiers or ())

    def before_edit(self, ev: KeyPress, buf: FieldBuffer) -> None:
        """A key that is not a modifier: a paste still awaited breaks the model; a paste key starts one."""
        if buf.paste_pending:
            buf.uncertain = True
            buf.paste_pending = 0
        if paste_chord(ev):
            buf.paste_pending = 1

    def arrow(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        left = name == "left"
        alt = "alt" in mods
        if self.mac:
            word, line = alt, "super" in mods
        elif "super" in mods:
            return  # window-manager keys
        elif alt and "ctrl" not in mods:
            self.end("navigation")  # browser back/forward
            return
        else:
            word, line = "ctrl" in mods, False
        shift = "shift" in mods
        sel = buf.selection()
        if line:
            pos = buf.line_start() if left else buf.line_end()
        elif word:
            if sel is not None and not shift:
                buf.caret = sel[0] if left else sel[1]
            pos = buf.word_left(buf.caret) if left else buf.word_right(buf.caret, self.win)
        elif sel is not None and not shift:
            pos = sel[0] if left else sel[1]
        else:
            pos = max(buf.caret - 1, 0) if left else min(buf.caret + 1, len(buf.chars))
        buf.move(pos, shift)

    def home_end(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        if self.mac:
            buf.uncertain = True  # Cocoa scrolls; browsers move the caret
            return
        home = name == "home"
        if "ctrl" in mods:
            pos = 0 if home else len(buf.chars)
        else:
            pos = buf.line_start() if home else buf.line_end()
        buf.move(pos, "shift" in mods)

    def vertical(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        if self.mac and "super" in mods:
            buf.move(0 if name == "up" else len(buf.chars), "shift" in mods)
        else:
            self.end("navigation")  # another line (or a terminal's history)

    def backspace(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        if buf.delete_selection():
            return
        if self.mac and "super" in mods:
            editing.kill_to_start(buf)
        elif "ctrl" in mods or "alt" in mods:
            editing.kill_word_back(buf)
        else:
            editing.backspace(buf)

    def delete(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        if buf.delete_selection():
            return
        if ("alt" if self.mac else "ctrl") in mods:
            buf.delete(buf.caret, buf.word_right(buf.caret, self.win))
        else:
            editing.delete_forward(buf)

    def insert_key(self, buf: FieldBuffer, name: str, mods: tuple[str, ...]) -> None:
        if not mods:
            buf.uncertain = True  # overwrite mode

    # -- character keys ------------------------------------------------------------------------

    def char_key(self, i: int, ev: KeyPress, buf: FieldBuffer, ch: str) -> None:
        self.before_edit(ev, buf)
        mods = ev.modifiers or ()
        if mods and "alt_gr" not in mods and self.command(buf, ch, mods):
            return
        if len(ch) == 1:
            if unicodedata.category(ch) == "Cc":
                if "\x01" <= ch <= "\x1a":  # Windows reports ctrl+letter as a control character
                    self.shortcut(buf, ch, mods)
                return
        else:
            ch = "".join(c for c in ch if unicodedata.category(c) != "Cc")
            if not ch:
                return
        if self.level3:
            buf.uncertain = True  # X11 reports the base character under ISO_Level3_Shift
        if self.caps and not self.mac and len(ch) == 1:
            other = ch.lower() if "shift" in mods else ch.upper()
            if len(other) == 1:
                ch = other
        vk = ev.vk
        if vk is not None and _DEAD_FIRST <= vk <= _DEAD_LAST and ch != " ":
            self.dead_key(i, buf, ch)
        elif self.dead is not None:
            self.compose(i, buf, ch)
        else:
            buf.insert(ch, i)

    def command(self, buf: FieldBuffer, ch: str, mods: tuple[str, ...]) -> bool:
        """Handle a character key held with ctrl, super or alt as a command; False: it is text."""
        ctrl = "ctrl" in mods
        sup = "super" in mods
        if ctrl or sup:
            altgr = self.win and ctrl and "alt" in mods and not sup  # Windows: ctrl+alt is AltGr
            if altgr and ch.isprintable() and not ch.isspace():
                return False
            self.shortcut(buf, ch, mods)
            return True
        if "alt" in mods and not self.mac:
            self.alt_key(buf, ch)
            return True
        return False

    def dead_key(self, i: int, buf: FieldBuffer, accent: str) -> None:
        if self.dead is not None:
            first, d = self.dead
            self.dead = None
            self.refresh()
            if first == accent:  # the dead key twice: its accent
                buf.insert(accent, i)
                buf.links.append((i, d))
                return
            buf.insert(first, d)
            buf.uncertain = True
        self.dead = (accent, i)
        self.plain = False

    def compose(self, i: int, buf: FieldBuffer, ch: str) -> None:
        accent, d = self.dead  # type: ignore[misc]
        self.dead = None
        self.refresh()
        buf.links.append((i, d))
        if ch == " ":
            buf.insert(accent, i)
            return
        mark = _COMBINING.get(accent)
        composed = unicodedata.normalize("NFC", ch + mark) if mark is not None and len(ch) == 1 else ""
        if len(composed) == 1:
            buf.insert(composed, i)
            return
        buf.insert(accent, d)
        buf.insert(ch, i)
        buf.uncertain = True

    def shortcut(self, buf: FieldBuffer, ch: str, mods: tuple[str, ...]) -> None:
        """ctrl/super + a character key (never text)."""
        if len(ch) != 1:
            return
        k = chr(ord(ch) + 96) if "\x01" <= ch <= "\x1a" else ch.lower()
        table = editing.SHORTCUTS
        if "super" not in mods and "shift" not in mods and "alt" not in mods:
            if buf.terminal:
                table = editing.READLINE
                if k == "d" and not buf.chars:
                    self.end("interrupt")  # end of input
                    return
            elif self.mac:
                table = editing.COCOA
        self.act(buf, table.get(k))

    def alt_key(self, buf: FieldBuffer, ch: str) -> None:
        """alt + a character key outside macOS: readline word keys in terminals, else an accelerator."""
        k = ch.lower()
        if buf.terminal:
            self.act(buf, editing.READLINE_ALT.get(k, editing.unknown))
        elif len(k) == 1 and k.isascii() and k.isalnum():
            self.end("shortcut")

    def act(self, buf: FieldBuffer, action: editing.Action | None) -> None:
        if isinstance(action, str):
            self.end(action)
        elif action is not None:
            action(buf)


def reconstruct(events: Sequence[Event], *, backend: str | None = None) -> list[Field]:
    """The fields typed into, in order of their first event.

    :param events: a session's events in recording order; indices in the result refer
        to this sequence.
    :param backend: the capture backend (``xorg``, ``win32``, ``darwin``) when known;
        None reads it from the ``session_start`` marker (default: X11/Windows rules).
    """
    return _Replay(backend).run(events)


def key_windows(
    fields_and_spans: Iterable[tuple[Field, str, int, int, str]],
) -> list[tuple[int, int, str]]:
    """Event-index windows ``(lo, hi, entity)`` (inclusive, sorted, disjoint) to redact.

    Each item is ``(field, stream, start, end, entity)``: ``field.text[start:end]``
    (``stream == "text"``), ``field.typed[start:end]`` (``"typed"``) or the K-th erased
    text's (``"erased:K"``, see :meth:`Field.streams`) is an ``entity``.
    Its window runs from the smallest to the largest provenance index of those
    characters, so it holds every event in between (modifiers, arrows, backspaces:
    shift timing leaks character classes), widened to take the events tied to the ones
    inside (:attr:`Field.links`: releases, dead keys) until nothing more is added.
    Spans are clipped to the stream; empty ones give nothing.  Overlapping windows are
    merged into one that keeps the entity of the window that starts first (at equal
    starts, the one given first).

    :raises ValueError: ``stream`` is not one of :meth:`Field.streams`.
    """
    wins: list[tuple[int, int, str]] = []
    for field, stream, start, end, entity in fields_and_spans:
        if stream == "text":
            prov = field.cells
        elif stream == "typed":
            prov = field.typed_events
        else:
            prov = _erased_cells(field, stream)
        seg = prov[max(start, 0) : max(end, 0)]
        if not seg:
            continue
        lo, hi = _widen(field.links, min(seg), max(seg))
        wins.append((lo, hi, entity))
    wins.sort(key=lambda w: w[0])
    merged: list[tuple[int, int, str]] = []
    for lo, hi, entity in wins:
        if merged and lo <= merged[-1][1]:
            plo, phi, pent = merged[-1]
            if hi > phi:
                merged[-1] = (plo, hi, pent)
        else:
            merged.append((lo, hi, entity))
    return merged


def _erased_cells(field: Field, stream: str) -> tuple[int, ...]:
    kind, _, k = stream.partition(":")
    if kind == "erased" and k.isdigit() and int(k) < len(field.erased):
        return field.erased[int(k)][1]
    msg = 'a span\'s stream must be "text", "typed" or "erased:K" with K < len(field.erased)'
    raise ValueError(msg)


def _widen(links: tuple[tuple[int, int], ...], lo: int, hi: int) -> tuple[int, int]:
    """Grow ``[lo, hi]`` until it holds every event tied to an event inside it."""
    n = len(links)
    while True:
        j = bisect_left(links, (lo, -1))
        new_lo = lo
        while j < n and links[j][0] <= hi:
            t = links[j][1]
            if t > hi:
                hi = t
            elif t < new_lo:
                new_lo = t
            j += 1
        if new_lo == lo:
            return lo, hi
        lo = new_lo


__all__ = ["TEXT_VERSION", "key_windows", "reconstruct"]
