"""The accessible element under a point on X11, through AT-SPI2, on the private desktop.

Real GTK 3 applications (tests/display/a11y_form.py, zenity), a real xterm, the real
accessibility bus that the private session bus starts; nothing stands in.  The apps are started
without NO_AT_BRIDGE (the private desktop sets it for everything else).
"""

from __future__ import annotations

import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from agent.backends.virtual_display import VirtualDisplay, stop_process, wait_for
from agent.backends.xorg import a11y_bus
from agent.backends.xorg.a11y import MAX_NAME, NOT_ON_BUS, STALLED, ElementFinder, Lookup, finder_factory
from agent.capture.element_lookup import ElementLookup, LookupResult
from tests.tools import unavailable

FORM = Path(__file__).with_name("a11y_form.py")
Rect = tuple[int, int, int, int]


def _need_atspi() -> None:
    if not a11y_bus.typelib_present():
        unavailable(f"the accessibility tests need the AT-SPI typelib: {a11y_bus.INSTALL_FIX}")
    if shutil.which("zenity") is None:
        unavailable("the accessibility tests need zenity: apt-get install zenity")
    if not Path("/usr/libexec/at-spi-bus-launcher").exists() and shutil.which("at-spi-bus-launcher") is None:
        unavailable(f"the accessibility tests need the AT-SPI bus launcher: {a11y_bus.INSTALL_FIX}")


def _app_env(vd: VirtualDisplay, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in vd.env.items() if k != "NO_AT_BRIDGE"}
    env.update(extra)
    return env


class Form:
    def __init__(self, proc: subprocess.Popen[bytes], rects: dict[str, Rect]) -> None:
        self.proc = proc
        self.rects = rects

    def centre(self, widget: str) -> tuple[int, int]:
        x, y, w, h = self.rects[widget]
        return x + w // 2, y + h // 2


def _start_form(vd: VirtualDisplay, title: str, x: int, y: int, **env: str) -> Form:
    proc = vd.spawn([sys.executable, str(FORM), title, str(x), str(y)], env=_app_env(vd, **env), stdout=True)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 20.0)
    assert ready, "the GTK form did not show within 20 s"
    rects = {k: (v[0], v[1], v[2], v[3]) for k, v in json.loads(proc.stdout.readline()).items()}
    return Form(proc, rects)


def _wait_hit(finder: ElementFinder, x: int, y: int, pid: int | None = None, timeout: float = 10.0) -> Lookup:
    """The first lookup at (x, y) that finds an element (of process ``pid`` when given: a window
    that just closed may still be on top for a moment); apps join the bus a moment after they
    show.  Then three more lookups must give the same answer."""
    found: list[Lookup] = []

    def hit() -> bool:
        found.append(finder.element_at(x, y))
        return found[-1].element is not None and pid in (None, found[-1].pid)

    wait_for(hit, timeout, 0.1)
    for _ in range(3):
        assert finder.element_at(x, y) == found[-1], "two lookups at one point differ"
    return found[-1]


def _contains(rect: tuple[int, int, int, int], x: int, y: int) -> bool:
    return rect[0] <= x < rect[0] + rect[2] and rect[1] <= y < rect[1] + rect[3]


@pytest.fixture(scope="module")
def form(xdisplay: VirtualDisplay) -> Iterator[Form]:
    _need_atspi()
    started = _start_form(xdisplay, "optin a11y form", 80, 80)
    try:
        yield started
    finally:
        stop_process(started.proc)


@pytest.fixture
def finder(xdisplay: VirtualDisplay) -> Iterator[ElementFinder]:
    _need_atspi()
    # generous timeouts: the machine is shared; the stalled-app test sets its own
    found = ElementFinder(call_timeout_s=1.0, budget_s=5.0)
    try:
        yield found
    finally:
        found.close()


@pytest.mark.parametrize(
    ("widget", "role", "name"),
    [
        ("entry", "text", "Username"),
        ("password", "password text", "Password"),
        ("check", "check box", "Remember me"),
        ("button", "push button", "Sign in"),
    ],
)
def test_element_at_gtk_widgets(form: Form, finder: ElementFinder, widget: str, role: str, name: str) -> None:
    x, y = form.centre(widget)
    found = _wait_hit(finder, x, y)
    element = found.element
    assert element is not None, found.reason
    assert (element.role, element.name) == (role, name)
    assert element.bounds is not None
    assert _contains(element.bounds, x, y)
    for ours, theirs in zip(element.bounds, form.rects[widget], strict=True):
        assert abs(ours - theirs) <= 3, (element.bounds, form.rects[widget])
    assert element.pid == form.proc.pid == found.pid
    assert found.window_id is not None
    assert element.app  # the program's name, whatever GTK calls it
    assert element.path and element.path[0] == ("frame", "optin a11y form")
    assert "enabled" in element.states
    assert ("password" in element.states) == (role == "password text")
    assert element.is_password == (role == "password text")
    if role in ("text", "password text"):
        assert "editable" in element.states


