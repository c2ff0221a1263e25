"""A deterministic backend with no display, shipped in the package (like httpx's MockTransport).

Tests and dry runs use it through the normal chooser::

    backend = select_backend("fake")          # or OPTIN_BACKEND=fake
    hooks = backend.input_hooks(sink)         # what the controller does
    hooks.start()
    backend.last_input.emit(PointerMove(now_ns(), 10, 20))   # what a test does
    backend.focus_window("Inbox", "Thunderbird")             # focus changes, watchers emit
    backend.set_clipboard("pasted text")                     # what read_clipboard answers

Every :func:`~agent.backends.select_backend` call returns a *new*
:class:`FakeBackend`; a test keeps the instance it passes to the code under
test and reaches the fakes that code created through :attr:`FakeBackend.last_input`,
:attr:`FakeBackend.last_focus` and :attr:`FakeBackend.last_screen` (or the
full lists :attr:`FakeBackend.inputs`, :attr:`FakeBackend.focus_watchers`,
:attr:`FakeBackend.screens`).

Sinks are called on the caller's thread, synchronously, so tests need no sleeps.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable

from agent.backends.base import MAX_PASTE_CHARS, Backend, scoped_sink
from agent.capture import EventSink
from agent.capture.screen import Shot
from agent.errors import EnvironmentProblem
from agent.events import Event, WindowFocus, now_ns

#: The window that has focus in a new :class:`FakeBackend` (``t_ns`` is set when read).
DEFAULT_WINDOW = WindowFocus(
    t_ns=0, title="Fake window", app_class="FakeApp", pid=4242, x=0, y=0, width=64, height=48
)

#: Size of the synthetic screen.
DEFAULT_SCREEN_SIZE = (64, 48)


class FakeInput:
    """Input hooks driven by the test: :meth:`emit` delivers only while started.

    :param script: events delivered, in order, on the first :meth:`start`.
    """

    def __init__(self, sink: EventSink, script: Iterable[Event] = ()) -> None:
        self._sink = sink
        self._script = list(script)
        self._lock = threading.RLock()
        self._started = False
        self._replayed = False
        #: Events delivered to the sink so far.
        self.delivered = 0

    def start(self) -> None:
        with self._lock:
            self._started = True
            if not self._replayed:
                self._replayed = True
                for event in self._script:
                    self._deliver(event)

    def stop(self) -> None:
        with self._lock:
            self._started = False

    def is_alive(self) -> bool:
        return self._started

    def emit(self, event: Event) -> bool:
        """Deliver ``event`` as if the OS reported it; False (and dropped) when not started."""
        with self._lock:
            if not self._started:
                return False
            self._deliver(event)
            return True

    def _deliver(self, event: Event) -> None:
        self._sink(event)
        self.delivered += 1


class FakeFocus(FakeInput):
    """A focus watcher: emits the backend's window on start, then each change.

    Like the real watcher it never repeats an identical value; :meth:`emit`
    bypasses that and delivers whatever it is given.
    """

    def __init__(self, backend: FakeBackend, sink: EventSink) -> None:
        super().__init__(sink)
        self._backend = backend
        self._last: WindowFocus | None = None

    def start(self) -> None:
        with self._lock:
            self._started = True
            self._last = None
            self.notify(self._backend.active_window())

    def notify(self, focus: WindowFocus | None) -> None:
        """Deliver ``focus`` (None: nothing has focus) if started and different from the last one."""
        with self._lock:
            if not self._started:
                return
            if focus is None:
                focus = WindowFocus(t_ns=now_ns(), title=None, app_class=None, pid=None)
            if self._last is not None and dataclasses.replace(self._last, t_ns=focus.t_ns) == focus:
                return
            self._last = focus
            self._deliver(focus)


class FakeScreen:
    """A synthetic screen of one colour, which tests change with :meth:`paint`; shots are raw BGRA."""

    def __init__(self, size: tuple[int, int] = DEFAULT_SCREEN_SIZE) -> None:
        self.size = size
        #: Shots taken so far.
        self.grabs = 0
        self.closed = False
        self._lock = threading.Lock()
        self._pixels = bytes(size[0] * size[1] * 4)
        #: When set, the next :meth:`shoot` calls raise it (a broken screen).
        self.failure: Exception | None = None

    def paint(self, colour: tuple[int, int, int], box: tuple[int, int, int, int] | None = None) -> None:
        """Fill the screen, or only ``box`` (left, top, right, bottom), with ``colour`` (RGB) from
        the next shot on."""
        red, green, blue = colour
        pixel = bytes((blue, green, red, 255))
        width, height = self.size
        with self._lock:
            if box is None:
                self._pixels = pixel * (width * height)
                return
            left, top, right, bottom = box
            pixels = bytearray(self._pixels)
            for y in range(top, bottom):
                pixels[(y * width + left) * 4 : (y * width + right) * 4] = pixel * (right - left)
            self._pixels = bytes(pixels)

    def shoot(self, t_ns: int) -> Shot:
        with self._lock:
            if self.closed:
                msg = "FakeScreen.shoot() called after close()"
                raise RuntimeError(msg)
            if self.failure is not None:
                raise self.failure
            self.grabs += 1
            pixels = self._pixels
        width, height = self.size
        return Shot(t_ns, 0, 0, width, height, pixels, ((0, 0, width, height),))

    def close(self) -> None:
        with self._lock:
            self.closed = True


class FakeOwnUi:
    """optin's own windows on the fake screen: tests set :attr:`rects` and :attr:`focus`."""

    def __init__(self) -> None:
        #: ``(left, top, right, bottom)`` rectangles of own windows.
        self.rects: list[tuple[int, int, int, int]] = []
        #: Whether keys go to an own window.
        self.focus = False
        self.rescans = 0
        #: Processes added with :meth:`add_pid` (dialogs).
        self.pids: set[int] = set()
        self._alive = False

    def start(self) -> None:
        self._alive = True

    def stop(self) -> None:
        self._alive = False

    def is_alive(self) -> bool:
        return self._alive

    def rescan(self) -> None:
        self.rescans += 1

    def add_pid(self, pid: int) -> None:
        self.pids.add(pid)
        self.rescan()

    def covers(self, x: int, y: int) -> bool:
        return any(left <= x < right and top <= y < bottom for left, top, right, bottom in self.rects)

    @property
    def has_focus(self) -> bool:
        return self.focus

    def window_rects(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple(self.rects)


class FakeBackend(Backend):
    """Deterministic backend for tests and dry runs; see the module docstring.

    :param input_script: events every new :class:`FakeInput` delivers on its first start.
    :param window: the window that has focus at first (None: nothing).
    :param problem: if set, :meth:`check_environment` raises EnvironmentProblem with it.
    :param tray_host: what :meth:`tray_host_available` answers.
    """

    NAME = "fake"
    HAS_ACTIVE_WINDOW = True
    HAS_FOCUS_EVENTS = True
    HAS_WINDOW_TITLES = True
    HAS_TRAY_DETECTION = True
    HAS_SECURE_INPUT_DETECTION = True
    HAS_OWN_UI_DETECTION = True

    def __init__(
        self,
        *,
        input_script: Iterable[Event] = (),
        window: WindowFocus | None = DEFAULT_WINDOW,
        screen_size: tuple[int, int] = DEFAULT_SCREEN_SIZE,
        problem: str | None = None,
        tray_host: bool | None = True,
    ) -> None:
        self.input_script = list(input_script)
        self.screen_size = screen_size
        self.problem = problem
        self.tray_host = tray_host
        self._window = window
        self._lock = threading.RLock()
        #: Every FakeInput / FakeFocus / FakeScreen this backend created, oldest first.
        self.inputs: list[FakeInput] = []
        self.focus_watchers: list[FakeFocus] = []
        self.screens: list[FakeScreen] = []
        #: What :meth:`visible_windows` answers.
        self.windows: list[WindowFocus] = []
        #: What :meth:`screen_locked` and :meth:`idle_seconds` answer.
        self.locked: bool | None = False
        self.idle: float | None = 0.0
        #: What :meth:`secure_input_active` answers (tests set True while "a password field" has focus).
        self.secure_input: bool | None = False
        #: The own-window tracker every :meth:`own_ui` call returns (tests set its rectangles).
        self.own = FakeOwnUi()
        #: The pids each :meth:`own_ui` call was given.
        self.own_pids: list[frozenset[int]] = []
        #: The text on the clipboard and in the primary selection (see :meth:`set_clipboard`).
        self.clipboard: dict[str, str | None] = {}
        #: The ``source`` of every :meth:`read_clipboard` call, oldest first.
        self.clipboard_reads: list[str] = []

    @property
    def last_input(self) -> FakeInput | None:
        """The most recently created input hooks, for tests to :meth:`~FakeInput.emit` into."""
        return self.inputs[-1] if self.inputs else None

    @property
    def last_focus(self) -> FakeFocus | None:
        return self.focus_watchers[-1] if self.focus_watchers else None

    @property
    def last_screen(self) -> FakeScreen | None:
        return self.screens[-1] if self.screens else None

    def check_environment(self) -> None:
        if self.problem is not None:
            raise EnvironmentProblem(self.problem)

    def input_hooks(self, sink: EventSink, *, pointer: bool = True, keyboard: bool = True) -> FakeInput:
        hooks = FakeInput(scoped_sink(sink, pointer=pointer, keyboard=keyboard), self.input_script)
        with self._lock:
            self.inputs.append(hooks)
        return hooks

    def screen_grabber(self) -> FakeScreen:
        screen = FakeScreen(self.screen_size)
        with self._lock:
            self.screens.append(screen)
        return screen

    def secure_input_active(self) -> bool | None:
        return self.secure_input

    def visible_windows(self) -> list[WindowFocus]:
        return list(self.windows)

    def screen_locked(self) -> bool | None:
        return self.locked

    def idle_seconds(self) -> float | None:
        return self.idle

    def set_clipboard(self, text: str | None, source: str = "clipboard") -> None:
        """Put ``text`` on the clipboard (``source="clipboard"``) or in the primary selection
        (``"primary"``); None empties it."""
        with self._lock:
            self.clipboard[source] = text

    def read_clipboard(self, source: str = "clipboard") -> str | None:
        """What :meth:`set_clipboard` put there; None when empty or over
        :data:`~agent.backends.base.MAX_PASTE_CHARS`, as a real backend answers."""
        with self._lock:
            self.clipboard_reads.append(source)
            text = self.clipboard.get(source)
        if not text or len(text) > MAX_PASTE_CHARS:
            return None
        return text

    def own_ui(self, pids: Iterable[int]) -> FakeOwnUi:
        with self._lock:
            self.own_pids.append(frozenset(pids))
        return self.own

    def active_window(self) -> WindowFocus | None:
        with self._lock:
            window = self._window
        return None if window is None else dataclasses.replace(window, t_ns=now_ns())

    def focus_watcher(self, sink: EventSink) -> FakeFocus:
        watcher = FakeFocus(self, sink)
        with self._lock:
            self.focus_watchers.append(watcher)
        return watcher

    def tray_host_available(self) -> bool | None:
        return self.tray_host

    def focus_window(
        self,
        title: str | None,
        app_class: str | None,
        pid: int | None = None,
        *,
        geometry: tuple[int, int, int, int] | None = None,
    ) -> WindowFocus:
        """Give the focus to a window (as a user would) and notify the started watchers.

        :param geometry: ``(x, y, width, height)``; default: the whole fake screen.
        """
        x, y, width, height = geometry or (0, 0, *self.screen_size)
        focus = WindowFocus(
            t_ns=now_ns(), title=title, app_class=app_class, pid=pid, x=x, y=y, width=width, height=height
        )
        self._set_window(focus)
        return focus

    def clear_focus(self) -> None:
        """No window has the focus any more (e.g. the last one closed)."""
        self._set_window(None)

    def _set_window(self, focus: WindowFocus | None) -> None:
        with self._lock:
            self._window = focus
            watchers = list(self.focus_watchers)
        for watcher in watchers:
            watcher.notify(focus)


def make_backend() -> FakeBackend:
    """Entry point used by :func:`agent.backends.select_backend`."""
    return FakeBackend()


__all__ = [
    "DEFAULT_WINDOW",
    "FakeBackend",
    "FakeFocus",
    "FakeInput",
    "FakeOwnUi",
    "FakeScreen",
    "make_backend",
]
