"""The contract every platform backend implements.

pynput and mss already hide the operating system for input and pixels; a
backend wraps them (:meth:`Backend.input_hooks`, :meth:`Backend.screen_grabber`)
and adds what they do not cover: which window has focus, where the screen
changed (:meth:`Backend.screen_changes`), whether capture can work in this
session at all, and whether a tray host exists to show the recording indicator.

Threading contract: :meth:`Backend.check_environment`,
:meth:`Backend.active_window` and :meth:`Backend.tray_host_available` may be
called from any thread; a backend serialises its own access to shared OS
connections.  The :class:`~agent.capture.Hooks` objects a backend returns are
started and stopped by one owner thread (the controller); their sinks are
called from the backend's own threads.

Capabilities are declared as class attributes (``HAS_*``), never discovered by
crashing, so callers can say up front what a session will and will not record.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from agent.capture import EventSink, Hooks, OwnUi, ScreenChanges, ScreenGrabber
from agent.capture.element_lookup import ElementLookup, LookupResult, WindowCheck
from agent.errors import EnvironmentProblem
from agent.events import (
    ButtonPress,
    ButtonRelease,
    Event,
    KeyPress,
    KeyRelease,
    PointerMove,
    Scroll,
    WindowFocus,
    now_ns,
)

logger = logging.getLogger(__name__)

_KEYBOARD_EVENTS = (KeyPress, KeyRelease)
_POINTER_EVENTS = (PointerMove, ButtonPress, ButtonRelease, Scroll)


#: Longest pasted text kept (characters); longer pastes are recorded without their text.
MAX_PASTE_CHARS = 65_536
#: How long a clipboard read may take before it is given up (the owner may hang).
CLIPBOARD_TIMEOUT_S = 0.5

_T = TypeVar("_T")


class TimedRead:
    """Runs one blocking read at a time on a daemon thread; the caller waits at most ``timeout``.

    A read still running after its timeout is abandoned (its result is dropped);
    until it ends, :meth:`call` answers None at once instead of piling up threads
    behind it.

    :param name: the threads' name.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._busy: threading.Thread | None = None

    def call(self, fn: Callable[[], _T], timeout: float) -> _T | None:
        """``fn()`` run on a new thread; None if it did not end within ``timeout`` seconds or the
        previous read still runs.

        :raises Exception: what ``fn`` raised.
        """
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # handed to the caller below
                box["error"] = exc

        with self._lock:
            if self._busy is not None and self._busy.is_alive():
                return None
            thread = threading.Thread(target=target, name=self._name, daemon=True)
            self._busy = thread
            thread.start()
        thread.join(timeout)
        if thread.is_alive():
            return None
        if "error" in box:
            raise box["error"]
        value: _T | None = box.get("value")
        return value


def scoped_sink(sink: EventSink, *, pointer: bool, keyboard: bool) -> EventSink:
    """``sink`` restricted to the consented input scopes (``sink`` itself when both are on).

    :raises ValueError: neither scope is on (then no input hooks should exist at all).
    """
    if pointer and keyboard:
        return sink
    if not pointer and not keyboard:
        msg = "input hooks need the pointer or the keyboard scope; got neither"
        raise ValueError(msg)
    dropped = _POINTER_EVENTS if not pointer else _KEYBOARD_EVENTS

    def scoped(event: Event) -> None:
        if not isinstance(event, dropped):
            sink(event)

    return scoped


@dataclass(frozen=True)
class DoctorCheck:
    """One check of :meth:`Backend.doctor_checks`: ``problem`` (what is wrong and the fix, as
    ``... Fix: ...``) or None, and what is fine; ``known`` False: it could not be told."""

    name: str
    problem: str | None
    fine: str
    known: bool = True


