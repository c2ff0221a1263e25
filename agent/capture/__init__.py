"""Capture stages: input hooks, screen grabber, focus watch, coalescing.

The small protocols here are what the recorder (:mod:`agent.control`) and the
backends (:mod:`agent.backends`) agree on.  Hooks call an :data:`EventSink`,
which must do O(1) work and never block (it puts on a bounded queue and counts
drops).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agent.events import Event, Frame

#: Where hooks deliver events: O(1), never blocks, never raises.
EventSink = Callable[[Event], None]


class Hooks(Protocol):
    """A running source of events (input listeners, focus watcher)."""

    def start(self) -> None:
        """Start delivering events; returns once the source is live."""

    def stop(self) -> None:
        """Stop delivering events; returns once no further event can be delivered."""

    def is_alive(self) -> bool:
        """True while the source runs."""


class ScreenGrabber(Protocol):
    """Takes encoded screenshots; called from the grabber thread, never a hook thread."""

    def grab(self, t_ns: int, reason: str) -> Frame:
        """Grab the whole virtual screen now and return it encoded."""

    def close(self) -> None:
        """Release the screen connection."""
