"""Hostile frame patches (docs/format.md, Frame patches): every record a reader decodes or rebuilds.

A FRAME record is authenticated, but anyone holding the recipient can write one, so its header and
the images of its rectangles are untrusted.  Each crafted record must be refused with a
``StoreFormatError`` (never another exception, never a rebuilt frame with pixels from elsewhere)
and before a rectangle's image can claim more memory than its rectangle; a patch whose base is
missing is counted as lost (P9), never rebuilt on another frame.
``OPTIN_FUZZ_ROUNDS`` (``make fuzz``) sets the randomised rounds.
"""

from __future__ import annotations

import io
import json
import random
import struct
import time
from typing import Any

import pytest
from PIL import Image

from agent import events as ev
from agent.errors import StoreFormatError
from agent.frame_codec import encode_image
from agent.frame_regions import Rebuilder, apply_patch, image_digest, rebuild
from tests.hostile.conftest import Tally, fuzz_rounds

P9 = "P9 frame patches"
P6 = "P6 frame patches rebuild exactly"
SEED = 20261206
W, H = 8, 4


def _base() -> Image.Image:
    return Image.frombytes("RGB", (W, H), bytes(range(W * H * 3)))


def _rect_image(w: int = 2, h: int = 1) -> bytes:
    return encode_image(Image.new("RGB", (w, h), (200, 10, 10)))


def _header(**changes: Any) -> dict[str, Any]:
    data = _rect_image()
    header: dict[str, Any] = {
        "v": 1,
        "k": "frame_patch",
        "t_ns": 5,
        "left": 0,
        "top": 0,
        "width": W,
        "height": H,
        "format": "webp",
        "reason": "key",
        "base": image_digest(_base()),
        "rects": [[1, 1, 2, 1, len(data)]],
    }
    header.update(changes)
    return header


def _blob(header: dict[str, Any], payload: bytes | None = None) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + (_rect_image() if payload is None else payload)


def test_the_valid_record_of_these_cases_decodes_and_rebuilds() -> None:
    patch = ev.decode(_blob(_header()))
    assert isinstance(patch, ev.FramePatch)
    image = apply_patch(_base(), patch)
    assert image.getpixel((1, 1)) == (200, 10, 10) and image.getpixel((3, 1)) == _base().getpixel((3, 1))