class Backend(ABC):
    """What the agent needs from the platform.

    Get one with :func:`agent.backends.select_backend`; never import a backend
    module directly.
    """

    #: Short name, as given to :func:`~agent.backends.select_backend` and ``OPTIN_BACKEND``.
    NAME: ClassVar[str] = ""

    #: :meth:`active_window` can tell which window has the focus.
    HAS_ACTIVE_WINDOW: ClassVar[bool] = False

    #: :meth:`focus_watcher` is driven by OS notifications (not by polling), so a
    #: focus change is seen within milliseconds.
    HAS_FOCUS_EVENTS: ClassVar[bool] = False

    #: Window titles can be read (they are captured content: consent scope "window titles").
    HAS_WINDOW_TITLES: ClassVar[bool] = False

    #: :meth:`tray_host_available` can give a definite answer.
    HAS_TRAY_DETECTION: ClassVar[bool] = False

    #: :meth:`own_ui` can tell where optin's own windows are (its clicks on them are left out).
    HAS_OWN_UI_DETECTION: ClassVar[bool] = False

    #: The backend can tell when a password field has the keyboard focus.  When
    #: False, minimisation at the source (promise P4) rests on the window deny-list alone.
    HAS_SECURE_INPUT_DETECTION: ClassVar[bool] = False

    #: Where the OS tells of a focus change late (AT-SPI), the seconds to let it settle after a
    #: click, a window change or Tab before :meth:`secure_input_active` is trusted; keys are held
    #: until then (:class:`~agent.capture.secure_input.SecureInputWatch`).  None: it tells at once.
    SECURE_INPUT_SETTLE_S: ClassVar[float | None] = None

    #: The accessibility API :meth:`element_lookup` uses ("atspi", "uia", "ax"), as bundles name
    #: it (``elements.api``); None: this backend cannot tell the UI element under an action.
    ELEMENT_API: ClassVar[str | None] = None

    @abstractmethod
    def check_environment(self) -> None:
        """Check that capture can work in this session.  Never hangs.

        :raises agent.errors.EnvironmentProblem: with one line saying what is
            wrong and the fix.
        """

    def doctor_checks(self) -> list[DoctorCheck]:
        """What ``optin doctor`` shows for this desktop: ``display``, ``tray`` (and, where the
        OS has them, ``permissions``).  The default runs :meth:`check_environment` as the display
        check and asks :meth:`tray_host_available`.  Never hangs, never prompts."""
        try:
            self.check_environment()
        except EnvironmentProblem as exc:
            display = DoctorCheck("display", str(exc), "")
        else:
            display = DoctorCheck("display", None, f"{self.NAME}: a desktop session capture can use")
        tray = self.tray_host_available()
        shown = "a tray host shows optin's icon" if tray else "cannot tell whether a tray host is running"
        return [display, DoctorCheck("tray", None, shown, known=bool(tray))]

    @property
    def name(self) -> str:
        """Same as :attr:`NAME`."""
        return self.NAME

    def input_hooks(self, sink: EventSink, *, pointer: bool = True, keyboard: bool = True) -> Hooks:
        """Keyboard and pointer hooks that deliver events to ``sink`` once started.

        The default is pynput's listeners (which cover X11, Windows and macOS).

        :param pointer: deliver pointer moves, clicks and scrolls (consent scope "pointer").
        :param keyboard: deliver key presses and releases (consent scope "keyboard").
        :raises ValueError: both are False.
        """
        from agent.capture.input import PynputHooks  # imports pynput, which may need a display

        hooks: Hooks = PynputHooks(sink, pointer=pointer, keyboard=keyboard)
        return hooks

    def screen_grabber(self) -> ScreenGrabber:
        """A grabber for the whole virtual screen; the caller closes it.  The default is mss."""
        from agent.capture.screen import MssGrabber

        grabber: ScreenGrabber = MssGrabber()
        return grabber

    def screen_changes(self) -> ScreenChanges | None:
        """Where the screen changes, not started (the screen watcher starts and closes it), so a
        still screen costs nothing; None: the watcher polls the whole screen.  The default polls.
        """
        return None

    @abstractmethod
    def active_window(self) -> WindowFocus | None:
        """The window that has the focus now, stamped with :func:`agent.events.now_ns`.

        Returns None when no window has the focus or it vanished while being
        read.  Fields the platform does not tell are None.
        """

    @abstractmethod
    def focus_watcher(self, sink: EventSink) -> Hooks:
        """A source of :class:`~agent.events.WindowFocus` events.

        Once started it emits the current window, then one event per change of
        the focused window or of its title; identical consecutive values are
        not repeated.
        """

    @abstractmethod
    def tray_host_available(self) -> bool | None:
        """Whether a system tray exists to show the indicator; None when this cannot be told."""

    def secure_input_active(self) -> bool | None:
        """Whether keyboard input now goes to a password field or secure input mode.

        True or False when the OS tells (:attr:`HAS_SECURE_INPUT_DETECTION`), None
        when it cannot be told.  Never raises; may block briefly, so call it from a
        worker thread, never from a hook callback.
        """
        return None

    def visible_windows(self) -> list[WindowFocus]:
        """Every window on screen with its title, class and geometry (for masking denied windows).

        Called from the screen watcher's thread for each stored frame; never raises.
        The default knows none (only the focused window is masked then).
        """
        return []

    def screen_locked(self) -> bool | None:
        """Whether the screen is locked or blanked now; None when this cannot be told.

        Called about once a second from the recorder's writer thread; never raises.
        """
        return None

    def idle_seconds(self) -> float | None:
        """Seconds since the last keyboard or pointer input anywhere; None when unknown.

        Called about once a second from the recorder's writer thread; never raises.
        """
        return None

    def read_clipboard(self, source: str = "clipboard") -> str | None:
        """The text now on the clipboard (``source="clipboard"``) or in the X11 primary
        selection (``"primary"``); None when it is empty, not text, longer than
        :data:`MAX_PASTE_CHARS`, or cannot be read within :data:`CLIPBOARD_TIMEOUT_S`.

        Called from the recorder's clipboard thread right after a paste key went
        down, never from a hook callback; never raises.  The text is captured
        content: never log it.
        """
        return None

    def element_lookup(
        self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
    ) -> ElementLookup | None:
        """A worker that looks up the UI element at a point or with the keyboard focus, not
        started (:class:`~agent.capture.element_lookup.ElementLookup` over this backend's
        finder); None without :attr:`ELEMENT_API`.  The recorder starts it for a run and stops
        it after.

        :param allow: the finder asks it about the window it resolved before reading anything of
            its application (deny rules, optin's own windows)."""
        return None

    def own_ui(self, pids: Iterable[int]) -> OwnUi:
        """A tracker of the windows of processes ``pids`` (optin's own), not started.

        The default knows no windows: without :attr:`HAS_OWN_UI_DETECTION`, clicks
        on optin's tray and windows are recorded like any other.
        """
        return NoOwnUi()

    def close(self) -> None:  # noqa: B027 - optional hook with a do-nothing default
        """Release OS connections held for :meth:`active_window` and friends.  Idempotent."""


