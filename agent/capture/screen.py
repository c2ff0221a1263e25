"""Screen frames: the watcher keeps the latest screen, and every action gets the one from before it.

Nothing here runs on a hook thread except :meth:`ScreenWatch.action` and
:meth:`ScreenWatch.activity`, which are O(1) (a queue put, an attribute store).

- The **watcher thread** grabs the whole virtual screen raw (no encoding: about
  1 ms at 1080p with mss) at most ``max_fps`` times a second while the volunteer
  is active and ``idle_fps`` while not, and compares each grab with the previous
  one byte for byte (a ``memcmp``), so a static screen costs one grab and one
  compare per tick and is never encoded.
- **Pre-action frame**: for an action at time *t* the frame is the latest grab
  that started at or before *t*.  Its age (the *skew*, ``t - grab start``) is at
  most one tick plus scheduling; :attr:`ScreenWatch.skews_ns` keeps recent values.
- **Settled frame**: after an action, the last grab that starts no later than
  ``settle_s`` (500 ms) after it.  A new action supersedes a pending one.
- A focus change is an action (its settled frame shows the new window); a
  **keyframe** is taken every ``keyframe_s`` only if the screen changed.
- **Stored once**: a frame is stored only when its pixels differ from the last
  stored frame, so a stream reader's rule is simple: the screen at time *t* is
  the latest frame with ``t_ns <= t``.  Frames reach the sink after the actions
  they precede (encoding takes time); readers order by ``t_ns``.
- Typing: the first key of a burst gets a pre-action frame; the following keys
  (``reason="key"`` less than ``burst_s`` after the previous one) only push the
  settled frame back, so a typed word costs two frames, not one per key.
- The **encoder thread** turns grabs into :class:`~agent.events.Frame` records
  (WebP lossless, see :func:`agent.frame_codec.encode_image`).  Between the two threads at most
  ``encode_backlog`` grabs wait; beyond that a frame is dropped and counted (P9).
- The monitor layout is emitted as a ``screen_layout`` marker at start and
  whenever the virtual screen's geometry changes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agent.capture import EventSink, ScreenGrabber
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
from agent.frame_codec import FRAME_FORMAT, encode_image
from agent.keyboard.names import key_action

logger = logging.getLogger(__name__)

#: Reasons an action can give; ``key`` is a key of a typing burst (see the module docstring).
ACTION_REASONS = frozenset({"click", "release", "scroll", "key", "hotkey", "focus"})

_NS = 1_000_000_000


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

    image = Image.frombuffer("RGB", (shot.width, shot.height), bytes(shot.pixels), "raw", "BGRX", 0, 1)
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


class MssGrabber:
    """Grabs all monitors as one raw image with mss (the bounding box of every monitor)."""

    def __init__(self) -> None:
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss
        self._mss = factory()

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
    :param sink: receives :class:`~agent.events.Frame` and ``screen_layout``
        :class:`~agent.events.Marker` events, from the encoder and watcher threads.
    :param max_fps: grab rate cap while the volunteer is active (default 4).
    :param idle_fps: grab rate after ``idle_s`` without input (default 1).
    :param settle_s: the settled frame is at most this long after its action.
    :param keyframe_s: how often to store the screen when it changed without any action.
    :param mask: paints over what must not be stored (denied windows) before a
        frame is compared and encoded; if it fails, the frame is not stored.
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
        encode_backlog: int = 4,
        mask: Callable[[Shot], Shot] | None = None,
    ) -> None:
        if not 0 < idle_fps <= max_fps or settle_s <= 0 or keyframe_s <= 0 or encode_backlog < 1:
            msg = (
                f"invalid screen rates: max_fps={max_fps}, idle_fps={idle_fps}, settle_s={settle_s}, "
                f"keyframe_s={keyframe_s}, encode_backlog={encode_backlog}"
            )
            raise ValueError(msg)
        self._grabber = grabber
        self._sink = sink
        self._mask = mask
        self._active_ns = int(_NS / max_fps)
        self._idle_ns = int(_NS / idle_fps)
        self._idle_after_ns = int(idle_s * _NS)
        self._settle_ns = int(settle_s * _NS)
        self._keyframe_ns = int(keyframe_s * _NS)
        self._burst_ns = int(burst_s * _NS)
        self._actions: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
        self._encode: queue.Queue[tuple[Shot, str] | None] = queue.Queue(encode_backlog)
        self._stopping = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="optin-screen", daemon=True)
        self._encoder = threading.Thread(target=self._encode_loop, name="optin-encoder", daemon=True)
        self._last_input_ns = 0
        # watcher-thread state
        self._current: Shot | None = None  # the latest grab
        self._previous: Shot | None = None  # the grab before it
        self._stored: Shot | None = None  # the last grab handed to the encoder
        self._settle: _Settle | None = None
        self._last_key_ns: int | None = None
        self._next_keyframe_ns = 0
        #: Grabs taken (raw; most are never encoded).
        self.grabs = 0
        #: Grabs or encodings that failed (counted, P9).
        self.failures = 0
        #: Frames delivered to the sink.
        self.frames = 0
        #: Frames not stored: the encoder was behind, or capture stopped before they were encoded (P9).
        self.skipped = 0
        #: The most recent pre-action skews (action time minus the start of its grab), in ns.
        self.skews_ns: deque[int] = deque(maxlen=4096)

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
        self._grabber.close()

    def is_alive(self) -> bool:
        return self._watcher.is_alive()

    # -- the watcher thread ----------------------------------------------------------------------

    def _watch(self) -> None:
        try:
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

    def _wait(self) -> tuple[int, str] | None:
        """Sleep until the next action or the next due grab (which it takes); None on a tick."""
        while True:
            due = self._next_grab_ns()
            timeout = max(0.0, (due - now_ns()) / _NS)
            try:
                item = self._actions.get(timeout=timeout)
            except queue.Empty:
                self._tick()
                return None
            if item is None or item[1]:
                return item
            # a wake-up from activity(): recompute the due time at the active rate

    def _next_grab_ns(self) -> int:
        last = self._current.t_ns if self._current is not None else 0
        active = now_ns() - self._last_input_ns <= self._idle_after_ns or self._settle is not None
        return last + (self._active_ns if active else self._idle_ns)

    def _tick(self) -> None:
        """A due grab: serve a pending settled frame, or a keyframe if the screen changed."""
        self._grab()
        shot = self._current
        if shot is None:
            return
        settle = self._settle
        if settle is not None and shot.t_ns + self._active_ns > settle.deadline_ns:  # the next is too late
            self._settle = None
            self._store(shot, "settled")
        elif shot.t_ns >= self._next_keyframe_ns and settle is None:
            self._store(shot, "keyframe")

    def _take_action(self, t_ns: int, reason: str) -> None:
        burst = (
            reason == "key" and self._last_key_ns is not None and t_ns - self._last_key_ns < self._burst_ns
        )
        self._last_key_ns = t_ns if reason == "key" else None
        if not burst:
            pre = self._pre_action(t_ns)
            if pre is not None:
                self.skews_ns.append(t_ns - pre.t_ns)
                self._store(pre, reason)
        self._settle = _Settle(t_ns, t_ns + self._settle_ns, reason)

    def _pre_action(self, t_ns: int) -> Shot | None:
        """The latest grab that started at or before ``t_ns``, if the watcher still has it."""
        for shot in (self._current, self._previous):
            if shot is not None and shot.t_ns <= t_ns:
                return shot
        return None

    def _grab(self) -> None:
        t = now_ns()
        try:
            shot = self._grabber.shoot(t)
        except Exception:
            self.failures += 1
            logger.warning("screen grab failed (%d so far)", self.failures)
            time.sleep(min(1.0, self._active_ns / _NS))  # a broken screen must not spin
            return
        self.grabs += 1
        last = self._current
        if last is not None and shot.same_pixels(last):
            shot = _restamp(last, t)  # one buffer per distinct screen: cheap to compare again
        if last is None or last.geometry != shot.geometry or last.monitors != shot.monitors:
            self._sink(
                Marker(
                    t_ns=t,
                    marker="screen_layout",
                    detail={"virtual": list(shot.geometry), "monitors": [list(m) for m in shot.monitors]},
                )
            )
        self._previous, self._current = last, shot

    def _store(self, shot: Shot, reason: str) -> None:
        """Hand ``shot`` to the encoder unless it shows what the last stored frame showed."""
        self._next_keyframe_ns = shot.t_ns + self._keyframe_ns
        if self._mask is not None:
            try:
                shot = self._mask(shot)  # before the comparison: changes under a mask show nothing
            except Exception:
                self.failures += 1
                logger.warning("masking a frame failed; the frame is not stored")
                return
        if shot.same_pixels(self._stored):
            return
        try:
            self._encode.put_nowait((shot, reason))
        except queue.Full:
            self.skipped += 1
            return
        self._stored = shot

    # -- the encoder thread ----------------------------------------------------------------------

    def _encode_loop(self) -> None:
        while True:
            item = self._encode.get()
            if item is None:
                return
            shot, reason = item
            try:
                frame = encode_frame(shot, reason)
            except Exception:
                self.failures += 1
                logger.warning("frame encoding failed (%d failures so far)", self.failures)
                continue
            if self._stopping.is_set():
                self.skipped += 1
                continue
            self._sink(frame)
            self.frames += 1


def _restamp(shot: Shot, t_ns: int) -> Shot:
    """``shot`` as seen again at ``t_ns`` (same pixel buffer)."""
    return Shot(t_ns, shot.left, shot.top, shot.width, shot.height, shot.pixels, shot.monitors)


__all__ = [
    "ACTION_REASONS",
    "MssGrabber",
    "ScreenWatch",
    "Shot",
    "action_reason",
    "encode_frame",
]
