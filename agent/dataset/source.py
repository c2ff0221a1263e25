"""SRC: where ``optin dataset build`` finds bundles, a local folder or ``s3://bucket/prefix``
(docs/dataset.md, "Finding bundles"). Read only: nothing here creates, writes or deletes anything.

:func:`open_source` gives a :class:`Source`; :meth:`Source.list` its candidates sorted by SRC-relative
name, each a ``bundle`` (a regular file or an object whose name ends in ``.optin.tar.age``) or
``ignored`` (anything else: other names, and locally symbolic links, FIFOs, sockets and devices, which
are only ``lstat``-ed, never followed or opened); :meth:`Source.open` one candidate as a stream of its
stated size.

* A local SRC is a folder held open by its descriptor and walked by descriptor, never through a link
  (``O_NOFOLLOW``), at most :data:`MAX_DEPTH` folders deep (a deeper folder is one ``ignored``
  candidate, its name ending in ``/``); a file is opened ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot
  block it), must be a regular file, and must not change: when its size or modification time differ
  from the listing's (``expected``) or change while it is read, :class:`SourceChanged`.
* An S3 SRC lists every key below the prefix (but empty ``folder/`` markers). A key is any string the
  store holds: it is only ever a name handed back to the store and shown escaped, never a local path.
  A name with a ``.`` or ``..`` component is ``ignored`` (a store that normalises paths would read
  another object for it).

A source is described by :attr:`Source.spec` (a string; ``open_source(spec)`` reopens it, and
pickling a source does that), because worker processes and Ray tasks reopen SRC themselves.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar

from agent.dataset.dest_local import DIR_FD
from agent.dataset.dest_s3 import body_stream, error_code, s3_client, s3_error, split_s3_url
from agent.errors import OptinError
from agent.untrusted_text import hidden_characters, visible

#: The end of a bundle's name (docs/export-format.md).
BUNDLE_SUFFIX = ".optin.tar.age"
#: Folders below a local SRC that are walked at most; a deeper folder is one ``ignored`` candidate.
MAX_DEPTH = 32

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_READ_BUFFER = 1 << 20

Kind = Literal["bundle", "ignored"]


class SourceError(OptinError):
    """Reading SRC failed (exit 1; the build defers the bundle); the message names it and the fix."""


class SourceUnusable(SourceError):
    """SRC cannot be used as given: missing, a link, not a folder, no bucket, wrong credentials (exit 2)."""

    exit_code = 2


class SourceChanged(SourceError):
    """A candidate is not what the listing saw any more: replaced, grown, shrunk or gone."""


@dataclass(frozen=True)
class Candidate:
    """One entry below SRC: its SRC-relative name (``/``-separated; on S3 any string the store holds),
    size, ETag (S3's, or locally ``f"{size}:{mtime_ns}"``) and whether it is a ``bundle``."""

    name: str
    size: int
    etag: str
    kind: Kind


_S = TypeVar("_S", bound="Source")


class Source(ABC):
    """SRC, read only. Use :func:`open_source`; :meth:`close` (or ``with``) when done."""

    #: The description :func:`open_source` reopens: the folder's absolute path or ``s3://bucket/prefix``.
    spec: str

    def where(self, name: str) -> str:
        """``name`` below SRC as messages show it: hidden characters escaped, at most 300 characters."""
        return f"{self.spec.rstrip('/')}/{visible(name, limit=300)}" if name else self.spec

    @abstractmethod
    def list(self) -> Iterator[Candidate]:
        """Every candidate below SRC, sorted by name.

        :raises SourceError: SRC cannot be listed (a folder that cannot be read, the store failed).
        """

    @abstractmethod
    def open(self, name: str, *, expected: str | None = None) -> tuple[BinaryIO, int]:
        """The candidate ``name`` as a stream (the caller closes it) and its size. The stream gives
        exactly that many bytes, or raises :class:`SourceError` (:class:`SourceChanged` when the
        candidate changed meanwhile): a short read never looks like the end.

        :param expected: the :attr:`Candidate.etag` of the listing: refuse (:class:`SourceChanged`) a
            candidate that is not that any more.
        :raises SourceError: no such candidate, not a regular file (a link, a FIFO), unreadable.
        """

    @abstractmethod
    def overlaps(self, dest_where: str) -> bool:
        """Whether DEST ``dest_where`` (a folder or ``s3://bucket/prefix``) and this SRC contain one
        another (or are one place): the build would read its own output."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release what this source holds (a folder's descriptor)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return open_source, (self.spec,)

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_source(where: str) -> Source:
    """The SRC ``where`` names (or a :attr:`Source.spec`): a local folder or ``s3://bucket/prefix``.

    :raises SourceUnusable: no such folder, a link, not a folder, a bad URL, no bucket, wrong credentials.
    """
    if where.startswith("s3://"):
        return S3Source.from_url(where)
    if not where.strip() or "://" in where:
        msg = f"SRC {where!r} is neither a local folder nor s3://bucket/prefix. Fix: give one of those"
        raise SourceUnusable(msg)
    return LocalSource.from_path(Path(where))


def is_bundle_name(name: str) -> bool:
    """Whether a name below SRC is a bundle's (its last component ends in ``.optin.tar.age``)."""
    last = name.rpartition("/")[2]
    return last.endswith(BUNDLE_SUFFIX) and len(last) > len(BUNDLE_SUFFIX)


def _contains(outer: str, inner: str) -> bool:
    """Whether the ``/``-separated path ``inner`` is ``outer`` or below it (``""`` contains everything)."""
    return not outer or inner == outer or inner.startswith(outer.rstrip("/") + "/")


# --- a local folder ---------------------------------------------------------------------------------


class LocalSource(Source):
    """A local folder as SRC (see the module's docstring)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.spec = str(path)
        self._fd: int | None = fd

    @classmethod
    def from_path(cls, path: Path) -> LocalSource:
        """The folder ``path``, held open (never created).

        :raises SourceUnusable: missing, a symbolic link, not a folder, or this OS cannot act in a
            folder by descriptor.
        """
        if not DIR_FD:
            msg = (
                f"a local SRC ({path}) needs folders read by descriptor (Linux, macOS), which this system "
                "lacks. Fix: use an s3:// SRC"
            )
            raise SourceUnusable(msg)
        path = path.absolute()  # never resolve(): that would follow a link
        try:
            fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        except OSError as exc:
            raise _unusable_folder(path, exc) from None
        return cls(path, fd)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def fd(self) -> int:
        """The folder's descriptor. :raises SourceError: the source was closed."""
        if self._fd is None:
            msg = f"SRC {self.spec} was closed. Fix: this is a bug; open the SRC again"
            raise SourceError(msg)
        return self._fd

    def list(self) -> Iterator[Candidate]:
        found: builtins.list[Candidate] = []
        self._walk(self.fd, "", 0, found)
        return iter(sorted(found, key=lambda c: c.name))

    def _walk(self, dir_fd: int, folder: str, depth: int, out: builtins.list[Candidate]) -> None:
        entries: builtins.list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(dir_fd) as it:
                for entry in it:
                    with contextlib.suppress(FileNotFoundError):  # removed since the folder was read
                        entries.append((entry.name, entry.stat(follow_symlinks=False)))
        except OSError as exc:
            msg = (
                f"cannot list {self.where(folder)}: {exc.strerror or type(exc).__name__}. Fix: make SRC a "
                "folder you can read"
            )
            raise SourceError(msg) from None
        for name, st in entries:
            rel = f"{folder}/{name}" if folder else name
            if stat.S_ISDIR(st.st_mode):
                if depth >= MAX_DEPTH:
                    out.append(Candidate(rel + "/", 0, _local_etag(st), "ignored"))
                    continue
                try:
                    fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        continue  # replaced by a link or a file, or removed, since it was listed
                    msg = (
                        f"cannot open the folder {self.where(rel)}: {exc.strerror or type(exc).__name__}. "
                        "Fix: make SRC a folder you can read"
                    )
                    raise SourceError(msg) from None
                try:
                    self._walk(fd, rel, depth + 1, out)
                finally:
                    os.close(fd)
                continue
            kind: Kind = "bundle" if stat.S_ISREG(st.st_mode) and is_bundle_name(name) else "ignored"
            out.append(Candidate(rel, st.st_size, _local_etag(st), kind))

    def open(self, name: str, *, expected: str | None = None) -> tuple[BinaryIO, int]:
        shown = self.where(name)
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") or "\x00" in p for p in parts):
            msg = f"{shown} is not a name below SRC (an empty, '.' or '..' component). Fix: this is a bug"
            raise SourceError(msg)
        fds: builtins.list[int] = []
        current = self.fd
        try:
            for part in parts[:-1]:
                fd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=current)
                fds.append(fd)
                current = fd
            fd = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=current)
        except OSError as exc:
            raise _open_error(shown, exc) from None
        finally:
            for folder_fd in fds:
                os.close(folder_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                msg = f"{shown} is {_kind(st)}, not a bundle file; it was not read. Fix: remove it from SRC"
                raise SourceError(msg)
            if expected is not None and _local_etag(st) != expected:
                raise _changed(shown, f"{st.st_size:,} bytes now")
            raw = _LocalBody(fd, st, shown)
        except BaseException:
            os.close(fd)
            raise
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER), st.st_size

    def overlaps(self, dest_where: str) -> bool:
        if dest_where.startswith("s3://") or not dest_where.strip():
            return False
        src, dest = self.path.resolve(), Path(dest_where).resolve()
        return src == dest or src.is_relative_to(dest) or dest.is_relative_to(src)