#: How long stopping a watcher thread may wait for it to end (seconds).
WATCHER_STOP_TIMEOUT = 2.0


def join_watcher(thread: threading.Thread | None) -> bool:
    """Wait (at most :data:`WATCHER_STOP_TIMEOUT`) for a stopped watcher's thread; True once it has
    ended.  Called from the thread itself (a sink that stops its watcher) it returns False at once:
    the loop ends by itself."""
    if thread is None:
        return True
    if thread is threading.current_thread():
        return False
    thread.join(WATCHER_STOP_TIMEOUT)
    if thread.is_alive():
        logger.warning("%s did not stop within %g s", thread.name, WATCHER_STOP_TIMEOUT)
        return False
    return True


class FocusEmitter:
    """What every focus watcher shares: it delivers a :class:`~agent.events.WindowFocus` unless
    it equals the last one delivered (``t_ns`` aside), turns "no window" (None) into a
    WindowFocus with every field None, and delivers nothing once :meth:`stop` has returned.

    :attr:`stopping` is the watcher's stop flag too (its loop waits on it).
    """

    def __init__(self, sink: EventSink) -> None:
        self._sink = sink
        self._lock = threading.RLock()
        self.stopping = threading.Event()
        self._last: tuple[object, ...] | None = None

    def reset(self) -> None:
        """Before a (re)start: clear the stop flag and forget the last window."""
        with self._lock:
            self.stopping.clear()
            self._last = None

    def stop(self) -> None:
        """Set the stop flag; an emit running on another thread finishes first."""
        with self._lock:
            self.stopping.set()

    def emit(self, focus: WindowFocus | None) -> None:
        if focus is None:
            focus = WindowFocus(t_ns=now_ns(), title=None, app_class=None, pid=None)
        key = (focus.title, focus.app_class, focus.pid, focus.x, focus.y, focus.width, focus.height)
        with self._lock:
            if key == self._last or self.stopping.is_set():
                return
            self._last = key
            self._sink(focus)


class NoOwnUi:
    """An :class:`~agent.capture.OwnUi` that knows no windows (backends that cannot tell)."""

    def start(self) -> None:
        """Nothing to track."""

    def stop(self) -> None:
        """Nothing to stop."""

    def is_alive(self) -> bool:
        return False

    def rescan(self) -> None:
        """Nothing to look at."""

    def add_pid(self, pid: int) -> None:
        """Nothing to track."""

    def covers(self, x: int, y: int) -> bool:
        return False

    @property
    def has_focus(self) -> bool:
        return False

    def window_rects(self) -> tuple[tuple[int, int, int, int], ...]:
        return ()


__all__ = ["WATCHER_STOP_TIMEOUT", "Backend", "FocusEmitter", "NoOwnUi", "join_watcher", "scoped_sink"]
