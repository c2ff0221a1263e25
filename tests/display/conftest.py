"""The private X desktop for real-display tests.

One Xvfb + openbox + dunst + trayer stack (own D-Bus) for the whole session,
always torn down.  Missing tools: with CI=true the tests FAIL (the real-display
tests are the point); locally they skip and say why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from agent.backends import select_backend
from agent.backends.virtual_display import APT_HINT, VirtualDisplay, missing_tools
from agent.backends.xorg import XorgBackend
from tests.tools import unavailable

#: OPTIN_SAVE_SCREENSHOTS=1 (re)writes the screenshots under docs/img that the docs show.
SAVE_SCREENSHOTS = os.environ.get("OPTIN_SAVE_SCREENSHOTS") == "1"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/display" in str(item.fspath):
            item.add_marker(pytest.mark.display)


def need_tools(*extra: str) -> None:
    """Fail (CI) or skip (locally) when a required command is missing."""
    missing = missing_tools() + [t for t in extra if shutil.which(t) is None]
    if missing:
        unavailable(f"real-display test needs {', '.join(missing)}: {APT_HINT}")


@pytest.fixture(scope="session")
def xdisplay() -> Iterator[VirtualDisplay]:
    """A running private desktop; its variables are in os.environ for the session."""
    need_tools()
    vd = VirtualDisplay(width=1280, height=800)
    vd.start()
    saved = {
        k: os.environ.get(k)
        for k in (
            "DISPLAY",
            "DBUS_SESSION_BUS_ADDRESS",
            "NO_AT_BRIDGE",
            "XDG_SESSION_TYPE",
            "WAYLAND_DISPLAY",
        )
    }
    os.environ.pop("WAYLAND_DISPLAY", None)
    for key in ("DISPLAY", "DBUS_SESSION_BUS_ADDRESS", "NO_AT_BRIDGE", "XDG_SESSION_TYPE"):
        os.environ[key] = vd.env[key]
    try:
        yield vd
    finally:
        vd.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def backend(xdisplay: VirtualDisplay) -> Iterator[XorgBackend]:
    """The xorg backend on the private desktop, closed afterwards."""
    assert os.environ["DISPLAY"] == xdisplay.display
    chosen = select_backend("xorg")
    assert isinstance(chosen, XorgBackend)
    try:
        yield chosen
    finally:
        chosen.close()


def screenshot_window(
    display: str, window_id: int, window: Sequence[int], name: str, *, min_colours: int, what: str
) -> None:
    """Grab a window as a person sees it (with the window manager's title bar and borders); fail
    when it looks blank (fewer than ``min_colours`` colours: no text was drawn); save it as
    docs/img/``name`` with OPTIN_SAVE_SCREENSHOTS=1."""
    import mss
    import mss.tools
    from Xlib import display as xlib_display

    x, y, w, h = window
    conn = xlib_display.Display(display)
    try:  # the window manager's frame around it: title bar, borders, handle
        prop = conn.create_resource_object("window", window_id).get_full_property(
            conn.intern_atom("_NET_FRAME_EXTENTS"), 0
        )
        left, right, top, bottom = prop.value if prop is not None else (0, 0, 0, 0)
    finally:
        conn.close()
    region = {"left": x - left, "top": y - top, "width": w + left + right, "height": h + top + bottom}
    with mss.MSS() as m:
        shot = m.grab(region)
    colours = {shot.pixel(px, py) for px in range(0, shot.width, 7) for py in range(0, shot.height, 7)}
    assert len(colours) > min_colours, f"the {what} looks blank"
    if SAVE_SCREENSHOTS:
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        mss.tools.to_png(shot.rgb, shot.size, output=str(DOCS_IMG / name))
