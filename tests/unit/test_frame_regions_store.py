"""Frame patches through the real store: written in FRAME records, read back, rebuilt, cut."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from agent import events as ev
from agent.capture.screen import Shot
from agent.frame_regions import Rebuilder, RegionEncoder, rebuild
from agent.paths import dirs
from agent.store import keys
from agent.store.cut import cut_session
from agent.store.reader import load_meta, read_session, session_dir
from agent.store.verify import verify
from agent.store.writer import SessionWriter

W, H = 160, 100


def _screens(n: int) -> list[Image.Image]:
    image = Image.new("RGB", (W, H), (20, 20, 30))
    out = []
    for i in range(n):
        image = image.copy()
        ImageDraw.Draw(image).text((4 + 9 * (i % 15), 4 + 12 * (i // 15)), str(i % 10), fill=(230, 230, 230))
        out.append(image)
    return out


def _rgb(frame: ev.Event) -> bytes:
    assert isinstance(frame, ev.Frame)
    with Image.open(io.BytesIO(frame.data)) as opened:
        rgb: bytes = opened.convert("RGB").tobytes()
    return rgb


def test_patches_are_stored_in_frame_records_read_back_rebuilt_and_cut_exactly() -> None:
    d = dirs()
    keys.init_keys(d)
    screens = _screens(12)
    enc = RegionEncoder(max_chain_bytes=100.0)
    stored = [
        enc.encode(Shot(10 * (t + 1), 0, 0, W, H, image.tobytes("raw", "BGRX")), "click")
        for t, image in enumerate(screens)
    ]
    writer = SessionWriter.create(d, keys.load_recipient(d))
    writer.write_events([ev.Marker(1, "session_start", {}), *stored, ev.Marker(1000, "session_stop", {})])
    writer.close({})
    sid = writer.session_id
    meta = load_meta(session_dir(d, sid))
    assert meta is not None and meta["frames"] == 12 and meta["events"]["frame_patch"] >= 10
    assert verify(d, keys.load_identity(d), sid).ok
    raw = read_session(d, sid, keys.load_identity(d), raw=True)
    assert [e for e in raw.events if isinstance(e, (ev.Frame, ev.FramePatch))] == stored
    data = read_session(d, sid, keys.load_identity(d))  # rebuilt: full frames only, exact
    assert not data.problems
    assert [_rgb(f) for f in data.events if isinstance(f, ev.Frame)] == [s.tobytes() for s in screens]
    assert not any(isinstance(e, ev.FramePatch) for e in data.events)
    cut_session(d, sid, [(30, 50)], keys.load_identity(d), keys.load_recipient(d))  # frames 2, 3, 4
    after = read_session(d, sid, keys.load_identity(d), raw=True)
    rb = Rebuilder()
    got = [_rgb(f) for f in rebuild(after.events, rb) if isinstance(f, ev.Frame)]
    assert rb.lost == 0
    assert got == [s.tobytes() for i, s in enumerate(screens) if i not in (2, 3, 4)]
    rebuilt = read_session(d, sid, keys.load_identity(d))
    assert [_rgb(f) for f in rebuilt.events if isinstance(f, ev.Frame)] == got
    kinds = [e.KIND for e in after.events if isinstance(e, (ev.Frame, ev.FramePatch))]
    assert kinds[:4] == ["frame_patch", "frame_patch", "frame", "frame_patch"]  # frame 5 re-anchored


def test_a_patch_whose_base_was_not_stored_is_left_out_and_reported_by_both_readers() -> None:
    """The recorder dropped a frame (full queue): the patch after it is lost, never rebuilt on the
    wrong image, and the review's eager read and the export's lazy read report the same loss."""
    d = dirs()
    keys.init_keys(d)
    screens = _screens(5)
    enc = RegionEncoder(max_chain_bytes=100.0)
    made = [
        enc.encode(Shot(10 * (t + 1), 0, 0, W, H, s.tobytes("raw", "BGRX")), "click")
        for t, s in enumerate(screens)
    ]
    assert isinstance(made[2], ev.FramePatch)
    stored = made[:2] + made[3:]  # frame 2 never reached the store: 3 and 4 lose their base
    writer = SessionWriter.create(d, keys.load_recipient(d))
    writer.write_events([ev.Marker(1, "session_start", {}), *stored, ev.Marker(1000, "session_stop", {})])
    writer.close({})
    for lazy in (False, True):
        data = read_session(d, writer.session_id, keys.load_identity(d), lazy_frames=lazy)
        assert [e.t_ns for e in data.events if isinstance(e, ev.Frame)] == [10, 20]
        assert any("2 frame patches could not be rebuilt" in p for p in data.problems), data.problems
