"""UI Automation element lookups, the pure half: documented ids, roles, states, bounds, error codes.

No COM and no Windows API: plain functions over the values comtypes hands back (ints, bools,
``tagRECT``-like objects, exceptions with an ``hresult``), tested on every OS.  The lookup
itself is :mod:`~agent.backends.win32.uia_elements`; what a lookup answers
(:class:`~agent.elements.Element`, :class:`~agent.elements.Lookup`, the reasons) is
platform-neutral, in :mod:`agent.elements`.
"""

from __future__ import annotations

from typing import Any

from agent.elements import FAILED, NOT_ON_BUS, STALL_SKIP_S, STALLED

# --- documented ids (UIAutomationClient.h, UIAutomationCoreApi.h, winerror.h) -----------------

# Automation element property ids.
UIA_BOUNDING_RECTANGLE = 30001
UIA_PROCESS_ID = 30002
UIA_CONTROL_TYPE = 30003
UIA_NAME = 30005
UIA_HAS_KEYBOARD_FOCUS = 30008
UIA_IS_KEYBOARD_FOCUSABLE = 30009
UIA_IS_ENABLED = 30010
UIA_AUTOMATION_ID = 30011
UIA_IS_PASSWORD = 30019
UIA_NATIVE_WINDOW_HANDLE = 30020
UIA_IS_REQUIRED_FOR_FORM = 30025
# Control pattern property ids (the pattern's state, when the element has the pattern).
UIA_VALUE_IS_READ_ONLY = 30046
UIA_EXPAND_COLLAPSE_STATE = 30070
UIA_SELECTION_ITEM_IS_SELECTED = 30079
UIA_TOGGLE_STATE = 30086

#: What one lookup reads of each element, in one cross-process round trip (a cache request).
CACHED_PROPERTIES = (
    UIA_BOUNDING_RECTANGLE,
    UIA_PROCESS_ID,
    UIA_CONTROL_TYPE,
    UIA_NAME,
    UIA_HAS_KEYBOARD_FOCUS,
    UIA_IS_KEYBOARD_FOCUSABLE,
    UIA_IS_ENABLED,
    UIA_AUTOMATION_ID,
    UIA_IS_PASSWORD,
    UIA_NATIVE_WINDOW_HANDLE,
    UIA_IS_REQUIRED_FOR_FORM,
    UIA_VALUE_IS_READ_ONLY,
    UIA_EXPAND_COLLAPSE_STATE,
    UIA_SELECTION_ITEM_IS_SELECTED,
    UIA_TOGGLE_STATE,
)

# ToggleState and ExpandCollapseState enumerations.
TOGGLE_ON = 1
TOGGLE_INDETERMINATE = 2
EXPANDED = 1
PARTIALLY_EXPANDED = 2

#: Control type ids and their names (UIA_ButtonControlTypeId = 50000, ...); a role is the name,
#: lower case ("button", "edit", "checkbox").
CONTROL_TYPES: dict[int, str] = {
    50000: "Button",
    50001: "Calendar",
    50002: "CheckBox",
    50003: "ComboBox",
    50004: "Edit",
    50005: "Hyperlink",
    50006: "Image",
    50007: "ListItem",
    50008: "List",
    50009: "Menu",
    50010: "MenuBar",
    50011: "MenuItem",
    50012: "ProgressBar",
    50013: "RadioButton",
    50014: "ScrollBar",
    50015: "Slider",
    50016: "Spinner",
    50017: "StatusBar",
    50018: "Tab",
    50019: "TabItem",
    50020: "Text",
    50021: "ToolBar",
    50022: "ToolTip",
    50023: "Tree",
    50024: "TreeItem",
    50025: "Custom",
    50026: "Group",
    50027: "Thumb",
    50028: "DataGrid",
    50029: "DataItem",
    50030: "Document",
    50031: "SplitButton",
    50032: "Window",
    50033: "Pane",
    50034: "Header",
    50035: "HeaderItem",
    50036: "Table",
    50037: "TitleBar",
    50038: "Separator",
    50039: "SemanticZoom",
    50040: "AppBar",
}

#: TreeScope_Element: a cache request reads the element itself (not its children).
TREE_SCOPE_ELEMENT = 1

# HRESULTs a UI Automation call answers with.
UIA_E_ELEMENTNOTAVAILABLE = 0x80040201
UIA_E_TIMEOUT = 0x80131505  # the provider did not answer within the connection/transaction timeout
E_ACCESSDENIED = 0x80070005  # e.g. an elevated application, seen from a process that is not
RPC_E_DISCONNECTED = 0x80010108  # the application went away
RPC_S_SERVER_UNAVAILABLE = 0x800706BA
CO_E_OBJNOTCONNECTED = 0x800401FD

# --- the lookup's bounds and roles ------------------------------------------------------------

#: Cross-process calls one lookup may make (one hit or focus query, then one per ancestor).
MAX_CALLS = 32
#: Levels above a passive hit searched for the actionable element it belongs to.
ACTIONABLE_LEVELS = 4
#: Process names remembered (pid -> executable name); the table is emptied when full.
MAX_PROCESS_NAMES = 64

#: Roles that give way to an actionable ancestor (text inside a button, an icon in a link).
PASSIVE_ROLES = frozenset({"text", "image", "group", "custom"})
#: Roles a person acts on.
ACTIONABLE_ROLES = frozenset(
    {
        "button",
        "checkbox",
        "combobox",
        "dataitem",
        "edit",
        "headeritem",
        "hyperlink",
        "listitem",
        "menuitem",
        "radiobutton",
        "slider",
        "spinner",
        "splitbutton",
        "tabitem",
        "treeitem",
    }
)
#: The role where the ancestor path ends (besides the desktop, whose child is a top-level window).
WINDOW_ROLE = "window"


