"""macOS accessibility (AX) element lookups, the pure half: attribute names, error codes, roles,
states, points and pixels.

No framework calls: plain functions over the values :mod:`~agent.backends.darwin.ax_native`
turns CoreFoundation answers into (str, bool, int, float, ``(x, y)`` pairs), tested on every OS.
The lookup itself is :mod:`~agent.backends.darwin.ax_elements`; what a lookup answers is
platform-neutral, in :mod:`agent.elements`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from agent.elements import FAILED, NOT_ON_BUS, STALL_SKIP_S, STALLED

# --- documented constants (HIServices: AXError.h, AXAttributeConstants.h, AXRoleConstants.h) ----

AX_SUCCESS = 0
AX_FAILURE = -25200
AX_ILLEGAL_ARGUMENT = -25201
AX_INVALID_UI_ELEMENT = -25202
AX_CANNOT_COMPLETE = -25204  # the application did not answer within the messaging timeout
AX_ATTRIBUTE_UNSUPPORTED = -25205
AX_NOT_IMPLEMENTED = -25208  # the application does not implement accessibility
AX_API_DISABLED = -25211  # this process is not trusted for accessibility (the permission)
AX_NO_VALUE = -25212

ROLE = "AXRole"
SUBROLE = "AXSubrole"
TITLE = "AXTitle"
DESCRIPTION = "AXDescription"
IDENTIFIER = "AXIdentifier"
ENABLED = "AXEnabled"
FOCUSED = "AXFocused"
SELECTED = "AXSelected"
EXPANDED = "AXExpanded"
POSITION = "AXPosition"
SIZE = "AXSize"
PARENT = "AXParent"
VALUE = "AXValue"
FOCUSED_UI_ELEMENT = "AXFocusedUIElement"

#: What one lookup reads of each element, in one round trip (``AXUIElementCopyMultipleAttributeValues``).
#: ``AXValue`` is not among them: a field's value is typed text; it is read only of a check box,
#: radio button or switch (:data:`TOGGLE_ROLES`), whose value is its state (0, 1, 2 for mixed).
ATTRIBUTES = (
    ROLE,
    SUBROLE,
    TITLE,
    DESCRIPTION,
    IDENTIFIER,
    ENABLED,
    FOCUSED,
    SELECTED,
    EXPANDED,
    POSITION,
    SIZE,
    PARENT,
)

SECURE_TEXT_FIELD = "AXSecureTextField"
APPLICATION_ROLE = "AXApplication"
WINDOW_ROLE = "AXWindow"
#: Roles whose ``AXValue`` is a state: 0 off, 1 on, 2 mixed.
TOGGLE_ROLES = frozenset({"AXCheckBox", "AXRadioButton", "AXMenuItemCheckbox", "AXToggle", "AXSwitch"})
#: Roles whose ``AXValue`` is text: editable when the value is settable, read-only when not.
TEXT_ROLES = frozenset({"AXTextField", "AXTextArea", "AXComboBox"})

# --- the lookup's bounds and roles ------------------------------------------------------------

#: Inter-process calls one lookup may make (one hit or focus query, then about one per ancestor).
MAX_CALLS = 32
#: Levels above a passive hit searched for the actionable element it belongs to.
ACTIONABLE_LEVELS = 4
#: Process names remembered (pid -> name); the table is emptied when full.
MAX_PROCESS_NAMES = 64
#: Longest string read from an attribute, in UTF-16 code units (longer ones are cut when read).
MAX_STRING_UNITS = 1024

#: Roles (ours: without "AX", lower case) that give way to an actionable ancestor.
PASSIVE_ROLES = frozenset({"statictext", "image", "group", "unknown"})
#: Roles a person acts on.
ACTIONABLE_ROLES = frozenset(
    {
        "button",
        "checkbox",
        "radiobutton",
        "link",
        "menuitem",
        "menubaritem",
        "menubutton",
        "popupbutton",
        "textfield",
        "textarea",
        "combobox",
        "slider",
        "incrementor",
        "disclosuretriangle",
        "row",
        "cell",
        "colorwell",
        "dockitem",
    }
)


def role_of(ax_role: object) -> str:
    """Our role from an AX role: without its ``AX`` prefix, lower case (``AXButton`` → ``button``,
    ``AXTextField`` → ``textfield``); "unknown" when there is none."""
    if not isinstance(ax_role, str) or not ax_role:
        return "unknown"
    text = ax_role[2:] if ax_role.startswith("AX") else ax_role
    return text.lower() or "unknown"


def name_of(attributes: Mapping[str, Any]) -> str:
    """The accessible name: ``AXTitle``, else ``AXDescription`` (what VoiceOver reads for a button
    with an image); "" when neither is a non-empty string."""
    for key in (TITLE, DESCRIPTION):
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def states_of(
    attributes: Mapping[str, Any], toggle: object = None, settable: bool | None = None
) -> tuple[str, ...]:
    """The states (the vocabulary of :data:`agent.elements.STATES`) from an element's attributes.

    ``AXEnabled`` → enabled, ``AXFocused`` → focused, ``AXSelected`` → selected, ``AXExpanded``
    → expanded; the ``AXSecureTextField`` subrole → password; an ``AXTextArea`` → multi-line;
    a text role (:data:`TEXT_ROLES`) → editable when its value is settable (``settable``),
    read-only when not; a toggle role's value (``toggle``) 1 → checked, 2 → indeterminate.
    """
    names: set[str] = set()
    for key, name in (
        (ENABLED, "enabled"),
        (FOCUSED, "focused"),
        (SELECTED, "selected"),
        (EXPANDED, "expanded"),
    ):
        if attributes.get(key) is True:
            names.add(name)
    role = attributes.get(ROLE)
    if attributes.get(SUBROLE) == SECURE_TEXT_FIELD:
        names.add("password")
    if role == "AXTextArea":
        names.add("multi-line")
    if role in TEXT_ROLES and settable is not None:
        names.add("editable" if settable else "read-only")
    if role in TOGGLE_ROLES or attributes.get(SUBROLE) in TOGGLE_ROLES:
        number = _finite(toggle)
        if number == 1:
            names.add("checked")
        elif number == 2:
            names.add("indeterminate")
    return tuple(sorted(names))


def is_toggle(attributes: Mapping[str, Any]) -> bool:
    """Whether the element's ``AXValue`` is its on/off state (a check box, radio button, switch)."""
    return attributes.get(ROLE) in TOGGLE_ROLES or attributes.get(SUBROLE) in TOGGLE_ROLES


