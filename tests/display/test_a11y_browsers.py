"""The UI element under a point in Firefox ESR and Chromium (issue 16, item 2), on the real desktop.

A local page draws a button, a text field and a password field in colours no other pixel has, at
fixed places; the test finds each one's rectangle in a screenshot (the pixels), clicks its
centre and asks :class:`agent.backends.xorg.a11y.ElementFinder` for the element there and for the
one with the keyboard focus.  Firefox turns its accessibility on when ``org.a11y.Status.IsEnabled``
is set (optin sets it while recording); Chromium needs ``--force-renderer-accessibility``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.backends.xorg import a11y_bus
from agent.backends.xorg.a11y import ElementFinder, Lookup
from tests.tools import unavailable

Rect = tuple[int, int, int, int]

#: The page: each control in a colour of its own, at a fixed place (CSS pixels; zoom 1).
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>optin browser form</title>
<style>
body { margin: 0; background: #ffffff; }
#signin { position: absolute; left: 80px; top: 80px; width: 220px; height: 60px;
          background: #ff00ff; border: 0; color: #ff00ff; font-size: 20px; }
#user { position: absolute; left: 80px; top: 200px; width: 300px; height: 40px;
        background: #00ffff; border: 0; color: #00ffff; }
#pass { position: absolute; left: 80px; top: 300px; width: 300px; height: 40px;
        background: #ffff00; border: 0; color: #ffff00; }
</style></head>
<body>
<button id="signin">Sign in</button>
<input id="user" aria-label="Username">
<input id="pass" type="password" aria-label="Password">
</body></html>
"""
COLOURS = {"signin": (255, 0, 255), "user": (0, 255, 255), "pass": (255, 255, 0)}


def _browser(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"this test needs {name}: apt-get install {name} (make system-deps installs it)")
    if not a11y_bus.typelib_present():
        unavailable(f"this test needs the AT-SPI typelib: {a11y_bus.INSTALL_FIX}")
    return str(path)


def _rects(vd: VirtualDisplay) -> dict[str, Rect]:
    """Each control's rectangle on the screen, from the pixels (empty until all three are drawn)."""
    import mss
    from PIL import Image

    with mss.MSS() as m:
        shot = m.grab({"left": 0, "top": 0, "width": vd.width, "height": vd.height})
    image = Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")
    pixels = image.load()
    assert pixels is not None
    found: dict[str, Rect] = {}
    for name, colour in COLOURS.items():
        # a coarse scan (every 4th pixel) finds the block, then its exact edges are walked
        hits = [
            (x, y)
            for x in range(0, image.width, 4)
            for y in range(0, image.height, 4)
            if pixels[x, y] == colour
        ]
        if not hits:
            return {}
        x0, x1 = min(x for x, _ in hits), max(x for x, _ in hits)
        y0, y1 = min(y for _, y in hits), max(y for _, y in hits)
        mx, my = (x0 + x1) // 2, (y0 + y1) // 2
        while x0 > 0 and pixels[x0 - 1, my] == colour:
            x0 -= 1
        while x1 + 1 < image.width and pixels[x1 + 1, my] == colour:
            x1 += 1
        while y0 > 0 and pixels[mx, y0 - 1] == colour:
            y0 -= 1
        while y1 + 1 < image.height and pixels[mx, y1 + 1] == colour:
            y1 += 1
        found[name] = (x0, y0, x1 - x0 + 1, y1 - y0 + 1)
    return found


@pytest.fixture
def page(tmp_path: Path) -> str:
    path = tmp_path / "form.html"
    path.write_text(PAGE)
    return path.as_uri()


@pytest.fixture
def accessibility(xdisplay: VirtualDisplay) -> Iterator[None]:
    before = a11y_bus.enable()  # what optin does while it records
    try:
        yield
    finally:
        a11y_bus.restore(before)


def _start(
    vd: VirtualDisplay, argv: list[str], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], dict[str, Rect]]:
    env = {k: v for k, v in vd.env.items() if k != "NO_AT_BRIDGE"}
    env["HOME"] = str(tmp_path)
    proc = vd.spawn(argv, env=env)
    rects: dict[str, Rect] = {}

    def drawn() -> bool:
        rects.update(_rects(vd))
        return len(rects) == len(COLOURS)

    if not wait_for(drawn, 60.0, interval=0.5):
        stop_process(proc)
        pytest.fail(f"{argv[0]} did not draw the page within 60 s")
    time.sleep(1.0)  # its accessibility tree follows the first paint
    return proc, rects


def _centre(rect: Rect) -> tuple[int, int]:
    return rect[0] + rect[2] // 2, rect[1] + rect[3] // 2


def _hit(finder: ElementFinder, x: int, y: int, role: str) -> Lookup:
    found: list[Lookup] = []

    def hit() -> bool:
        found[:] = [finder.element_at(x, y)]
        element = found[0].element
        return element is not None and element.role == role

    assert wait_for(hit, 20.0, interval=0.3), (found[0].reason, found[0].element)
    return found[0]


def _check_page(vd: VirtualDisplay, rects: dict[str, Rect]) -> None:
    finder = ElementFinder(call_timeout_s=1.0, budget_s=5.0)
    try:
        button = _hit(finder, *_centre(rects["signin"]), role="push button")
        assert button.element is not None and button.element.name == "Sign in"
        bounds = button.element.bounds
        assert bounds is not None
        assert all(abs(a - b) <= 3 for a, b in zip(bounds, rects["signin"], strict=True)), (bounds, rects)
        entry = _hit(finder, *_centre(rects["user"]), role="entry")
        assert entry.element is not None and entry.element.name == "Username"
        # a click into the password field: the focus names a password text
        x, y = _centre(rects["pass"])
        vd.xdotool("mousemove", str(x), str(y))  # not --sync: it waits forever if already there
        time.sleep(0.2)
        vd.xdotool("click", "1")

        def password_focused() -> bool:
            focus = finder.focused_element().element
            return focus is not None and focus.is_password

        assert wait_for(password_focused, 10.0, interval=0.2)
    finally:
        finder.close()


def test_firefox_elements_and_its_password_field(
    xdisplay: VirtualDisplay, accessibility: None, page: str, tmp_path: Path
) -> None:
    firefox = _browser("firefox-esr")
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "user.js").write_text(
        'user_pref("browser.shell.checkDefaultBrowser", false);\n'
        'user_pref("datareporting.policy.dataSubmissionEnabled", false);\n'
        'user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);\n'
        'user_pref("browser.aboutwelcome.enabled", false);\n'
    )
    proc, rects = _start(
        xdisplay,
        [firefox, "--no-remote", "--new-instance", "--profile", str(profile), "--kiosk", page],
        tmp_path,
    )
    try:
        _check_page(xdisplay, rects)
    finally:
        stop_process(proc)


def test_chromium_elements_with_renderer_accessibility(
    xdisplay: VirtualDisplay, accessibility: None, page: str, tmp_path: Path
) -> None:
    chromium = _browser("chromium")
    argv = [
        chromium,
        "--force-renderer-accessibility",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--kiosk",
    ]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc, rects = _start(xdisplay, [*argv, page], tmp_path)
    try:
        _check_page(xdisplay, rects)
    finally:
        stop_process(proc)
