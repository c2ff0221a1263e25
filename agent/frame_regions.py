"""Changed regions on disk: a keyframe, then only the rectangles that changed (docs/format.md,
Frame patches).

Pure (Pillow only), like :mod:`agent.frame_codec`:

- :func:`changed_rects` finds the rectangles where two BGRA grabs differ (rows compared as bytes,
  then column tiles inside each changed band, each run cut to the exact bounding box of its change);
- :class:`RegionEncoder` turns grabs into stored events, in store order, on the encoder thread:
  a keyframe (a whole :class:`~agent.events.Frame`, or a base-less
  :class:`~agent.events.FramePatch` of strips) first, after a geometry change and when the patches
  add up; otherwise a :class:`~agent.events.FramePatch` of the changed rectangles;
- :class:`Rebuilder` / :func:`rebuild` turn a store-order stream back into full frames, exact to
  the pixel, checking each patch's base by digest so a missing or reordered base is never
  rebuilt wrong (it is counted as lost instead);
- :func:`reanchor` keeps a cut session rebuildable: a kept patch whose base was cut becomes a
  keyframe of its rebuilt image.

Nothing here logs or raises pixels; errors name sizes and indexes only.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from agent.errors import StoreFormatError
from agent.events import MAX_FRAME_PIXELS, MAX_PATCH_RECTS, MAX_RECT_SIDE, Event, Frame, FramePatch
from agent.frame_codec import FRAME_FORMAT, encode_image

if TYPE_CHECKING:
    from PIL.Image import Image

    from agent.capture.screen import Shot

#: A rectangle ``(x, y, w, h)`` in frame pixels.
Rect = tuple[int, int, int, int]

#: Column tile width (pixels) inside a changed band, and the rows of unchanged screen that still
#: join two changed bands (one rectangle costs a WebP header, about 30 bytes, and a paste).
TILE = 32
ROW_GAP = 8
#: The encoder's own cap on rectangles per patch (the format allows :data:`MAX_PATCH_RECTS`).
MAX_RECTS = 32
#: A patch is stored only while it changes at most this share of the frame ...
MAX_PATCH_SHARE = 0.5
#: ... while the patches since the keyframe hold fewer bytes than this many keyframes ...
MAX_CHAIN_BYTES = 1.0
#: ... and while the keyframe is younger than this and has fewer patches than this.
MAX_CHAIN_NS = 120 * 1_000_000_000
MAX_CHAIN_FRAMES = 480
#: Rows per strip of a keyframe stored as strips, and of a patch's pieces (``RegionEncoder(strips=True)``).
STRIP_ROWS = 128


def pixel_digest(rgb: bytes) -> str:
    """The ``base`` of a patch on a frame whose pixels, as RGB rows, are ``rgb``: the first 16
    bytes of SHA-256, lowercase hex (docs/format.md, Frame patches)."""
    return hashlib.sha256(rgb).hexdigest()[:32]


def image_digest(image: Image) -> str:
    """:func:`pixel_digest` of a Pillow image (converted to RGB when it is not)."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return pixel_digest(rgb.tobytes())


def bgra_image(pixels: bytes | bytearray, width: int, height: int) -> Image:
    """BGRA (or BGRX) rows as an RGB Pillow image, the way frames are stored."""
    from PIL import Image

    return Image.frombuffer("RGB", (width, height), pixels, "raw", "BGRX", 0, 1)


# -- finding what changed ---------------------------------------------------------------------------


def changed_rows(old: bytes | bytearray, new: bytes | bytearray, width: int, height: int) -> list[int]:
    """Indexes of the rows whose bytes differ (BGRA rows of ``width`` pixels)."""
    stride = width * 4
    return [
        y for y in range(height) if old[y * stride : (y + 1) * stride] != new[y * stride : (y + 1) * stride]
    ]


def _bands(rows: list[int], gap: int) -> list[tuple[int, int]]:
    """Runs of ``rows`` as ``[start, end)``, joining runs fewer than ``gap`` rows apart."""
    bands: list[tuple[int, int]] = []
    for y in rows:
        if bands and y - bands[-1][1] < gap:
            bands[-1] = (bands[-1][0], y + 1)
        else:
            bands.append((y, y + 1))
    return bands


def _band_image(pixels: bytes | bytearray, width: int, y0: int, y1: int) -> Image:
    from PIL import Image

    stride = width * 4
    return Image.frombytes(
        "RGB", (width, y1 - y0), memoryview(pixels)[y0 * stride : y1 * stride], "raw", "BGRX"
    )