BAD_HEADERS: list[tuple[str, dict[str, Any], bytes | None]] = [
    ("rects not a list", {"rects": "1,1,2,1,38"}, None),
    ("rects an object", {"rects": {"x": 1}}, None),
    ("rects null", {"rects": None}, None),
    ("a rect of four", {"rects": [[1, 1, 2, 1]]}, None),
    ("a rect of six", {"rects": [[1, 1, 2, 1, 38, 0]]}, None),
    ("a rect of strings", {"rects": [["1", "1", "2", "1", "38"]]}, None),
    ("a rect of booleans", {"rects": [[True, True, 2, 1, 38]]}, None),
    ("a rect of floats", {"rects": [[1.0, 1, 2, 1, 38]]}, None),
    ("a rect a number", {"rects": [7]}, None),
    ("negative x", {"rects": [[-1, 1, 2, 1, 38]]}, None),
    ("zero width", {"rects": [[1, 1, 0, 1, 38]]}, None),
    ("zero bytes", {"rects": [[1, 1, 2, 1, 0]]}, b""),
    ("past the right edge", {"rects": [[7, 1, 2, 1, 38]]}, None),
    ("past the bottom", {"rects": [[1, 4, 2, 1, 38]]}, None),
    ("giant rect", {"rects": [[0, 0, 1 << 20, 1 << 20, 38]]}, None),
    ("wider than WebP", {"width": 20000, "rects": [[0, 0, 16384, 1, 38]]}, None),
    ("too many rects", {"rects": [[i % W, i // W % H, 1, 1, 1] for i in range(257)]}, b"x" * 257),
    ("overlapping rects", {"rects": [[1, 1, 2, 1, 19], [2, 1, 2, 1, 19]]}, None),
    ("the same rect twice", {"rects": [[1, 1, 2, 1, 19], [1, 1, 2, 1, 19]]}, None),
    ("payload shorter than the rects say", {"rects": [[1, 1, 2, 1, 100]]}, None),
    ("payload longer than the rects say", {"rects": [[1, 1, 2, 1, 10]]}, None),
    ("no rects but a payload", {"rects": []}, None),
    ("base too short", {"base": "ab" * 15}, None),
    ("base upper case", {"base": "AB" * 16}, None),
    ("base a number", {"base": 12}, None),
    ("base null without covering the frame", {"base": None}, None),
    ("zero width frame", {"width": 0}, None),
    ("frame too large", {"width": 65535, "height": 65535}, None),
    ("frame side past the limit", {"width": 70000, "height": 1}, None),
    ("format png", {"format": "png"}, None),
    ("geometry a string", {"left": "0"}, None),
    ("time a float", {"t_ns": 5.5}, None),
    ("schema 2", {"v": 2}, None),
]


@pytest.mark.parametrize(("why", "changes", "payload"), BAD_HEADERS, ids=[c[0] for c in BAD_HEADERS])
def test_p9_a_malformed_frame_patch_is_refused(
    hostile: Tally, why: str, changes: dict[str, Any], payload: bytes | None
) -> None:
    hostile.tried(P9)
    with pytest.raises(StoreFormatError):
        ev.decode(_blob(_header(**changes), payload))
    hostile.held(P9)


def test_p9_a_patch_kind_that_is_not_a_patch_keeps_no_payload(hostile: Tally) -> None:
    hostile.tried(P9)
    with pytest.raises(StoreFormatError, match="only frames have a payload"):
        ev.decode(_blob({"v": 1, "k": "pointer_move", "t_ns": 1, "x": 1, "y": 1}))
    hostile.held(P9)


def _webp_claiming(width: int, height: int) -> bytes:
    """A 1x1 lossless WebP whose VP8L header claims ``width`` x ``height`` (a decompression bomb)."""
    data = bytearray(encode_image(Image.new("RGB", (1, 1))))
    at = data.index(b"VP8L") + 8 + 1  # chunk header, then the 0x2f signature
    bits = (
        (width - 1) | ((height - 1) << 14) | (int.from_bytes(data[at : at + 4], "little") & ~((1 << 28) - 1))
    )
    data[at : at + 4] = bits.to_bytes(4, "little")
    return bytes(data)


def _solid_webp(width: int, height: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format="WEBP", lossless=True)
    return buf.getvalue()


def _animated_webp() -> bytes:
    buf = io.BytesIO()
    frames = [Image.new("RGB", (2, 1), c) for c in ((1, 2, 3), (4, 5, 6))]
    frames[0].save(buf, format="WEBP", lossless=True, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _lossy_webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (2, 1), (200, 10, 10)).save(buf, format="WEBP", quality=90)
    return buf.getvalue()


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


BAD_IMAGES: list[tuple[str, bytes]] = [
    ("random bytes", bytes(random.Random(SEED).randbytes(64))),  # noqa: S311 - test workload
    ("a PNG", _png(2, 1)),
    ("a truncated WebP", _rect_image()[:-6]),
    ("a WebP of other size", _solid_webp(3, 1)),
    ("a decompression bomb header", _webp_claiming(16383, 16383)),
    ("a large real WebP", _solid_webp(2000, 2000)),
    ("a WebP with alpha", _solid_webp(2, 1, "RGBA")),
    ("an animated WebP", _animated_webp()),
    ("a lossy WebP", _lossy_webp()),
]


@pytest.mark.parametrize(("why", "image"), BAD_IMAGES, ids=[c[0] for c in BAD_IMAGES])
def test_p6_a_rectangle_image_that_is_not_its_rectangle_is_refused_before_decoding(
    hostile: Tally, why: str, image: bytes
) -> None:
    hostile.tried(P6)
    patch = ev.decode(_blob(_header(rects=[[1, 1, 2, 1, len(image)]]), image))
    assert isinstance(patch, ev.FramePatch)
    t0 = time.monotonic()
    with pytest.raises(StoreFormatError, match="rectangle 0"):
        apply_patch(_base(), patch)
    assert time.monotonic() - t0 < 5.0  # refused from the header, not after decoding 268 M pixels
    hostile.held(P6)


def test_p9_a_patch_with_no_base_is_lost_and_counted_not_rebuilt(hostile: Tally) -> None:
    hostile.tried(P9, 3)
    patch = ev.decode(_blob(_header()))
    rb = Rebuilder()
    assert list(rebuild([patch], rb)) == []
    assert rb.lost == 1
    hostile.held(P9)
    other = ev.Frame(1, 0, 0, W, H, "webp", "start", encode_image(Image.new("RGB", (W, H), (9, 9, 9))))
    rb = Rebuilder()
    assert list(rebuild([other, patch], rb)) == [other]  # another frame before it: not its base
    assert rb.lost == 1
    hostile.held(P9)
    broken = ev.Frame(1, 0, 0, W, H, "webp", "start", b"RIFF\x00\x00\x00\x00WEBP")
    rb = Rebuilder()
    assert list(rebuild([broken, patch], rb)) == [broken]  # an undecodable base: lost, no error
    assert rb.lost == 1
    hostile.held(P9)


def test_p9_randomised_patch_headers_decode_or_are_refused(hostile: Tally) -> None:
    """Mutated headers: each decodes to a patch that keeps the rules, or is refused; nothing else."""
    rng = random.Random(SEED)  # noqa: S311 - test workload, not a secret
    values: list[Any] = [
        None,
        True,
        -1,
        0,
        1,
        2,
        7,
        8,
        38,
        1 << 31,
        1.5,
        "",
        "x",
        [],
        {},
        [1],
        [[1, 1, 1, 1, 1]],
    ]
    fields = ["t_ns", "left", "top", "width", "height", "format", "reason", "base", "rects"]
    rounds = fuzz_rounds(300)
    hostile.tried(P9, rounds)
    for _ in range(rounds):
        header = _header()
        for _ in range(rng.randrange(1, 4)):
            name = rng.choice(fields)
            if name == "rects" and rng.random() < 0.6:
                rect = [
                    rng.choice([-1, 0, 1, 2, 7, 8, 38, 16384]) for _ in range(rng.choice([4, 5, 5, 5, 6]))
                ]
                header["rects"] = [rect] * rng.randrange(0, 3)
            else:
                header[name] = rng.choice(values)
        try:
            patch = ev.decode(_blob(header))
        except StoreFormatError:
            hostile.held(P9)
            continue
        assert isinstance(patch, ev.FramePatch)
        for x, y, w, h, n in patch.rects:
            assert x >= 0 and y >= 0 and x + w <= patch.width and y + h <= patch.height and n > 0
        assert sum(r[4] for r in patch.rects) == len(patch.data)
        hostile.held(P9)
