"""Changed regions on a real screen: typing in an xterm, a moved window, a dialog opened and closed.

Every grab the xorg backend takes is stored the way the recorder would (a keyframe, then patches,
through the event encoding), rebuilt by the reader's :func:`agent.frame_regions.rebuild`, and the
rebuilt frame's decoded pixels are compared with the full grab: exact, for every frame.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import pytest
from PIL import Image

from agent import events as ev
from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.backends.xorg import XorgBackend
from agent.capture.screen import Shot
from agent.events import now_ns
from agent.frame_regions import RegionEncoder, bgra_image, image_digest, pixel_digest, rebuild
from tests.display.conftest import need_tools


def _steps(xdisplay: VirtualDisplay) -> Iterator[str]:
    """Drive the desktop; yield after each step a person would take (the caller grabs then)."""
    term = xdisplay.spawn(
        ["xterm", "-T", "optin-regions", "-geometry", "80x20+30+30", "-e", "bash", "--norc"]
    )
    dialog = None
    try:
        assert wait_for(lambda: bool(xdisplay.search("optin-regions")), 10.0), "the xterm did not map"
        wid = xdisplay.search("optin-regions")[0]
        xdisplay.xdotool("windowactivate", "--sync", wid)
        time.sleep(0.5)
        yield "start"
        for chunk in ("echo chan", "ged regi", "ons on d", "isk"):
            xdisplay.xdotool("type", "--delay", "10", chunk)
            yield "key"
        xdisplay.xdotool("key", "Return")
        yield "enter"
        xdisplay.xdotool("type", "--delay", "5", "seq 1 60")
        xdisplay.xdotool("key", "Return")  # output scrolls the whole terminal
        yield "scroll"
        xdisplay.xdotool("windowmove", "--sync", wid, "400", "220")
        yield "move"
        dialog = xdisplay.spawn(
            ["xmessage", "-title", "optin-dialog", "-center", "Save changes before closing?"]
        )
        assert wait_for(lambda: bool(xdisplay.search("optin-dialog")), 10.0), "the dialog did not map"
        yield "dialog"
        stop_process(dialog)
        dialog = None
        yield "dialog closed"
    finally:
        if dialog is not None:
            stop_process(dialog)
        stop_process(term)


@pytest.mark.parametrize("in_strips", [False, True], ids=["whole-keyframes", "strip-keyframes"])
def test_rebuilt_frames_are_exactly_the_full_grabs(
    backend: XorgBackend, xdisplay: VirtualDisplay, in_strips: bool
) -> None:
    need_tools("xterm", "xmessage")
    grabber = backend.screen_grabber()
    encoder = RegionEncoder(strips=in_strips)
    stored: list[ev.Event] = []
    digests: list[str] = []  # the full grabs' pixels, by digest (a grab is 4 MB)
    previous: bytes | None = None
    try:
        for _ in _steps(xdisplay):
            time.sleep(0.3)
            shot = grabber.shoot(now_ns())
            raw = bytes(shot.pixels)
            if raw == previous:
                continue  # the recorder stores a frame only when the screen changed
            previous = raw
            shot = Shot(shot.t_ns, shot.left, shot.top, shot.width, shot.height, raw, shot.monitors)
            stored.append(ev.decode(ev.encode(encoder.encode(shot, "click"))))
            digests.append(image_digest(bgra_image(raw, shot.width, shot.height)))
    finally:
        grabber.close()
    assert encoder.patches >= 3, f"only {encoder.patches} patches in {len(stored)} frames"
    assert any(isinstance(e, ev.FramePatch) for e in stored)
    rebuilt = list(rebuild(stored))
    assert len(rebuilt) == len(digests)
    for i, (frame, digest) in enumerate(zip(rebuilt, digests, strict=True)):
        assert isinstance(frame, ev.Frame)
        with Image.open(io.BytesIO(frame.data)) as opened:
            got = pixel_digest(opened.convert("RGB").tobytes())
        assert got == digest, f"frame {i} ({stored[i].KIND}) was not rebuilt exactly"
    patch_bytes = sum(len(e.data) for e in stored if isinstance(e, ev.FramePatch) and e.base is not None)
    whole_bytes = sum(len(f.data) for f in rebuilt if isinstance(f, ev.Frame))
    assert patch_bytes < whole_bytes  # patches are smaller than the frames they stand for
