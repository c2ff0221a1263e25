"""The frame patch record: the known-answer vector of docs/format.md (Frame patches) and its rules."""

from __future__ import annotations

import pytest
from PIL import Image

from agent import events as ev
from agent.errors import StoreFormatError
from agent.frame_regions import Rebuilder, apply_patch, image_digest, pixel_digest
from tests.unit.store_helpers import doc_vector

VECTOR = doc_vector("format.md", "frame patch known-answer vector")


def _vector_patch() -> ev.FramePatch:
    rect = bytes.fromhex(VECTOR["rect-image"])
    return ev.FramePatch(
        1_000_000_000, 0, 0, 4, 2, "webp", "key", VECTOR["base-digest"], ((1, 0, 2, 1, len(rect)),), rect
    )


def test_the_vector_event_encodes_byte_for_byte() -> None:
    blob = bytes.fromhex(VECTOR["event"])
    assert len(blob) == 219
    assert ev.encode(_vector_patch()) == blob
    assert ev.decode(blob) == _vector_patch()


def test_the_vector_digests_are_sha256_of_rgb_rows() -> None:
    assert pixel_digest(bytes.fromhex(VECTOR["base-pixels"])) == VECTOR["base-digest"]
    assert pixel_digest(bytes.fromhex(VECTOR["rebuilt-pixels"])) == VECTOR["rebuilt-digest"]


def test_the_vector_rebuilds_to_its_pixels() -> None:
    base = Image.frombytes("RGB", (4, 2), bytes.fromhex(VECTOR["base-pixels"]))
    rebuilt = apply_patch(base, ev.decode(bytes.fromhex(VECTOR["event"])))  # type: ignore[arg-type]
    assert rebuilt.tobytes().hex() == VECTOR["rebuilt-pixels"]
    assert image_digest(rebuilt) == VECTOR["rebuilt-digest"]
    assert base.tobytes().hex() == VECTOR["base-pixels"]  # the base is not changed


def test_the_vector_patch_is_rebuilt_after_its_base_frame_and_lost_without_it() -> None:
    from agent.frame_codec import encode_image

    base = Image.frombytes("RGB", (4, 2), bytes.fromhex(VECTOR["base-pixels"]))
    key = ev.Frame(1, 0, 0, 4, 2, "webp", "start", encode_image(base))
    rb = Rebuilder()
    assert rb.image(key) is not None
    image = rb.image(_vector_patch())
    assert image is not None and image.tobytes().hex() == VECTOR["rebuilt-pixels"]
    alone = Rebuilder()
    assert alone.image(_vector_patch()) is None
    assert alone.lost == 1


def test_a_frame_patch_is_a_known_kind_with_a_payload() -> None:
    assert ev.EVENT_TYPES["frame_patch"] is ev.FramePatch
    patch = _vector_patch()
    assert ev.to_dict(patch)["rects"] == [[1, 0, 2, 1, 38]]
    assert "data" not in ev.to_dict(patch)


def test_an_events_payload_rule_still_holds_for_other_kinds() -> None:
    with pytest.raises(StoreFormatError, match="only frames have a payload"):
        ev.decode(ev.encode(ev.PointerMove(1, 2, 3)) + b"x")
