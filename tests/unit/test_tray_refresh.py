"""agent/ui/tray.py, Refresh: every second the icon shows the recorder's state; its image (a PNG
pystray writes to a file and GTK loads again) is redrawn only when the state it shows changed,
while the tooltip and the menu, which count the events saved, follow every second."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from agent.ui.tray import Refresh, headline


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
