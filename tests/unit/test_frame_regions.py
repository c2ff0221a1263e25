"""Changed regions (agent/frame_regions.py): diff, encode, apply, keyframe choice, rebuild, cuts.

Synthetic frames drawn with Pillow (text, boxes, noise); the real-display test is
tests/display/test_frame_regions_display.py.  Every rebuilt frame is compared pixel for pixel with
the grab it stands for.
"""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image, ImageDraw

from agent import events as ev
from agent.capture.screen import Shot
from agent.frame_regions import (
    Rebuilder,
    RegionEncoder,
    bgra_image,
    changed_rects,
    merge_rects,
    reanchor,
    rebuild,
    rebuild_images,
    strips,
)

W, H = 320, 200


def _bgra(image: Image.Image) -> bytes:
    return image.tobytes("raw", "BGRX")


def _shot(image: Image.Image, t: int, left: int = 0) -> Shot:
    return Shot(t, left, 0, image.width, image.height, _bgra(image))


def _screens(n: int, seed: int = 5, *, noise: bool = False) -> list[Image.Image]:
    """``n`` screens, each a few small edits (text, a box) on the one before."""
    rng = random.Random(seed)  # noqa: S311 - test workload, not a secret
    if noise:
        image = Image.frombytes("RGB", (W, H), rng.randbytes(W * H * 3))
    else:
        image = Image.new("RGB", (W, H), (40, 44, 52))
    out = []
    for i in range(n):
        image = image.copy()
        draw = ImageDraw.Draw(image)
        for _ in range(rng.randrange(1, 4)):
            x, y = rng.randrange(W - 40), rng.randrange(H - 12)
            if rng.random() < 0.5:
                draw.text((x, y), f"w{i}", fill=(rng.randrange(256), 220, 120))
            else:
                draw.rectangle(
                    (x, y, x + rng.randrange(1, 40), y + rng.randrange(1, 12)), fill=rng.randrange(1 << 24)
                )
        out.append(image)
    return out


def _pixels_of(frame: ev.Event) -> bytes:
    assert isinstance(frame, ev.Frame)
    with Image.open(io.BytesIO(frame.data)) as opened:
        rgb: bytes = opened.convert("RGB").tobytes()
    return rgb


def _stored(events: list[ev.Event]) -> list[ev.Event]:
    """``events`` as a reader gets them back: encoded and decoded."""
    return [ev.decode(ev.encode(e)) for e in events]


# -- changed_rects ---------------------------------------------------------------------------------


def test_no_change_no_rectangle_and_a_fourth_byte_change_is_no_change() -> None:
    image = _screens(1)[0]
    raw = _bgra(image)
    assert changed_rects(raw, raw, W, H) == []
    other = bytearray(raw)
    other[3 + 4 * (W * 10 + 7)] ^= 0xFF  # X of BGRX: frames are stored without it
    assert changed_rects(raw, bytes(other), W, H) == []


def test_one_pixel_is_one_exact_rectangle() -> None:
    image = _screens(1)[0]
    changed = image.copy()
    changed.putpixel((123, 77), (1, 2, 3))
    assert changed_rects(_bgra(image), _bgra(changed), W, H) == [(123, 77, 1, 1)]


def test_a_change_of_one_level_in_blue_is_seen() -> None:
    image = Image.new("RGB", (W, H), (10, 10, 10))
    changed = image.copy()
    changed.putpixel((0, H - 1), (10, 10, 11))
    assert changed_rects(_bgra(image), _bgra(changed), W, H) == [(0, H - 1, 1, 1)]


def test_distant_changes_are_separate_rectangles() -> None:
    image = Image.new("RGB", (W, H))
    changed = image.copy()
    for xy in ((5, 5), (300, 5), (5, 190), (300, 190)):
        changed.putpixel(xy, (255, 255, 255))
    assert sorted(changed_rects(_bgra(image), _bgra(changed), W, H)) == [
        (5, 5, 1, 1),
        (5, 190, 1, 1),
        (300, 5, 1, 1),
        (300, 190, 1, 1),
    ]


