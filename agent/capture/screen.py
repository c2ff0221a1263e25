"""Screen frames: the watcher keeps the latest screen, and every action gets the one from before it.

Nothing here runs on a hook thread except :meth:`ScreenWatch.action` and
:meth:`ScreenWatch.activity`, which are O(1) (a queue put, an attribute store).

- The **watcher thread** keeps the latest screen as one raw frame (BGRA, no
  encoding).  How it learns that the screen changed depends on the display:

  * **Changes reported** (X11 DAMAGE, a :class:`~agent.capture.ScreenChanges`
    from the backend): a still screen costs nothing: no grab, no compare, no
    wake-up.  When the display reports a change the watcher waits ``coalesce_s``
    (30 ms, so a repaint can finish), grabs only the damaged boxes (at most
    ``max_fps`` times a second while the volunteer is active, ``small_fps`` when
    the changes are small, such as typed characters, ``idle_fps`` while idle)
    and patches them into its frame in place, comparing only those boxes.
    Every ``verify_s`` (30 s), when nothing is reported changed, one whole grab
    is compared with the kept frame; if they differ (a change the display did
    not report: some GL, video overlay or driver paths), that grab is stored
    and the watcher polls for the rest of the session.  It also polls
    when the source cannot start, dies, or fails; each fallback is logged once
    (no content) and counted in :attr:`ScreenWatch.fallbacks`.
  * **Polling** (every other display, or ``OPTIN_SCREEN_POLLING=1``): a whole
    grab (about 1 ms at 1080p with mss) at most ``max_fps`` times a second while
    the volunteer is active and ``idle_fps`` while not, compared with the
    previous one byte for byte (a ``memcmp``), so a static screen costs one grab
    and one compare per tick and is never encoded.

- **Pre-action frame**: for an action at time *t* the frame is the latest grab
  that started at or before *t*.  :attr:`ScreenWatch.skews_ns` keeps its
  *staleness*: how long before *t* that frame stopped being the screen.  With
  changes reported it is exact (0 when nothing changed between the grab and
  *t*: the watcher asks the display at the action; else *t* minus when the
  first change after the grab was seen, at most ``coalesce_s`` plus one grab
  interval); when polling it is not known, and the grab's age (*t* minus the
  grab's start, at most one tick plus scheduling) is kept as its upper bound.
- **Settled frame**: after an action, the last grab that starts no later than
  ``settle_s`` (500 ms) after it.  A new action supersedes a pending one.
  With changes reported, a frame nothing changed since stands for a grab at the
  moment the watcher asked (it is stamped with that time).
- A focus change is an action (its settled frame shows the new window); a
  **keyframe** is taken every ``keyframe_s`` only if the screen changed.
- **Stored once**: a frame is stored only when its pixels differ from the last
  stored frame, so a stream reader's rule is simple: the screen at time *t* is
  the latest frame with ``t_ns <= t``.  Frames reach the sink after the actions
  they precede (encoding takes time); readers order by ``t_ns``.
- Typing: the first key of a burst gets a pre-action frame; the following keys
  (``reason="key"`` less than ``burst_s`` after the previous one) only push the
  settled frame back, so a typed word costs two frames, not one per key.
- The **encoder thread** turns stored shots into records through a
  :class:`~agent.capture.FrameEncoder` (default: a whole WebP lossless frame
  each, :func:`encode_frame`).  A shot handed to it is never changed afterwards:
  the kept frame is patched in place only until it is stored; the next change
  after that patches a copy (one 8 MB copy per stored frame that changes again,
  none per grab).  So the encoder may keep a shot without copying it, and the
  watcher compares the next stored frame with that same buffer.  Between the
  two threads at most ``encode_backlog`` (2) shots wait; beyond that a frame is
  dropped and counted (P9).
- The monitor layout is emitted as a ``screen_layout`` marker at start and
  whenever the virtual screen's geometry changes.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.capture import EventSink, FrameEncoder, RegionGrabber, ScreenChanges, ScreenGrabber
from agent.capture import boxes as box_math
from agent.capture.boxes import Box
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    Frame,
    KeyPress,
    Marker,
    Scroll,
    WindowFocus,
    now_ns,
)
from agent.failures import describe_failure
from agent.frame_codec import FRAME_FORMAT, encode_image
from agent.keyboard.names import key_action

logger = logging.getLogger(__name__)

#: Reasons an action can give; ``key`` is a key of a typing burst (see the module docstring).
ACTION_REASONS = frozenset({"click", "release", "scroll", "key", "hotkey", "focus"})

#: ``OPTIN_SCREEN_POLLING=1``: poll the whole screen even where the display reports changes.
POLLING_ENV = "OPTIN_SCREEN_POLLING"

#: With reported changes, parts under this fraction of the screen are grabbed at ``small_fps``.
SMALL_FRACTION = 0.05

_NS = 1_000_000_000
_DAMAGED = "\0damaged"  # a wake-up from the ScreenChanges source, never an action's reason
_SYNC = "\0sync"  # sync(): look at the screen now


def polling_forced() -> bool:
    """Whether :data:`POLLING_ENV` asks for polling."""
    return os.environ.get(POLLING_ENV, "").strip() not in ("", "0")


_POINTER_ACTIONS: dict[type, str] = {
    ButtonPress: "click",
    ButtonRelease: "release",
    Scroll: "scroll",
    WindowFocus: "focus",
}


def action_reason(event: Event) -> str | None:
    """Which action ``event`` is for the screen watcher, or None (O(1): runs on hook threads).

    Pointer actions by their kind; a key press as :func:`agent.keyboard.names.key_action`
    says (``hotkey``: it always gets a pre-action frame; ``key``: typing, in bursts;
    None: a modifier key pressed alone).
    """
    if not isinstance(event, KeyPress):
        return _POINTER_ACTIONS.get(type(event))
    return key_action(event)


@dataclass(frozen=True, eq=False)
class Shot:
    """One raw grab of the virtual screen: BGRA rows, ``width * height * 4`` bytes.

    :ivar t_ns: when the grab started (:func:`agent.events.now_ns`).
    :ivar monitors: the monitor layout, ``(left, top, width, height)`` each, in
        virtual-screen pixels (the same space as pointer coordinates).
    """

    t_ns: int
    left: int
    top: int
    width: int
    height: int
    pixels: bytes | bytearray
    monitors: tuple[tuple[int, int, int, int], ...] = ()

    def same_pixels(self, other: Shot | None) -> bool:
        """Whether ``other`` shows exactly the same screen (geometry and every byte)."""
        if other is None or self.geometry != other.geometry:
            return False
        return self.pixels is other.pixels or self.pixels == other.pixels

    @property
    def geometry(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.width, self.height)


def encode_frame(shot: Shot, reason: str) -> Frame:
    """The :class:`~agent.events.Frame` record of ``shot``, taken for ``reason``."""
    from PIL import Image

    image = Image.frombuffer("RGB", (shot.width, shot.height), shot.pixels, "raw", "BGRX", 0, 1)
    return Frame(
        t_ns=shot.t_ns,
        left=shot.left,
        top=shot.top,
        width=shot.width,
        height=shot.height,
        format=FRAME_FORMAT,
        reason=reason,
        data=encode_image(image),
    )


class FullFrames:
    """The default :class:`~agent.capture.FrameEncoder`: every stored shot a whole frame
    (:func:`encode_frame`); keeps nothing between frames."""

    def encode(self, shot: Shot, reason: str) -> Event:
        return encode_frame(shot, reason)

    def lost(self) -> None:
        """Nothing depends on an earlier frame."""


class MssGrabber:
    """Grabs all monitors as one raw image with mss (the bounding box of every monitor), or a
    part of it (:meth:`grab_box`)."""

    def __init__(self, display: str | None = None) -> None:
        """:param display: the X display (None: ``$DISPLAY``; other systems have none)."""
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss
        self._mss = factory() if display is None else factory(display=display)

    def shoot(self, t_ns: int) -> Shot:
        monitors = self._mss.monitors
        region = monitors[0]
        shot = self._mss.grab(region)
        return Shot(
            t_ns=t_ns,
            left=int(region["left"]),
            top=int(region["top"]),
            width=shot.size[0],
            height=shot.size[1],
            pixels=shot.raw,
            monitors=tuple(
                (int(m["left"]), int(m["top"]), int(m["width"]), int(m["height"])) for m in monitors[1:]
            ),
        )

    def grab_box(self, left: int, top: int, width: int, height: int) -> bytes | bytearray:
        shot = self._mss.grab({"left": left, "top": top, "width": width, "height": height})
        raw: bytes | bytearray = shot.raw
        return raw

    def close(self) -> None:
        self._mss.close()


@dataclass
class _Settle:
    """A pending settled frame: the action's time and the latest grab start that may serve it."""

    action_ns: int
    deadline_ns: int
    reason: str


