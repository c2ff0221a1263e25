"""The pause hotkey: one module for its syntax, the study file's check and the recorder's parser (pure).

Syntax as pynput's ``GlobalHotKeys``: modifiers in angle brackets and one key,
joined by ``+``, e.g. ``<ctrl>+<alt>+p`` or ``<ctrl>+<shift>+<f9>``; ``+`` where
a key belongs is the plus key (``<ctrl>++``); ``<65>`` is a virtual key code.

Two readings of it live here, side by side, on the same name tables:

- :func:`hotkey_problem` is the study file's check, strict because one study file
  runs on Linux, Windows and macOS: only key names every platform knows, and
  ctrl, alt or cmd with a key that is no modifier (it returns the problem as
  text for the study's error list);
- :meth:`Hotkey.parse` is what the recorder runs, lenient (any key name, its
  own messages), raising :class:`HotkeyError`.  Whatever :func:`hotkey_problem`
  accepts, it parses (tests/unit/test_hotkey.py holds them to that).

The key press that completes the combination and its release are not recorded;
the modifiers pressed before it carry no text and are recorded like any modifier.
The hotkey only pauses: while paused no listener runs (P3), so resuming is the
tray's or ``optin resume``'s job.  :meth:`Hotkey.matches` is O(1) (the sink calls it).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.events import KeyPress, KeyRelease
from agent.keyboard.names import MODIFIER_KEYS
from agent.untrusted_text import visible

#: Modifier names in the hotkey syntax (pynput's, as the study file validates them), mapped to the
#: names in KeyPress.modifiers.
MODIFIERS = {**MODIFIER_KEYS, "super": "super"}

#: Modifier names the study file accepts (``<ctrl>``, ``<cmd_l>``...; not ``<super>``).
STUDY_MODIFIERS = frozenset(MODIFIER_KEYS)
#: Key names pynput's ``HotKey.parse`` knows on every platform (``<name>``).  Keys that
#: exist only on some systems (insert, menu, num_lock, pause, print_screen, scroll_lock)
#: are left out: one study file runs on Linux, Windows and macOS.
STUDY_NAMES = STUDY_MODIFIERS | frozenset(
    {"backspace", "caps_lock", "delete", "down", "end", "enter", "esc", "home", "left", "page_down"}
    | {"page_up", "right", "space", "tab", "up", "media_play_pause", "media_volume_mute"}
    | {"media_volume_down", "media_volume_up", "media_previous", "media_next"}
    | {f"f{n}" for n in range(1, 21)}
)
#: A study's hotkey needs one of these, or it would fire while the volunteer types.
STUDY_CHORD = STUDY_MODIFIERS - {"shift", "shift_l", "shift_r"}


class HotkeyError(ValueError):
    """Not a hotkey: the message says what is wrong (never more than the text given) and how to write one."""


@dataclass(frozen=True)
class Hotkey:
    """A parsed hotkey: the modifiers that must be held and the key (a character, a key name, or
    ``vk`` for a virtual key code written ``<65>``)."""

    modifiers: frozenset[str]
    key: str
    vk: int | None = None

    @classmethod
    def parse(cls, text: str) -> Hotkey | None:
        """The hotkey ``text`` names, or None for "" (no hotkey).

        Accepts whatever the study file's check (:func:`hotkey_problem`) accepts:
        modifiers and one key in any order, ``+`` as a key (``<ctrl>++``),
        left/right modifiers (``<ctrl_l>``) and key codes (``<65>``).

        :raises HotkeyError: not a hotkey (what is wrong, never more than the text given).
        """
        text = text.strip().lower()
        if not text:
            return None
        modifiers: set[str] = set()
        keys: list[str] = []
        for part in _parts(text):
            name = part[1:-1] if len(part) > 2 and part.startswith("<") and part.endswith(">") else part
            if name in MODIFIERS:
                modifiers.add(MODIFIERS[name])
            elif keys:
                msg = f"hotkey {text!r}: {keys[0]!r} is not a modifier; a hotkey ends with one key"
                raise HotkeyError(msg)
            else:
                keys.append(name)
        if len(keys) != 1:
            msg = f"hotkey {text!r} must have one key: a character like p, or a name like <f9>"
            raise HotkeyError(msg)
        key = keys[0]
        if not modifiers and len(key) == 1:
            msg = f"hotkey {text!r} needs a modifier such as <ctrl>: a bare character would fire while typing"
            raise HotkeyError(msg)
        return cls(frozenset(modifiers), key, int(key) if key.isdigit() else None)

    def matches(self, event: KeyPress | KeyRelease) -> bool:
        """Whether ``event`` is the hotkey's key with exactly its modifiers held (releases: any)."""
        if isinstance(event, KeyPress) and frozenset(event.modifiers) != self.modifiers:
            return False
        if self.vk is not None:
            return event.vk == self.vk
        if len(self.key) == 1:
            char = event.char.lower() if event.char else None
            return char == self.key or event.vk in (ord(self.key), ord(self.key.upper()))
        return event.name == self.key


