"""The global pause hotkey: parsing and matching, pure (the sink calls :meth:`Hotkey.matches` in O(1)).

Syntax as pynput's ``GlobalHotKeys``: modifiers in angle brackets and one key,
joined by ``+``, e.g. ``<ctrl>+<alt>+p`` or ``<ctrl>+<shift>+<f9>``.  The key
press that completes the combination and its release are not recorded; the
modifiers pressed before it carry no text and are recorded like any modifier.
The hotkey only pauses: while paused no listener runs (P3), so resuming is
the tray's or ``optin resume``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.capture.input import MODIFIER_KEYS
from agent.events import KeyPress, KeyRelease

#: Modifier names in the hotkey syntax (pynput's, as the study file validates them), mapped to the
#: names in KeyPress.modifiers.
MODIFIERS = {**MODIFIER_KEYS, "super": "super"}


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

        Accepts whatever the study file's check (:func:`agent.study.hotkey_problem`)
        accepts: modifiers and one key in any order, ``+`` as a key (``<ctrl>++``),
        left/right modifiers (``<ctrl_l>``) and key codes (``<65>``).

        :raises ValueError: not a hotkey (what is wrong, never more than the text given).
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
                raise ValueError(msg)
            else:
                keys.append(name)
        if len(keys) != 1:
            msg = f"hotkey {text!r} must have one key: a character like p, or a name like <f9>"
            raise ValueError(msg)
        key = keys[0]
        if not modifiers and len(key) == 1:
            msg = f"hotkey {text!r} needs a modifier such as <ctrl>: a bare character would fire while typing"
            raise ValueError(msg)
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
                raise ValueError(msg)
            i += 1
            if i == len(text):
                msg = f"hotkey {text!r} ends with +: name the key after it"
                raise ValueError(msg)
    return parts


__all__ = ["MODIFIERS", "Hotkey"]