def test_zenity_password_is_password_text(xdisplay: VirtualDisplay, finder: ElementFinder) -> None:
    """zenity --password: find its field's place by walking its tree here, then look it up."""
    _need_atspi()
    proc = xdisplay.spawn(["zenity", "--password", "--title", "optin-zenity"], env=_app_env(xdisplay))
    try:
        import gi

        gi.require_version("Atspi", "2.0")
        from gi.repository import Atspi

        def password_field() -> tuple[int, int, int, int] | None:
            desktop = Atspi.get_desktop(0)
            for i in range(desktop.get_child_count()):
                app = desktop.get_child_at_index(i)
                if app is None or app.get_process_id() != proc.pid:
                    continue
                todo = [app]
                while todo:
                    node = todo.pop()
                    if node.get_role() == Atspi.Role.PASSWORD_TEXT:
                        r = node.get_extents(Atspi.CoordType.SCREEN)
                        return (r.x, r.y, r.width, r.height) if r.width > 0 else None
                    todo.extend(node.get_child_at_index(j) for j in range(node.get_child_count()))
            return None

        where: list[tuple[int, int, int, int] | None] = []

        def shown() -> bool:
            where.append(password_field())
            return where[-1] is not None

        assert wait_for(shown, 15.0, 0.2)
        rect = where[-1]
        assert rect is not None
        x, y = rect[0] + rect[2] // 2, rect[1] + rect[3] // 2
        found = _wait_hit(finder, x, y)
        assert found.element is not None, found.reason
        assert found.pid == proc.pid
        assert found.element.role == "password text"
        assert found.element.is_password
        assert found.element.name == ""  # zenity leaves its field unnamed (measured)
    finally:
        stop_process(proc)


def test_xterm_is_not_on_the_bus(xdisplay: VirtualDisplay, finder: ElementFinder) -> None:
    _need_atspi()
    proc = xdisplay.spawn(
        ["xterm", "-T", "optin-a11y-xterm", "-geometry", "40x10+700+500"], env=_app_env(xdisplay)
    )
    try:
        assert wait_for(lambda: bool(xdisplay.search("optin-a11y-xterm")), 10.0)
        wid = int(xdisplay.search("optin-a11y-xterm")[0])
        geometry = xdisplay.xdotool("getwindowgeometry", str(wid))
        x, y = (int(v) for v in geometry.split("Position: ")[1].split()[0].split(","))
        found = finder.element_at(x + 30, y + 30)
        assert found.element is None
        assert found.reason == NOT_ON_BUS
        assert found.window_id == wid
        assert found.pid == proc.pid
    finally:
        stop_process(proc)


def test_the_window_on_top_gives_the_element(
    xdisplay: VirtualDisplay, form: Form, finder: ElementFinder
) -> None:
    """A second form over the first: its entry covers the first's password field; AT-SPI alone
    would find both (no z-order across apps), the lookup gives the top one's."""
    top = _start_form(xdisplay, "optin a11y top", 80, 140)
    try:
        x, y = top.centre("entry")
        assert _contains(form.rects["password"], x, y), "the test's windows do not overlap"
        found = _wait_hit(finder, x, y)
        assert found.element is not None, found.reason
        assert (found.element.role, found.element.name, found.pid) == ("text", "Username", top.proc.pid)
    finally:
        stop_process(top.proc)
    found = _wait_hit(finder, x, y, form.proc.pid)  # uncovered again: the first form's field
    assert found.element is not None
    assert found.element.role == "password text"


def test_focused_element_after_clicking_into_the_password_field(
    xdisplay: VirtualDisplay, form: Form, finder: ElementFinder
) -> None:
    x, y = form.centre("password")
    _wait_hit(finder, x, y)
    xdisplay.xdotool("mousemove", "--sync", str(x), str(y))
    xdisplay.xdotool("click", "1")
    seen: list[Lookup] = []

    def password_focused() -> bool:
        seen.append(finder.focused_element())
        element = seen[-1].element
        return element is not None and element.role == "password text"

    assert wait_for(password_focused, 10.0, 0.1), seen[-1].reason
    element = seen[-1].element
    assert element is not None
    assert {"focused", "password", "editable"} <= set(element.states)
    assert seen[-1].pid == form.proc.pid
    # the same through the worker, as key steps will ask
    results: queue.Queue[LookupResult] = queue.Queue()
    worker = ElementLookup(results.put, finder_factory(), budget_s=1.0)
    assert worker.start()
    try:
        assert worker.request_focus(42)
        answer = results.get(timeout=10.0)
    finally:
        worker.stop()
    assert (answer.t_ns, answer.kind) == (42, "focus")
    assert answer.lookup.element is not None and answer.lookup.element.is_password
    # and back: a click into the username entry moves the focus there
    ux, uy = form.centre("entry")
    xdisplay.xdotool("mousemove", "--sync", str(ux), str(uy))
    xdisplay.xdotool("click", "1")
    assert wait_for(
        lambda: (e := finder.focused_element().element) is not None and e.role == "text", 10.0, 0.1
    )


