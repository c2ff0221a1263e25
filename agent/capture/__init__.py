"""Capture stages: input hooks, screen grabber, focus watch, coalescing.

The small protocols here are what the recorder (:mod:`agent.control`) and the
backends (:mod:`agent.backends`) agree on.  Hooks call an :data:`EventSink`,
which must do O(1) work and never block (it puts on a bounded queue and counts
drops).  Capture reports up only through what the recorder hands it: events
through the sink, what its sources lost through :class:`LossCounters` (the
recorder's counters); it imports nothing of the recorder's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from agent.events import Event

if TYPE_CHECKING:
    from agent.capture.boxes import Box
    from agent.capture.screen import Shot

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
    """Takes raw screenshots; called from the screen watcher thread, never a hook thread."""

    def shoot(self, t_ns: int) -> Shot:
        """Grab the whole virtual screen now, raw (encoding is the encoder thread's job)."""

    def close(self) -> None:
        """Release the screen connection."""


@runtime_checkable
class RegionGrabber(ScreenGrabber, Protocol):
    """A grabber that can also grab part of the screen (what :class:`ScreenChanges` needs)."""

    def grab_box(self, left: int, top: int, width: int, height: int) -> bytes | bytearray:
        """The BGRA rows of that rectangle (virtual-screen pixels), ``width * height * 4`` bytes."""


class ScreenChanges(Protocol):
    """Where the screen changed (X11 DAMAGE): with one, the screen watcher grabs only when and
    where something changed, instead of polling the whole screen.

    Called from the screen watcher's thread only, except ``wake``, which the source calls on its
    own thread.  Any method may raise: the watcher then polls for the rest of the session.
    """

    def start(self, wake: Callable[[int], None]) -> None:
        """Start listening; from then on call ``wake(t_ns)`` (O(1), never blocks) when the screen
        goes from unchanged to changed since the last :meth:`take`, ``t_ns`` being when the first
        change was seen (:func:`agent.events.now_ns`); also call it once if the source dies.

        :raises Exception: the display cannot tell (no DAMAGE extension, too old, refused).
        """

    def take(self) -> list[Box] | None:
        """What changed since the last take, in virtual-screen pixels (``(x0, y0, x1, y1)``), and
        start afresh: grab after this returns, and a change drawn during the grab is reported
        again.  ``[]``: nothing changed; None: unknown (grab the whole screen)."""

    def dirty_since(self) -> int | None:
        """When the first change since the last :meth:`take` was seen, or None when the screen
        has not changed since (asks the display: one round trip)."""

    def is_alive(self) -> bool:
        """True while the source listens."""

    def close(self) -> None:
        """Stop listening and release the connection.  Idempotent."""


class FrameEncoder(Protocol):
    """Turns stored shots into records for the store: the screen watcher's encoder thread calls
    :meth:`encode` for every stored shot, one at a time, in store order.

    A shot handed to :meth:`encode` is never changed afterwards: an encoder may keep it (as the
    reference for the next frame) without copying it.
    """

    def encode(self, shot: Shot, reason: str) -> Event:
        """The record of ``shot``, stored for ``reason`` (``start``, ``click``, ``settled``, ...).

        :raises Exception: encoding failed (the watcher counts it; the frame is not stored).
        """

    def lost(self) -> None:
        """The last record :meth:`encode` returned was not stored (the recorder's queue was full):
        the next one must not depend on it.  Called on the encoder thread, between two encodes."""


class OwnUi(Protocol):
    """Where optin's own windows are, so the hooks can leave its own clicks and keys out.

    :meth:`covers` and :attr:`has_focus` are read on hook threads: O(1), no I/O.
    """

    def start(self) -> None:
        """Start tracking; returns once a first answer is published."""

    def stop(self) -> None:
        """Stop tracking."""

    def is_alive(self) -> bool:
        """True while tracking."""

    def rescan(self) -> None:
        """Look again soon (an own window appeared, e.g. the tray icon)."""

    def add_pid(self, pid: int) -> None:
        """Windows of process ``pid`` are optin's own too (a dialog it started); rescans."""

    def covers(self, x: int, y: int) -> bool:
        """Whether the point (virtual-screen pixels) is on one of optin's windows."""

    @property
    def has_focus(self) -> bool:
        """Whether key events now go to one of optin's windows."""

    def window_rects(self) -> tuple[tuple[int, int, int, int], ...]:
        """optin's windows as ``(left, top, right, bottom)`` (right and bottom exclusive), in
        virtual-screen pixels, as last seen: O(1), no I/O.  Frames are masked there."""


class LossCounters(Protocol):
    """Where the capture sources add what they lost when they stop (the recorder's counters, P9)."""

    frame_failures: int  #: screen grabs that failed
    frames_skipped: int  #: frames not stored: the encoder was behind, or capture stopped first
    pastes_lost: int  #: pastes recorded without their text: the clipboard thread was behind
