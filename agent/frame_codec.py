"""How frames are stored as images: one codec for the grabber, the export's masks and the benchmarks.

Pure (Pillow only): the capture side encodes a grab with it, and redaction re-encodes a masked
frame with it, so export works on stored data without importing anything from capture.
"""

from __future__ import annotations

import io
from typing import Any

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


__all__ = ["FRAME_FORMAT", "encode_image"]
