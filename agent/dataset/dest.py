"""DEST: where ``optin dataset`` keeps a dataset, a local folder or ``s3://bucket/prefix`` (docs/dataset.md).

One interface, :class:`Dest`, two stores, each in its own module and loaded only by :func:`open_dest`
(so a local build never imports boto3):

* agent/dataset/dest_local.py ``LocalDest``: a folder held open by its descriptor; every step is
  relative to a directory descriptor and never follows a symbolic link; files written under
  ``.<name>.tmp-<16 hex>``, fsynced, then linked or renamed into place.
* agent/dataset/dest_s3.py ``S3Dest``: any S3-compatible store through boto3's standard
  configuration; conditional writes with ``If-None-Match: *`` and ``If-Match``; large objects by
  multipart upload.

What both offer: :meth:`Dest.put_new` (an immutable object, refused when the key exists),
:meth:`Dest.replace` (a mutable object, ``CURRENT`` and ``LOCK``: only if it still is what the caller
read), :meth:`Dest.writer` (a whole object streamed, SHA-256 and size computed as written, visible
only once complete), :meth:`Dest.get` (bounded by the size the caller allows), :meth:`Dest.reader`
(streamed), :meth:`Dest.head`, :meth:`Dest.list` (``dir/`` marker keys skipped), :meth:`Dest.delete`,
:meth:`Dest.abort_uploads` (what killed writers left) and :meth:`Dest.probe_conditional_writes`
(whether the store honours conditional writes at all).

Every key is checked by :func:`~agent.dataset.object_keys.check_key` before it is used: the grammar of
docs/dataset.md "Object names", so no input can choose a path. Messages name the operation, the key and
the fix; never an object's contents.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import BinaryIO, TypeVar

from agent.dataset.object_keys import KEY_GRAMMAR, MAX_DEPTH, check_key
from agent.errors import (
    DestError,
    DestUnusable,
    ObjectChanged,
    ObjectExists,
    ObjectKeyRefused,
    ObjectMissing,
    ObjectTooLarge,
)

__all__ = [
    "KEY_GRAMMAR",
    "MAX_DEPTH",
    "PROBE_FOLDER",
    "Blob",
    "Dest",
    "DestError",
    "DestUnusable",
    "ObjectChanged",
    "ObjectExists",
    "ObjectInfo",
    "ObjectKeyRefused",
    "ObjectMissing",
    "ObjectTooLarge",
    "ObjectWriter",
    "check_key",
    "object_changed",
    "object_missing",
    "object_too_large",
]

# --- errors ----------------------------------------------------------------------------------------


def object_changed(shown: str, expected: str | None, current: str | None) -> ObjectChanged:
    """The error of a conditional replacement that lost (``current`` None: the object is gone)."""
    if expected is None:
        state = "it exists now"
    elif current is None:
        state = "it was deleted"
    else:
        state = "another writer replaced it"
    msg = (
        f"did not replace {shown}: {state} since it was read. Fix: another command is writing to DEST; "
        "let it finish, then run this one again"
    )
    return ObjectChanged(msg)


def object_missing(shown: str) -> ObjectMissing:
    """The error of a read of a key with no object."""
    return ObjectMissing(f"no object {shown}. Fix: check DEST (is it a dataset? was it built?)")


def object_too_large(shown: str, size: int, max_size: int) -> ObjectTooLarge:
    """The error of a bounded read of a larger object."""
    msg = (
        f"{shown} is {size} bytes, more than the {max_size} bytes this object may have; it was not read. "
        "Fix: DEST holds an object optin did not write; rebuild or restore DEST"
    )
    return ObjectTooLarge(msg)


# --- what the operations return ----------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectInfo:
    """An object's key (DEST-relative), size in bytes and ETag (None where the store does not say)."""

    key: str
    size: int
    etag: str | None


@dataclass(frozen=True)
class Blob:
    """An object read whole: its bytes and its ETag (pass it to :meth:`Dest.replace` as ``expected``)."""

    data: bytes
    etag: str


#: Where :meth:`Dest.probe_conditional_writes` writes (and then deletes) its probe objects.
PROBE_FOLDER = "probe"

_W = TypeVar("_W", bound="ObjectWriter")
_D = TypeVar("_D", bound="Dest")