@pytest.mark.parametrize("limit", [1, 2, 3, 32])
def test_rectangles_are_disjoint_bounded_and_hold_every_change(limit: int) -> None:
    rng = random.Random(limit)  # noqa: S311 - test workload, not a secret
    for _ in range(20):
        old = Image.frombytes("RGB", (W, H), rng.randbytes(W * H * 3))
        new = old.copy()
        for _ in range(rng.randrange(1, 30)):
            x, y = rng.randrange(W), rng.randrange(H)
            new.paste(
                (rng.randrange(256), 0, 0),
                (x, y, min(W, x + rng.randrange(1, 60)), min(H, y + rng.randrange(1, 9))),
            )
        rects = changed_rects(_bgra(old), _bgra(new), W, H, max_rects=limit)
        assert len(rects) <= limit
        for i, a in enumerate(rects):
            for b in rects[i + 1 :]:
                assert not (
                    a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
                )
        masked_old, masked_new = old.copy(), new.copy()
        for x, y, w, h in rects:  # outside the rectangles nothing differs
            masked_old.paste((0, 0, 0), (x, y, x + w, y + h))
            masked_new.paste((0, 0, 0), (x, y, x + w, y + h))
        assert masked_old.tobytes() == masked_new.tobytes()


def test_merging_keeps_rectangles_disjoint_when_a_union_covers_a_third() -> None:
    rects = [(0, 0, 2, 2), (10, 10, 2, 2), (5, 5, 1, 1), (30, 0, 1, 1)]
    merged = merge_rects(rects, 2)
    assert len(merged) <= 2
    for i, a in enumerate(merged):
        for b in merged[i + 1 :]:
            assert not (
                a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
            )


def test_strips_tile_the_frame() -> None:
    tiles = strips(1920, 1080)
    assert sum(w * h for _, _, w, h in tiles) == 1920 * 1080
    assert all(w == 1920 and h <= 128 for _, _, w, h in tiles)
    wide = strips(20000, 300)
    assert sum(w * h for _, _, w, h in wide) == 20000 * 300
    assert all(w <= 16383 for _, _, w, _ in wide)


# -- encode, then rebuild --------------------------------------------------------------------------


@pytest.mark.parametrize("in_strips", [False, True])
@pytest.mark.parametrize("noise", [False, True])
def test_every_rebuilt_frame_is_exactly_its_grab(in_strips: bool, noise: bool) -> None:
    screens = _screens(25, noise=noise)
    encoder = RegionEncoder(strips=in_strips)
    stored = _stored([encoder.encode(_shot(image, t), "click") for t, image in enumerate(screens)])
    assert encoder.patches > 0
    kinds = {e.KIND for e in stored}
    assert "frame_patch" in kinds
    first = stored[0]
    assert isinstance(first, ev.Frame) != in_strips
    rebuilt = list(rebuild(stored))
    assert len(rebuilt) == len(screens)
    for image, frame in zip(screens, rebuilt, strict=True):
        assert isinstance(frame, ev.Frame)
        assert _pixels_of(frame) == image.tobytes()
    pairs = list(rebuild_images(stored))
    for image, (_, got) in zip(screens, pairs, strict=True):
        assert got is not None and got.tobytes() == image.tobytes()


def test_in_strips_no_rectangle_is_taller_than_a_strip() -> None:
    screens = [Image.new("RGB", (W, H), (0, 0, 0))]
    tall = screens[0].copy()
    ImageDraw.Draw(tall).rectangle((10, 0, 12, H - 1), fill=(255, 255, 255))  # one tall change
    screens.append(tall)
    enc = RegionEncoder(strips=True)
    key, patch = (enc.encode(_shot(image, t), "click") for t, image in enumerate(screens))
    assert isinstance(key, ev.FramePatch) and key.base is None
    assert isinstance(patch, ev.FramePatch) and patch.base is not None
    assert all(h <= 128 for *_, h, _ in key.rects + patch.rects)
    assert len(patch.rects) == 2  # 200 rows: two pieces of at most 128
    out = list(rebuild(_stored([key, patch])))
    assert [_pixels_of(f) for f in out] == [image.tobytes() for image in screens]