def test_a_long_name_is_cut(xdisplay: VirtualDisplay, finder: ElementFinder) -> None:
    """A hostile app names its button with 200,000 characters: the element carries MAX_NAME."""
    _need_atspi()
    long = _start_form(xdisplay, "optin a11y long", 600, 80, OPTIN_TEST_LONG_NAME="200000")
    try:
        x, y = long.centre("button")
        found = _wait_hit(finder, x, y)
        assert found.pid == long.proc.pid
        assert found.element is not None, found.reason
        assert found.element.name == "N" * MAX_NAME
    finally:
        stop_process(long.proc)


def test_a_stalled_app_costs_only_its_own_lookup(xdisplay: VirtualDisplay, form: Form) -> None:
    """SIGSTOP a GTK app: its lookup is a counted miss within its budget (plus a generous bound),
    and the worker answers the next lookup, in another app, at once."""
    _need_atspi()
    other = _start_form(xdisplay, "optin a11y stalled", 600, 420)
    results: queue.Queue[LookupResult] = queue.Queue()
    worker = ElementLookup(results.put, finder_factory(), budget_s=0.05, max_age_s=5.0, switch=a11y_bus)
    assert worker.start()
    try:
        sx, sy = other.centre("button")
        fx, fy = form.centre("button")
        for px, py in ((sx, sy), (fx, fy)):  # both apps known to the worker, answering
            assert wait_for(partial(_worker_hit, worker, results, px, py), 10.0, 0.1)
        os.kill(other.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            assert worker.request(1, sx, sy)
            assert worker.request(2, fx, fy)
            stalled = results.get(timeout=10.0)
            answered = results.get(timeout=10.0)
            elapsed = time.monotonic() - t0
        finally:
            os.kill(other.proc.pid, signal.SIGCONT)
        assert stalled.t_ns == 1 and not stalled.hit
        assert stalled.lookup.reason == STALLED
        assert stalled.lookup.pid == other.proc.pid
        assert stalled.duration_ns < 1e9  # budget 50 ms; generous: never the library's 15 s
        assert answered.t_ns == 2 and answered.hit
        assert answered.lookup.element is not None and answered.lookup.element.role == "push button"
        assert elapsed < 3.0
        assert worker.misses[STALLED] == 1
    finally:
        worker.stop()
        stop_process(other.proc)


def _worker_hit(worker: ElementLookup, results: queue.Queue[LookupResult], x: int, y: int) -> bool:
    worker.request(0, x, y)
    return results.get(timeout=10.0).hit


def test_the_worker_switches_accessibility_on_and_restores_it(xdisplay: VirtualDisplay) -> None:
    _need_atspi()
    before = a11y_bus.is_enabled()
    assert before is not None, "the accessibility bus launcher did not answer"
    worker = ElementLookup(lambda r: None, finder_factory(), switch=a11y_bus)
    assert worker.start()
    try:
        assert a11y_bus.is_enabled() is True
    finally:
        worker.stop()
    assert a11y_bus.is_enabled() is before
    reachable, _ = a11y_bus.bus_status()
    assert reachable


def test_requests_never_block_and_drops_are_counted(xdisplay: VirtualDisplay, form: Form) -> None:
    """A full queue drops at once with a count; a stopped worker drops too."""
    _need_atspi()
    results: queue.Queue[LookupResult] = queue.Queue()
    worker = ElementLookup(results.put, finder_factory(), queue_size=2)
    assert worker.start()
    try:
        x, y = form.centre("entry")
        t0 = time.perf_counter()
        accepted = sum(worker.request(i, x, y) for i in range(500))
        assert time.perf_counter() - t0 < 1.0
        assert accepted + worker.dropped == 500
        assert worker.dropped > 0
    finally:
        worker.stop()
    assert not worker.request(1, 1, 1)
    assert worker.dropped == 500 - accepted + 1
