"""The Windows focus watcher: WinEvent hooks and a message loop on the ``optin-focus`` thread."""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

from agent.backends.base import WATCHER_STOP_TIMEOUT, FocusEmitter, join_watcher
from agent.backends.win32.api import Api
from agent.backends.win32.constants import (
    HOOKED_EVENTS,
    PM_NOREMOVE,
    WATCHER_START_TIMEOUT,
    WINEVENT_OUTOFCONTEXT,
    WM_QUIT,
    WM_USER,
)
from agent.backends.win32.interpret import is_focus_event
from agent.capture import EventSink
from agent.errors import EnvironmentProblem

logger = logging.getLogger(__name__)


class WinEventWatcher:
    """Emits :class:`WindowFocus` when the foreground window, its title or its frame changes.

    Owns the ``optin-focus`` thread: it installs the WinEvent hooks, emits the
    current window, and runs the message loop that delivers the hooks'
    callbacks, until :meth:`stop` posts ``WM_QUIT`` to it.
    """

    def __init__(self, api: Api, sink: EventSink) -> None:
        self._api = api
        self._emitter = FocusEmitter(sink)
        self._stopping = self._emitter.stopping
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_id: int | None = None
        self._error: str | None = None
        self._proc: Any = None  # the ctypes callback: must live as long as the hooks

    def start(self) -> None:
        """Install the hooks on a new thread and emit the current window before returning.

        :raises EnvironmentProblem: the hooks could not be installed.
        """
        if self.is_alive():
            return
        self._emitter.reset()
        self._ready.clear()
        self._error, self._thread_id = None, None
        thread = threading.Thread(target=self._run, name="optin-focus", daemon=True)
        self._thread = thread
        thread.start()
        if not self._ready.wait(WATCHER_START_TIMEOUT):
            self.stop()
            msg = (
                f"the Windows focus watcher did not start within {WATCHER_START_TIMEOUT:g} s. "
                "Fix: restart optin; if it happens again, run `optin doctor` and report it."
            )
            raise EnvironmentProblem(msg)
        if self._error is not None:
            thread.join(WATCHER_STOP_TIMEOUT)
            self._thread = None
            raise EnvironmentProblem(self._error)

    def stop(self) -> None:
        """Stop watching; returns promptly, after which no event is delivered."""
        self._emitter.stop()
        thread, thread_id = self._thread, self._thread_id
        if thread_id is not None and not self._api.user32.PostThreadMessageW(thread_id, WM_QUIT, 0, 0):
            logger.debug("could not post WM_QUIT to the focus watcher (already gone?)")
        if thread is not None and join_watcher(thread):
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # on the watcher thread ------------------------------------------------------------------

    def _run(self) -> None:
        api = self._api
        hooks: list[int] = []
        try:
            msg = api.MSG()
            # Any user32 message call creates this thread's queue, so PostThreadMessageW can reach it.
            api.user32.PeekMessageW(ctypes.byref(msg), None, WM_USER, WM_USER, PM_NOREMOVE)
            self._thread_id = int(api.kernel32.GetCurrentThreadId())
            self._proc = api.WINEVENTPROC(self._on_event)
            for low, high in HOOKED_EVENTS:
                hook = api.user32.SetWinEventHook(low, high, None, self._proc, 0, 0, WINEVENT_OUTOFCONTEXT)
                if not hook:
                    self._error = (
                        f"SetWinEventHook failed for event 0x{low:04X}; optin cannot follow the focused "
                        "window. Fix: run optin in the signed-in user's desktop session."
                    )
                    return
                hooks.append(hook)
            self._refresh()  # the initial event, delivered before start() returns
            self._ready.set()
            while not self._stopping.is_set():
                got = api.user32.GetMessageW(ctypes.byref(msg), None, 0, 0)
                if got in (0, -1):  # WM_QUIT, or an error
                    break
                api.user32.TranslateMessage(ctypes.byref(msg))
                api.user32.DispatchMessageW(ctypes.byref(msg))
        except Exception as exc:  # logged by type only: a message could carry captured content
            logger.error("focus watcher stopped by an unexpected %s", type(exc).__name__)
            if self._error is None and not self._ready.is_set():
                self._error = f"the Windows focus watcher failed to start ({type(exc).__name__})."
        finally:
            for hook in hooks:
                api.user32.UnhookWinEvent(hook)
            self._ready.set()

    def _on_event(  # noqa: PLR0917 - the documented WinEventProc signature
        self, hook: Any, event: int, hwnd: Any, id_object: int, id_child: int, thread: int, time_ms: int
    ) -> None:
        try:
            if self._stopping.is_set():
                return
            foreground = self._api.user32.GetForegroundWindow()
            if is_focus_event(event, hwnd, id_object, id_child, foreground):
                self._refresh()
        except Exception as exc:  # never let an exception escape into ctypes (it prints it)
            logger.error("focus watcher callback failed with %s", type(exc).__name__)

    def _refresh(self) -> None:
        _, focus = self._api.read_focus()
        self._emitter.emit(focus)


__all__ = ["WinEventWatcher"]
