"""Key names and what each kind of key is, stated once (pure, O(1) lookups: hook threads call them).

Names are pynput's (``KeyPress.name``); ``KeyPress.modifiers`` holds the canonical
modifier names (``shift``, ``ctrl``, ``alt``, ``alt_gr``, ``super``) of
:data:`MODIFIER_KEYS`.  Who reads what:

- the hooks (:mod:`agent.capture.input`) track held modifiers with :data:`MODIFIER_KEYS`;
- the screen watcher asks :func:`key_action` whether a key press is typing or a command;
- the steps (:mod:`agent.steps`) and the replay (:mod:`agent.keyboard.replay`) treat
  :data:`MODIFIER_NAMES` as keys that change no text, :data:`COMMAND_MODIFIERS` as what
  makes a character key a command, and :func:`paste_chord` as the paste keys;
- the hotkey grammar (:mod:`agent.keyboard.hotkey`) builds on :data:`MODIFIER_KEYS`.
"""

from __future__ import annotations

from agent.events import KeyPress

#: pynput key names that are modifiers, mapped to the modifier they hold.
MODIFIER_KEYS = {
    "shift": "shift",
    "shift_l": "shift",
    "shift_r": "shift",
    "ctrl": "ctrl",
    "ctrl_l": "ctrl",
    "ctrl_r": "ctrl",
    "alt": "alt",
    "alt_l": "alt",
    "alt_r": "alt",
    "alt_gr": "alt_gr",
    "cmd": "super",
    "cmd_l": "super",
    "cmd_r": "super",
}
#: Lock keys: they change no text by themselves.
LOCK_KEYS = frozenset({"caps_lock", "num_lock", "scroll_lock"})
#: Keys that change no text and make no step or field edit by themselves: modifiers and locks.
MODIFIER_NAMES = frozenset(MODIFIER_KEYS) | LOCK_KEYS
#: Held modifiers that make a character key a command (a shortcut, a hotkey), not text.
#: Shift and AltGr are text; which command chords still type a character depends on the OS
#: (Windows ctrl+alt is AltGr, macOS option types): the steps and the replay decide that.
COMMAND_MODIFIERS = frozenset({"ctrl", "alt", "super"})
#: Held modifiers that make any key a ``hotkey`` action for the screen watcher: AltGr too.
CHORD_MODIFIERS = COMMAND_MODIFIERS | {"alt_gr"}
#: Named keys that are part of typing for the screen watcher (a burst, not a hotkey).
TYPING_NAMES = frozenset({"space", "backspace", "delete"})
#: Keys that are no action of their own for the screen watcher (the chord they start is).
#: scroll_lock is not among them: pressed alone it is a ``hotkey`` action and gets a
#: pre-action frame, as it always did (:data:`MODIFIER_NAMES` has it).
SCREEN_SILENT_NAMES = MODIFIER_NAMES - {"scroll_lock"}
#: Named keys that edit inside an open typing burst (steps).
EDIT_NAMES = frozenset({"backspace", "delete", "left", "right", "home", "end"})


def key_action(event: KeyPress) -> str | None:
    """Which screen action a key press is: ``hotkey``, ``key`` (typing, in bursts) or None (O(1)).

    A key with Ctrl, Alt, AltGr or Super held, or a non-character key such as
    Enter, Tab, Escape or an arrow, is a ``hotkey`` (it always gets a pre-action
    frame); other keys are ``key``; a modifier key pressed alone is no action
    (the combination it starts is).
    """
    if event.name in SCREEN_SILENT_NAMES:
        return None
    if CHORD_MODIFIERS.intersection(event.modifiers):
        return "hotkey"
    return "hotkey" if event.name is not None and event.name not in TYPING_NAMES else "key"


def paste_chord(event: KeyPress) -> bool:
    """Whether ``event`` pastes: ctrl+V, ctrl+shift+V (terminals), cmd+V, shift+Insert (O(1))."""
    mods = event.modifiers
    if event.name == "insert":
        return mods == ("shift",)
    char = event.char
    if char is None:
        return False
    if char == "\x16":  # ctrl+V as Windows reports it (a control character)
        return True
    if char not in ("v", "V"):
        return False
    return mods in (("ctrl",), ("ctrl", "shift"), ("super",))


__all__ = [
    "CHORD_MODIFIERS",
    "COMMAND_MODIFIERS",
    "EDIT_NAMES",
    "LOCK_KEYS",
    "MODIFIER_KEYS",
    "MODIFIER_NAMES",
    "SCREEN_SILENT_NAMES",
    "TYPING_NAMES",
    "key_action",
    "paste_chord",
]
