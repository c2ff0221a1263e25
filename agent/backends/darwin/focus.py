"""The macOS focus watcher: it polls the window list (``HAS_FOCUS_EVENTS = False``); see
:mod:`agent.backends.darwin`."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agent.backends.base import FocusEmitter, join_watcher
from agent.backends.darwin.constants import FOCUS_POLL_INTERVAL
from agent.capture import EventSink
from agent.events import WindowFocus

logger = logging.getLogger(__name__)


class PollingFocusWatcher:
    """Emits :class:`WindowFocus` when what ``read()`` answers changes, looking every ``interval`` seconds.

    Emits the current window on :meth:`start` (on the caller's thread, before
    it returns), then from the ``optin-focus`` thread.  Identical consecutive
    values are not repeated; "no window" is a WindowFocus with every field None.

    :param read: the focused window now (None: no window has the focus).
    """

    def __init__(
        self,
        read: Callable[[], WindowFocus | None],
        sink: EventSink,
        interval: float = FOCUS_POLL_INTERVAL,
    ) -> None:
        self._read = read
        self._interval = interval
        self._emitter = FocusEmitter(sink)
        self._stopping = self._emitter.stopping
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        """Emit the current window and start polling.

        :raises Exception: whatever the first ``read()`` raised.
        """
        if self.is_alive():
            return
        self._emitter.reset()
        self._failing = False
        self._refresh()
        thread = threading.Thread(target=self._run, name="optin-focus", daemon=True)
        self._thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop polling; returns promptly, after which no event is delivered."""
        self._emitter.stop()
        if join_watcher(self._thread):
            self._thread = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval):
            try:
                self._refresh()
            except Exception as exc:  # logged by type only: a message could carry captured content
                if not self._failing:
                    logger.warning("reading the focused window failed (%s); still trying", type(exc).__name__)
                self._failing = True
            else:
                self._failing = False

    def _refresh(self) -> None:
        self._emitter.emit(self._read())


__all__ = ["PollingFocusWatcher"]
