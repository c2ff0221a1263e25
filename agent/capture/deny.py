r"""Deny rules at the source (P4): windows whose input is never stored and whose pixels are masked.

The rules themselves (:class:`~agent.deny_rules.DenyRule`, the defaults, matching
in bounded time) are in :mod:`agent.deny_rules`, below both the study file and
capture.  Why at the source: the safest secret is one that is never written
down, so these windows are minimised *at the source*, before anything reaches
the encrypted store, not only at export.

Two pure stages use the rules:

* :func:`filter_events`, on the recorder's ordered event stream, a state machine
  like :mod:`agent.capture.coalesce`:

  - A :class:`~agent.events.WindowFocus` that matches a rule is **not stored**
    (its title and class may be sensitive); a ``deny`` marker
    ``{"active": True, "label": rule.label}`` is stored instead.  When the focus
    leaves it (for a window of another label, an allowed or an unknown window),
    a ``deny`` marker ``{"active": False, "label", "seconds", "events_left_out"}``
    closes the gap.  A focus change between two windows of the same label
    continues the gap silently.
  - While a denied window has focus, every key, button, scroll and pointer move
    is left out and counted.  Frames, markers and everything else pass
    unchanged: frames are masked by the screen watcher (below), not dropped.
  - **Late input**: an input event that arrives after the gap closed but is
    stamped no later than the moment it closed (hooks run on several threads)
    is left out too; it is counted in :attr:`DenyState.left_out_total`, not in
    the closed gap's marker, which was already stored.
  - **Unknown focus** (no focus seen yet, or a focus with neither class nor
    title): key events are kept without their character and key code, and
    with their name only for non-character keys (``enter``, ``ctrl``), so
    nothing typed can be spelled back (fail closed).  Pointer events are kept.
  - :func:`flush` closes an open gap at pause/stop (``"at_stop": True``); the
    matched rule is kept, so input that arrives later with the same state is
    still left out (under a new gap) until a focus event says otherwise.
  - :func:`refocus` re-judges the focused window after the rules changed
    ("Exclude this app" takes effect at once, not at the next focus change).

  The state carries across calls: filtering batch by batch gives exactly the
  output of filtering the whole stream at once.

* :func:`mask_rects` and :func:`apply_masks`, for the screen watcher: the
  rectangles of every matching window (focused or not, on any monitor: all are
  in the one virtual screen) are painted solid grey in a *copy* of the raw
  BGRA grab.  A matching window whose geometry is unknown masks the whole shot
  (fail closed).

No threads, no I/O, no logging, no global state.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agent.deny_rules import DenyRule, match
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    KeyPress,
    KeyRelease,
    Marker,
    Paste,
    PointerMove,
    Scroll,
    WindowFocus,
)

#: The marker this module emits; it must be one of :data:`agent.events.MARKERS`.
DENY_MARKER = "deny"

#: The colour masked rectangles are painted with, one BGRA pixel (mid grey, opaque).
MASK_BGRA = b"\x80\x80\x80\xff"

#: Input events left out while a denied window has focus.
INPUT_TYPES: tuple[type, ...] = (KeyPress, KeyRelease, Paste, PointerMove, ButtonPress, ButtonRelease, Scroll)

Rect = tuple[int, int, int, int]


# ---------------------------------------------------------------------------------------------------
# The source filter.


@dataclass(frozen=True, slots=True)
class DenyState:
    """What :func:`filter_events` remembers between batches; start with ``DenyState()``.

    :ivar focus: the latest focus event (kept in memory only; None before the first).
    :ivar rule: the rule the focused window matches (None: allowed or unknown).
    :ivar since_ns: when the open gap began (None: no gap is open).
    :ivar left_out: input events left out in the open gap.
    :ivar closed_ns: when the last gap closed: input stamped no later arrives late and is left out.
    :ivar last_ns: the latest ``t_ns`` seen (the default time of :func:`flush`).
    :ivar left_out_total: every input event left out so far (in gaps and late).
    :ivar stripped_total: key events whose character, code or name was removed (unknown focus).
    """

    focus: WindowFocus | None = field(default=None, repr=False)  # its title must not reach a log
    rule: DenyRule | None = None
    since_ns: int | None = None
    left_out: int = 0
    closed_ns: int | None = None
    last_ns: int | None = None
    left_out_total: int = 0
    stripped_total: int = 0

    @property
    def denied(self) -> bool:
        """Whether input is being left out now."""
        return self.rule is not None

    @property
    def focus_known(self) -> bool:
        """Whether the focused window has a class or a title (else keys lose their characters)."""
        return focus_known(self.focus)


def filter_events(
    events: Iterable[Event], state: DenyState, rules: Sequence[DenyRule]
) -> tuple[list[Event], DenyState]:
    """Filter one batch in stream order; returns the events to store and the state for the next batch.

    Passed-through events are the same objects; only ``deny`` markers and key
    events stripped under unknown focus are new.
    """
    focus, rule, since, left_out = state.focus, state.rule, state.since_ns, state.left_out
    closed, last = state.closed_ns, state.last_ns
    total, stripped = state.left_out_total, state.stripped_total
    known = focus_known(focus)
    out: list[Event] = []
    for event in events:
        t = event.t_ns
        if last is None or t > last:
            last = t
        if isinstance(event, INPUT_TYPES):
            if rule is not None:
                if since is None:  # input after flush() in a window still denied: a new gap
                    out.append(_opened(t, rule))
                    since, left_out = t, 0
                left_out += 1
                total += 1
            elif closed is not None and t <= closed:
                total += 1
            elif not known and isinstance(event, (KeyPress, KeyRelease, Paste)):
                bare = _strip(event)
                stripped += bare is not event
                out.append(bare)
            else:
                out.append(event)
        elif isinstance(event, WindowFocus):
            new = match(rules, event)
            markers, since, left_out, closed = _transition(
                rule, new, since=since, left_out=left_out, closed=closed, t=t
            )
            out += markers
            if new is None:
                out.append(event)
            focus, rule, known = event, new, focus_known(event)
        else:
            out.append(event)
    return out, DenyState(focus, rule, since, left_out, closed, last, total, stripped)


def flush(state: DenyState, t_ns: int | None = None) -> tuple[list[Event], DenyState]:
    """Close an open gap at pause/stop with ``"at_stop": True``.

    :param t_ns: when capture stops; default the latest ``t_ns`` seen.  The rule
        stays matched, so later input in the same state is still left out.
    """
    if state.rule is None or state.since_ns is None:
        return [], state
    t = max(state.since_ns, t_ns if t_ns is not None else (state.last_ns or state.since_ns))
    marker = _closed(t, state.rule, state.since_ns, state.left_out, at_stop=True)
    closed = t if state.closed_ns is None else max(state.closed_ns, t)
    last = t if state.last_ns is None else max(state.last_ns, t)
    return [marker], replace(state, since_ns=None, left_out=0, closed_ns=closed, last_ns=last)


def refocus(state: DenyState, rules: Sequence[DenyRule], t_ns: int) -> tuple[list[Event], DenyState]:
    """Judge the focused window again under ``rules`` (they changed), at ``t_ns``.

    A window that becomes denied opens a gap now; one that is no longer denied
    closes it, and its focus event (not stored while it was denied) is stored
    now, stamped ``t_ns``.
    """
    if state.focus is None:
        return [], state
    new = match(rules, state.focus)
    out, since, left_out, closed = _transition(
        state.rule, new, since=state.since_ns, left_out=state.left_out, closed=state.closed_ns, t=t_ns
    )
    if new is None and state.rule is not None:
        out.append(replace(state.focus, t_ns=t_ns))
    last = t_ns if state.last_ns is None else max(state.last_ns, t_ns)
    return out, replace(state, rule=new, since_ns=since, left_out=left_out, closed_ns=closed, last_ns=last)


def _transition(
    old: DenyRule | None,
    new: DenyRule | None,
    *,
    since: int | None,
    left_out: int,
    closed: int | None,
    t: int,
) -> tuple[list[Event], int | None, int, int | None]:
    """Markers for a focus change from ``old`` to ``new`` at ``t``, and the gap fields after it."""
    out: list[Event] = []
    if old is not None and since is not None and (new is None or new.label != old.label):
        out.append(_closed(t, old, since, left_out))
        closed = t if closed is None else max(closed, t)
        since, left_out = None, 0
    if new is not None and since is None:
        out.append(_opened(t, new))
        since, left_out = t, 0
    return out, since, left_out, closed


def _marker(t_ns: int, detail: dict[str, Any]) -> Marker:
    """The one place a ``deny`` marker is built."""
    return Marker(t_ns=t_ns, marker=DENY_MARKER, detail=detail)


def _opened(t_ns: int, rule: DenyRule) -> Marker:
    return _marker(t_ns, {"active": True, "label": rule.label})


def _closed(t_ns: int, rule: DenyRule, since_ns: int, left_out: int, *, at_stop: bool = False) -> Marker:
    detail: dict[str, Any] = {
        "active": False,
        "label": rule.label,
        "seconds": round(max(0, t_ns - since_ns) / 1e9, 3),
        "events_left_out": left_out,
    }
    if at_stop:
        detail["at_stop"] = True
    return _marker(t_ns, detail)


def focus_known(focus: WindowFocus | None) -> bool:
    """Whether the rules can judge ``focus`` (unknown focus: typed characters are not kept)."""
    return focus is not None and (focus.app_class is not None or focus.title is not None)


def _strip(event: KeyPress | KeyRelease | Paste) -> KeyPress | KeyRelease | Paste:
    """``event`` without anything that spells what was typed (same object if there is nothing)."""
    if isinstance(event, Paste):
        return event if event.text is None else replace(event, text=None)
    name = event.name if event.char is None and event.name is not None and len(event.name) > 1 else None
    if event.char is None and event.vk is None and name == event.name:
        return event
    return replace(event, char=None, vk=None, name=name)


# ---------------------------------------------------------------------------------------------------
# Frame masking.


def mask_rects(
    shot_geometry: Rect, windows: Iterable[WindowFocus], rules: Sequence[DenyRule], *, margin: int = 0
) -> list[Rect]:
    """Rectangles ``(x, y, width, height)`` to mask in a shot of ``shot_geometry``.

    :param shot_geometry: ``(left, top, width, height)`` of the virtual screen grabbed
        (:attr:`agent.capture.screen.Shot.geometry`; ``left``/``top`` may be negative).
    :param windows: every window that may be visible, focused or not, on any monitor;
        leave minimised windows out.  One that matches a rule but whose geometry
        is unknown masks the whole shot (fail closed).
    :param margin: pixels added on every side (e.g. for window decorations the
        geometry leaves out).
    :returns: virtual-screen rectangles clipped to the shot, in ``windows`` order;
        empty when nothing matches.
    """
    if margin < 0:
        msg = f"margin must not be negative, not {margin}"
        raise ValueError(msg)
    left, top, width, height = shot_geometry
    whole = (left, top, width, height)
    rects: list[Rect] = []
    for window in windows:
        if match(rules, window) is None:
            continue
        if window.x is None or window.y is None or window.width is None or window.height is None:
            return [whole] if width > 0 and height > 0 else []
        x0 = max(window.x - margin, left)
        y0 = max(window.y - margin, top)
        x1 = min(window.x + window.width + margin, left + width)
        y1 = min(window.y + window.height + margin, top + height)
        if x0 < x1 and y0 < y1:
            rects.append((x0, y0, x1 - x0, y1 - y0))
    return rects


def box_rects(shot_geometry: Rect, boxes: Iterable[tuple[int, int, int, int]]) -> list[Rect]:
    """``(left, top, right, bottom)`` boxes (optin's own windows) as rectangles ``(x, y, width,
    height)`` clipped to a shot of ``shot_geometry``; boxes outside it are left out."""
    left, top, width, height = shot_geometry
    rects: list[Rect] = []
    for box_left, box_top, box_right, box_bottom in boxes:
        x0, y0 = max(box_left, left), max(box_top, top)
        x1, y1 = min(box_right, left + width), min(box_bottom, top + height)
        if x0 < x1 and y0 < y1:
            rects.append((x0, y0, x1 - x0, y1 - y0))
    return rects


def apply_masks(  # noqa: PLR0917 - the shot's own fields, in Shot's order
    pixels: bytes | bytearray,
    width: int,
    height: int,
    left: int,
    top: int,
    rects: Iterable[Rect],
    *,
    color: bytes = MASK_BGRA,
) -> bytearray:
    """A copy of the BGRA buffer ``pixels`` with ``rects`` (virtual-screen coordinates) painted ``color``.

    ``pixels`` is never modified (the screen watcher compares raw grabs).  Each
    rectangle is clipped to the buffer and painted row slice by row slice (one
    slice per row is faster than one huge slice, whose temporary pixels cost
    fresh pages: 1 ms against 11 ms for a whole 1080p screen).

    :raises ValueError: ``pixels`` is not ``width * height * 4`` bytes, or ``color`` is not 4 bytes.
    """
    stride = width * 4
    if width < 0 or height < 0 or len(pixels) != stride * height:
        msg = f"a {width}x{height} BGRA buffer has {max(stride * height, 0)} bytes, not {len(pixels)}"
        raise ValueError(msg)
    if len(color) != 4:
        msg = f"the mask colour is one BGRA pixel (4 bytes), not {len(color)} bytes"
        raise ValueError(msg)
    out = bytearray(pixels)
    for x, y, w, h in rects:
        x0, y0 = max(x - left, 0), max(y - top, 0)
        x1, y1 = min(x - left + w, width), min(y - top + h, height)
        if x0 >= x1 or y0 >= y1:
            continue
        row = color * (x1 - x0)
        n = len(row)
        start = y0 * stride + x0 * 4
        for offset in range(start, start + (y1 - y0) * stride, stride):
            out[offset : offset + n] = row
    return out


__all__ = [
    "DENY_MARKER",
    "INPUT_TYPES",
    "MASK_BGRA",
    "DenyState",
    "apply_masks",
    "box_rects",
    "filter_events",
    "flush",
    "focus_known",
    "mask_rects",
    "refocus",
]
