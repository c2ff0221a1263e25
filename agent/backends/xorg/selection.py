"""The clipboard, read as ICCCM says (:func:`read_selection`).

``ConvertSelection`` to an unmapped window of a connection made for that one
read, then wait for the owner's ``SelectionNotify`` with ``select()`` and a
deadline (an owner may never answer; python-xlib has no timeout of its own);
large texts come as an INCR transfer.

Clipboard text is captured content: never logged, never in an exception message.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

import Xlib.display
from Xlib import X, Xatom

from agent.backends.base import CLIPBOARD_TIMEOUT_S, MAX_PASTE_CHARS
from agent.backends.xorg.connection import close_quietly, ignore_x_error, open_display

#: X selection name for each ``source`` of :meth:`XorgBackend.read_clipboard`.
SELECTIONS = {"clipboard": "CLIPBOARD", "primary": "PRIMARY"}

#: The property of the helper window that the selection owner writes the text into.
SELECTION_PROPERTY = "OPTIN_SELECTION"

#: Longest UTF-8 encoding of :data:`MAX_PASTE_CHARS` characters, plus a trailing NUL.
MAX_PASTE_BYTES = 4 * MAX_PASTE_CHARS + 1


def decode_selection(raw: bytes, utf8: bool) -> str | None:
    """The text of a converted selection (``UTF8_STRING`` if ``utf8``, else ICCCM ``STRING``, Latin-1).

    None when it is empty or longer than :data:`MAX_PASTE_CHARS` characters.  One
    trailing NUL (some owners count the C terminator) is dropped; invalid UTF-8
    becomes U+FFFD.
    """
    text = raw.decode("utf-8", "replace") if utf8 else raw.decode("latin-1")
    if text.endswith("\0"):
        text = text[:-1]
    if not text or len(text) > MAX_PASTE_CHARS:
        return None
    return text


def _wait_event(display: Xlib.display.Display, wanted: Callable[[Any], bool], deadline: float) -> Any | None:
    """The first event ``wanted`` accepts (others are dropped); None if none came before ``deadline``
    (``time.monotonic()``)."""
    fd = display.fileno()
    while True:
        while display.pending_events():
            event = display.next_event()
            if wanted(event):
                return event
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None


def _window_id(value: Any) -> int:
    return int(getattr(value, "id", value))


class _SelectionReader:
    """One conversion of a selection into property :attr:`prop` of an unmapped :attr:`window`.

    :param types: the acceptable property types, each mapped to "is UTF-8".
    """

    def __init__(
        self, display: Xlib.display.Display, window: Any, prop: int, types: dict[int, bool], incr: int
    ) -> None:
        self.display, self.window, self.prop = display, window, prop
        self.types, self.incr = types, incr

    def take(self, deadline: float) -> str | None:
        """Read and delete the converted text once the owner said it is there.

        :returns: None for another type or format than asked for, more than
            :data:`MAX_PASTE_BYTES`, an INCR transfer not done by ``deadline``, or
            text :func:`decode_selection` refuses.
        """
        window, prop = self.window, self.prop
        head = window.get_property(prop, X.AnyPropertyType, 0, 0)  # type and size, no data
        if head is None:
            return None
        if int(head.property_type) == self.incr:
            return self._take_incr(deadline)
        utf8 = self.types.get(int(head.property_type))
        size = int(head.bytes_after)
        if utf8 is None or head.format != 8 or size > MAX_PASTE_BYTES:
            window.delete_property(prop)
            return None
        full = window.get_property(prop, X.AnyPropertyType, 0, (size + 3) // 4, delete=True)
        if full is None or full.format != 8:
            return None
        return decode_selection(bytes(full.value), utf8)

    def _take_incr(self, deadline: float) -> str | None:
        """ICCCM INCR: the owner writes the text in chunks, each after we deleted the previous one,
        and ends with an empty chunk.  Given up (None) once more than :data:`MAX_PASTE_BYTES` are
        announced or sent, or at ``deadline``: our window goes with the connection, and the owner
        stops when it finds it gone.  (Tk sends every text over 4000 bytes this way.)"""
        window, prop = self.window, self.prop
        announced = window.get_property(prop, self.incr, 0, 1)
        ok = announced is not None and announced.format == 32 and len(announced.value) > 0
        size = int(announced.value[0]) if ok else 0
        if size > MAX_PASTE_BYTES:  # (a lower bound; the chunks are counted too)
            return None  # not started: that takes deleting the property
        window.delete_property(prop)  # starts the transfer
        window_id = _window_id(window)

        def new_chunk(event: Any) -> bool:
            return bool(
                event.type == X.PropertyNotify
                and _window_id(event.window) == window_id
                and int(event.atom) == prop
                and event.state == X.PropertyNewValue
            )

        chunks: list[bytes] = []
        total = 0
        utf8: bool | None = None
        while True:
            self.display.flush()
            if _wait_event(self.display, new_chunk, deadline) is None:
                return None
            head = window.get_property(prop, X.AnyPropertyType, 0, 0)
            if head is None:
                continue  # a notification for a chunk we already took
            size = int(head.bytes_after)
            kind = self.types.get(int(head.property_type))
            if kind is None or head.format != 8 or total + size > MAX_PASTE_BYTES:
                return None
            if size == 0:  # the end
                window.delete_property(prop)
                self.display.flush()
                break
            chunk = window.get_property(prop, X.AnyPropertyType, 0, (size + 3) // 4, delete=True)
            if chunk is None or chunk.format != 8:
                return None
            chunks.append(bytes(chunk.value))
            total += size
            utf8 = kind if utf8 is None else utf8
        return None if utf8 is None else decode_selection(b"".join(chunks), utf8)


def read_selection(
    display_name: str, selection: str = "CLIPBOARD", timeout: float = CLIPBOARD_TIMEOUT_S
) -> str | None:
    """The text in X selection ``selection`` (``CLIPBOARD`` or ``PRIMARY``) on ``display_name``.

    Opens a connection for this one read (python-xlib connections are not shared
    across threads, and a late answer to an abandoned request then cannot be
    mistaken for the next one), creates an unmapped window, asks the owner to
    convert the selection to ``UTF8_STRING`` (``STRING`` if it refuses) into a
    property of that window, and waits for its ``SelectionNotify``.  Closing the
    connection destroys the window.

    Large texts come as an ICCCM INCR transfer (Tk sends anything over 4000
    bytes that way; measured); it is followed up to :data:`MAX_PASTE_BYTES` and
    within the same deadline.

    :returns: the text; None when there is no owner, it refuses or sends no
        text, the text is empty or over :data:`MAX_PASTE_CHARS`, or the whole
        read does not end within ``timeout`` seconds.
    :raises Exception: X errors and connection failures (the backend turns them into None).
    """
    deadline = time.monotonic() + timeout
    display = open_display(display_name, timeout)
    try:
        display.set_error_handler(ignore_x_error)
        sel = Xatom.PRIMARY if selection == "PRIMARY" else display.intern_atom(selection)
        if display.get_selection_owner(sel) == X.NONE:
            return None
        utf8_string = display.intern_atom("UTF8_STRING")
        prop = display.intern_atom(SELECTION_PROPERTY)
        root = display.screen().root
        # PropertyChangeMask from the start: an INCR transfer is driven by property notifications
        window = root.create_window(0, 0, 1, 1, 0, X.CopyFromParent, event_mask=X.PropertyChangeMask)
        reader = _SelectionReader(
            display, window, prop, {utf8_string: True, Xatom.STRING: False}, display.intern_atom("INCR")
        )
        window_id = _window_id(window)

        def answered(event: Any) -> bool:
            return bool(
                event.type == X.SelectionNotify
                and _window_id(event.requestor) == window_id
                and int(event.selection) == sel
            )

        for target in (utf8_string, Xatom.STRING):
            window.convert_selection(sel, target, prop, X.CurrentTime)
            display.flush()
            event = _wait_event(display, answered, deadline)
            if event is None:
                return None  # the owner did not answer in time
            if int(event.property) != X.NONE:
                return reader.take(deadline)
        return None  # refused both targets: not text
    finally:
        close_quietly(display)


__all__ = ["MAX_PASTE_BYTES", "SELECTIONS", "SELECTION_PROPERTY", "decode_selection", "read_selection"]
