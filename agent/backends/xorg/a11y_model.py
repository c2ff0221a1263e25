"""The AT-SPI lookup's constants: the walk's bounds, the roles it knows, the states it reads.

Pure data, no AT-SPI and no X: the lookup itself is :mod:`~agent.backends.xorg.a11y`; what
a lookup answers (:class:`~agent.elements.Element`, :class:`~agent.elements.Lookup`, the
reasons) is platform-neutral, in :mod:`agent.elements`, re-exported here.
"""

from __future__ import annotations

from agent.elements import (
    FAILED,
    MAX_APP_NAME,
    MAX_AUTOMATION_ID,
    MAX_NAME,
    MAX_PATH,
    MAX_PATH_NAME,
    NO_ELEMENT,
    NO_FOCUS,
    NO_PID,
    NO_WINDOW,
    NOT_ON_BUS,
    OUT_OF_TIME,
    STALL_SKIP_S,
    STALLED,
    Element,
    Lookup,
    cut,
)

#: The walk: deepest level below the window, and accessibles looked at in one lookup.
MAX_DEPTH = 32
MAX_NODES = 400
#: Applications on the bus and windows of one application looked at.
MAX_APPS = 256
MAX_WINDOWS = 64
#: X windows walked down from the root to the client.
MAX_X_DEPTH = 8
#: Seconds between two re-reads of the application list (pid -> application).
APPS_REFRESH_S = 0.25

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
