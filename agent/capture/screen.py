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

    Requests that arrive while a grab is running are merged into the next grab
    (the latest reason wins); the timestamp of a frame is the time its grab
    started.  Failures are counted, never raised into hook threads.
    """

    def __init__(self, grabber: ScreenGrabber, sink: EventSink) -> None:
        self._grabber = grabber
        self._sink = sink
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reason = "start"
        self._thread = threading.Thread(target=self._run, name="optin-grabber", daemon=True)
        #: Grabs that failed (counted, P9).
        self.failures = 0
        #: Frames delivered to the sink.
        self.frames = 0

    def request(self, reason: str) -> None:
        """Ask for a frame soon.  O(1); safe on hook threads."""
        self._reason = reason
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; no frame is delivered after this returns."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                self._wake.wait()
                if self._stopping.is_set():
                    return
                self._wake.clear()
                t = now_ns()
                try:
                    frame = self._grabber.grab(t, self._reason)
                except Exception:
                    self.failures += 1
                    logger.warning("screen grab failed (%d so far)", self.failures)
                    continue
                if self._stopping.is_set():
                    return
                self._sink(frame)
                self.frames += 1
        finally:
            self._grabber.close()