def _parts(text: str) -> list[str]:
    """``text`` split at the ``+`` between keys; a ``+`` where a key belongs is the plus key."""
    parts: list[str] = []
    i = 0
    while i < len(text):
        end = text.index(">", i) + 1 if text[i] == "<" and ">" in text[i:] else i + 1
        parts.append(text[i:end])
        i = end
        if i < len(text):
            if text[i] != "+":
                msg = f"hotkey {text!r} must have one key per +: {text[i - 1 : i + 1]!r} is two"
                raise HotkeyError(msg)
            i += 1
            if i == len(text):
                msg = f"hotkey {text!r} ends with +: name the key after it"
                raise HotkeyError(msg)
    return parts


# -- the study file's check ---------------------------------------------------------------------------


def hotkey_problem(hotkey: str) -> str | None:
    """What is wrong with ``hotkey`` as a pause hotkey, or None ("" is no hotkey).

    The syntax is pynput's ``HotKey.parse``: keys joined by ``+``, each a single
    character or a ``<name>`` (``<ctrl>``, ``<alt>``, ``<cmd>``, ``<f9>``, ...) or a
    virtual key code ``<65>``.  It also needs ctrl, alt or cmd and a key that is no
    modifier, so that it does not fire while the volunteer types.
    """
    if hotkey == "":
        return None
    parts = _study_split(hotkey)
    if parts is None:
        return 'ends with "+". Fix: keys joined by +, such as "<ctrl>+<alt>+p" (or "" for no hotkey)'
    keys: list[str] = []
    for part in parts:
        key = _study_part(part)
        if key.startswith("!"):
            return key[1:]
        if key in keys:
            return f"names {part} twice"
        keys.append(key)
    modifiers = STUDY_MODIFIERS.intersection(keys)
    if not modifiers & STUDY_CHORD or len(modifiers) == len(keys):
        return (
            "needs <ctrl>, <alt> or <cmd> together with a key that is no modifier, or it would go off "
            'during ordinary typing. Fix: such as "<ctrl>+<alt>+p"'
        )
    return None


def _study_split(hotkey: str) -> list[str] | None:
    """The ``+``-separated parts of a non-empty hotkey as pynput splits them; None if it ends in "+"."""
    parts: list[str] = []
    start = 0
    for i, c in enumerate(hotkey):  # "+" right after a separator is the "+" key itself
        if c == "+" and i != start:
            parts.append(hotkey[start:i])
            start = i + 1
    if start == len(hotkey):
        return None
    parts.append(hotkey[start:])
    return parts


def _study_part(part: str) -> str:
    """One ``+``-separated part of a hotkey as pynput reads it (lower case), or "!problem"."""
    if len(part) == 1:
        return part.lower()
    if len(part) > 2 and part[0] == "<" and part[-1] == ">":
        key = part[1:-1].lower()
        if key in STUDY_NAMES or key.isdigit():
            return key if key in STUDY_NAMES else f"<{int(key)}>"
        return (
            f"!has unknown key {part}. Fix: one of <ctrl>, <alt>, <cmd>, <shift>, <f1>..<f20>, "
            "<space>, <tab>, ... or a single character"
        )
    shown = repr(part if len(part) <= _SHOWN_MAX else part[:_SHOWN_MAX] + "…")
    return (
        f'!has {shown}, which is not a key. Fix: a single character or a name in <>, such as "<ctrl>+<alt>+p"'
    )


#: A part of a hotkey is quoted in a message up to this many characters (as the study's other values).
_SHOWN_MAX = 80


#: Modifier names as people write them (:func:`hotkey_words`).
_WORDS = {"ctrl": "Ctrl", "alt": "Alt", "alt_gr": "AltGr", "cmd": "Cmd", "shift": "Shift"}


def hotkey_words(hotkey: str) -> str:
    """A pynput hotkey as people write it: ``<ctrl>+<alt>+p`` → ``Ctrl+Alt+P``."""
    words = []
    rest = hotkey
    while rest:
        cut = rest.find("+", 1)  # a "+" first is the "+" key itself
        part, rest = (rest, "") if cut < 0 else (rest[:cut], rest[cut + 1 :])
        if len(part) > 2 and part[0] == "<" and part[-1] == ">":
            name = part[1:-1].lower()
            base = name.removesuffix("_l").removesuffix("_r")
            if name.isdigit():
                words.append(f"key code {name}")
            elif base in _WORDS:
                words.append(_WORDS[base])
            else:
                words.append(name.replace("_", " ").title().replace(" ", ""))
        else:
            words.append(part.upper())
    return visible("+".join(words))


__all__ = [
    "MODIFIERS",
    "STUDY_CHORD",
    "STUDY_MODIFIERS",
    "STUDY_NAMES",
    "Hotkey",
    "HotkeyError",
    "hotkey_problem",
    "hotkey_words",
]
