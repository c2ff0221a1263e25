"""Rectangles of a frame, pure: merging damaged boxes, cutting and patching BGRA rows.

A box is ``(x0, y0, x1, y1)`` in a frame's pixels (right and bottom exclusive).  The screen
watcher (:mod:`agent.capture.screen`) grabs only the boxes the display reported as damaged and
patches them into the frame it keeps; these functions are its arithmetic, with no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

#: ``(x0, y0, x1, y1)``, right and bottom exclusive.
Box = tuple[int, int, int, int]

#: Merged boxes at most; more are merged pairwise, cheapest union first.
MAX_BOXES = 8
#: When the boxes cover this much of the frame, grabbing the whole frame is cheaper.
FULL_FRACTION = 0.25

_BYTES_PER_PIXEL = 4


def area(box: Box) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def union(a: Box, b: Box) -> Box:
    """The smallest box holding both."""
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


def clip(box: Box, width: int, height: int) -> Box | None:
    """``box`` inside a ``width`` x ``height`` frame; None when nothing of it is inside."""
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(width, box[2]), min(height, box[3])
    if x0 >= x1 or y0 >= y1:
        return None
    return (x0, y0, x1, y1)


def _touch(a: Box, b: Box) -> bool:
    """Whether the boxes overlap or share an edge (their union adds nothing between them)."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def merge(
    boxes: Iterable[Box],
    width: int,
    height: int,
    *,
    limit: int = MAX_BOXES,
    full_fraction: float = FULL_FRACTION,
) -> list[Box] | None:
    """``boxes`` clipped to the frame, overlapping and touching ones merged, then merged pairwise
    (the pair whose union adds the least area first) down to ``limit``; None when the result covers
    ``full_fraction`` of the frame or more (grab the whole frame).  Every pixel of every input box
    inside the frame is in an output box.

    :raises ValueError: ``limit`` is below 1.
    """
    if limit < 1:
        msg = f"limit must be at least 1, got {limit}"
        raise ValueError(msg)
    out: list[Box] = []
    for raw in boxes:
        box = clip(raw, width, height)
        if box is None:
            continue
        merged = True
        while merged:  # absorbing one box may make it touch another already kept
            merged = False
            for i, kept in enumerate(out):
                if _touch(kept, box):
                    box = union(kept, box)
                    del out[i]
                    merged = True
                    break
        out.append(box)
    while len(out) > limit:
        _, i, j = min(
            (area(union(out[i], out[j])) - area(out[i]) - area(out[j]), i, j)
            for i, j in combinations(range(len(out)), 2)
        )
        joined = union(out[i], out[j])
        del out[j], out[i]
        out.append(joined)
    if sum(area(b) for b in out) >= full_fraction * width * height:
        return None
    return out


def cut(pixels: bytes | bytearray | memoryview, width: int, box: Box) -> bytes:
    """The BGRA rows of ``box`` from a frame ``width`` pixels wide, one after the other."""
    x0, y0, x1, y1 = box
    line = width * _BYTES_PER_PIXEL
    start, stop = x0 * _BYTES_PER_PIXEL, x1 * _BYTES_PER_PIXEL
    view = memoryview(pixels)
    return b"".join(view[y * line + start : y * line + stop] for y in range(y0, y1))


def patch(frame: bytearray, width: int, box: Box, rows: bytes | bytearray | memoryview) -> None:
    """Write ``rows`` (the BGRA rows of ``box``, as :func:`cut` gives them) into ``frame`` in place.

    :raises ValueError: ``rows`` is not the size of ``box``.
    """
    x0, y0, x1, y1 = box
    stride = (x1 - x0) * _BYTES_PER_PIXEL
    if len(rows) != stride * (y1 - y0):
        msg = f"a {x1 - x0}x{y1 - y0} box needs {stride * (y1 - y0)} bytes, got {len(rows)}"
        raise ValueError(msg)
    line = width * _BYTES_PER_PIXEL
    src = memoryview(rows)
    dst = memoryview(frame)
    offset = y0 * line + x0 * _BYTES_PER_PIXEL
    for row in range(y1 - y0):
        dst[offset : offset + stride] = src[row * stride : (row + 1) * stride]
        offset += line


__all__ = ["FULL_FRACTION", "MAX_BOXES", "Box", "area", "clip", "cut", "merge", "patch", "union"]
