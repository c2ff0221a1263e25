"""The keyboard vocabulary (agent/keyboard): a pure package, each reader's key classes, one hotkey error."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import agent
from agent.capture.screen import action_reason
from agent.events import KeyPress, KeyRelease
from agent.keyboard.hotkey import Hotkey, HotkeyError
from agent.keyboard.names import MODIFIER_NAMES, SCREEN_SILENT_NAMES, key_action
from agent.steps import steps

ROOT = Path(agent.__file__).parent
#: What the keyboard package may import besides agent.events and itself.
PURE_STDLIB = {"__future__", "bisect", "collections", "dataclasses", "typing", "unicodedata"}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def agent_imports(path: Path) -> set[str]:
    return {name for name in imports(path) if name == "agent" or name.startswith("agent.")}


@pytest.mark.parametrize("path", sorted((ROOT / "keyboard").glob("*.py")), ids=lambda p: p.name)
def test_the_keyboard_package_reads_only_event_records(path: Path) -> None:
    ours = agent_imports(path)
    pure = {"agent.events", "agent.untrusted_text"}  # records, and showing a hotkey safely
    assert all(name in pure or name.startswith("agent.keyboard") for name in ours), ours
    others = {name.partition(".")[0] for name in imports(path) - ours}
    assert others <= PURE_STDLIB, others - PURE_STDLIB  # no pynput, no I/O, no logging
    source = path.read_text(encoding="utf-8")
    for word in ("print(", "sys.stderr", "open("):
        assert word not in source


@pytest.mark.parametrize("name", ["steps.py", "redact/policy.py", "redact/terminal.py", "redact/screen.py"])
def test_export_side_key_readers_import_nothing_from_capture(name: str) -> None:
    assert not [m for m in agent_imports(ROOT / name) if m.startswith("agent.capture")]


def test_scroll_lock_alone_is_a_screen_action_but_no_step() -> None:
    """The two readers keep their own answer for scroll lock (the screen watcher never had it)."""
    press, release = KeyPress(1, None, "scroll_lock", None, ()), KeyRelease(2, None, "scroll_lock", None, ())
    assert action_reason(press) == "hotkey"
    assert steps([press, release]) == []
    assert "scroll_lock" in MODIFIER_NAMES and "scroll_lock" not in SCREEN_SILENT_NAMES


@pytest.mark.parametrize(
    ("char", "name", "mods", "action"),
    [
        ("a", None, (), "key"),
        ("A", None, ("shift",), "key"),
        (None, "space", (), "key"),
        (None, "backspace", (), "key"),
        (None, "enter", (), "hotkey"),
        ("c", None, ("ctrl",), "hotkey"),
        ("q", None, ("alt_gr",), "hotkey"),
        (None, "caps_lock", (), None),
        (None, "shift_l", (), None),
        (None, "cmd", (), None),
    ],
)
def test_key_actions(char: str | None, name: str | None, mods: tuple[str, ...], action: str | None) -> None:
    event = KeyPress(1, char, name, None, mods)
    assert key_action(event) == action == action_reason(event)


@pytest.mark.parametrize("text", ["p", "<ctrl>+pp", "<ctrl>+<alt>", "<ctrl>+"])
def test_one_error_type_for_a_bad_hotkey(text: str) -> None:
    with pytest.raises(HotkeyError) as info:
        Hotkey.parse(text)
    assert isinstance(info.value, ValueError)  # what the recorder and older callers catch
    assert repr(text.strip().lower()) in str(info.value)