def changed_rects(
    old: bytes | bytearray,
    new: bytes | bytearray,
    width: int,
    height: int,
    *,
    max_rects: int = MAX_RECTS,
) -> list[Rect]:
    """Disjoint rectangles that together hold every pixel whose RGB differs between two BGRA grabs
    of ``width`` x ``height`` (the fourth byte is ignored, as stored frames have none).

    At most ``max_rects``: nearest rectangles are merged (with any they then overlap) beyond that.
    """
    from PIL import ImageChops

    rects: list[Rect] = []
    for y0, y1 in _bands(changed_rows(old, new, width, height), ROW_GAP):
        diff = ImageChops.difference(_band_image(old, width, y0, y1), _band_image(new, width, y0, y1))
        box = diff.getbbox()
        if box is None:
            continue  # only the unused fourth byte changed
        runs: list[tuple[int, int]] = []
        for tx in range(box[0], box[2], TILE):
            tile = (tx, 0, min(tx + TILE, box[2]), y1 - y0)
            if diff.crop(tile).getbbox() is None:
                continue
            if runs and runs[-1][1] == tx:
                runs[-1] = (runs[-1][0], tile[2])
            else:
                runs.append((tx, tile[2]))
        for x0, x1 in runs:
            exact = diff.crop((x0, 0, x1, y1 - y0)).getbbox()
            if exact is not None:
                rects.append((x0 + exact[0], y0 + exact[1], exact[2] - exact[0], exact[3] - exact[1]))
    return merge_rects(rects, max(1, max_rects))


def _union(a: Rect, b: Rect) -> Rect:
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return (x0, y0, x1 - x0, y1 - y0)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def merge_rects(rects: list[Rect], limit: int) -> list[Rect]:
    """Disjoint ``rects`` merged until at most ``limit`` remain: each step joins the pair whose
    bounding box adds the least area, then absorbs whatever that box overlaps.  Stays disjoint."""
    out = list(rects)
    while len(out) > limit:
        best: tuple[int, int, int] | None = None
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                u = _union(out[i], out[j])
                cost = u[2] * u[3] - out[i][2] * out[i][3] - out[j][2] * out[j][3]
                if best is None or cost < best[0]:
                    best = (cost, i, j)
        if best is None:  # fewer than two rectangles: nothing to merge
            break
        _, i, j = best
        merged = _union(out[i], out[j])
        rest = [r for k, r in enumerate(out) if k not in (i, j)]
        changed = True
        while changed:
            changed = False
            for r in rest:
                if _overlaps(merged, r):
                    merged = _union(merged, r)
                    rest.remove(r)
                    changed = True
                    break
        out = [*rest, merged]
    return sorted(out, key=lambda r: (r[1], r[0]))


def _split(rect: Rect, rows: int = MAX_RECT_SIDE) -> list[Rect]:
    """``rect`` in pieces of at most ``rows`` rows and :data:`MAX_RECT_SIDE` columns (WebP's limit)."""
    x, y, w, h = rect
    rows = min(rows, MAX_RECT_SIDE)
    return [
        (x + dx, y + dy, min(MAX_RECT_SIDE, w - dx), min(rows, h - dy))
        for dy in range(0, h, rows)
        for dx in range(0, w, MAX_RECT_SIDE)
    ]


# -- encoding ---------------------------------------------------------------------------------------


def encode_rects(
    image: Image, rects: Sequence[Rect]
) -> tuple[tuple[tuple[int, int, int, int, int], ...], bytes]:
    """The ``rects`` field and payload of a patch showing ``rects`` of ``image`` (the new frame)."""
    fields: list[tuple[int, int, int, int, int]] = []
    parts: list[bytes] = []
    for x, y, w, h in rects:
        data = encode_image(image.crop((x, y, x + w, y + h)))
        fields.append((x, y, w, h, len(data)))
        parts.append(data)
    return tuple(fields), b"".join(parts)


def strips(width: int, height: int, rows: int = STRIP_ROWS) -> list[Rect]:
    """The frame cut in horizontal strips of ``rows`` rows (and of at most WebP's width)."""
    return _split((0, 0, width, height), rows)


