"""What the volunteer pastes: the clipboard text, read right after a paste key went down.

Pasted text never arrives as key events, so without it a typed-text reconstruction
has a hole exactly where a copied token or one-time code went in (the redaction
detectors run on pasted text as on typed text; docs/redaction.md).  The hook sink
calls :meth:`PasteWatch.request` in O(1) when it sees a paste chord
(:func:`agent.keyboard.names.paste_chord`); this module's thread asks the backend for the clipboard and
emits a :class:`~agent.events.Paste` stamped one nanosecond after the key, so it
sorts right behind it.

The recorder asks only for keys it records: not while a deny-listed window, a
password field or optin's own UI has the focus, and only with the keyboard scope.
Middle-click pastes of the X11 primary selection are not read (a middle click also
opens links and scrolls; reading the selection on every one would record text
that was never pasted): docs/limitations.md.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from agent.capture import EventSink
from agent.events import Paste

#: Paste requests waiting for the clipboard thread; more are counted as lost.
BACKLOG = 8


class PasteWatch:
    """Reads the clipboard on its own thread when asked, and emits :class:`Paste` events.

    :param read: the backend's ``read_clipboard``; returns the text or None, never raises.
    :param sink: receives the Paste events (the recorder's sink).
    """

    def __init__(self, read: Callable[[str], str | None], sink: EventSink) -> None:
        self._read = read
        self._sink = sink
        self._requests: queue.Queue[int | None] = queue.Queue(BACKLOG)
        self._thread = threading.Thread(target=self._run, name="optin-clipboard", daemon=True)
        #: Paste requests dropped because the backlog was full (their Paste has no text).
        self.lost = 0

    def request(self, t_ns: int) -> None:
        """A paste key went down at ``t_ns`` (hook thread: O(1), never blocks)."""
        try:
            self._requests.put_nowait(t_ns)
        except queue.Full:
            self.lost += 1
            self._sink(Paste(t_ns + 1, None))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Answer the requests already made, then end the thread."""
        if not self._thread.is_alive():
            return
        self._requests.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            t_ns = self._requests.get()
            if t_ns is None:
                return
            self._sink(Paste(t_ns + 1, self._read("clipboard")))


__all__ = ["BACKLOG", "PasteWatch"]
