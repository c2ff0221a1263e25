"""Pointer-move coalescing, as a pure function.

What: :func:`coalesce` caps the rate of :class:`~agent.events.PointerMove`
events at ``max_hz`` (default 50 Hz) and passes every other event through.
Why: mice report 125-1000 moves a second; a demonstration needs the pointer's
path, not every sample, but it must never lose *where* the pointer was when
something happened.

Rules (all decisions look only at pointer moves' ``t_ns``; order is input order):

* A move is **emitted** if it is the first move seen, or at least ``1/max_hz``
  seconds passed since the last emitted move.  Otherwise it becomes the
  **pending** move, replacing (dropping) any older pending move.  An emitted
  move also drops an older pending move: it supersedes it.
* Before any event that is not a pointer move (press, release, scroll, key,
  frame, focus, marker) a pending move is emitted first, unchanged, and counts
  as the last emitted move from then on.  :func:`flush` does the same at
  pause/stop, so the final position is kept too.
* Backwards time (hooks run on several threads): a move *earlier* than the last
  emitted move is emitted and becomes the new reference, so one out-of-order
  timestamp cannot suppress moves for long.  Non-move timestamps are never
  compared with anything, so an out-of-order press still gets the move before it.

Guarantee: the output is a subsequence of the input (the same objects, never
reordered, changed or invented); every non-move event is in it; for every
non-move event, the last move before it in the output is the last move before
it in the input (and after :func:`flush`, the stream's last move is in the
output).  Two consecutive emitted moves are at least ``1/max_hz`` apart unless
the later one was forced out (by a non-move event or by :func:`flush`) or time
ran backwards.  The state carries across calls, so coalescing batch by batch
gives exactly the output of coalescing the whole stream at once.
``CoalesceState.coalesced`` counts the dropped moves (not a loss: each was
superseded by a later move before anything else happened).

Spacing is measured from the last emitted move, so an input just above the cap
is halved (60 Hz in, 50 Hz cap: every other move, 30 Hz out).

No threads, no I/O, no logging, no global state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from agent.events import Event, PointerMove

#: Default cap on the rate of emitted pointer moves.
DEFAULT_MAX_HZ = 50.0


@dataclass(frozen=True, slots=True)
class CoalesceState:
    """What :func:`coalesce` remembers between batches; start with ``CoalesceState()``.

    :ivar last_emitted_ns: ``t_ns`` of the last emitted pointer move (None before the first).
    :ivar pending: the newest move not yet emitted (None if there is none).
    :ivar coalesced: moves dropped so far, each superseded by a later move.
    """

    last_emitted_ns: int | None = None
    pending: PointerMove | None = None
    coalesced: int = 0


def coalesce(
    events: Sequence[Event], state: CoalesceState, *, max_hz: float | None = DEFAULT_MAX_HZ
) -> tuple[list[Event], CoalesceState]:
    """Coalesce one batch of events; returns the events to keep and the state for the next batch.

    :param max_hz: cap on emitted moves per second; ``None`` or ``math.inf`` means no cap
        (every move is emitted; a pending move left by an earlier, capped call is
        superseded by the next move or emitted before the next other event).
    :raises ValueError: if ``max_hz`` is zero, negative or NaN.
    """
    period_ns = _period_ns(max_hz)
    last, pending, dropped = state.last_emitted_ns, state.pending, state.coalesced
    out: list[Event] = []
    for event in events:
        if isinstance(event, PointerMove):
            if last is None or not 0 <= event.t_ns - last < period_ns:
                if pending is not None:
                    dropped += 1
                    pending = None
                out.append(event)
                last = event.t_ns
            else:
                if pending is not None:
                    dropped += 1
                pending = event
        else:
            if pending is not None:
                out.append(pending)
                last = pending.t_ns
                pending = None
            out.append(event)
    return out, CoalesceState(last_emitted_ns=last, pending=pending, coalesced=dropped)


def flush(state: CoalesceState) -> tuple[list[Event], CoalesceState]:
    """Emit the pending move, if any (at pause/stop), so the final position is never lost."""
    if state.pending is None:
        return [], state
    return [state.pending], replace(state, last_emitted_ns=state.pending.t_ns, pending=None)


def _period_ns(max_hz: float | None) -> float:
    """Minimum spacing of emitted moves in nanoseconds (0.0: no cap)."""
    if max_hz is None or max_hz == math.inf:
        return 0.0
    if not math.isfinite(max_hz) or max_hz <= 0:
        msg = f"max_hz must be a positive number of moves per second (or None for no cap), not {max_hz!r}"
        raise ValueError(msg)
    return 1e9 / max_hz


__all__ = ["DEFAULT_MAX_HZ", "CoalesceState", "coalesce", "flush"]
