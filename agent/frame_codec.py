"""How frames are stored as images: one codec for the grabber, the export's masks and the benchmarks.

Pure (Pillow only): the capture side encodes a grab with it, and redaction re-encodes a masked
frame with it, so export works on stored data without importing anything from capture.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: The ``format`` field of every stored frame.
FRAME_FORMAT = "webp"


def encode_image(image: Any) -> bytes:
    """Encode a Pillow image the way frames are stored: WebP lossless, method 1, effort 50.

    Measured on real desktop scenes (``python -m tests.benchmarks.frame_encodings``, numbers
    in docs/performance.md): exact pixels (OCR redaction and training see what was on screen),
    63 KiB for a 1080p text screen against 221 KiB at method 0, 33–64 ms to encode text
    screens (350–430 ms for photos, on the encoder thread).  Lossy WebP and JPEG are larger
    on text and lose OCR words; PNG is 3–4 times larger.
    """
    buf = io.BytesIO()
    image.save(buf, format="WEBP", lossless=True, quality=50, method=1)
    return buf.getvalue()


class Background:
    """Work (frame encodes) on a few threads beside the caller, at most ``limit`` waiting or running.

    Pillow's WebP encoder lets go of the GIL, so two threads encode 1.6 times as fast as one on
    two cores (a 1080p text frame: 51 ms alone, 31 ms each with two threads; measured).
    :meth:`submit` blocks while ``limit`` jobs are in flight, so the images they hold are bounded.
    """

    def __init__(self, threads: int | None = None, limit: int | None = None) -> None:
        n = threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="optin-encode")
        self._slots = threading.BoundedSemaphore(limit or 2 * n)

    def submit(self, job: Callable[[], T]) -> Future[T]:
        self._slots.acquire()
        try:
            future = self._pool.submit(job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future


_BACKGROUND: list[Background] = []
_BACKGROUND_LOCK = threading.Lock()


def background() -> Background:
    """The process's :class:`Background` (made on first use)."""
    with _BACKGROUND_LOCK:
        if not _BACKGROUND:
            _BACKGROUND.append(Background())
        return _BACKGROUND[0]


__all__ = ["FRAME_FORMAT", "Background", "background", "encode_image"]
