"""A frame's bytes, loaded only when they are needed, so an export holds one frame at a time.

An export that streams (agent/export/bundle.py) reads a session with its frames *unloaded*
(:func:`agent.store.reader.read_session` with ``lazy_frames``): each :class:`~agent.events.Frame`
keeps its time, geometry, format and reason, and its ``data`` is a small object that knows
where the bytes are (:class:`LazyData`) instead of the bytes: a keyframe's record in the
store, or, for what the export made once (a frame rebuilt from patches, a frame the OCR
redaction masked), the export's spool (:class:`agent.store.format.Spool`: encrypted on disk
under a key only the export holds, in a file with no name).

Every such object knows the SHA-256 and size of its bytes before they are loaded again (the
reader hashed them on the way, the masker encoded them once), which is what the bundle's
manifest lists before any member is written; every load checks them, so what is written is
what the manifest states, or export fails (never a bundle that lies).

Code that needs the bytes calls :func:`frame_data` (or :func:`loaded` for a whole
:class:`~agent.events.Frame`); a frame whose ``data`` is already ``bytes`` is returned as it
is, so eagerly read sessions (the review window, tests) go through the same code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, overload, runtime_checkable

from agent.errors import ExportError
from agent.events import Frame


@runtime_checkable
class LazyData(Protocol):
    """What stands in a frame's ``data`` until it is loaded."""

    @property
    def sha256(self) -> str:
        """The hex SHA-256 of the bytes :meth:`load` returns."""
        ...

    @property
    def size(self) -> int:
        """Their length."""
        ...

    def load(self) -> bytes:
        """The bytes (checked against :attr:`sha256`; raises when they are not those)."""
        ...


def frame_data(frame: Any) -> bytes:
    """The bytes of ``frame`` (a :class:`~agent.events.Frame`), loaded if they are not in memory."""
    data = frame.data
    if isinstance(data, bytes):
        return data
    load = getattr(data, "load", None)  # a LazyData (duck-typed: a Protocol isinstance is slow)
    if load is None:
        msg = f"a frame's data is a {type(data).__name__}, not bytes"
        raise TypeError(msg)
    blob = load()
    if not isinstance(blob, bytes):
        msg = f"a frame's data loaded as a {type(blob).__name__}, not bytes"
        raise TypeError(msg)
    return checked(blob, data.sha256, data.size, "a frame")


def frame_pixels(frame: Any) -> Any:
    """``frame``'s image (Pillow): a frame rebuilt from patches gives its pixels as rebuilt
    (:meth:`agent.store.reader.RebuiltFrame.pixels`: never encoded only to be decoded again),
    any other is decoded from its bytes.  A :class:`LoadingView` frame stands for its source.

    :raises OSError, ValueError: the bytes are not an image (Pillow's errors, as for ``Image.open``).
    """
    source = frame.source if isinstance(frame, _Pending) else frame
    data = source.data  # read once: a frame's data may be loaded on each read
    rebuilt = getattr(data, "pixels", None)
    if rebuilt is not None:
        return rebuilt()
    from PIL import Image

    image = Image.open(io.BytesIO(data if isinstance(data, bytes) else frame_data(source)))
    image.load()
    return image


def encode_rebuilt(events: Iterable[Any]) -> None:
    """Start encoding every frame rebuilt from patches that is still to be encoded (the frames a
    redaction masked have their own bytes), in order, on the background threads: what the tar's
    plan asks for next is then being made beside it."""
    for event in events:
        if isinstance(event, Frame) and not isinstance(event.data, bytes):
            encode = getattr(event.data, "encode", None)
            if encode is not None:
                encode()


def digest(frame: Any) -> tuple[str, int]:
    """The hex SHA-256 and size of ``frame``'s bytes, without loading them when they are known."""
    data = frame.data
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest(), len(data)
    sha256, size = getattr(data, "sha256", None), getattr(data, "size", None)
    if not isinstance(sha256, str) or not isinstance(size, int):
        msg = f"a frame's data is a {type(data).__name__}, not bytes"
        raise TypeError(msg)
    return sha256, size


def loaded(event: Any) -> Any:
    """``event`` with its bytes in memory when it is a frame whose bytes are not (else as it is)."""
    if isinstance(event, Frame) and not isinstance(event.data, bytes):
        return dataclasses.replace(event, data=frame_data(event))
    return event


def is_lazy(event: Any) -> bool:
    """Whether ``event`` is a frame whose bytes are not in memory."""
    return isinstance(event, Frame) and not isinstance(event.data, bytes)


def checked(data: bytes, sha256: str, size: int, what: str) -> bytes:
    """``data`` when it is the ``size`` bytes of hash ``sha256``; else an :class:`ExportError`."""
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        msg = (
            f"{what} changed while the session was being exported; nothing was written. Fix: export "
            "again (if it keeps failing, `optin verify` the session)"
        )
        raise ExportError(msg)
    return data


class _Pending(Frame):
    """A frame whose ``data`` loads its bytes each time it is read (and keeps none).

    What :class:`LoadingView` hands to code that reads ``frame.data`` itself (OCR, the terminal
    rule): such code may keep the frames it was given, in a list or in flight, and still hold
    only the bytes of the frame it is decoding.  Read-only: :func:`dataclasses.replace` and
    :func:`agent.events.to_dict` take the frame it stands for (:attr:`source`), not this.
    """

    __slots__ = ("source",)
    source: Frame

    def __init__(self, source: Frame) -> None:
        for name in ("t_ns", "left", "top", "width", "height", "format", "reason"):
            object.__setattr__(self, name, getattr(source, name))
        object.__setattr__(self, "source", source)

    @property  # the field, read-only, loaded on each read
    def data(self) -> bytes:
        return frame_data(self.source)


class LoadingView(Sequence[Any]):
    """``events`` as a sequence whose frames load their bytes when ``data`` is read, every time.

    For code that reads ``frame.data`` itself (OCR's :func:`agent.redact.screen.read_frames`,
    the terminal rule): whatever it keeps of the frames, only the bytes of the frame being
    decoded are in memory.  Frames whose bytes are in memory, and other events, pass as they are.
    """

    def __init__(self, events: Sequence[Any]) -> None:
        self._events = events

    def __len__(self) -> int:
        return len(self._events)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [_pending(e) for e in self._events[index]]
        return _pending(self._events[index])

    def __iter__(self) -> Iterator[Any]:
        return (_pending(e) for e in self._events)


def _pending(event: Any) -> Any:
    return _Pending(event) if is_lazy(event) else event


__all__ = [
    "LazyData",
    "LoadingView",
    "checked",
    "digest",
    "encode_rebuilt",
    "frame_data",
    "frame_pixels",
    "is_lazy",
    "loaded",
]