def test_keyframes_pass_through_with_their_own_bytes() -> None:
    screens = _screens(3)
    stored = _stored(
        [RegionEncoder(strips=False).encode(_shot(image, t), "start") for t, image in enumerate(screens)]
    )
    out = list(rebuild(stored))
    assert out[0] is stored[0]  # the same event: export's bytes do not change for keyframes


def test_other_events_pass_unchanged_in_order() -> None:
    screens = _screens(3)
    enc = RegionEncoder(strips=False)
    stream: list[ev.Event] = []
    for t, image in enumerate(screens):
        stream.append(ev.PointerMove(t, 1, 2))
        stream.append(enc.encode(_shot(image, t), "click"))
    out = list(rebuild(_stored(stream)))
    assert [e.KIND for e in out] == ["pointer_move", "frame"] * 3


def test_a_geometry_change_starts_a_keyframe() -> None:
    a, b = _screens(2)
    enc = RegionEncoder(strips=False)
    enc.encode(_shot(a, 1), "start")
    assert isinstance(enc.encode(_shot(b, 2, left=10), "click"), ev.Frame)
    small = b.crop((0, 0, 100, 100))
    assert isinstance(enc.encode(_shot(small, 3), "click"), ev.Frame)


def test_a_change_of_most_of_the_screen_is_a_keyframe() -> None:
    a = Image.new("RGB", (W, H), (0, 0, 0))
    b = Image.new("RGB", (W, H), (255, 255, 255))
    enc = RegionEncoder(strips=False)
    enc.encode(_shot(a, 1), "start")
    assert isinstance(enc.encode(_shot(b, 2), "click"), ev.Frame)


def test_lost_makes_the_next_event_a_keyframe() -> None:
    a, b, c = _screens(3)
    enc = RegionEncoder(strips=False)
    enc.encode(_shot(a, 1), "start")
    assert isinstance(enc.encode(_shot(b, 2), "click"), ev.FramePatch)
    enc.lost()
    assert isinstance(enc.encode(_shot(c, 3), "click"), ev.Frame)


def test_the_chain_is_bounded_by_count_time_and_bytes() -> None:
    screens = _screens(12)
    enc = RegionEncoder(strips=False, max_chain_frames=3)
    kinds = [enc.encode(_shot(image, t), "click").KIND for t, image in enumerate(screens)]
    assert kinds[:5] == ["frame", "frame_patch", "frame_patch", "frame_patch", "frame"]
    enc = RegionEncoder(strips=False, max_chain_ns=2)
    kinds = [enc.encode(_shot(image, t), "click").KIND for t, image in enumerate(screens[:5])]
    assert kinds == ["frame", "frame_patch", "frame", "frame_patch", "frame"]
    enc = RegionEncoder(strips=False, max_chain_bytes=0.0)
    assert {enc.encode(_shot(image, t), "click").KIND for t, image in enumerate(screens)} == {"frame"}


def test_a_bytearray_grab_is_encoded_like_bytes() -> None:
    a, b = _screens(2)
    from_bytes = RegionEncoder(strips=False)
    from_array = RegionEncoder(strips=False)
    for t, image in enumerate((a, b)):
        one = from_bytes.encode(_shot(image, t), "click")
        other = from_array.encode(Shot(t, 0, 0, W, H, bytearray(_bgra(image))), "click")
        assert one == other


def test_the_encoder_fits_the_shot_type_of_the_capture_seam() -> None:
    image = _screens(1)[0]
    shot = _shot(image, 7)
    event = RegionEncoder(strips=False).encode(shot, "start")
    assert isinstance(event, ev.Frame)
    assert (event.t_ns, event.left, event.top, event.width, event.height, event.reason) == (
        7,
        0,
        0,
        W,
        H,
        "start",
    )
    assert bgra_image(shot.pixels, W, H).tobytes() == image.tobytes()


