"""The counts and summaries a bundle's manifest states, computed one way for writer and reader.

docs/export-format.md ("What a reader recomputes"): the writer (agent/export/bundle.py) puts
these into the manifest, and the reader (agent/export/recount.py, for bundle_checks.py)
recomputes them from the members and refuses a bundle whose manifest says otherwise.  Pure
functions over the records as ``events.jsonl`` holds them (``{"k": ..., "t_ns": ..., ...}``),
so both sides run the same code; a hostile record (a non-integer time, a detail that is not
an object) raises :class:`ValueError`, never anything else.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

from agent.elements import RESULTS, record_problem

#: The keys of every ``optin-bundle/3`` step member, in the order the writer puts them (the
#: reader requires exactly these).
STEP_KEYS = (
    "action",
    "x",
    "y",
    "to_x",
    "to_y",
    "button",
    "dx",
    "dy",
    "text",
    "keys",
    "t_start_ns",
    "t_end_ns",
    "window",
    "frame",
    "events",
    "task",
    "element",
)
#: ``session_stop`` ``detail.loss`` keys → the manifest's ``loss`` keys.
STOP_LOSS = {
    "events": "dropped_events",
    "frame_failures": "frame_failures",
    "frames_skipped": "frames_skipped",
    "pastes_lost": "pastes_lost",
}


#: The accessibility APIs an ``elements.api`` may name (docs/export-format.md, optin-bundle/3).
ELEMENT_APIS = ("atspi", "uia", "ax")
#: The results an ``element`` line may have (agent/elements.py), each a key of ``loss.elements``.
ELEMENT_RESULTS = RESULTS

#: An element's texts in a bundle, at most (docs/export-format.md, "The UI element of a step").
ELEMENT_NAME_BOUND = 1024
ELEMENT_ID_BOUND = 256
#: A role as a bundle spells it (the writer makes any other ``unknown``).
ELEMENT_ROLE = re.compile(r"[a-z][a-z0-9 _-]{0,63}")

#: Times are monotonic nanoseconds, signed 64-bit.
INT64 = 1 << 63


def is_integer(value: Any) -> TypeGuard[int]:
    """``value`` is a signed 64-bit JSON integer (not a boolean)."""
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def integer(value: Any, what: str) -> int:
    """``value`` if it is a signed 64-bit JSON integer (not a boolean); else :class:`ValueError`."""
    if is_integer(value):
        return value
    msg = f"{what} is not a 64-bit integer"
    raise ValueError(msg)


def seconds(ns: int) -> float:
    """Nanoseconds as seconds, rounded to milliseconds (the manifest's ``..._s`` fields)."""
    return round(ns / 1e9, 3)


class Span:
    """The earliest and the latest of times given one at a time (a reader keeps no list of them)."""

    def __init__(self) -> None:
        self.count = 0
        self.low: int | None = None
        self.high: int | None = None

    def add(self, t: int) -> None:
        self.count += 1
        self.low = t if self.low is None or t < self.low else self.low
        self.high = t if self.high is None or t > self.high else self.high

    @property
    def ns(self) -> int:
        """Nanoseconds from the earliest to the latest time (0 for fewer than two)."""
        if self.count < 2 or self.low is None or self.high is None:
            return 0
        return self.high - self.low


def duration_s(times: Iterable[int]) -> float:
    """Seconds from the first to the last time (0 for fewer than two)."""
    span = Span()
    for t in times:
        span.add(t)
    return seconds(span.ns)


def kind_counts(kinds: Iterable[str]) -> dict[str, int]:
    """How many records of each kind, sorted by kind (kinds counted 0 are not listed)."""
    return dict(sorted(Counter(kinds).items()))


def loss(
    markers: Sequence[Mapping[str, Any]], problems: Sequence[str], frames_left_out: int
) -> dict[str, Any]:
    """The manifest's ``loss`` from the ``marker`` records in stream order (P9).

    :param problems: what the store reported (stated: not in the bundle).
    :param frames_left_out: frames OCR could not read, left out (stated: not in the bundle).
    :raises ValueError: a marker's ``marker``, ``t_ns`` or cut bounds have the wrong type.
    """
    stop: Mapping[str, Any] | None = None
    paused_ns = pauses = cuts = cut_ns = 0
    paused_at: int | None = None
    for m in markers:
        name = m.get("marker")
        t_ns = integer(m.get("t_ns"), "a marker's t_ns")
        detail = m.get("detail")
        if not isinstance(name, str) or not isinstance(detail, Mapping):
            msg = "a marker has no name or no detail object"
            raise ValueError(msg)
        if name == "session_stop" and stop is None:
            stop = detail
        if name == "pause":
            pauses += 1
            if paused_at is None:
                paused_at = t_ns
        elif name in ("resume", "session_stop") and paused_at is not None:
            paused_ns += t_ns - paused_at
            paused_at = None
        elif name == "cut":
            cuts += 1
            to_ns = integer(detail.get("to_ns", t_ns), "a cut's to_ns")
            cut_ns += to_ns - integer(detail.get("from_ns", t_ns), "a cut's from_ns")
    stated = stop.get("loss", {}) if stop is not None else {}
    stated = stated if isinstance(stated, Mapping) else {}
    out: dict[str, Any] = {key: stated.get(name) for name, key in STOP_LOSS.items()}
    out.update(
        {
            "frames_left_out_ocr_failed": frames_left_out,
            "pauses": pauses,
            "paused_s": seconds(paused_ns),
            "cuts": cuts,
            "cut_s": seconds(cut_ns),
            "clean_stop": stop is not None,
            "store_problems": list(problems),
        }
    )
    return out


def _first(markers: Sequence[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    """The ``detail`` of the first marker called ``name`` (None: no such marker, or no detail object)."""
    for m in markers:
        if m.get("marker") == name:
            detail = m.get("detail")
            return detail if isinstance(detail, Mapping) else None
    return None


def elements_api(markers: Sequence[Mapping[str, Any]]) -> str | None:
    """The manifest's ``elements.api``: the first ``session_start`` marker's ``detail.elements``.

    :raises ValueError: it is there and not one of :data:`ELEMENT_APIS`.
    """
    detail = _first(markers, "session_start")
    api = detail.get("elements") if detail is not None else None
    if api is not None and api not in ELEMENT_APIS:
        msg = f"the session_start marker names an element API that is not one of {', '.join(ELEMENT_APIS)}"
        raise ValueError(msg)
    return api if isinstance(api, str) else None


def element_loss(
    api: str | None,
    results: Mapping[str, int],
    markers: Sequence[Mapping[str, Any]],
    steps_without: int,
) -> dict[str, Any] | None:
    """The manifest's ``loss.elements``: lookups by result, lookups dropped, steps without element.

    :param results: how many ``element`` lines have each result.
    :param steps_without: the steps whose ``element`` is null.
    :returns: None when no lookups were made (``api`` None).
    :raises ValueError: there are element lines but ``api`` is None (the session made no lookups).
    """
    if api is None:
        if any(results.values()):
            msg = "it has element lines, but its session_start marker names no element API (no lookups made)"
            raise ValueError(msg)
        return None
    stop = _first(markers, "session_stop")
    stated = stop.get("loss") if stop is not None else None
    dropped = stated.get("element_lookups") if isinstance(stated, Mapping) else None
    out: dict[str, Any] = {result: results.get(result, 0) for result in ELEMENT_RESULTS}
    out["dropped"] = dropped if is_integer(dropped) and dropped >= 0 else None
    out["steps_without"] = steps_without
    return out


def element_problem(element: Any) -> str | None:
    """Why ``element`` is not a bundle's element object (its shape and bounds, never its text)."""
    problem = record_problem(element)
    if problem is not None:
        return problem
    roles = [element["role"], *(item["role"] for item in element["path"])]
    if not all(ELEMENT_ROLE.fullmatch(role) for role in roles):
        return "an element's or ancestor's role is not spelled [a-z][a-z0-9 _-]{0,63}"
    return None
