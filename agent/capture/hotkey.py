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

from agent.events import KeyPress, KeyRelease

#: Modifier names in the hotkey syntax, mapped to the names in KeyPress.modifiers.
MODIFIERS = {
    "ctrl": "ctrl",
    "alt": "alt",
    "shift": "shift",
    "super": "super",
    "cmd": "super",
    "alt_gr": "alt_gr",
}


@dataclass(frozen=True)
class Hotkey:
    """A parsed hotkey: the modifiers that must be held and the key (a character or a key name)."""

    modifiers: frozenset[str]
    key: str

    @classmethod
    def parse(cls, text: str) -> Hotkey | None:
        """The hotkey ``text`` names, or None for "" (no hotkey).

        :raises ValueError: not a hotkey (what is wrong, never more than the text given).
        """
        text = text.strip().lower()
        if not text:
            return None
        parts = [p.strip() for p in text.split("+")]
        *mods, last = parts
        modifiers = set()
        for part in mods:
            name = part[1:-1] if part.startswith("<") and part.endswith(">") else part
            if name not in MODIFIERS:
                known = ", ".join(f"<{m}>" for m in MODIFIERS)
                msg = f"hotkey {text!r}: {part!r} is not a modifier (use {known})"
                raise ValueError(msg)
            modifiers.add(MODIFIERS[name])
        key = last[1:-1] if last.startswith("<") and last.endswith(">") else last
        if not key or (len(key) > 1 and not last.startswith("<")) or key in MODIFIERS:
            msg = f"hotkey {text!r} must end with one key: a character like p, or a name like <f9>"
            raise ValueError(msg)
        if not modifiers and len(key) == 1:
            msg = f"hotkey {text!r} needs a modifier such as <ctrl>: a bare character would fire while typing"
            raise ValueError(msg)
        return cls(frozenset(modifiers), key)

    def matches(self, event: KeyPress | KeyRelease) -> bool:
        """Whether ``event`` is the hotkey's key with exactly its modifiers held (releases: any)."""
        if isinstance(event, KeyPress) and frozenset(event.modifiers) != self.modifiers:
            return False
        if len(self.key) == 1:
            char = event.char.lower() if event.char else None
            return char == self.key or event.vk in (ord(self.key), ord(self.key.upper()))
        return event.name == self.key


__all__ = ["MODIFIERS", "Hotkey"]
