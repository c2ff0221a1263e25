"""Where the X screen changed (the DAMAGE extension): the screen watcher's source of changes.

:class:`DamageChanges` is a :class:`~agent.capture.ScreenChanges`: its own python-xlib
connection, one Damage object on the root window at the *DeltaRectangles* level (the server
reports each newly damaged rectangle once, until it is subtracted: a natural coalescer), and a
thread blocked in ``select()`` on the connection and a stop pipe, which costs nothing while the
screen is still.  The watcher asks (:meth:`~DamageChanges.take`) only when it is about to grab:
the damage is subtracted then, never per event, so an animated corner of the screen costs at
most one event per grab.

Pitfalls handled here (python-xlib 0.33, X.Org Xvfb 21.1; measured for issue 18):

* DamageQueryVersion must come before DamageCreate, else the server answers BadRequest.
* python-xlib registers DAMAGE's and RANDR's errors under their *relative* codes (0, 1, 2), so a
  core BadRequest or BadValue parses as a RANDR error class that raises AttributeError instead
  (python-xlib issue #259, which can also leave the next request spinning).
  :func:`fix_error_classes` puts the core classes back on the connection.
* Events that a round trip (``sync``) read off the socket wait in python-xlib's queue, where
  ``select()`` never sees them: the queue is drained before every ``select()``, and by whichever
  thread made the round trip, under one lock.
* The subtract and mss's GetImage go over two connections: the subtract is followed by a round
  trip, so the server has processed it before the grab.  Events the server generated *before*
  the subtract but that arrive after it belong to the grab about to be taken (their sequence
  number tells); later ones make the screen changed again.
* The event class is a copy python-xlib makes (``isinstance`` fails): events are matched by their
  code.  Pointer motion damages nothing (the cursor is not in the frame either).

Nothing here reads pixels, titles or any other content; log lines name failures by type.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

import Xlib.display
import Xlib.error
from Xlib import X
from Xlib.ext import damage

from agent.backends.xorg.connection import close_quietly, open_display
from agent.capture.boxes import Box, union
from agent.events import now_ns

logger = logging.getLogger(__name__)

#: The DAMAGE version this module speaks (1.1: what python-xlib asks for).
MIN_VERSION = (1, 1)
#: Damaged rectangles kept unmerged before they are folded into their bounding box.
MAX_PENDING = 64
#: Seconds :meth:`DamageChanges.close` waits for the listener thread.
STOP_TIMEOUT = 2.0

_CORE_ERRORS = (0, 1, 2)  # the codes python-xlib's extension modules overwrite (#259)


class DamageUnavailable(Exception):
    """The X server cannot report damage (no extension, too old, or it refused the request)."""


def fix_error_classes(display: Xlib.display.Display) -> None:
    """Undo python-xlib #259 on ``display``: core errors 0-2 parse as the core classes again, and
    BadDamage is registered at its real code."""
    classes: dict[int, Any] = display.display.error_classes
    for code in _CORE_ERRORS:
        if code in Xlib.error.xerror_class:
            classes[code] = Xlib.error.xerror_class[code]
        else:
            classes.pop(code, None)
    info = display.query_extension(damage.extname)
    if info is not None:
        classes[info.first_error + damage.BadDamageCode] = damage.BadDamageError


class DamageChanges:
    """Damage on the root window of ``display_name``, for :class:`~agent.capture.screen.ScreenWatch`.

    Rectangles are root-relative, which is the virtual screen mss grabs (one X screen across
    every RandR monitor).
    """

    def __init__(self, display_name: str) -> None:
        self._display_name = display_name
        self._lock = threading.Lock()  # one connection, two threads: every use is under it
        self._display: Xlib.display.Display | None = None
        self._damage = 0
        self._event_code = 0
        self._root_size = (0, 0)
        self._pending: list[Box] = []
        self._whole = False  # the root changed size: only a whole grab can tell
        self._first_ns: int | None = None
        self._wake: Callable[[int], None] | None = None
        self._errors: list[str] = []
        self._pipe: tuple[int, int] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._dead = False
        #: DamageNotify events read (for tests and benchmarks).
        self.events = 0

    # -- ScreenChanges ----------------------------------------------------------------------------

    def start(self, wake: Callable[[int], None]) -> None:
        """Connect, create the Damage and start listening.

        :raises DamageUnavailable: the server has no usable DAMAGE extension.
        :raises EnvironmentProblem: the display cannot be reached.
        """
        if self._thread is not None:
            return
        display = open_display(self._display_name)
        try:
            if not display.has_extension(damage.extname):
                msg = "the X server has no DAMAGE extension"
                raise DamageUnavailable(msg)
            fix_error_classes(display)
            display.set_error_handler(self._on_error)
            reply = display.damage_query_version()
            version = (int(reply.major_version), int(reply.minor_version))
            if version < MIN_VERSION:
                msg = f"the X server's DAMAGE is version {version[0]}.{version[1]}, older than 1.1"
                raise DamageUnavailable(msg)
            info = display.query_extension(damage.extname)
            self._event_code = info.first_event + damage.DamageNotifyCode
            screen = display.screen()
            self._root_size = (int(screen.width_in_pixels), int(screen.height_in_pixels))
            self._damage = screen.root.damage_create(damage.DamageReportDeltaRectangles)
            display.sync()
            if self._errors:
                msg = f"the X server refused DamageCreate ({self._errors[0]})"
                raise DamageUnavailable(msg)
        except BaseException:
            close_quietly(display)
            raise
        self._display, self._wake, self._pipe = display, wake, os.pipe()
        self._thread = threading.Thread(target=self._listen, name="optin-damage", daemon=True)
        self._thread.start()

    def take(self) -> list[Box] | None:
        """Subtract all damage and return it (see :meth:`agent.capture.ScreenChanges.take`).

        :raises Xlib.error.ConnectionClosedError: the connection is gone.
        :raises DamageUnavailable: the listener died or the server refused the subtract.
        """
        with self._lock:
            display = self._live_display()
            self._drain(display)
            boxes, whole = self._pending, self._whole
            self._pending, self._whole, self._first_ns = [], False, None
            request = damage.DamageSubtract(
                display=display.display,
                opcode=display.display.get_extension_major(damage.extname),
                damage=self._damage,
                repair=X.NONE,
                parts=X.NONE,
            )
            serial = int(request._serial)
            display.sync()  # processed before the grab, which goes over mss's own connection
            late = self._drain(display, split=serial)
            if self._errors:
                msg = f"the X server refused DamageSubtract ({self._errors[0]})"
                raise DamageUnavailable(msg)
        if whole or late is None:
            return None if whole else boxes
        return [*boxes, *late]

    def dirty_since(self) -> int | None:
        """When the first damage since the last :meth:`take` was seen (one round trip), or None."""
        with self._lock:
            display = self._live_display()
            display.sync()
            self._drain(display)
            return self._first_ns

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._dead

    def close(self) -> None:
        """Stop the listener and close the connection (the server frees the Damage with it)."""
        self._stopping.set()
        pipe = self._pipe
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe[1], b"x")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_TIMEOUT)
            if thread.is_alive():
                logger.warning("the damage listener did not stop within %g s", STOP_TIMEOUT)
        with self._lock:
            display, self._display = self._display, None
        self._wake = None  # the watcher is not kept alive by a listener nobody uses any more
        if display is not None:
            # python-xlib's display and its resources refer to each other: with our error handler in
            # that cycle, this listener (and through it the watcher and its frames) would wait for
            # the garbage collector's full pass, minutes later, after every pause
            with contextlib.suppress(Exception):
                display.set_error_handler(None)
            close_quietly(display)
        pipe, self._pipe = self._pipe, None
        if pipe is not None and (thread is None or not thread.is_alive()):
            for fd in pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)

    # -- internals --------------------------------------------------------------------------------

    def _on_error(self, err: Any, request: Any) -> None:
        # errors of requests without a reply (our DamageCreate, DamageSubtract); by type only
        self._errors.append(type(err).__name__)

    def _live_display(self) -> Xlib.display.Display:
        display = self._display
        if display is None or self._dead:
            msg = "the damage listener has stopped"
            raise DamageUnavailable(msg)
        return display

    def _drain(self, display: Xlib.display.Display, split: int | None = None) -> list[Box] | None:
        """Read the queued events (lock held).  With ``split`` (a request's serial), the boxes of
        events the server generated before that request are returned instead of kept pending."""
        before: list[Box] | None = None
        dirtied = False
        while display.pending_events():
            event = display.next_event()
            if event.type & 0x7F != self._event_code or event.damage != self._damage:
                continue
            self.events += 1
            area = event.area
            box = (int(area.x), int(area.y), int(area.x) + int(area.width), int(area.y) + int(area.height))
            geometry = event.drawable_geometry
            if (int(geometry.width), int(geometry.height)) != self._root_size:
                self._root_size = (int(geometry.width), int(geometry.height))
                self._whole = True
            if split is not None and (event.sequence_number - split) & 0xFFFF >= 0x8000:
                before = [box] if before is None else [*before, box]
                continue
            if self._first_ns is None:
                self._first_ns = now_ns()
                dirtied = True
            self._pending.append(box)
            if len(self._pending) > MAX_PENDING:  # a storm: keep one bounding box
                bound = self._pending[0]
                for other in self._pending[1:]:
                    bound = union(bound, other)
                self._pending = [bound]
        if dirtied and self._wake is not None and self._first_ns is not None:
            self._wake(self._first_ns)
        return before

    def _listen(self) -> None:
        display, pipe = self._display, self._pipe
        if display is None or pipe is None:
            return
        try:
            fd = display.fileno()
            while not self._stopping.is_set():
                with self._lock:
                    if self._display is None:
                        return
                    self._drain(display)  # first: a round trip may have queued events select() misses
                readable, _, _ = select.select([fd, pipe[0]], [], [])
                if pipe[0] in readable:
                    return
        except Exception as exc:  # by type only
            if not self._stopping.is_set():
                logger.warning("the damage listener stopped (%s)", type(exc).__name__)
        finally:
            self._dead = True
            wake = self._wake
            if wake is not None and not self._stopping.is_set():
                wake(now_ns())  # the watcher looks, finds the source dead and polls


def screen_changes(display_name: str) -> DamageChanges:
    """The xorg backend's :meth:`~agent.backends.base.Backend.screen_changes`: not started."""
    return DamageChanges(display_name)


__all__ = ["MIN_VERSION", "DamageChanges", "DamageUnavailable", "fix_error_classes", "screen_changes"]
