"""Deny rules at the source on a real X display (P4): a password manager's window keeps its keys
out of the store and is painted over in every stored frame, focused or not."""

from __future__ import annotations

import io
import os
import subprocess

from PIL import Image

from agent.backends.virtual_display import VirtualDisplay, wait_for
from agent.capture.deny import MASK_BGRA
from agent.events import Frame, KeyPress, Marker, WindowFocus
from tests.display.test_recording_e2e import _record, _typed
from tests.tools import Consented

GREY = tuple(MASK_BGRA[2::-1])  # BGRA -> RGB
SECRET = "vault7canary"  # noqa: S105 - a canary, not a credential


def _client_geometry(xdisplay: VirtualDisplay, wid: str) -> tuple[int, int, int, int]:
    """Root position and size of a client window, from xwininfo (xdotool's position is off by the
    window manager's title bar under openbox)."""
    env = {**os.environ, "DISPLAY": xdisplay.display}
    out = subprocess.run(["xwininfo", "-id", wid], env=env, capture_output=True, text=True, check=True).stdout
    field = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
    keys = ("Absolute upper-left X", "Absolute upper-left Y", "Width", "Height")
    x, y, w, h = (int(field[k].strip()) for k in keys)
    return x, y, w, h


def test_typing_into_a_password_manager_is_not_stored_and_it_is_masked(
    xdisplay: VirtualDisplay, consented: Consented
) -> None:
    # xterm -class sets WM_CLASS's class: to optin this window is KeePassXC, a default deny rule
    vault = xdisplay.spawn(["xterm", "-class", "KeePassXC", "-T", "vault", "-geometry", "40x10+600+300"])
    work = xdisplay.spawn(["xterm", "-T", "work", "-geometry", "50x10+40+40"])
    try:
        assert wait_for(lambda: bool(xdisplay.search("vault")) and bool(xdisplay.search("work")), 10)
        vault_id, work_id = xdisplay.search("vault")[0], xdisplay.search("work")[0]
        x, y, w, h = _client_geometry(xdisplay, vault_id)

        def script() -> None:
            xdisplay.xdotool("windowactivate", "--sync", vault_id)
            xdisplay.xdotool("type", "--delay", "20", SECRET)
            xdisplay.xdotool("windowactivate", "--sync", work_id)
            xdisplay.xdotool("mousemove", "--sync", "100", "100")
            xdisplay.xdotool("type", "--delay", "20", "hello")
            xdisplay.xdotool("click", "1")

        events = _record(xdisplay, consented, script)
    finally:
        for proc in (vault, work):
            proc.terminate()
            proc.wait()

    typed = _typed(events)
    assert SECRET not in typed and not any(c in typed for c in "v7")  # none of its keys
    assert "hello" in typed
    assert not any(isinstance(e, WindowFocus) and e.app_class == "KeePassXC" for e in events)
    gaps = [e.detail for e in events if isinstance(e, Marker) and e.marker == "deny"]
    assert gaps and gaps[0]["active"] is True and "KeePass" in gaps[0]["label"]
    closed = [g for g in gaps if g["active"] is False]
    assert closed and closed[0]["events_left_out"] >= len(SECRET)
    frames = [e for e in events if isinstance(e, Frame)]
    assert frames
    for frame in frames:  # the vault is grey in every stored frame, focused or not
        image = Image.open(io.BytesIO(frame.data)).convert("RGB")
        for px, py in ((x + 5, y + 5), (x + w // 2, y + h // 2), (x + w - 5, y + h - 5)):
            assert image.getpixel((px - frame.left, py - frame.top)) == GREY, (frame.reason, px, py)
    assert any(isinstance(e, KeyPress) and e.char == "h" for e in events)
