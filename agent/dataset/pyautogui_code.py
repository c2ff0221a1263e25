"""A step as pyautogui code (docs/dataset.md, "pyautogui code"), and the code parsed back.

Pure: no I/O, no pyautogui import (the strings are written, never run).  Typed text is
captured content: nothing here logs it or puts it into an exception message.

:func:`code` writes ``norm.code`` of a sample from the step's action, its *normalised* points
(fractions of the frame, unrounded) and its other fields:

- ``click``: ``pyautogui.click(x=X, y=Y)`` (a button other than left adds ``, button='…'``);
- ``double_click``, ``right_click``, ``middle_click``: ``pyautogui.doubleClick(x=X, y=Y)``,
  ``rightClick``, ``middleClick``;
- ``drag``: ``pyautogui.moveTo(x=X, y=Y)`` ``\\n`` ``pyautogui.dragTo(x=TX, y=TY, button='left')``;
- ``scroll``: ``pyautogui.scroll(DY, x=X, y=Y)`` if ``dy`` ≠ 0, then
  ``pyautogui.hscroll(DX, x=X, y=Y)`` if ``dx`` ≠ 0;
- ``type``: ``pyautogui.write(message=T)``, ``T = repr(text)`` (``[EMAIL]`` stays);
- ``hotkey``: ``pyautogui.hotkey('ctrl', 'c')``, each key mapped by :func:`key_name`;
- ``key``: ``pyautogui.press('enter')``.

Coordinates are written with exactly 4 decimals (``format(v, ".4f")``).  The result is None
when the step cannot be written faithfully: a point missing or outside 0–1, ``text`` null,
a key :func:`key_name` does not map, a button pyautogui has no name for, a scroll of 0 on
both axes, or a pointer step made with modifiers held (``keys`` not empty: ctrl+click,
shift+scroll), which no single pyautogui call of this table expresses.

:func:`parse` reads such a string back (Python's own parser, literals only), and
:func:`to_pixel` turns a written coordinate back into the integer pixel:
``origin + round(value × size)``, exact for frames up to 10,000 pixels on a side.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: pynput key names (agent/keyboard/names.py, the steps' ``keys``) that pyautogui spells otherwise.
_RENAMED = {
    "page_up": "pageup",
    "page_down": "pagedown",
    "caps_lock": "capslock",
    "num_lock": "numlock",
    "scroll_lock": "scrolllock",
    "print_screen": "printscreen",
    "alt_gr": "altright",
    "super": "win",
    "cmd": "win",
    "cmd_l": "win",
    "cmd_r": "win",
    "menu": "apps",
    "media_play_pause": "playpause",
    "media_volume_mute": "volumemute",
    "media_volume_up": "volumeup",
    "media_volume_down": "volumedown",
    "media_next": "nexttrack",
    "media_previous": "prevtrack",
}
#: Named keys that are the same word in pynput and pyautogui.
_SAME = (
    "enter",
    "tab",
    "space",
    "esc",
    "backspace",
    "delete",
    "insert",
    "home",
    "end",
    "up",
    "down",
    "left",
    "right",
    "shift",
    "ctrl",
    "alt",
    *(f"f{n}" for n in range(1, 25)),
)
#: pynput name -> pyautogui ``KEY_NAMES`` entry, for named keys.
KEY_MAP: dict[str, str] = {**{name: name for name in _SAME}, **_RENAMED}
#: Character keys pyautogui's ``KEY_NAMES`` has: printable ASCII but upper-case letters (the
#: steps write a hotkey's character lower-cased).  Any other character is not mapped.
CHARACTER_KEYS = frozenset(chr(c) for c in range(0x21, 0x7F) if not "A" <= chr(c) <= "Z")

#: Functions of the click family, by action.
CLICK_FUNCTIONS = {
    "click": "click",
    "double_click": "doubleClick",
    "right_click": "rightClick",
    "middle_click": "middleClick",
}
#: Buttons pyautogui names (``pyautogui.LEFT``, ``MIDDLE``, ``RIGHT``).
BUTTONS = frozenset({"left", "middle", "right"})
#: Every function :func:`code` writes (and :func:`parse` accepts).
FUNCTIONS = frozenset(
    {*CLICK_FUNCTIONS.values(), "moveTo", "dragTo", "scroll", "hscroll", "write", "hotkey", "press"}
)


def key_name(key: str) -> str | None:
    """pyautogui's name of the step key ``key`` (pynput's name, or one character), or None."""
    if len(key) == 1:
        return key if key in CHARACTER_KEYS else None
    return KEY_MAP.get(key)


def coordinate(value: float) -> str:
    """A normalised coordinate as written in code: exactly 4 decimals."""
    return format(value, ".4f")


def to_pixel(value: float, origin: int, size: int) -> int:
    """The integer pixel a written coordinate stands for: ``origin + round(value × size)``."""
    return origin + round(value * size)


def _point(x: float | None, y: float | None) -> str | None:
    """``x=X, y=Y`` for a point inside the frame (0–1 both), else None."""
    if x is None or y is None or not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        return None
    return f"x={coordinate(x)}, y={coordinate(y)}"


def code(  # noqa: PLR0911 - one return per action family
    action: str,
    *,
    x: float | None = None,
    y: float | None = None,
    to_x: float | None = None,
    to_y: float | None = None,
    button: str | None = None,
    dx: int | None = None,
    dy: int | None = None,
    text: str | None = None,
    keys: Sequence[str] = (),
) -> str | None:
    """``norm.code`` of a step (module docstring), or None when it cannot be written faithfully.

    ``x``, ``y``, ``to_x``, ``to_y`` are the normalised points (fractions of the frame).
    """
    if action in CLICK_FUNCTIONS or action in ("drag", "scroll"):
        at = _point(x, y)
        if keys or at is None:
            return None
        if action == "drag":
            return _drag(at, _point(to_x, to_y), button)
        if action == "scroll":
            return _scroll(at, dx, dy)
        return _click(action, at, button)
    if action == "type":
        return None if text is None else f"pyautogui.write(message={text!r})"
    if action in ("hotkey", "key"):
        return _keys(action, keys)
    return None


def _click(action: str, at: str, button: str | None) -> str | None:
    if button is not None and button not in BUTTONS:
        return None
    extra = "" if button in (None, "left") or action != "click" else f", button={button!r}"
    return f"pyautogui.{CLICK_FUNCTIONS[action]}({at}{extra})"


def _drag(at: str, to: str | None, button: str | None) -> str | None:
    if to is None or button not in BUTTONS:
        return None
    return f"pyautogui.moveTo({at})\npyautogui.dragTo({to}, button={button!r})"


def _scroll(at: str, dx: int | None, dy: int | None) -> str | None:
    lines = []
    if dy:
        lines.append(f"pyautogui.scroll({dy}, {at})")
    if dx:
        lines.append(f"pyautogui.hscroll({dx}, {at})")
    return "\n".join(lines) or None


def _keys(action: str, keys: Sequence[str]) -> str | None:
    names = [key_name(k) for k in keys]
    if not names or None in names or (action == "key" and len(names) != 1):
        return None
    if action == "key":
        return f"pyautogui.press({names[0]!r})"
    return f"pyautogui.hotkey({', '.join(repr(n) for n in names)})"


@dataclass(frozen=True)
class Call:
    """One pyautogui statement: ``pyautogui.<name>(*args, **kwargs)``, literal arguments."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def parse(source: str) -> list[Call]:
    """The statements of a ``norm.code`` string, in order.

    :raises ValueError: it is not one or more ``pyautogui.<function>(...)`` calls of
        :data:`FUNCTIONS` with literal arguments (the message never quotes the code: it may
        hold typed text).
    """
    try:
        tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        msg = "the code is not Python"
        raise ValueError(msg) from None
    if not tree.body:
        msg = "the code holds no statement"
        raise ValueError(msg)
    calls = []
    for n, stmt in enumerate(tree.body, 1):
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        func = call.func if isinstance(call, ast.Call) else None
        if not (
            isinstance(call, ast.Call)
            and isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id == "pyautogui"
            and func.attr in FUNCTIONS
        ):
            msg = f"statement {n} is not a call of one of pyautogui's {', '.join(sorted(FUNCTIONS))}"
            raise ValueError(msg)
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            msg = f"statement {n} has an argument that is not a literal"
            raise ValueError(msg) from None
        if len(kwargs) != len(call.keywords):
            msg = f"statement {n} unpacks keyword arguments"
            raise ValueError(msg)
        calls.append(Call(func.attr, args, kwargs))
    return calls


__all__ = [
    "BUTTONS",
    "CHARACTER_KEYS",
    "CLICK_FUNCTIONS",
    "FUNCTIONS",
    "KEY_MAP",
    "Call",
    "code",
    "coordinate",
    "key_name",
    "parse",
    "to_pixel",
]
