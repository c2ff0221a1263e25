"""The UI element under an action: what a lookup answers, and the stored ``element`` record.

Pure data, no platform code: each backend's finder (AT-SPI on X11, UI Automation on
Windows, AX on macOS) answers a :class:`Lookup`; the recorder's worker
(:mod:`agent.capture.element_lookup`) turns it into an :class:`agent.events.ElementSeen`
record with :func:`record_of` (docs/format.md, docs/export-format.md "The UI element of a
step").  ``Element.name``, ``path`` names and ``automation_id`` are captured content: never
in a repr, a log line or a message.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Longest name kept (characters); application names and automation ids have their own bounds.
MAX_NAME = 200
MAX_APP_NAME = 100
MAX_AUTOMATION_ID = 100
MAX_ROLE = 64
#: Names in the ancestor path are cut shorter, and the path has at most this many levels.
MAX_PATH_NAME = 40
MAX_PATH = 8

#: The states a record may carry (``elements.version`` 1 of docs/export-format.md).
STATES = frozenset(
    {
        "active",
        "checked",
        "editable",
        "enabled",
        "expanded",
        "focusable",
        "focused",
        "indeterminate",
        "multi-line",
        "password",
        "pressed",
        "read-only",
        "required",
        "selected",
        "visited",
    }
)

# Why there is no element (Lookup.reason); never captured content.
NO_WINDOW = "no client window at the point"
NO_PID = "the window has no process id"
NOT_ON_BUS = "not on the accessibility bus"
NO_ELEMENT = "no accessible element at the point"
NO_FOCUS = "no focused element"
STALLED = "the application did not answer in time"
OUT_OF_TIME = "the lookup ran out of time"
FAILED = "the lookup failed"
LATE = "the lookup took longer than its budget"
#: Not a miss: the window is deny-listed or optin's own, so nothing of it was read.
DENIED = "no lookup in this window (a deny rule or optin's own)"
TOO_OLD = "the request waited too long in the queue"

#: A lookup's result as stored and exported (the ``result`` of an ``element`` line).
FOUND = "found"
RESULTS = ("found", "not_accessible", "no_element", "failed", "late")
_RESULT_OF_REASON = {
    NO_WINDOW: "no_element",
    NO_ELEMENT: "no_element",
    NO_FOCUS: "no_element",
    NO_PID: "not_accessible",
    NOT_ON_BUS: "not_accessible",
    STALLED: "late",
    OUT_OF_TIME: "late",
    LATE: "late",
    TOO_OLD: "late",
    FAILED: "failed",
}
#: Where a lookup looked: the point of a press or scroll, or the keyboard focus at a key.
AT = ("point", "focus")
#: Seconds an application that did not answer is skipped by every finder.
STALL_SKIP_S = 2.0


class Stalled(Exception):
    """A call to the application did not answer in time (a finder's lookup ends :data:`STALLED`)."""


class OutOfTime(Exception):
    """The lookup's deadline or call bound passed (it ends :data:`OUT_OF_TIME`)."""


class Miss(Exception):
    """A call failed; ``reason`` (one of the reasons above) says why, never captured content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LookupBudget:
    """What every platform's finder counts: one lookup's deadline and call bound, and the
    applications skipped for :data:`STALL_SKIP_S` after one stalled.  One finder, one thread.

    :param budget_s: the time a lookup may take unless :meth:`start` is given another.
    :param max_calls: the calls (or nodes visited) one lookup may make.
    """

    def __init__(self, budget_s: float, max_calls: int) -> None:
        self.budget_s = budget_s
        self.max_calls = max_calls
        self._deadline = 0.0
        self._calls = 0
        self._stalled: dict[int, float] = {}

    def start(self, budget_s: float | None = None) -> None:
        """A lookup begins: its deadline is ``budget_s`` (default :attr:`budget_s`) from now."""
        self._deadline = time.monotonic() + (self.budget_s if budget_s is None else budget_s)
        self._calls = 0

    def check(self) -> None:
        """Before anything that takes time.

        :raises OutOfTime: the deadline passed."""
        if time.monotonic() > self._deadline:
            raise OutOfTime

    def spend(self) -> None:
        """Before one call: counts it.

        :raises OutOfTime: the deadline passed or the lookup made :attr:`max_calls` calls."""
        self.check()
        if self._calls >= self.max_calls:
            raise OutOfTime
        self._calls += 1

    def stalled(self, pid: int | None) -> None:
        """Process ``pid`` did not answer: its lookups are skipped for :data:`STALL_SKIP_S`."""
        if pid is not None:
            self._stalled[pid] = time.monotonic() + STALL_SKIP_S

    def skipped(self, pid: int) -> bool:
        """Whether lookups in process ``pid`` are skipped now (it stalled a moment ago)."""
        until = self._stalled.get(pid)
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        del self._stalled[pid]
        return False


@dataclass(frozen=True)
class Element:
    """An accessible element.  ``name``, ``path`` names and ``automation_id`` are captured content.

    :ivar role: the API's role name, lower case ("push button", "password text", ...).
    :ivar states: sorted names from :data:`STATES` ("password" for a password field).
    :ivar bounds: x, y, width, height in screen pixels, or None when the API gave none.
    :ivar path: ``(role, name)`` of the ancestors, outermost (the window) first, at most
        :data:`MAX_PATH`.
    :ivar automation_id: the platform's identifier ("" when not set).
    """

    role: str
    name: str = field(repr=False)  # captured content: never in a repr, a log line or a message
    states: tuple[str, ...]
    bounds: tuple[int, int, int, int] | None
    app: str
    pid: int
    path: tuple[tuple[str, str], ...] = field(repr=False)
    automation_id: str = field(repr=False)

    @property
    def is_password(self) -> bool:
        return "password" in self.states


@dataclass(frozen=True)
class Lookup:
    """One lookup's answer: the element, or None and why (``reason``, never captured content).

    :ivar window_id: the native window resolved (None when none was), for the caller's checks.
    :ivar pid: its process id.
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


def result_of(lookup: Lookup) -> str:
    """The stored result of ``lookup``: one of :data:`RESULTS`."""
    if lookup.element is not None:
        return FOUND
    return _RESULT_OF_REASON.get(lookup.reason, "failed")


def _role(text: str) -> str:
    role = " ".join(text.lower().split())[:MAX_ROLE]
    return role if role[:1].isalpha() else "unknown"


def record_of(element: Element) -> dict[str, Any]:
    """The stored form of ``element`` (JSON values; names as captured, bounded)."""
    bounds = element.bounds
    if bounds is not None and (bounds[2] < 0 or bounds[3] < 0):
        bounds = None  # an impossible rectangle (Firefox's -1,-1,-1,-1 for a document)
    return {
        "role": _role(element.role),
        "name": cut(element.name, MAX_NAME) or None,
        "states": sorted(set(element.states) & STATES),
        "bounds": list(bounds) if bounds is not None else None,
        "app": cut(element.app, MAX_APP_NAME) or None,
        "path": [
            {"role": _role(role), "name": cut(name, MAX_PATH_NAME) or None}
            for role, name in element.path[-MAX_PATH:]
        ],
        "automation_id": cut(element.automation_id, MAX_AUTOMATION_ID) or None,
    }


_INT32 = 2**31


def _text_problem(what: str, value: Any, bound: int, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= bound:
        return f"{what} is {'' if required else 'null or '}a string of 1 to {bound} characters"
    return None


def _bounds_problem(bounds: Any) -> str | None:
    if bounds is None:
        return None
    if (
        not isinstance(bounds, list)
        or len(bounds) != 4
        or any(isinstance(v, bool) or not isinstance(v, int) or not -_INT32 <= v < _INT32 for v in bounds)
        or bounds[2] < 0
        or bounds[3] < 0
    ):
        return "an element's bounds are null or [x, y, w, h], 32-bit integers, w and h at least 0"
    return None


def _path_problem(path: Any) -> str | None:
    if not isinstance(path, list) or len(path) > MAX_PATH:
        return f"an element's path is a list of at most {MAX_PATH} ancestors"
    for item in path:
        if not isinstance(item, Mapping) or set(item) != {"role", "name"}:
            return "an ancestor is an object with exactly the keys role and name"
        problem = _text_problem("an ancestor's role", item["role"], MAX_ROLE, required=True)
        problem = problem or _text_problem("an ancestor's name", item["name"], 1024)
        if problem:
            return problem
    return None


_KEYS = frozenset({"role", "name", "states", "bounds", "app", "path", "automation_id"})


def record_problem(record: Any) -> str | None:
    """Why ``record`` is not a well-formed stored element (the shape only, never its text)."""
    if not isinstance(record, Mapping):
        return "an element is an object"
    if set(record) != _KEYS:
        return "an element has exactly the keys " + ", ".join(sorted(_KEYS))
    states = record["states"]
    if (
        not isinstance(states, list)
        or any(not isinstance(s, str) or s not in STATES for s in states)
        or states != sorted(set(states))
    ):
        return "an element's states are distinct known state names, sorted"
    return (
        _text_problem("an element's role", record["role"], MAX_ROLE, required=True)
        or _text_problem("an element's name", record["name"], 1024)
        or _text_problem("an element's app", record["app"], 200)
        or _text_problem("an element's automation_id", record["automation_id"], 256)
        or _bounds_problem(record["bounds"])
        or _path_problem(record["path"])
    )


__all__ = [
    "AT",
    "DENIED",
    "FAILED",
    "FOUND",
    "LATE",
    "MAX_APP_NAME",
    "MAX_AUTOMATION_ID",
    "MAX_NAME",
    "MAX_PATH",
    "MAX_PATH_NAME",
    "NOT_ON_BUS",
    "NO_ELEMENT",
    "NO_FOCUS",
    "NO_PID",
    "NO_WINDOW",
    "OUT_OF_TIME",
    "RESULTS",
    "STALLED",
    "STALL_SKIP_S",
    "STATES",
    "TOO_OLD",
    "Element",
    "Lookup",
    "LookupBudget",
    "Miss",
    "OutOfTime",
    "Stalled",
    "cut",
    "record_of",
    "record_problem",
    "result_of",
]
