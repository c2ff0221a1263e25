"""Password fields on Windows: UI Automation through comtypes, on one thread that owns a COM apartment.

(The UI element under an action is looked up by :mod:`~agent.backends.win32.uia_elements`, on
the element lookup's own worker thread: :meth:`Win32UiaBackend.element_lookup`.)

:class:`Win32UiaBackend` is :class:`~agent.backends.win32.Win32Backend` that also
answers :meth:`~Win32UiaBackend.secure_input_active`: UI Automation
``IUIAutomation::GetFocusedElement`` then ``CurrentIsPassword``.  COM objects
belong to the thread that made them, and a cross-process UI Automation call can
hang with the application it asks, so every call runs on one daemon thread
(:class:`ApartmentWorker`) and the caller waits at most
:data:`SECURE_INPUT_TIMEOUT` seconds.

:func:`agent.backends.win32.make_backend` returns this backend only when comtypes
is installed.  comtypes is imported on the worker thread, never when this module
is imported, so the module imports (and its pure parts are tested) on any OS.
Like :mod:`agent.backends.win32`, written against the documented API and **not
run on Windows by this project's tests or CI** (docs/limitations.md).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from agent.backends.win32.api import Api
from agent.backends.win32.backend import Win32Backend
from agent.backends.win32.uia_com import com_initialize, create_automation
from agent.capture.element_lookup import ElementLookup, LookupResult, WindowCheck

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds :meth:`Win32UiaBackend.secure_input_active` waits for UI Automation before saying "cannot tell".
SECURE_INPUT_TIMEOUT = 0.25


# --- pure logic (tested on every OS) ----------------------------------------------------------


def password_state(value: object) -> bool | None:
    """UI Automation's ``CurrentIsPassword`` (a BOOL, or None when unavailable) as True/False/None."""
    if isinstance(value, (bool, int)):  # comtypes returns a BOOL as int
        return bool(value)
    return None


# --- one thread that owns a COM apartment ---------------------------------------------------


class ApartmentWorker(Generic[_T]):
    """Runs calls on one daemon thread that owns a context (a COM apartment and its objects).

    COM objects belong to the thread that made them, and a cross-process UI
    Automation call can be slow when the target application hangs; so callers
    on any thread hand their call to this thread and wait at most ``timeout``.

    :param setup: run once on the worker thread; its result is passed to every
        call.  If it raises, every :meth:`call` raises that error.
    """

    def __init__(self, setup: Callable[[], _T], name: str = "optin-uia") -> None:
        self._setup = setup
        self._name = name
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[Callable[[_T], Any], dict[str, Any], threading.Event] | None]
        self._requests = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def start(self) -> None:
        """Start the thread (and its ``setup``) if it is not running; returns at once."""
        with self._lock:
            if self._closed:
                msg = "ApartmentWorker.start() called after close()"
                raise RuntimeError(msg)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()

    def call(self, fn: Callable[[_T], Any], timeout: float) -> Any:
        """Run ``fn(context)`` on the worker and return its result.

        :raises TimeoutError: no answer within ``timeout`` seconds (the call may
            still finish later; its result is dropped).
        :raises RuntimeError: the worker is closed.
        :raises Exception: whatever ``setup`` or ``fn`` raised.
        """
        self.start()
        box: dict[str, Any] = {}
        done = threading.Event()
        self._requests.put((fn, box, done))
        if not done.wait(timeout):
            msg = f"no answer within {timeout:g} s"
            raise TimeoutError(msg)
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def close(self) -> None:
        """Stop the thread after the call it is running; idempotent, never waits long."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._requests.put(None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=0.5)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        setup_error: BaseException | None = None
        context: Any = None
        try:
            context = self._setup()
        except Exception as exc:  # handed to every caller below
            setup_error = exc
        while True:
            request = self._requests.get()
            if request is None:
                return
            fn, box, done = request
            try:
                if setup_error is not None:
                    box["error"] = setup_error
                else:
                    box["value"] = fn(context)
            except Exception as exc:  # handed to the caller
                box["error"] = exc
            finally:
                done.set()


def _uia_setup() -> Any:
    """On the worker thread: join a COM apartment and create the UI Automation client."""
    com_initialize()
    return create_automation()[1]


def _focused_is_password(automation: Any) -> bool | None:
    """On the worker thread: whether the element with the keyboard focus is a password field."""
    element = automation.GetFocusedElement()
    if element is None:
        return None
    return password_state(element.CurrentIsPassword)


# --- the backend ----------------------------------------------------------------------------


class Win32UiaBackend(Win32Backend):
    """:class:`Win32Backend` that also detects password fields, and looks up the UI element under
    an action, through UI Automation (comtypes)."""

    HAS_SECURE_INPUT_DETECTION = True
    ELEMENT_API = "uia"
    secure_input_note = None

    def __init__(self, api: Api | None = None) -> None:
        super().__init__(api)
        self._uia: ApartmentWorker[Any] | None = None

    def check_environment(self) -> None:
        super().check_environment()
        self._worker()  # warm up: the first UI Automation setup can take a moment

    def secure_input_active(self) -> bool | None:
        """Whether the element with the keyboard focus is a password field (``CurrentIsPassword``).

        Never raises.  None when UI Automation cannot tell within
        :data:`SECURE_INPUT_TIMEOUT` seconds: it is still starting, the focused
        application does not answer, or it runs elevated and this process does not.
        Blocks up to that timeout: call it from a worker thread, not an input hook.
        """
        try:
            worker = self._worker()
            answer: bool | None = worker.call(_focused_is_password, SECURE_INPUT_TIMEOUT)
        except TimeoutError:
            return None
        except Exception as exc:  # COMError and friends: logged by type only
            logger.debug("UI Automation could not tell (%s)", type(exc).__name__)
            return None
        return answer

    def element_lookup(
        self, on_result: Callable[[LookupResult], None], allow: WindowCheck | None = None
    ) -> ElementLookup | None:
        """A worker over :class:`~agent.backends.win32.uia_elements.UiaElementFinder` (made on the
        worker's own thread, in its own COM apartment); Windows has no accessibility switch."""
        from agent.backends.win32.uia_elements import finder_factory

        return ElementLookup(on_result, finder_factory(self._api), allow=allow)

    def _worker(self) -> ApartmentWorker[Any]:
        with self._lock:
            if self._uia is None:
                self._uia = ApartmentWorker(_uia_setup)
            self._uia.start()
            return self._uia

    def close(self) -> None:
        with self._lock:
            uia, self._uia = self._uia, None
        if uia is not None:
            uia.close()
        super().close()


__all__ = [
    "SECURE_INPUT_TIMEOUT",
    "ApartmentWorker",
    "Win32UiaBackend",
    "password_state",
]