# -- loss and order --------------------------------------------------------------------------------


def _chain(n: int) -> tuple[list[Image.Image], list[ev.Event]]:
    screens = _screens(n)
    enc = RegionEncoder(strips=False, max_chain_bytes=100.0)  # one keyframe, then patches only
    return screens, _stored([enc.encode(_shot(image, t), "click") for t, image in enumerate(screens)])


def test_a_patch_whose_base_was_not_stored_is_lost_never_rebuilt_wrong() -> None:
    screens, stored = _chain(8)
    assert [e.KIND for e in stored[:4]] == ["frame", "frame_patch", "frame_patch", "frame_patch"]
    dropped = stored[:2] + stored[3:]  # the recorder's queue dropped the third frame
    rb = Rebuilder()
    out = list(rebuild(dropped, rb))
    assert [_pixels_of(f) for f in out] == [screens[0].tobytes(), screens[1].tobytes()]
    assert rb.lost == len(dropped) - 2


def test_reordered_patches_are_lost() -> None:
    _, stored = _chain(4)
    rb = Rebuilder()
    out = list(rebuild([stored[0], stored[2], stored[1], stored[3]], rb))
    assert len(out) == 1 and rb.lost == 3


def test_a_patch_first_in_a_session_is_lost() -> None:
    _, stored = _chain(3)
    rb = Rebuilder()
    assert list(rebuild(stored[1:], rb)) == []
    assert rb.lost == 2


def test_a_keyframe_after_a_loss_resumes_rebuilding() -> None:
    screens, stored = _chain(3)
    enc = RegionEncoder(strips=False)
    later = _stored(
        [enc.encode(_shot(image, 10 + t), "click") for t, image in enumerate(_screens(3, seed=9))]
    )
    rb = Rebuilder()
    out = list(rebuild([*stored[1:], *later], rb))
    assert rb.lost == 2
    assert [_pixels_of(f) for f in out] == [image.tobytes() for image in _screens(3, seed=9)]
    assert screens  # the first chain is lost whole: its keyframe was not there


def test_a_patch_on_a_frame_of_another_geometry_is_lost() -> None:
    _, stored = _chain(2)
    other = ev.Frame(0, 5, 0, W, H, "webp", "start", stored[0].data)  # type: ignore[union-attr]
    rb = Rebuilder()
    assert list(rebuild([other, stored[1]], rb)) == [other]
    assert rb.lost == 1


# -- cuts ------------------------------------------------------------------------------------------


def test_reanchor_turns_a_patch_whose_base_was_cut_into_a_keyframe() -> None:
    screens, stored = _chain(10)
    assert all(isinstance(e, ev.FramePatch) for e in stored[1:6])
    kept = [e for i, e in enumerate(stored) if i not in (2, 3)]  # a cut removed frames 2 and 3
    marker = ev.Marker(2, "cut", {"from_ns": 2, "to_ns": 3})
    kept.insert(2, marker)
    fixed = reanchor(stored, kept)
    assert fixed[2] is marker
    assert isinstance(fixed[3], ev.Frame) and fixed[3].t_ns == 4 and fixed[3].reason == "click"
    assert fixed[4] is kept[4]  # later patches keep their base: the same pixels
    rb = Rebuilder()
    out = [e for e in rebuild(_stored(fixed), rb) if isinstance(e, ev.Frame)]
    assert rb.lost == 0
    wanted = [image.tobytes() for i, image in enumerate(screens) if i not in (2, 3)]
    assert [_pixels_of(f) for f in out] == wanted


def test_reanchor_leaves_a_whole_stream_as_it_is() -> None:
    _, stored = _chain(5)
    assert all(a is b for a, b in zip(reanchor(stored, stored), stored, strict=True))
