"""agent/ui/tray.py, Refresh: every second the icon shows the recorder's state; its image (a PNG
pystray writes to a file and GTK loads again) is redrawn only when the state it shows changed,
the tooltip follows every second, and the menu, whose first line counts the events saved, is
rebuilt when anything it shows changed."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from agent.ui.tray import Refresh, headline, menu_view


class Recorder:
    """What Refresh reads of the recorder: its status and its tasks (as agent.control.Recorder)."""

    def __init__(self) -> None:
        self.s: dict[str, Any] = {
            "state": "recording",
            "study": "s1",
            "reason": "",
            "error": "",
            "events_written": 0,
            "dropped": 0,
            "filtered": False,
        }
        self.study = SimpleNamespace(tasks_mode="optional")
        self.running: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        return dict(self.s)

    def task_status(self) -> dict[str, Any]:
        return {"running": self.running}


class Icon:
    """Counts what Refresh asks pystray's icon to redo."""

    def __init__(self) -> None:
        self.images = self.menus = 0
        self.title = ""

    @property
    def icon(self) -> None:
        return None

    @icon.setter
    def icon(self, _image: Any) -> None:
        self.images += 1

    def update_menu(self) -> None:
        self.menus += 1


def test_counts_change_the_tooltip_and_the_menu_not_the_image() -> None:
    rec, icon = Recorder(), Icon()
    refresh = Refresh(rec)  # type: ignore[arg-type]
    refresh(icon)
    assert (icon.images, icon.menus) == (1, 1)
    for n in range(1, 30):
        rec.s["events_written"] = n * 40
        refresh(icon)
        assert icon.title.endswith(f"{n * 40} events saved, 0 dropped")
    assert (icon.images, icon.menus) == (1, 30)


def test_a_state_change_redraws_the_image() -> None:
    rec, icon = Recorder(), Icon()
    refresh = Refresh(rec)  # type: ignore[arg-type]
    refresh(icon)
    rec.s["state"] = "paused"
    refresh(icon)
    assert icon.images == 2
    rec.s["filtered"] = True  # only "recording" shows as filtered: nothing changes while paused
    refresh(icon)
    rec.s["state"] = "recording"
    refresh(icon)
    assert icon.images == 3
    assert "protected window" in icon.title


def test_the_tooltip_says_the_state_the_counts_and_the_error() -> None:
    s = Recorder().status() | {"events_written": 12, "dropped": 1, "error": "x"}
    assert headline(s) == "optin: RECORDING for study s1; 12 events saved, 1 dropped; x"
    assert headline(s | {"state": "stopped"}) == "optin: stopped for study s1; x"


class Item:
    """A pystray menu item's face: its words and states, evaluated when read (as pystray does)."""

    def __init__(
        self, text: Callable[[], str], visible: Callable[[], bool] = lambda: True, submenu: Any = None
    ) -> None:
        self._text, self._visible, self.submenu = text, visible, submenu
        self.enabled, self.checked = True, None

    @property
    def text(self) -> str:
        return self._text()

    @property
    def visible(self) -> bool:
        return self._visible()


def _menu_of(rec: Recorder) -> Any:
    return SimpleNamespace(
        items=(
            Item(lambda: headline(rec.status())),
            Item(
                lambda: "Pause",
                lambda: rec.s["state"] == "recording",
                SimpleNamespace(items=(Item(lambda: "1 h"),)),
            ),
            Item(lambda: "Resume", lambda: rec.s["state"] == "paused"),
        )
    )


def test_the_menu_is_rebuilt_when_what_it_shows_changed_and_only_then() -> None:
    rec, icon = Recorder(), Icon()
    icon.menu = _menu_of(rec)  # type: ignore[attr-defined]
    refresh = Refresh(rec)  # type: ignore[arg-type]
    for _ in range(10):  # an idle agent: nothing it shows changes
        refresh(icon)
    assert icon.menus == 1
    rec.s["events_written"] = 7  # the first line counts the events saved
    refresh(icon)
    assert icon.menus == 2
    rec.s["state"] = "paused"  # Pause hidden, Resume shown (and the first line says so)
    refresh(icon)
    refresh(icon)
    assert icon.menus == 3
    assert menu_view(icon.menu)[1][1] is False and menu_view(icon.menu)[2][1] is True  # type: ignore[attr-defined]
