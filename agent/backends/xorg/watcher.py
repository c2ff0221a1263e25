"""The skeleton both X11 watchers share: a daemon thread with its own X connection.

The thread waits in ``select()`` on the connection and on a self-pipe, so
:meth:`WatcherThread.wake` (a rescan, or :meth:`~WatcherThread.stop`) reaches it
at once; :meth:`~WatcherThread.stop` joins it and then closes the pipe.  The
focus watcher (:mod:`agent.backends.xorg.focus`) and the own-window watcher
(:mod:`agent.backends.xorg.own_ui`) fill in what to do before the thread starts
(:meth:`~WatcherThread._prepare`) and what it does (:meth:`~WatcherThread._loop`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from abc import ABC, abstractmethod
from typing import ClassVar

import Xlib.display
import Xlib.error

from agent.backends.xorg.connection import close_quietly, ignore_x_error, open_display

logger = logging.getLogger(__name__)

#: Seconds :meth:`WatcherThread.stop` waits for the thread to end.
STOP_TIMEOUT = 2.0


class WatcherThread(ABC):
    """A watcher that owns one X connection on its own thread, woken through a self-pipe.

    :param display_name: the X display.
    :param stopping: the stop flag (a new one by default); the thread's loop runs until it is set.
    """

    #: The thread's name.
    THREAD_NAME: ClassVar[str]
    #: What the watcher is called in log messages.
    WHAT: ClassVar[str]

    def __init__(self, display_name: str, stopping: threading.Event | None = None) -> None:
        self._display_name = display_name
        self._stopping = stopping if stopping is not None else threading.Event()
        self._thread: threading.Thread | None = None
        self._display: Xlib.display.Display | None = None
        self._pipe: tuple[int, int] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, :meth:`_prepare` on the caller's thread (before returning), then run :meth:`_loop`.

        :raises EnvironmentProblem: the X display cannot be reached.
        """
        if self.is_alive():
            return
        self._close_pipe()  # left over from a stop() called on the watcher thread itself
        display = open_display(self._display_name)
        self._display, self._pipe = display, os.pipe()
        self._reset()
        try:
            display.set_error_handler(ignore_x_error)
            self._prepare(display)
            self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
            self._thread.start()
        except BaseException:
            self._release()
            raise

    def stop(self) -> None:
        """Stop watching; returns promptly (at most :data:`STOP_TIMEOUT` seconds).

        Called from the watcher thread itself (a sink that stops its watcher) it
        only sets the flag: the loop ends by itself.
        """
        self._signal_stop()
        self.wake()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return  # never started, or stop() was called from the thread: the loop ends by itself
        thread.join(timeout=STOP_TIMEOUT)
        if thread.is_alive():
            logger.warning("%s thread did not stop within %g s", self.WHAT, STOP_TIMEOUT)
            return
        self._thread = None
        self._release()

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Make the thread's :meth:`_wait` return now."""
        pipe = self._pipe
        if pipe is None:
            return
        try:
            os.write(pipe[1], b"w")
        except OSError:
            logger.debug("%s wake-up pipe already closed", self.WHAT)

    # -- for subclasses ---------------------------------------------------------------------------

    def _reset(self) -> None:
        """Before a (re)start: clear the stop flag."""
        self._stopping.clear()

    def _signal_stop(self) -> None:
        """Set the stop flag."""
        self._stopping.set()

    @abstractmethod
    def _prepare(self, display: Xlib.display.Display) -> None:
        """Select events and take the first look, on the caller's thread, before the thread starts."""

    @abstractmethod
    def _loop(self, display: Xlib.display.Display) -> None:
        """The thread's work until :attr:`_stopping` is set; X errors end it (they are logged)."""

    def _finish(self) -> None:  # noqa: B027 - optional hook, a no-op unless overridden
        """On the thread, as it ends (before its connection is closed)."""

    def _wait(self, fd: int, timeout: float) -> bool:
        """Wait until the X connection ``fd`` is readable, :meth:`wake` is called, or ``timeout``
        seconds pass; True unless the time ran out.  Drains the wake-up pipe."""
        pipe = self._pipe
        fds = [fd] if pipe is None else [fd, pipe[0]]
        readable, _, _ = select.select(fds, [], [], timeout)
        if pipe is not None and pipe[0] in readable:
            os.read(pipe[0], 64)
        return bool(readable)

    # -- internals --------------------------------------------------------------------------------

    def _run(self) -> None:
        display, pipe = self._display, self._pipe
        if display is None or pipe is None:
            return
        try:
            self._loop(display)
        except Xlib.error.ConnectionClosedError:
            if not self._stopping.is_set():
                logger.error("%s lost the X connection to DISPLAY=%s", self.WHAT, self._display_name)
        except Exception as exc:  # logged by type only: a message could carry captured content
            logger.error("%s stopped by an unexpected %s", self.WHAT, type(exc).__name__)
        finally:
            self._finish()
            self._display = None
            close_quietly(display)

    def _release(self) -> None:
        display, self._display = self._display, None
        if display is not None:
            close_quietly(display)
        self._close_pipe()

    def _close_pipe(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            for fd in pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)


__all__ = ["STOP_TIMEOUT", "WatcherThread"]
