"""The counts and summaries a bundle's manifest states, computed one way for writer and reader.

docs/export-format.md ("What a reader recomputes"): the writer (agent/export/bundle.py) puts
these into the manifest, and the reader (agent/export/recount.py, for bundle_checks.py)
recomputes them from the members and refuses a bundle whose manifest says otherwise.  Pure
functions over the records as ``events.jsonl`` holds them (``{"k": ..., "t_ns": ..., ...}``),
so both sides run the same code; a hostile record (a non-integer time, a detail that is not
an object) raises :class:`ValueError`, never anything else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeGuard

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
