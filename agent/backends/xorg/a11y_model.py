"""What an element lookup answers (:class:`Element`, :class:`Lookup`), and its bounds.

Pure data and constants, no AT-SPI and no X: the lookup itself is
:mod:`~agent.backends.xorg.a11y`.  ``Element.name``, ``path`` and
``automation_id`` are captured content (redacted at export like window titles).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Longest name kept (characters); application names and automation ids have their own bounds.
MAX_NAME = 200
MAX_APP_NAME = 100
MAX_AUTOMATION_ID = 100
#: Names in the ancestor path are cut shorter, and the path has at most this many levels.
MAX_PATH_NAME = 40
MAX_PATH = 8
#: The walk: deepest level below the window, and accessibles looked at in one lookup.
MAX_DEPTH = 32
MAX_NODES = 400
#: Applications on the bus and windows of one application looked at.
MAX_APPS = 256
MAX_WINDOWS = 64
#: X windows walked down from the root to the client.
MAX_X_DEPTH = 8
#: Seconds an application that did not answer is skipped.
STALL_SKIP_S = 2.0
#: Seconds between two re-reads of the application list (pid -> application).
APPS_REFRESH_S = 0.25

# Why there is no element (Lookup.reason); never captured content.
NO_WINDOW = "no client window at the point"
NO_PID = "the window has no _NET_WM_PID"
NOT_ON_BUS = "not on the accessibility bus"
NO_ELEMENT = "no accessible element at the point"
NO_FOCUS = "no focused element"
STALLED = "the application did not answer in time"
OUT_OF_TIME = "the lookup ran out of time"
FAILED = "the lookup failed"

#: Roles that give way to an actionable ancestor (a label inside a button, Chromium's static text).
PASSIVE_ROLES = frozenset({"label", "static", "image", "icon", "filler", "section", "paragraph", "text leaf"})
#: Roles a person acts on.
ACTIONABLE_ROLES = frozenset(
    {
        "push button",
        "toggle button",
        "radio button",
        "check box",
        "link",
        "entry",
        "text",
        "password text",
        "spin button",
        "combo box",
        "menu item",
        "check menu item",
        "radio menu item",
        "menu",
        "page tab",
        "list item",
        "tree item",
        "table cell",
        "slider",
        "scroll bar",
        "switch",
        "button",
    }
)
#: Roles where the ancestor path ends.
WINDOW_ROLES = frozenset({"frame", "window", "dialog", "alert", "file chooser", "application"})

#: The fixed vocabulary of states: AT-SPI state name -> ours ("password" comes from the role).
STATE_NAMES = (
    ("ACTIVE", "active"),
    ("CHECKED", "checked"),
    ("EDITABLE", "editable"),
    ("ENABLED", "enabled"),
    ("EXPANDED", "expanded"),
    ("FOCUSABLE", "focusable"),
    ("FOCUSED", "focused"),
    ("INDETERMINATE", "indeterminate"),
    ("MULTI_LINE", "multi-line"),
    ("PRESSED", "pressed"),
    ("READ_ONLY", "read-only"),
    ("REQUIRED", "required"),
    ("SELECTED", "selected"),
    ("VISITED", "visited"),
)


@dataclass(frozen=True)
class Element:
    """An accessible element.  ``name``, ``path`` and ``automation_id`` are captured content.

    :ivar role: the AT-SPI role name ("push button", "password text", ...).
    :ivar states: sorted names from :data:`STATE_NAMES` plus "password" (role password text).
    :ivar bounds: x, y, width, height in screen pixels.
    :ivar path: ``role:name`` of the ancestors, outermost (the window) first, at most :data:`MAX_PATH`.
    :ivar automation_id: AT-SPI ``accessible_id`` ("" when not set).
    """

    role: str
    name: str = field(repr=False)  # captured content: never in a repr, a log line or a message
    states: tuple[str, ...]
    bounds: tuple[int, int, int, int]
    app: str
    pid: int
    path: tuple[str, ...] = field(repr=False)
    automation_id: str = field(repr=False)

    @property
    def is_password(self) -> bool:
        return "password" in self.states


@dataclass(frozen=True)
class Lookup:
    """One lookup's answer: the element, or None and why (``reason``, never captured content).

    :ivar window_id: the X client window resolved (None when none was), for the caller's checks.
    :ivar pid: its ``_NET_WM_PID``.
    """

    element: Element | None
    reason: str
    window_id: int | None
    pid: int | None


def cut(text: Any, bound: int) -> str:
    """``text`` as a string of at most ``bound`` characters (None: "")."""
    if not isinstance(text, str):
        return ""
    return text[:bound]


__all__ = [
    "ACTIONABLE_ROLES",
    "APPS_REFRESH_S",
    "FAILED",
    "MAX_APPS",
    "MAX_APP_NAME",
    "MAX_AUTOMATION_ID",
    "MAX_DEPTH",
    "MAX_NAME",
    "MAX_NODES",
    "MAX_PATH",
    "MAX_PATH_NAME",
    "MAX_WINDOWS",
    "MAX_X_DEPTH",
    "NOT_ON_BUS",
    "NO_ELEMENT",
    "NO_FOCUS",
    "NO_PID",
    "NO_WINDOW",
    "OUT_OF_TIME",
    "PASSIVE_ROLES",
    "STALLED",
    "STALL_SKIP_S",
    "STATE_NAMES",
    "WINDOW_ROLES",
    "Element",
    "Lookup",
    "cut",
]
