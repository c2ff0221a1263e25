"""Screen frames through mss.

:class:`MssGrabber` grabs the whole virtual screen (every monitor) and encodes
it.  :class:`FrameTaker` is the grabber thread: hook callbacks call
:meth:`FrameTaker.request`, which only sets a flag (O(1)); grabbing and encoding
happen on the grabber's own thread, never on a hook thread.

Encoding is WebP lossless at method 0 for now (text stays exact; about 50–80 ms
for a 1080p desktop on this class of machine, see platform-lab); the capture
issue measures the alternatives and may change it.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from typing import Any

from agent.capture import EventSink, ScreenGrabber
from agent.events import Frame, now_ns

logger = logging.getLogger(__name__)

#: Frame image format stored in :attr:`agent.events.Frame.format`.
FRAME_FORMAT = "webp"


def encode_image(image: Any) -> bytes:
    """Encode a Pillow image the way frames are stored (WebP lossless, fast method)."""
    buf = io.BytesIO()
    image.save(buf, format="WEBP", lossless=True, quality=0, method=0)
    return buf.getvalue()


class MssGrabber:
    """Grabs all monitors as one image with mss and encodes it."""

    def __init__(self) -> None:
        import mss

        factory = getattr(mss, "MSS", None) or mss.mss
        self._mss = factory()

    def grab(self, t_ns: int, reason: str) -> Frame:
        from PIL import Image

        region = self._mss.monitors[0]  # the bounding box of every monitor
        shot = self._mss.grab(region)
        image = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
        return Frame(
            t_ns=t_ns,
            left=int(region["left"]),
            top=int(region["top"]),
            width=shot.size[0],
            height=shot.size[1],
            format=FRAME_FORMAT,
            reason=reason,
            data=encode_image(image),
        )

    def close(self) -> None:
        self._mss.close()


class FrameTaker:
    """The grabber thread: takes a frame whenever one is requested.

    Requests go through a :class:`queue.SimpleQueue` (an O(1) put, safe on hook
    threads).  Requests that arrive while a grab is running are served by the
    next grab (the latest reason wins): a frame is never older than the request
    it serves.  The timestamp of a frame is the time its grab started.
    Failures are counted, never raised into hook threads.
    """

    def __init__(self, grabber: ScreenGrabber, sink: EventSink) -> None:
        self._grabber = grabber
        self._sink = sink
        self._requests: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="optin-grabber", daemon=True)
        #: Grabs that failed (counted, P9).
        self.failures = 0
        #: Frames delivered to the sink.
        self.frames = 0
        #: Requests still pending when the thread was stopped (not served: stop means *now*, P3).
        self.skipped = 0

    def request(self, reason: str) -> None:
        """Ask for a frame soon.  O(1); safe on hook threads."""
        self._requests.put(reason)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; no frame is delivered after this returns.

        Requests still pending are not served (pause and stop mean *now*, P3);
        they are counted in :attr:`skipped`.
        """
        self._stopping = True
        self._requests.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        while True:
            try:
                if self._requests.get_nowait() is not None:
                    self.skipped += 1
            except queue.Empty:
                break

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _next_reason(self) -> str | None:
        """Block for a request and merge every request already queued; None means stop."""
        reason = self._requests.get()
        while reason is not None:
            try:
                later = self._requests.get_nowait()
            except queue.Empty:
                return reason
            if later is None:  # stop arrived: the merged request is not served
                self.skipped += 1
                return None
            reason = later
        return None

    def _run(self) -> None:
        try:
            while True:
                reason = self._next_reason()
                if reason is None:
                    return
                t = now_ns()
                try:
                    frame = self._grabber.grab(t, reason)
                except Exception:
                    self.failures += 1
                    logger.warning("screen grab failed (%d so far)", self.failures)
                    continue
                if self._stopping:
                    self.skipped += 1
                    return
                self._sink(frame)
                self.frames += 1
        finally:
            self._grabber.close()