class RegionEncoder:
    """Grabs to stored events, in store order: keyframes and patches (the capture's encoder seam).

    Stateful and single-threaded: call :meth:`encode` only on the encoder thread, in the order the
    events will be stored.  It keeps the last stored grab's pixels and that frame's digest: a
    reference, no copy, as :class:`~agent.capture.FrameEncoder` promises that a shot handed to it
    is never changed afterwards.  :meth:`lost` may be called from any thread when an event it
    made was not stored (a full queue, a pause): the next one is a keyframe.

    :param strips: store keyframes as a base-less patch of horizontal strips, and cut a patch's
        rectangles to strips too (libwebp's working memory follows the image it encodes: a
        1920x128 strip needs about 9 MB where a 1080p frame needs 20-80 MB; measured by
        ``python -m tests.benchmarks.regions``); False: keyframes are whole
        :class:`~agent.events.Frame` records, which readers pass on with their own bytes.
    """

    def __init__(
        self,
        *,
        strips: bool = True,
        max_rects: int = MAX_RECTS,
        max_share: float = MAX_PATCH_SHARE,
        max_chain_bytes: float = MAX_CHAIN_BYTES,
        max_chain_ns: int = MAX_CHAIN_NS,
        max_chain_frames: int = MAX_CHAIN_FRAMES,
    ) -> None:
        if not 1 <= max_rects <= MAX_PATCH_RECTS:
            msg = f"max_rects must be 1..{MAX_PATCH_RECTS} (got {max_rects})"
            raise ValueError(msg)
        self._strips = strips
        self._max_rects = max_rects
        self._max_share = max_share
        self._max_chain_bytes = max_chain_bytes
        self._max_chain_ns = max_chain_ns
        self._max_chain_frames = max_chain_frames
        self._pixels: bytes | bytearray | None = None
        self._geometry: tuple[int, int, int, int] | None = None
        self._digest = ""
        self._key_bytes = 0
        self._key_t_ns = 0
        self._chain_bytes = 0
        self._chain_frames = 0
        self._lost = False
        #: Keyframes and patches made (for benchmarks and status).
        self.keyframes = 0
        self.patches = 0

    def lost(self) -> None:
        """The last event :meth:`encode` returned was not stored: start over with a keyframe."""
        self._lost = True

    def encode(self, shot: Shot, reason: str) -> Event:
        """The stored event for ``shot``: a keyframe, or a patch on the previous one."""
        lost, self._lost = self._lost, False  # a lost() during this encode counts for the next one
        pixels = shot.pixels
        image = bgra_image(pixels, shot.width, shot.height)
        event: Event | None = None
        if not lost and self._patch_allowed(shot):
            event = self._patch(shot, reason, pixels, image)
        if event is None:
            event = self._keyframe(shot, reason, image)
        self._pixels = pixels
        self._geometry = shot.geometry
        self._digest = image_digest(image)
        return event

    def _patch_allowed(self, shot: Shot) -> bool:
        return (
            self._pixels is not None
            and shot.geometry == self._geometry
            and self._chain_frames < self._max_chain_frames
            and self._chain_bytes < self._key_bytes * self._max_chain_bytes
            and shot.t_ns - self._key_t_ns < self._max_chain_ns
        )

    def _patch(self, shot: Shot, reason: str, pixels: bytes | bytearray, image: Image) -> FramePatch | None:
        if self._pixels is None:
            return None
        rects = changed_rects(self._pixels, pixels, shot.width, shot.height, max_rects=self._max_rects)
        if sum(w * h for _, _, w, h in rects) > self._max_share * shot.width * shot.height:
            return None
        pieces = [p for r in rects for p in _split(r, STRIP_ROWS if self._strips else MAX_RECT_SIDE)]
        if len(pieces) > MAX_PATCH_RECTS:
            return None
        patch = _patch(shot, reason, self._digest, image, pieces)
        self._chain_bytes += len(patch.data)
        self._chain_frames += 1
        self.patches += 1
        return patch

    def _keyframe(self, shot: Shot, reason: str, image: Image) -> Event:
        event: Event
        if self._strips:
            event = _patch(shot, reason, None, image, strips(shot.width, shot.height))
            payload = event.data
        else:
            payload = encode_image(image)
            event = Frame(
                shot.t_ns, shot.left, shot.top, shot.width, shot.height, FRAME_FORMAT, reason, payload
            )
        self._key_bytes = len(payload)
        self._key_t_ns = shot.t_ns
        self._chain_bytes = 0
        self._chain_frames = 0
        self.keyframes += 1
        return event