def _local_etag(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


class _LocalBody(io.RawIOBase):
    """A regular file read as exactly the size it had when opened: an early end, growth or a new
    modification time seen when the end is reached is :class:`SourceChanged`."""

    def __init__(self, fd: int, st: os.stat_result, shown: str) -> None:
        super().__init__()
        self._fd: int | None = fd
        self._st = st
        self._left = st.st_size
        self._shown = shown

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        fd = self._fd
        if fd is None:
            msg = f"cannot read {self._shown}: the stream is closed. Fix: this is a bug"
            raise SourceError(msg)
        if self._left <= 0 or not len(view):
            return 0
        try:
            data = os.read(fd, min(len(view), self._left))  # O_NONBLOCK changes nothing for a regular file
        except OSError as exc:
            msg = f"cannot read {self._shown}: {exc.strerror or type(exc).__name__}. Fix: check the disk"
            raise SourceError(msg) from None
        n = len(data)
        view[:n] = data
        if n == 0:
            done = self._st.st_size - self._left
            raise _changed(self._shown, f"it ended after {done:,} of {self._st.st_size:,} bytes")
        self._left -= n
        if self._left == 0:
            now = os.fstat(fd)
            if (now.st_size, now.st_mtime_ns) != (self._st.st_size, self._st.st_mtime_ns):
                raise _changed(self._shown, "it was written to while it was read")
        return n

    def close(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.close(fd)
        finally:
            super().close()


def _changed(shown: str, what: str) -> SourceChanged:
    msg = (
        f"{shown} changed since SRC was listed ({what}); it was not used. Fix: let whatever writes SRC "
        "finish (copy bundles in under another name, then rename them), then run again"
    )
    return SourceChanged(msg)


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file (FIFO, socket or device)"


def _open_error(shown: str, exc: OSError) -> SourceError:
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        msg = f"{shown} is, or is below, a symbolic link or not a folder; optin never follows links in SRC"
        return SourceError(msg + ". Fix: copy the bundle itself into SRC")
    if exc.errno == errno.ENOENT:
        return _changed(shown, "it is gone")
    msg = f"cannot open {shown}: {exc.strerror or type(exc).__name__}. Fix: make it readable, then run again"
    return SourceError(msg)


def _unusable_folder(path: Path, exc: OSError) -> SourceUnusable:
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is None:
        msg = f"SRC {path} does not exist. Fix: give the folder that holds the bundles"
    elif not stat.S_ISDIR(st.st_mode):
        msg = (
            f"SRC {path} is {_kind(st)}, not a folder; optin never follows links in SRC. "
            "Fix: give the real folder's path"
        )
    else:
        msg = f"cannot open SRC {path}: {exc.strerror or type(exc).__name__}. Fix: give a folder you can read"
    return SourceUnusable(msg)


# --- S3 ---------------------------------------------------------------------------------------------


def parse_source_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of an ``s3://bucket/prefix`` SRC (prefix without slashes at its ends).

    :raises SourceUnusable: not such a URL, a bucket name outside the rules, a prefix with hidden
        characters or a ``.`` or ``..`` component.
    """
    split = split_s3_url(url)
    if split is None:
        msg = (
            f"SRC {visible(url, limit=200)!r} does not start with s3:// and a bucket name (3-63 of "
            "a-z 0-9 . -). Fix: give s3://bucket/prefix"
        )
        raise SourceUnusable(msg)
    bucket, prefix = split
    if hidden_characters(prefix) or any(p in (".", "..") for p in prefix.split("/")):
        msg = (
            f"the prefix of SRC {visible(url, limit=200)!r} has hidden characters or a '.' or '..' "
            "component. Fix: give the prefix the bundles are under"
        )
        raise SourceUnusable(msg)
    return bucket, prefix


class S3Source(Source):
    """``s3://bucket/prefix`` as SRC, through a boto3 S3 client (see the module's docstring)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.spec = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client = client
        self._base = f"{prefix}/" if prefix else ""

    @classmethod
    def from_url(cls, url: str, *, session: Any = None) -> S3Source:
        """The SRC ``url`` with a client from boto3's standard configuration (or ``session``'s), once
        the bucket answered a listing of one key (read only).

        :raises SourceUnusable: a bad URL, no such bucket, credentials refused or missing.
        """
        bucket, prefix = parse_source_url(url)
        source = cls(bucket, prefix, s3_client(url, session=session, unusable=SourceUnusable))
        source._call("open SRC", "", "list_objects_v2", Prefix=source._base, MaxKeys=1)
        return source

    def _call(self, what: str, name: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._fail(name, what, exc) from None
        return answer

    def _fail(self, name: str, what: str, exc: Exception) -> SourceError:
        error = s3_error(
            exc,
            what=what,
            shown=self.where(name),
            bucket=self.bucket,
            access="read",
            unusable=SourceUnusable,
            error=SourceError,
        )
        return error if isinstance(error, SourceError) else SourceError(str(error))

    def list(self) -> Iterator[Candidate]:
        found: builtins.list[Candidate] = []
        token: dict[str, str] = {}
        while True:
            page = self._call("list", "", "list_objects_v2", Prefix=self._base, **token)
            for item in page.get("Contents", []):
                key = str(item["Key"])
                if not key.startswith(self._base) or len(key) == len(self._base):
                    continue
                if key.endswith("/") and not int(item["Size"]):
                    continue  # a folder marker ("create folder" in a console): no object of SRC
                name = key[len(self._base) :]
                kind: Kind = "bundle" if is_bundle_name(name) and not _name_problem(name) else "ignored"
                found.append(Candidate(name, int(item["Size"]), str(item.get("ETag", "")), kind))
            if not page.get("IsTruncated"):
                break
            token = {"ContinuationToken": str(page["NextContinuationToken"])}
        return iter(sorted(found, key=lambda c: c.name))

    def open(self, name: str, *, expected: str | None = None) -> tuple[BinaryIO, int]:
        shown = self.where(name)
        why = _name_problem(name)
        if why:
            msg = f"{shown} is not read: {why}. Fix: give the object a plain name below SRC"
            raise SourceError(msg)
        condition = {"IfMatch": expected} if expected is not None else {}
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._base + name, **condition)
        except Exception as exc:
            code, status = error_code(exc)
            if code in ("PreconditionFailed", "NoSuchKey", "404") or status in (404, 412):
                raise _changed(shown, "it is gone" if status == 404 else "its ETag differs") from None
            raise self._fail(name, "read", exc) from None
        size = int(answer.get("ContentLength", 0))
        return body_stream(answer["Body"], size, shown, SourceChanged), size

    def overlaps(self, dest_where: str) -> bool:
        if not dest_where.startswith("s3://"):
            return False
        bucket, _, prefix = dest_where[len("s3://") :].partition("/")
        prefix = prefix.strip("/")
        return bucket == self.bucket and (_contains(self.prefix, prefix) or _contains(prefix, self.prefix))


def _name_problem(name: str) -> str:
    """Why an S3 name below SRC is not read (``""`` when it can be)."""
    if not name or name.endswith("/"):
        return "it is a folder marker"
    if any(p in (".", "..") for p in name.split("/")):
        return "it has a '.' or '..' component, which some stores resolve to another object"
    return ""
