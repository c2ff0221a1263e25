"""The screen watcher's box arithmetic (agent/capture/boxes.py): merging damaged boxes, cutting and
patching BGRA rows.  Pure functions, checked against a brute-force pixel model."""

from __future__ import annotations

import os
import random

import pytest

from agent.capture import boxes
from agent.capture.boxes import Box

ROUNDS = int(os.environ.get("OPTIN_FUZZ_ROUNDS", "200"))


def pixels_of(box_list: list[Box]) -> set[tuple[int, int]]:
    return {(x, y) for x0, y0, x1, y1 in box_list for x in range(x0, x1) for y in range(y0, y1)}


def test_clip() -> None:
    assert boxes.clip((-5, -5, 3, 4), 10, 10) == (0, 0, 3, 4)
    assert boxes.clip((8, 8, 20, 20), 10, 10) == (8, 8, 10, 10)
    assert boxes.clip((10, 0, 12, 5), 10, 10) is None
    assert boxes.clip((3, 3, 3, 9), 10, 10) is None  # empty


def test_touching_and_overlapping_boxes_merge() -> None:
    assert boxes.merge([(0, 0, 2, 2), (2, 0, 4, 2)], 100, 100) == [(0, 0, 4, 2)]
    assert boxes.merge([(0, 0, 5, 5), (3, 3, 8, 8)], 100, 100) == [(0, 0, 8, 8)]
    assert sorted(boxes.merge([(0, 0, 2, 2), (50, 50, 52, 52)], 100, 100) or []) == [
        (0, 0, 2, 2),
        (50, 50, 52, 52),
    ]


def test_a_chain_merges_through_a_later_box() -> None:
    # (0,0)-(2,2) and (4,0)-(6,2) are apart until (2,0)-(4,2) joins them
    assert boxes.merge([(0, 0, 2, 2), (4, 0, 6, 2), (2, 0, 4, 2)], 100, 100) == [(0, 0, 6, 2)]


def test_many_boxes_are_merged_down_to_the_limit_cheapest_first() -> None:
    scattered = [(i * 10, 0, i * 10 + 2, 2) for i in range(5)] + [(0, 90, 2, 92)]
    merged = boxes.merge(scattered, 1000, 1000, limit=2)
    assert merged is not None and len(merged) == 2
    assert (0, 90, 2, 92) in merged  # the far one stays apart: merging it would cost the most


def test_a_large_change_means_a_whole_grab() -> None:
    assert boxes.merge([(0, 0, 50, 50)], 100, 100) is None  # 25 % of the frame
    assert boxes.merge([(0, 0, 49, 50)], 100, 100) == [(0, 0, 49, 50)]
    assert boxes.merge([(0, 0, 100, 100)], 100, 100, full_fraction=1.01) == [(0, 0, 100, 100)]


def test_nothing_changed_is_no_box() -> None:
    assert boxes.merge([], 100, 100) == []
    assert boxes.merge([(200, 200, 300, 300)], 100, 100) == []  # off the frame


def test_bad_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        boxes.merge([(0, 0, 1, 1)], 10, 10, limit=0)


def test_merge_covers_every_pixel_within_the_limit() -> None:
    rng = random.Random(18)  # noqa: S311 - reproducible test data
    for _ in range(ROUNDS):
        width, height = rng.randint(1, 60), rng.randint(1, 60)
        raw = []
        for _ in range(rng.randint(0, 30)):
            x0, y0 = rng.randint(-10, width + 5), rng.randint(-10, height + 5)
            raw.append((x0, y0, x0 + rng.randint(0, 20), y0 + rng.randint(0, 20)))
        limit = rng.randint(1, 9)
        merged = boxes.merge(raw, width, height, limit=limit, full_fraction=2.0)
        assert merged is not None
        assert len(merged) <= limit
        inside = {(x, y) for x, y in pixels_of(raw) if 0 <= x < width and 0 <= y < height}
        assert inside <= pixels_of(merged)
        assert all(0 <= b[0] < b[2] <= width and 0 <= b[1] < b[3] <= height for b in merged)


def test_cut_and_patch_round_trip() -> None:
    rng = random.Random(7)  # noqa: S311 - reproducible test data
    for _ in range(ROUNDS):
        width, height = rng.randint(1, 40), rng.randint(1, 40)
        frame = bytearray(rng.randbytes(width * height * 4))
        other = rng.randbytes(width * height * 4)
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = (x0, y0, rng.randint(x0 + 1, width), rng.randint(y0 + 1, height))
        rows = boxes.cut(other, width, box)
        assert len(rows) == boxes.area(box) * 4
        before = bytes(frame)
        boxes.patch(frame, width, box, rows)
        for y in range(height):
            for x in range(width):
                i = (y * width + x) * 4
                inside = box[0] <= x < box[2] and box[1] <= y < box[3]
                assert frame[i : i + 4] == (other if inside else before)[i : i + 4]
        assert boxes.cut(frame, width, box) == rows


def test_patch_refuses_rows_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="a 2x2 box needs 16 bytes, got 15"):
        boxes.patch(bytearray(64), 4, (0, 0, 2, 2), bytes(15))