# -- rebuilding -------------------------------------------------------------------------------------


def _patch(shot: Shot, reason: str, base: str | None, image: Image, rects: list[Rect]) -> FramePatch:
    """The patch of ``shot`` made of ``image``'s ``rects`` (on ``base``; None: they tile the frame)."""
    fields, payload = encode_rects(image, rects)
    g = (shot.left, shot.top, shot.width, shot.height)
    return FramePatch(shot.t_ns, *g, FRAME_FORMAT, reason, base, fields, payload)


def _open_rect(data: bytes, w: int, h: int, index: int) -> Image:
    """Decode one rectangle's image, refusing anything but a simple lossless WebP (``RIFF``,
    ``WEBP``, ``VP8L``: one frame) of exactly ``w`` x ``h``, before its pixels are decoded (so no
    image can claim more memory than its rectangle, which the frame bounds)."""
    from PIL import Image, UnidentifiedImageError

    if data[0:4] != b"RIFF" or data[8:16] != b"WEBPVP8L":
        msg = f"rectangle {index} of a frame patch is not a lossless WebP image"
        raise StoreFormatError(msg)
    try:
        opened = Image.open(io.BytesIO(data), formats=["WEBP"])
        if opened.size != (w, h) or getattr(opened, "n_frames", 1) != 1:
            got = f"{opened.size[0]}x{opened.size[1]}"
            msg = f"rectangle {index} of a frame patch holds a {got} image, not {w}x{h}"
            raise StoreFormatError(msg)
        opened.load()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        msg = f"rectangle {index} of a frame patch is not a WebP image that decodes"
        raise StoreFormatError(msg) from exc
    if opened.mode != "RGB":
        msg = f"rectangle {index} of a frame patch is {opened.mode}, not RGB"
        raise StoreFormatError(msg)
    return opened


def apply_patch(base: Image | None, patch: FramePatch) -> Image:
    """``base`` (RGB, the patch's geometry; None for a base-less patch) with the patch's rectangles
    pasted on, as a new image.  The base digest is the caller's to check.

    :raises StoreFormatError: a rectangle's image is not what the record says.
    """
    from PIL import Image

    out = Image.new("RGB", (patch.width, patch.height)) if base is None else base.copy()
    offset = 0
    for index, (x, y, w, h, n) in enumerate(patch.rects):
        out.paste(_open_rect(patch.data[offset : offset + n], w, h, index), (x, y))
        offset += n
    return out


class Rebuilder:
    """Turns a store-order stream of frames and patches into full frames (docs/format.md, Frame
    patches, Reading).  One per session read, in store order.

    :ivar lost: patches not rebuilt because their base was not the frame before them (it was
        never stored, was cut, or the stream is out of order); counted, never rebuilt wrong.
    """

    def __init__(self) -> None:
        self.lost = 0
        self._geometry: tuple[int, int, int, int] | None = None
        self._image: Image | None = None
        self._frame: Frame | None = None  # a keyframe not decoded yet
        self._digest: str | None = None

    def image(self, event: Frame | FramePatch) -> Image | None:
        """The full RGB image after ``event``, or None (a lost patch; a keyframe that does not
        decode).  The image is new or the decoded keyframe: the caller may keep it, not change it."""
        if isinstance(event, Frame):
            self._set((event.left, event.top, event.width, event.height), None, event)
            return self._current()
        geometry = (event.left, event.top, event.width, event.height)
        base: Image | None = None
        if event.base is not None:
            base = self._current() if geometry == self._geometry else None
            if base is None or self._current_digest() != event.base:
                self.lost += 1
                self._set(geometry, None, None)  # what follows it cannot be checked either
                return None
        image = apply_patch(base, event)
        self._set(geometry, image, None)
        return image

    def advance(self, event: Frame | FramePatch) -> None:
        """Take ``event`` as the latest frame without decoding a keyframe until a patch needs it."""
        if isinstance(event, Frame):
            self._set((event.left, event.top, event.width, event.height), None, event)
        else:
            self.image(event)

    def frame(self, event: Frame | FramePatch) -> Frame | None:
        """``event`` as a full :class:`~agent.events.Frame`: a keyframe as it is (the same bytes),
        a patch as the lossless encoding of its rebuilt image; None for a lost patch."""
        if isinstance(event, Frame):
            self._set((event.left, event.top, event.width, event.height), None, event)
            return event
        image = self.image(event)
        if image is None:
            return None
        data = encode_image(image)
        return Frame(
            event.t_ns, event.left, event.top, event.width, event.height, FRAME_FORMAT, event.reason, data
        )

    def _set(self, geometry: tuple[int, int, int, int], image: Image | None, frame: Frame | None) -> None:
        self._geometry = geometry
        self._image, self._frame, self._digest = image, frame, None

    def _current(self) -> Image | None:
        if self._image is None and self._frame is not None:
            frame, self._frame = self._frame, None
            self._image = keyframe_image(frame)
        return self._image

    def _current_digest(self) -> str | None:
        if self._digest is None and self._image is not None:
            self._digest = image_digest(self._image)
        return self._digest