def is_text(attributes: Mapping[str, Any]) -> bool:
    """Whether the element is a text field, area or combo box (editable or read-only)."""
    return attributes.get(ROLE) in TEXT_ROLES


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _pair(value: object) -> tuple[float, float] | None:
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    a, b = (_finite(v) for v in value)
    if a is None or b is None:
        return None
    return a, b


def to_points(x: float, y: float, pixels_per_point: float) -> tuple[float, float]:
    """A point of the recording's coordinates as AX screen points (top-left origin)."""
    return x / pixels_per_point, y / pixels_per_point


def bounds_in_pixels(
    position: object, size: object, pixels_per_point: float
) -> tuple[int, int, int, int] | None:
    """``(x, y, width, height)`` in the recording's pixels from ``AXPosition`` and ``AXSize`` (points,
    top-left origin); None when either is missing, not finite, or the size is negative."""
    origin, extent = _pair(position), _pair(size)
    if origin is None or extent is None or extent[0] < 0 or extent[1] < 0:
        return None
    values = (origin[0], origin[1], extent[0], extent[1])
    scaled = [v * pixels_per_point for v in values]
    if any(abs(v) >= 2**31 for v in scaled):
        return None
    x, y, w, h = (round(v) for v in scaled)
    return x, y, w, h


def reason_of_ax_error(code: int, missing: str) -> str:
    """Why a lookup got no element, from the ``AXError`` of the call that failed.

    ``kAXErrorCannotComplete``: the application did not answer within the messaging timeout
    (:data:`~agent.elements.STALLED`).  ``kAXErrorAPIDisabled`` (this process is not trusted
    for accessibility: the Accessibility permission was taken away) and
    ``kAXErrorNotImplemented`` (the application has no accessibility):
    :data:`~agent.elements.NOT_ON_BUS`, exported as ``not_accessible``.  ``kAXErrorNoValue``,
    ``kAXErrorAttributeUnsupported`` and ``kAXErrorInvalidUIElement`` (the element went away):
    ``missing`` (no element, no focus).  Anything else :data:`~agent.elements.FAILED`.
    """
    if code == AX_CANNOT_COMPLETE:
        return STALLED
    if code in (AX_API_DISABLED, AX_NOT_IMPLEMENTED):
        return NOT_ON_BUS
    if code in (AX_NO_VALUE, AX_ATTRIBUTE_UNSUPPORTED, AX_INVALID_UI_ELEMENT):
        return missing
    return FAILED


__all__ = [
    "ACTIONABLE_LEVELS",
    "ACTIONABLE_ROLES",
    "ATTRIBUTES",
    "AX_API_DISABLED",
    "AX_CANNOT_COMPLETE",
    "AX_NO_VALUE",
    "AX_SUCCESS",
    "MAX_CALLS",
    "MAX_PROCESS_NAMES",
    "MAX_STRING_UNITS",
    "PASSIVE_ROLES",
    "STALL_SKIP_S",
    "bounds_in_pixels",
    "is_text",
    "is_toggle",
    "name_of",
    "reason_of_ax_error",
    "role_of",
    "states_of",
    "to_points",
]