class ScreenWatch:
    """The watcher and encoder threads; see the module docstring.

    :param grabber: takes raw shots (:class:`MssGrabber`, or a backend's own).
    :param sink: receives the encoder's records and ``screen_layout``
        :class:`~agent.events.Marker` events, from the encoder and watcher threads.
    :param max_fps: grab rate cap while the volunteer is active (default 4).
    :param idle_fps: grab rate after ``idle_s`` without input (default 1).
    :param settle_s: the settled frame is at most this long after its action.
    :param keyframe_s: how often to store the screen when it changed without any action.
    :param mask: paints over what must not be stored (denied windows) before a
        frame is compared and encoded; if it fails, the frame is not stored.
    :param changes: where the screen changed (X11 DAMAGE), not started; None: poll.  The
        watcher starts and closes it; it needs a grabber with ``grab_box``
        (:class:`~agent.capture.RegionGrabber`), else it polls.
    :param encoder: turns stored shots into records (default :class:`FullFrames`).
    :param verify_s: with ``changes``, how often a still screen is checked with one whole grab.
    :param coalesce_s: with ``changes``, how long after a change the grab waits for the repaint.
    :param small_fps: with ``changes``, the grab rate cap while the volunteer is active and the
        changes are small (the last grab's parts under :data:`SMALL_FRACTION` of the screen: a
        typed character, a caret); such a grab costs well under a millisecond.
    """

    def __init__(
        self,
        grabber: ScreenGrabber,
        sink: EventSink,
        *,
        max_fps: float = 4.0,
        idle_fps: float = 1.0,
        idle_s: float = 5.0,
        settle_s: float = 0.5,
        keyframe_s: float = 30.0,
        burst_s: float = 1.0,
        encode_backlog: int = 2,
        mask: Callable[[Shot], Shot] | None = None,
        changes: ScreenChanges | None = None,
        encoder: FrameEncoder | None = None,
        verify_s: float = 30.0,
        coalesce_s: float = 0.03,
        small_fps: float = 10.0,
    ) -> None:
        _check_rates(
            max_fps=max_fps,
            idle_fps=idle_fps,
            settle_s=settle_s,
            keyframe_s=keyframe_s,
            encode_backlog=encode_backlog,
            verify_s=verify_s,
            coalesce_s=coalesce_s,
            small_fps=small_fps,
        )
        self._grabber = grabber
        self._sink = sink
        self._mask = mask
        self._changes = changes
        self._encoder_impl: FrameEncoder = encoder if encoder is not None else FullFrames()
        self._active_ns = int(_NS / max_fps)
        self._idle_ns = int(_NS / idle_fps)
        self._idle_after_ns = int(idle_s * _NS)
        self._settle_ns = int(settle_s * _NS)
        self._keyframe_ns = int(keyframe_s * _NS)
        self._burst_ns = int(burst_s * _NS)
        self._verify_ns = int(verify_s * _NS)
        self._coalesce_ns = int(coalesce_s * _NS)
        self._small_ns = min(self._active_ns, int(_NS / small_fps))
        self._actions: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._encode: queue.Queue[tuple[Shot, str] | None] = queue.Queue(encode_backlog)
        self._stopping = threading.Event()
        self._sync_lock = threading.Lock()
        self._syncs: list[threading.Event] = []
        self._watcher = threading.Thread(target=self._watch, name="optin-screen", daemon=True)
        self._encoder = threading.Thread(target=self._encode_loop, name="optin-encoder", daemon=True)
        self._last_input_ns = 0
        # watcher-thread state
        self._current: Shot | None = None  # the latest grab
        self._previous: Shot | None = None  # the grab before it
        self._stored: Shot | None = None  # the last shot handed to the encoder (never changed after)
        self._stored_lost = False  # the sink lost the last stored frame (set by the encoder thread)
        self._settle: _Settle | None = None
        self._last_key_ns: int | None = None
        self._next_keyframe_ns = 0
        self._changed_since_store = False
        # with changes reported: the frame patched in place, and what tells the previous frame from it
        self._live: bytearray | None = None  # the buffer of _current that grabs patch in place
        self._lent = False  # _live was stored: it must not change any more (the next patch copies it)
        self._undo: list[tuple[Box, bytes]] | None = None  # _previous = _current with these rows put back
        self._dirty_since: int | None = None  # when the first change since the last take was seen
        self._previous_stale: int | None = None  # when the first change after _previous's grab was seen
        self._last_take_ns = 0
        self._next_verify_ns = 0
        self._full_next = False  # a region grab failed half-way: the next grab is a whole one
        self._unchanged_since: int | None = None  # the last grab was none: unchanged since this grab
        self._small = False  # the last grab was of small parts: the next may come sooner (small_fps)
        #: Grabs taken (whole or of damaged boxes; raw, most are never encoded).
        self.grabs = 0
        #: Of :attr:`grabs`, those of damaged boxes only.
        self.region_grabs = 0
        #: Whole grabs that checked a still screen against the kept frame.
        self.verifications = 0
        #: Times the watcher went from reported changes to polling (0 or 1 per watcher).
        self.fallbacks = 0
        #: Grabs or encodings that failed (counted, P9).
        self.failures = 0
        #: Frames delivered to the sink.
        self.frames = 0
        #: Frames not stored: the encoder was behind, or capture stopped before they were encoded (P9).
        self.skipped = 0
        #: The most recent pre-action *staleness* values, in ns: how long before the action its frame
        #: stopped being the screen (exact with changes reported; when polling, the frame's age, an
        #: upper bound).
        self.skews_ns: deque[int] = deque(maxlen=4096)
        #: The most recent pre-action frame ages (action time minus the start of its grab), in ns.
        self.ages_ns: deque[int] = deque(maxlen=4096)

    @property
    def reports_changes(self) -> bool:
        """Whether the watcher now grabs on reported changes (False: it polls)."""
        return self._changes is not None

    @property
    def backlog(self) -> int:
        """Shots waiting for the encoder thread (at most ``encode_backlog``)."""
        return self._encode.qsize()

    # -- hook threads: O(1) --------------------------------------------------------------------

    def action(self, t_ns: int, reason: str) -> None:
        """An action happened at ``t_ns``: store the frame from before it and a settled one."""
        self._last_input_ns = t_ns
        self._actions.put((t_ns, reason))

    def activity(self, t_ns: int) -> None:
        """Input that is not an action (a pointer move): keep grabbing at the active rate."""
        if t_ns - self._last_input_ns > self._idle_after_ns:
            self._actions.put((t_ns, ""))  # wake the watcher out of its idle rate
        self._last_input_ns = t_ns

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until the watcher's frame shows the screen as it is now: a grab (with reported
        changes: a look at what changed, which grabs only if something did) that started after this
        call has completed; False if it did not within ``timeout`` s.  For tests and benchmarks
        that must know the watcher has seen a change; never call it from a hook thread."""
        done = threading.Event()
        with self._sync_lock:
            self._syncs.append(done)
        self._actions.put((now_ns(), _SYNC))
        return done.wait(timeout)

    def frame_lost(self) -> None:
        """The record the encoder thread just delivered was not stored (the sink's queue was full;
        the sink calls this on the encoder thread): the encoder's next record must not build on it,
        and the next frame the watcher stores is not left out for showing what the lost one showed."""
        self._encoder_impl.lost()
        self._stored_lost = True  # read and cleared by the watcher thread (a flag: no lock needed)

    def _damaged(self, t_ns: int) -> None:
        """The changes source saw the screen change (its own thread): O(1)."""
        self._actions.put((t_ns, _DAMAGED))

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._encoder.start()
        self._watcher.start()

    def stop(self) -> None:
        """Stop both threads; no frame is delivered after this returns.

        Grabs still waiting to be encoded are not stored (pause and stop mean
        *now*, P3); they are counted in :attr:`skipped`.
        """
        self._stopping.set()
        self._actions.put(None)
        current = threading.current_thread()
        if self._watcher.is_alive() and self._watcher is not current:
            self._watcher.join(timeout=5.0)
        while True:
            try:
                if self._encode.get_nowait() is not None:
                    self.skipped += 1
            except queue.Empty:
                break
        self._encode.put(None)
        if self._encoder.is_alive() and self._encoder is not current:
            self._encoder.join(timeout=5.0)
        changes, self._changes = self._changes, None
        if changes is not None:
            _close_quietly(changes)
        self._grabber.close()
        # a stopped watcher keeps no frame (about 8 MB each at 1080p), whoever still refers to it
        self._current = self._previous = self._stored = None
        self._live, self._undo = None, None
        self._encoder_impl = FullFrames()  # a region encoder keeps the last stored frame as its base

    def is_alive(self) -> bool:
        return self._watcher.is_alive()

    # -- the watcher thread ----------------------------------------------------------------------

    def _watch(self) -> None:
        try:
            self._start_changes()
            self._grab()
            if self._current is not None:
                self._store(self._current, "start")
            while not self._stopping.is_set():
                item = self._wait()
                if item is None:
                    if self._stopping.is_set():
                        return
                    continue
                self._take_action(*item)
        except Exception:  # never take the agent down; the recorder sees is_alive() False
            self.failures += 1
            logger.exception("the screen watcher stopped")

    def _start_changes(self) -> None:
        changes = self._changes
        if changes is None:
            return
        if not isinstance(self._grabber, RegionGrabber):
            self._fall_back("the screen grabber cannot grab part of the screen")
            return
        t = now_ns()  # before the take: a change seen during it counts (see _wait)
        try:
            changes.start(self._damaged)
            changes.take()  # the whole grab that follows shows everything changed so far
        except Exception as exc:
            self._fall_back(f"the display does not report changes ({describe_failure(exc)})")
            return
        self._last_take_ns = t
        self._next_verify_ns = t + self._verify_ns

    def _fall_back(self, why: str) -> None:
        """Poll from now on (logged once, counted; ``why`` names no content)."""
        changes, self._changes = self._changes, None
        if changes is None:
            return
        self.fallbacks += 1
        self._live, self._lent = None, False  # nothing patches frames any more
        self._dirty_since = None
        logger.warning("screen changes: %s; polling the whole screen instead", why)
        _close_quietly(changes)

    def _wait(self) -> tuple[int, str] | None:
        """Sleep until the next action or the next due grab (which it takes); None on a tick."""
        while True:
            changes = self._changes
            if changes is not None and not changes.is_alive():
                self._fall_back("the display stopped reporting changes")
            due = self._next_due_ns()
            timeout = max(0.0, (due - now_ns()) / _NS)
            try:
                item = self._actions.get(timeout=timeout)
            except queue.Empty:
                self._tick()
                return None
            if item is None:
                return item
            if item[1] == _SYNC:
                self._grab()
                with self._sync_lock:
                    syncs, self._syncs = self._syncs, []
                for done in syncs:
                    done.set()
                continue
            if item[1] == _DAMAGED:
                if self._dirty_since is None:
                    if item[0] >= self._last_take_ns:
                        self._dirty_since = item[0]
                    else:  # seen before the last take, which has it; ask whether more came since
                        self._ask_dirty_since()
                continue
            if item[1]:
                return item
            # a wake-up from activity(): recompute the due time at the active rate

    def _active(self, now: int) -> bool:
        return now - self._last_input_ns <= self._idle_after_ns or self._settle is not None

    def _next_due_ns(self) -> int:
        now = now_ns()
        rate = self._active_ns if self._active(now) else self._idle_ns
        if self._changes is None:
            last = self._current.t_ns if self._current is not None else 0
            return last + rate
        if self._current is None:  # no frame yet (the first grab failed): try again
            return self._last_take_ns + rate
        due = self._next_verify_ns
        if self._small and rate == self._active_ns:
            rate = self._small_ns
        if self._dirty_since is not None or self._full_next:
            since = self._dirty_since if self._dirty_since is not None else now
            due = min(due, max(since + self._coalesce_ns, self._last_take_ns + rate))
        if self._settle is not None:
            due = min(due, self._settle.deadline_ns)
        elif self._changed_since_store:  # a keyframe is due only when no settled frame is pending
            due = min(due, self._next_keyframe_ns)
        return due

    def _tick(self) -> None:
        """A due grab: serve a pending settled frame, or a keyframe if the screen changed."""
        if self._changes is None:
            self._grab()
            shot = self._current
            if shot is None:
                return
            settle = self._settle
            if settle is not None and shot.t_ns + self._active_ns > settle.deadline_ns:  # the next: too late
                self._settle = None
                self._store(shot, "settled")
            elif shot.t_ns >= self._next_keyframe_ns and settle is None:
                self._store(shot, "keyframe")
            return
        now = now_ns()
        settle = self._settle
        settle_due = settle is not None and now >= settle.deadline_ns
        keyframe_due = self._changed_since_store and now >= self._next_keyframe_ns and settle is None
        if (
            self._current is None
            or self._dirty_since is not None
            or self._full_next
            or settle_due
            or keyframe_due
        ):
            self._grab()  # nothing changed: the kept frame, stamped now
            shot = self._current
            if shot is not None and settle is not None and settle_due:
                self._settle = None
                if (
                    self._unchanged_since is not None
                    and self._unchanged_since <= settle.deadline_ns < shot.t_ns
                ):
                    shot = _restamp(shot, settle.deadline_ns)  # unchanged all along: the screen then too
                self._store(shot, "settled")
            elif shot is not None and shot.t_ns >= self._next_keyframe_ns and self._settle is None:
                self._store(shot, "keyframe")
        if self._changes is not None and now_ns() >= self._next_verify_ns:
            self._verify()

    def _take_action(self, t_ns: int, reason: str) -> None:
        burst = (
            reason == "key" and self._last_key_ns is not None and t_ns - self._last_key_ns < self._burst_ns
        )
        self._last_key_ns = t_ns if reason == "key" else None
        if not burst:
            found = self._pre_action(t_ns)
            if found is not None:
                pre, stale = found
                self.skews_ns.append(stale)
                self.ages_ns.append(t_ns - pre.t_ns)
                self._store(pre, reason)
        self._settle = _Settle(t_ns, t_ns + self._settle_ns, reason)

    def _pre_action(self, t_ns: int) -> tuple[Shot, int] | None:
        """The latest grab that started at or before ``t_ns``, if the watcher still has it, and its
        staleness at ``t_ns`` (see :attr:`skews_ns`)."""
        current, previous = self._current, self._previous
        if current is not None and current.t_ns <= t_ns:
            if self._changes is None:
                return current, t_ns - current.t_ns
            since = self._ask_dirty_since()  # the display's word: a wake-up may be for an old change
            if self._full_next:  # a grab failed half-way: how old the frame is, at most
                since = current.t_ns
            return current, 0 if since is None else max(0, t_ns - since)
        if previous is not None and previous.t_ns <= t_ns:
            if self._changes is None and self._previous_stale is None:
                return previous, t_ns - previous.t_ns
            if self._undo:  # the previous frame is the kept one with the patched rows put back
                pixels = bytearray(previous.pixels)
                for box, rows in self._undo:
                    box_math.patch(pixels, previous.width, box, rows)
                previous = _with_pixels(previous, pixels)  # a fresh buffer nothing patches
            stale = self._previous_stale
            return previous, t_ns - previous.t_ns if stale is None else max(0, t_ns - stale)
        return None

    def _ask_dirty_since(self) -> int | None:
        """The changes source's answer (one round trip); a failure means polling from now on."""
        changes = self._changes
        if changes is None:
            return None
        try:
            since = changes.dirty_since()
        except Exception as exc:
            self._fall_back(f"asking the display what changed failed ({describe_failure(exc)})")
            return None
        if since is None and not self._full_next:
            self._dirty_since = None  # a wake-up for a change the last take already had
        elif since is not None and (self._dirty_since is None or since < self._dirty_since):
            self._dirty_since = since
        return since

    def _grab(self) -> None:
        t = now_ns()
        self._unchanged_since = None  # set again below when nothing changed
        last = self._current
        changes = self._changes
        if changes is not None and last is not None:
            try:
                taken = changes.take()
            except Exception as exc:
                self._fall_back(f"reading the display's changes failed ({describe_failure(exc)})")
            else:
                self._last_take_ns = t
                stale, self._dirty_since = self._dirty_since, None
                full, self._full_next = self._full_next, False
                if taken is not None and not full:
                    local = [
                        (x0 - last.left, y0 - last.top, x1 - last.left, y1 - last.top)
                        for x0, y0, x1, y1 in taken
                    ]
                    merged = box_math.merge(local, last.width, last.height)
                    if merged == []:  # nothing changed: the kept frame is the screen now, no grab
                        self._previous, self._current, self._undo = last, _restamp(last, t), None
                        self._previous_stale = t  # still the screen then
                        if self._unchanged_since is None:
                            self._unchanged_since = last.t_ns
                        return
                    if merged is not None:
                        self._grab_boxes(t, last, merged, stale)
                        return
                self._grab_whole(t, stale)
                return
        self._grab_whole(t, None)

    def _grab_boxes(self, t: int, last: Shot, boxes: list[Box], stale: int | None) -> None:
        """Grab ``boxes`` and patch them into the kept frame (in place: stored shots are copies)."""
        grabber = self._grabber
        if not isinstance(grabber, RegionGrabber):  # checked at start; here for the type checker
            self._grab_whole(t, stale)
            return
        try:
            grabbed = [
                grabber.grab_box(last.left + x0, last.top + y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes
            ]
        except Exception as exc:
            self._grab_failed(exc)
            self._full_next = True  # the changes were taken: only a whole grab shows them now
            return
        self.grabs += 1
        self.region_grabs += 1
        self._small = sum(box_math.area(b) for b in boxes) <= SMALL_FRACTION * last.width * last.height
        self._previous_stale = stale if stale is not None else t
        undo: list[tuple[Box, bytes]] = []  # what changed: each box's rows before
        for box, rows in zip(boxes, grabbed, strict=True):
            old = box_math.cut(last.pixels, last.width, box)
            if old != rows:
                undo.append((box, old))
        if not undo:  # damaged but drawn the same: nothing to patch
            self._previous, self._current, self._undo = last, _restamp(last, t), None
            return
        self._changed_since_store = True
        live = self._live
        if live is None or last.pixels is not live or self._lent:
            # the kept buffer is stored (the encoder may keep it) or not ours: patch a copy, and the
            # previous frame keeps the old buffer as it is
            live = self._live = bytearray(last.pixels)
            self._lent = False
            current = _with_pixels(last, live)
            for box, rows in zip(boxes, grabbed, strict=True):
                box_math.patch(live, last.width, box, rows)
            self._previous, self._current, self._undo = last, _restamp(current, t), None
            return
        changed = {box for box, _ in undo}
        for box, rows in zip(boxes, grabbed, strict=True):
            if box in changed:
                box_math.patch(live, last.width, box, rows)
        self._previous, self._current, self._undo = last, _restamp(last, t), undo

    def _grab_whole(self, t: int, stale: int | None) -> None:
        try:
            shot = self._grabber.shoot(t)
        except Exception as exc:
            self._grab_failed(exc)
            return
        self._install(shot, stale)

    def _install(self, shot: Shot, stale: int | None) -> None:
        """``shot``, a whole grab, becomes the current frame."""
        t = shot.t_ns
        self.grabs += 1
        self._small = False
        last = self._current
        if last is not None and shot.same_pixels(last):
            shot = _restamp(last, t)  # one buffer per distinct screen: cheap to compare again
        else:
            self._changed_since_store = True
            if self._changes is not None:  # kept and patched in place from now on
                pixels = shot.pixels if isinstance(shot.pixels, bytearray) else bytearray(shot.pixels)
                self._live, self._lent = pixels, False
                shot = _with_pixels(shot, pixels)
        if last is None or last.geometry != shot.geometry or last.monitors != shot.monitors:
            self._sink(
                Marker(
                    t_ns=t,
                    marker="screen_layout",
                    detail={"virtual": list(shot.geometry), "monitors": [list(m) for m in shot.monitors]},
                )
            )
        self._previous_stale = stale if self._changes is not None else None
        self._previous, self._current, self._undo = last, shot, None

    def _grab_failed(self, exc: Exception) -> None:
        self.failures += 1
        logger.warning("screen grab failed (%s; %d so far)", describe_failure(exc), self.failures)
        time.sleep(min(1.0, self._active_ns / _NS))  # a broken screen must not spin

    def _verify(self) -> None:
        """Check a still screen with one whole grab; a difference means polling from now on."""
        self._next_verify_ns = now_ns() + self._verify_ns
        current = self._current
        if self._dirty_since is not None or current is None:
            return  # not still: the next grab takes the changes; verify another time
        if self._ask_dirty_since() is not None:
            return
        t = now_ns()
        try:
            shot = self._grabber.shoot(t)
        except Exception as exc:
            self._grab_failed(exc)
            return
        if self._ask_dirty_since() is not None or self._changes is None:
            return  # it changed during the grab: cannot tell (the changes are grabbed as usual)
        self.verifications += 1
        self.grabs += 1
        if shot.same_pixels(current):
            self._previous, self._current, self._undo = current, _restamp(current, t), None
            self._previous_stale = None
            return
        self._fall_back("a whole grab showed a change the display did not report")
        self.grabs -= 1  # counted again by _install
        self._install(shot, None)
        self._store(self._current or shot, "keyframe")

    def _store(self, shot: Shot, reason: str) -> None:
        """Hand ``shot`` to the encoder unless it shows what the last stored frame showed."""
        self._next_keyframe_ns = shot.t_ns + self._keyframe_ns
        self._changed_since_store = False
        if self._mask is not None:
            try:
                shot = self._mask(shot)  # before the comparison: changes under a mask show nothing
            except Exception:
                self.failures += 1
                logger.warning("masking a frame failed; the frame is not stored")
                return
        if self._stored_lost:  # the last one never reached the store: the same screen is stored again
            self._stored_lost = False
        elif shot.same_pixels(self._stored):
            return
        try:
            self._encode.put_nowait((shot, reason))
        except queue.Full:
            self.skipped += 1
            return
        self._stored = shot
        if self._live is not None and shot.pixels is self._live:
            self._lent = True  # the next change patches a copy: a stored shot never changes

    # -- the encoder thread ----------------------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            item = self._encode.get()
            if item is None:
                return
            shot, reason = item
            try:
                record = self._encoder_impl.encode(shot, reason)
            except Exception:
                self.failures += 1
                logger.warning("frame encoding failed (%d failures so far)", self.failures)
                continue
            if self._stopping.is_set():
                self.skipped += 1
                continue
            self._sink(record)
            self.frames += 1


def _check_rates(**rates: float) -> None:
    """:raises ValueError: a rate of :class:`ScreenWatch` that cannot work (named with its value)."""
    r = rates
    if (
        not 0 < r["idle_fps"] <= r["max_fps"]
        or min(r["settle_s"], r["keyframe_s"], r["verify_s"]) <= 0
        or (r["small_fps"] <= 0 or r["encode_backlog"] < 1 or r["coalesce_s"] < 0)
    ):
        msg = "invalid screen rates: " + ", ".join(f"{k}={v}" for k, v in rates.items())
        raise ValueError(msg)


def _restamp(shot: Shot, t_ns: int) -> Shot:
    """``shot`` as seen again at ``t_ns`` (same pixel buffer)."""
    return Shot(t_ns, shot.left, shot.top, shot.width, shot.height, shot.pixels, shot.monitors)


def _with_pixels(shot: Shot, pixels: bytes | bytearray) -> Shot:
    return Shot(shot.t_ns, shot.left, shot.top, shot.width, shot.height, pixels, shot.monitors)


def _close_quietly(changes: ScreenChanges) -> None:
    try:
        changes.close()
    except Exception as exc:  # stopping must go on
        logger.debug("closing the screen changes source failed (%s)", describe_failure(exc))


__all__ = [
    "ACTION_REASONS",
    "POLLING_ENV",
    "SMALL_FRACTION",
    "FullFrames",
    "MssGrabber",
    "ScreenWatch",
    "Shot",
    "action_reason",
    "encode_frame",
    "polling_forced",
]