def keyframe_image(frame: Frame) -> Image | None:
    """A whole frame's pixels as patches apply to them (RGB, exactly the frame's size), or None:
    larger than any patch may be, or not an image of its size (readers leave it out as before)."""
    if frame.width * frame.height > MAX_FRAME_PIXELS:
        return None  # larger than any patch may be: no patch can apply to it
    try:
        from PIL import Image

        opened = Image.open(io.BytesIO(frame.data))
        if opened.size != (frame.width, frame.height):
            return None
        opened.load()
        return opened if opened.mode == "RGB" else opened.convert("RGB")
    except Exception:  # a keyframe that does not decode
        return None


def rebuild(events: Iterable[Event], rebuilder: Rebuilder | None = None) -> Iterator[Event]:
    """The store-order ``events`` with every patch turned into a full :class:`~agent.events.Frame`
    (its rebuilt image, WebP lossless) and every keyframe as stored; lost patches are left out and
    counted in ``rebuilder.lost``.  Other events pass unchanged.  Holds one frame's pixels."""
    rb = rebuilder if rebuilder is not None else Rebuilder()
    for event in events:
        if isinstance(event, (Frame, FramePatch)):
            frame = rb.frame(event)
            if frame is not None:
                yield frame
        else:
            yield event


def rebuild_images(
    events: Iterable[Event], rebuilder: Rebuilder | None = None
) -> Iterator[tuple[Event, Image | None]]:
    """Like :func:`rebuild` for consumers that want pixels (OCR, review): ``(event, image)`` with
    the full RGB image of each frame and patch (None for other events, and for a keyframe that
    does not decode), without encoding rebuilt frames.  A lost patch is left out."""
    rb = rebuilder if rebuilder is not None else Rebuilder()
    for event in events:
        if isinstance(event, FramePatch):
            image = rb.image(event)
            if image is not None:
                yield event, image
        elif isinstance(event, Frame):
            yield event, rb.image(event)
        else:
            yield event, None


def reanchor(original: Sequence[Event], kept: Sequence[Event]) -> list[Event]:
    """``kept`` (a subset of the store-order ``original``, by identity, plus new events such as cut
    markers) with every patch whose base is no longer before it turned into a keyframe of its
    rebuilt image, same time and reason: what a cut writes, so the copy rebuilds exactly.

    A patch is re-anchored when the image event before it in ``original`` is not kept; the patches
    after it keep their base (the same pixels).  A patch that could not be rebuilt in ``original``
    either is kept as it is (its loss is counted when the copy is read).
    """
    keep = {id(e) for e in kept}
    replace: dict[int, Event] = {}
    rb = Rebuilder()
    previous_kept = True
    for event in original:
        if not isinstance(event, (Frame, FramePatch)):
            continue
        orphan = isinstance(event, FramePatch) and event.base is not None and not previous_kept
        if orphan and id(event) in keep:
            image = rb.image(event)
            if image is not None:
                replace[id(event)] = Frame(
                    event.t_ns,
                    event.left,
                    event.top,
                    event.width,
                    event.height,
                    FRAME_FORMAT,
                    event.reason,
                    encode_image(image),
                )
        else:
            rb.advance(event)
        previous_kept = id(event) in keep
    return [replace.get(id(e), e) for e in kept]


__all__ = [
    "MAX_RECTS",
    "STRIP_ROWS",
    "Rebuilder",
    "RegionEncoder",
    "apply_patch",
    "bgra_image",
    "changed_rects",
    "changed_rows",
    "encode_rects",
    "image_digest",
    "keyframe_image",
    "merge_rects",
    "pixel_digest",
    "reanchor",
    "rebuild",
    "rebuild_images",
    "strips",
]