class ObjectWriter(ABC):
    """One whole object written in pieces; a context manager (:meth:`Dest.writer`).

    Inside ``with``: :meth:`write` (bytes or a memoryview), and :attr:`size` and :attr:`sha256` of what
    was written so far. On a clean exit the object appears whole under its key, replacing any object
    there (keys of this kind are content-derived: a rerun writes the same bytes), and :attr:`info` says
    what was stored. On an exception nothing appears and nothing is left behind (the store's temporary
    file or incomplete upload is removed; if even that fails, :meth:`Dest.abort_uploads` removes it
    later), and the exception goes on.
    """

    def __init__(self, key: str, shown: str) -> None:
        self.key = key
        #: The object as messages name it.
        self.shown = shown
        #: Bytes written so far.
        self.size = 0
        #: What the store holds, once the ``with`` block ended without an exception.
        self.info: ObjectInfo | None = None
        self._hash = hashlib.sha256()
        self._state = "new"

    @property
    def sha256(self) -> str:
        """SHA-256 (hex) of the bytes written so far."""
        return self._hash.hexdigest()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the object.

        :raises DestError: the store refused it, or the writer is not open (a bug in the caller).
        """
        if self._state != "open":
            msg = (
                f"cannot write {self.shown}: its writer is {self._state}, not open. Fix: this is a bug; "
                "write inside `with dest.writer(key) as w:`"
            )
            raise DestError(msg)
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        self._hash.update(view)
        self.size += len(view)
        self._write(view)

    def __enter__(self: _W) -> _W:
        if self._state != "new":
            msg = f"cannot write {self.shown} twice with one writer. Fix: this is a bug; ask for a new writer"
            raise DestError(msg)
        self._open()
        self._state = "open"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self._state = "aborted"
            with contextlib.suppress(Exception):  # the caller's exception is the one to see
                self._abort()  # (if this fails too, abort_uploads removes what is left)
            return
        try:
            self.info = self._finish()
        except BaseException:
            self._state = "aborted"
            with contextlib.suppress(Exception):  # the finishing error is the one to see
                self._abort()
            raise
        self._state = "closed"

    @abstractmethod
    def _open(self) -> None:
        """Start the object (a temporary file; nothing yet on S3)."""

    @abstractmethod
    def _write(self, view: memoryview) -> None:
        """Store the next bytes (``view`` is one-dimensional, of bytes)."""

    @abstractmethod
    def _finish(self) -> ObjectInfo:
        """Make the object appear whole under its key; what the store holds."""

    @abstractmethod
    def _abort(self) -> None:
        """Remove what was stored so far; safe to call at any point, and more than once."""


class Dest(ABC):
    """A dataset's DEST: keys are checked, messages name ``url`` and the key, never contents."""

    #: How messages name this DEST (``/data/ds`` or ``s3://bucket/prefix``).
    url: str

    def where(self, key: str) -> str:
        """``key`` as messages show it (DEST itself for ``""``)."""
        return f"{self.url.rstrip('/')}/{key}" if key else self.url

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> str:
        """Write a new immutable object; its ETag.

        :raises ObjectExists: something is under ``key`` already (it is left as it is).
        """

    @abstractmethod
    def replace(self, key: str, data: bytes, *, expected: str | None) -> str:
        """Write a mutable object only if it is still what the caller read; its new ETag.

        :param expected: the ETag the caller read (:attr:`Blob.etag`), or None for "only if there is none".
        :raises ObjectChanged: another writer changed, created or deleted it since.
        """

    @abstractmethod
    def writer(self, key: str) -> ObjectWriter:
        """A writer of the whole object ``key`` (see :class:`ObjectWriter`): use it as ``with
        dest.writer(key) as w: w.write(...)``. Unconditional: it replaces an object there.

        :raises ObjectKeyRefused: ``key`` is not a name of the layout (before anything is written).
        """

    @abstractmethod
    def get(self, key: str, *, max_size: int) -> Blob:
        """The whole object, at most ``max_size`` bytes.

        :raises ObjectMissing: there is none. :raises ObjectTooLarge: it is larger than ``max_size``.
        """

    @abstractmethod
    def reader(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        """The object as a stream to read (the caller closes it), and its size and ETag. A stream that
        ends before the stated size raises :class:`DestError` rather than ending early.

        :raises ObjectMissing: there is none.
        """

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size (and, on S3, ETag) of the object under ``key``; None when there is none."""

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key. Entries that are not
        objects of the layout are skipped: ``dir/`` marker keys, keys outside the grammar (S3), hidden
        and temporary files (local)."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Delete the object (every version of it on a versioned bucket); False when there was none."""

    @abstractmethod
    def abort_uploads(self, before: datetime.datetime) -> int:
        """Remove what writers killed before ``before`` (an aware time: the lock's start) left: on S3
        the incomplete multipart uploads under DEST, locally the ``.tmp-`` files. How many."""

    def probe_conditional_writes(self) -> bool:
        """Whether the store honours conditional writes: a probe key written twice with
        ``If-None-Match: *`` (the second must be refused) and replaced with a wrong ``If-Match``
        (must be refused). Leaves nothing behind."""
        key = f"{PROBE_FOLDER}/{secrets.token_hex(16)}"
        try:
            etag = self.put_new(key, b"probe\n")
            try:
                self.put_new(key, b"probe again\n")
            except ObjectExists:
                pass
            else:
                return False
            try:
                self.replace(key, b"probe changed\n", expected=_other_etag(etag))
            except ObjectChanged:
                return True
            return False
        finally:
            self.delete(key)

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release what this DEST holds (a folder's descriptor)."""

    def __enter__(self: _D) -> _D:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _other_etag(etag: str) -> str:
    """An ETag of the same form that is certainly not ``etag``."""
    body = etag.strip('"')
    other = ("0" if body[:1] != "0" else "1") + body[1:]
    return f'"{other}"' if etag.startswith('"') else other