def role_of(control_type: object) -> str:
    """The role of a control type id: its name lower case ("button"); "unknown" for another id."""
    if isinstance(control_type, bool) or not isinstance(control_type, int):
        return "unknown"
    return CONTROL_TYPES.get(control_type, "unknown").lower()


def flag(value: object) -> bool | None:
    """A BOOL property as True/False; None when it is not a BOOL (the pattern is not supported:
    UI Automation answers its "not supported" object)."""
    if isinstance(value, (bool, int)):  # comtypes hands a BOOL back as bool or int
        return bool(value)
    return None


def number(value: object) -> int | None:
    """An enumeration property as an int; None when it is not one (the pattern is not supported)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def states_of(
    *,
    focused: object = None,
    enabled: object = None,
    focusable: object = None,
    password: object = None,
    required: object = None,
    read_only: object = None,
    toggle: object = None,
    selected: object = None,
    expand: object = None,
) -> tuple[str, ...]:
    """The states (the vocabulary of :data:`agent.elements.STATES`) from an element's properties.

    ``HasKeyboardFocus`` → focused, ``IsEnabled`` → enabled, ``IsKeyboardFocusable`` →
    focusable, ``IsPassword`` → password, ``IsRequiredForForm`` → required; the Value
    pattern's ``IsReadOnly`` → read-only when true, editable when false; the Toggle pattern's
    ``ToggleState`` On → checked, Indeterminate → indeterminate; ``SelectionItem.IsSelected`` →
    selected; ``ExpandCollapseState`` Expanded or PartiallyExpanded → expanded.  A property the
    element does not have (None, or UI Automation's "not supported" object) adds nothing.
    """
    names: set[str] = set()
    for value, name in (
        (focused, "focused"),
        (enabled, "enabled"),
        (focusable, "focusable"),
        (password, "password"),
        (required, "required"),
        (selected, "selected"),
    ):
        if flag(value):
            names.add(name)
    ro = flag(read_only)
    if ro is not None:
        names.add("read-only" if ro else "editable")
    toggled = number(toggle)
    if toggled == TOGGLE_ON:
        names.add("checked")
    elif toggled == TOGGLE_INDETERMINATE:
        names.add("indeterminate")
    if number(expand) in (EXPANDED, PARTIALLY_EXPANDED):
        names.add("expanded")
    return tuple(sorted(names))


def rect_bounds(rect: Any) -> tuple[int, int, int, int] | None:
    """``(x, y, width, height)`` from ``CurrentBoundingRectangle``/``CachedBoundingRectangle`` (a
    ``tagRECT``: left, top, right, bottom, physical screen pixels for a per-monitor DPI aware
    client); None when there is none, it is all zeros (UI Automation's "no rectangle": the element
    is off screen) or inside out."""
    try:
        left, top, right, bottom = (int(getattr(rect, side)) for side in ("left", "top", "right", "bottom"))
    except (AttributeError, TypeError, ValueError, OverflowError):
        return None
    if left == top == right == bottom == 0:
        return None
    if right < left or bottom < top:
        return None
    return left, top, right - left, bottom - top


def hresult_of(exc: BaseException) -> int | None:
    """The HRESULT of a failed COM call as an unsigned 32-bit number (comtypes' ``COMError.hresult``,
    ``OSError.winerror``, else an int first argument); None when the error carries none."""
    for value in (getattr(exc, "hresult", None), getattr(exc, "winerror", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value & 0xFFFFFFFF
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return int(args[0]) & 0xFFFFFFFF
    return None


def reason_of_hresult(hresult: int | None, missing: str) -> str:
    """Why a lookup got no element, from the HRESULT of the call that failed.

    ``UIA_E_TIMEOUT``: the application did not answer (:data:`~agent.elements.STALLED`);
    ``E_ACCESSDENIED``: it runs at a higher integrity level (an elevated application) and will
    not be read by this process (:data:`~agent.elements.NOT_ON_BUS`, "not accessible");
    ``UIA_E_ELEMENTNOTAVAILABLE`` and the disconnections: the element or its application went
    away (``missing``: no element, no focus); anything else :data:`~agent.elements.FAILED`.
    """
    if hresult is None:
        return FAILED
    code = hresult & 0xFFFFFFFF
    if code == UIA_E_TIMEOUT:
        return STALLED
    if code == E_ACCESSDENIED:
        return NOT_ON_BUS
    if code in (
        UIA_E_ELEMENTNOTAVAILABLE,
        RPC_E_DISCONNECTED,
        RPC_S_SERVER_UNAVAILABLE,
        CO_E_OBJNOTCONNECTED,
    ):
        return missing
    return FAILED


__all__ = [
    "ACTIONABLE_LEVELS",
    "ACTIONABLE_ROLES",
    "CACHED_PROPERTIES",
    "CONTROL_TYPES",
    "E_ACCESSDENIED",
    "MAX_CALLS",
    "MAX_PROCESS_NAMES",
    "PASSIVE_ROLES",
    "STALL_SKIP_S",
    "TREE_SCOPE_ELEMENT",
    "UIA_E_ELEMENTNOTAVAILABLE",
    "UIA_E_TIMEOUT",
    "WINDOW_ROLE",
    "flag",
    "hresult_of",
    "number",
    "reason_of_hresult",
    "rect_bounds",
    "role_of",
    "states_of",
]
