"""DEST: where ``optin dataset`` keeps a dataset, a local folder or ``s3://bucket/prefix`` (docs/dataset.md).

One interface, :class:`Dest`, two stores:

* :class:`LocalDest`: a folder held open by its descriptor; every step is relative to a directory
  descriptor and never follows a symbolic link (``O_NOFOLLOW``, ``lstat``); directories are created
  0700 and files 0600, each file written under ``.<name>.tmp-<16 hex>`` in its directory, fsynced, then
  linked (a new object: the link fails when the name exists) or renamed (a replacement) into place.
  A folder, or a folder below it, that is a link or another user's is refused. Needs directory
  descriptors (Linux, macOS); elsewhere use an ``s3://`` DEST.
* :class:`S3Dest`: any S3-compatible store through boto3, whose standard configuration gives the
  endpoint and the credentials (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, the credential chain). A new
  object is written with ``If-None-Match: *``, a replacement with ``If-Match`` on the old ETag.

What both offer: :meth:`Dest.put_new` (an immutable object, refused when the key exists),
:meth:`Dest.replace` (a mutable object, ``CURRENT`` and ``LOCK``: only if it still is what the caller
read), :meth:`Dest.get` (bounded by the size the caller allows), :meth:`Dest.head`,
:meth:`Dest.list` (``dir/`` marker keys skipped), :meth:`Dest.delete`, and
:meth:`Dest.probe_conditional_writes` (whether the store honours conditional writes at all).

Every key is checked by :func:`check_key` before it is used: the grammar of docs/dataset.md "Object
names", so no input can choose a path. Messages name the operation, the key and the fix; never an
object's contents.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime
import errno
import hashlib
import os
import re
import secrets
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from agent.backends import platform_calls
from agent.errors import OptinError

# --- errors ----------------------------------------------------------------------------------------


class DestError(OptinError):
    """An operation on DEST failed (exit 1); the message names the operation, the key and the fix."""


class DestUnusable(DestError):
    """DEST cannot be used as given: a link, another user's folder, no bucket, wrong credentials (exit 2)."""

    exit_code = 2


class ObjectKeyRefused(DestError):
    """A key is not a name of the dataset layout (docs/dataset.md, "Object names")."""


class ObjectExists(DestError):
    """A new object's key is already taken (``If-None-Match: *`` failed, or the link found a file)."""


class ObjectChanged(DestError):
    """A conditional replacement found the object changed (or gone, or there) since the caller read it."""


class ObjectMissing(DestError):
    """No object under that key."""


class ObjectTooLarge(DestError):
    """The object is larger than the caller allows for it."""


# --- keys ------------------------------------------------------------------------------------------

#: docs/dataset.md, "Object names": the grammar every DEST-relative path must match.
KEY_GRAMMAR = re.compile(r"[A-Za-z0-9_=./-]{1,200}", re.ASCII)
#: One path component: a literal, a number or a hex digest, with dot-separated extensions
#: (``v000042.wids.json``, ``<32 hex>.index.jsonl``), or ``ingest_date=YYYY-MM-DD``.
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9][A-Za-z0-9_-]*)*", re.ASCII)
_DATE_COMPONENT = re.compile(r"ingest_date=(\d{4})-(\d{2})-(\d{2})", re.ASCII)
#: Folders below DEST a key may have at most (``tables/sessions/ingest_date=.../<part>.parquet``: 3).
MAX_DEPTH = 6


def check_key(key: str) -> str:
    """``key`` when it is a DEST-relative object name of the layout, else :class:`ObjectKeyRefused`.

    The spec's grammar (``[A-Za-z0-9_=./-]{1,200}``, no ``..``, no ``//``, no leading ``/``), and
    stricter: every component starts with a letter or digit (no ``.``, ``..``, hidden or temporary
    names, no trailing ``/``), at most :data:`MAX_DEPTH` folders deep, and an ``ingest_date=``
    component is a real date.
    """
    shown = ascii(key[:80]) + ("…" if len(key) > 80 else "")
    why = _key_problem(key)
    if why:
        msg = (
            f"refused the object key {shown}: {why}. A DEST key is built only from literals, decimal "
            "numbers, the build's UTC date and hex digests (docs/dataset.md, Object names). Fix: this is a "
            "bug in the caller, or a version manifest naming a path no optin writes (rebuild or restore DEST)"
        )
        raise ObjectKeyRefused(msg)
    return key


def _key_problem(key: str) -> str:  # noqa: PLR0911 - one return per rule
    if not isinstance(key, str):
        return "not a string"
    if not key.isascii() or not KEY_GRAMMAR.fullmatch(key):
        return "it has characters outside A-Z a-z 0-9 _ = . / - (or is empty, or over 200 characters)"
    if key.startswith("/") or "//" in key or ".." in key:
        return "it is absolute, or has '//' or '..'"
    parts = key.split("/")
    if len(parts) - 1 > MAX_DEPTH:
        return f"it is more than {MAX_DEPTH} folders deep"
    for part in parts:
        date = _DATE_COMPONENT.fullmatch(part)
        if date:
            try:
                datetime.date(int(date[1]), int(date[2]), int(date[3]))
            except ValueError:
                return "its ingest_date= is not a date"
            continue
        if not _COMPONENT.fullmatch(part):
            return "a component is empty, starts with '.', '-' or '_', or has '=' outside ingest_date="
    return ""


def _check_prefix(prefix: str) -> str:
    """A list prefix: a key, a key followed by ``/``, or empty (everything)."""
    if prefix:
        check_key(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


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


_D = TypeVar("_D", bound="Dest")


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
    def get(self, key: str, *, max_size: int) -> Blob:
        """The whole object, at most ``max_size`` bytes.

        :raises ObjectMissing: there is none. :raises ObjectTooLarge: it is larger than ``max_size``.
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


def open_dest(where: str) -> Dest:
    """The DEST ``where`` names: ``s3://bucket/prefix`` or a local folder (created 0700 if missing).

    :raises DestUnusable: the folder is a link or another user's, the bucket or credentials are wrong.
    """
    if where.startswith("s3://"):
        return S3Dest.open(where)
    if not where.strip() or "://" in where:
        msg = f"DEST {where!r} is neither a local folder nor s3://bucket/prefix. Fix: give one of those"
        raise DestUnusable(msg)
    return LocalDest.open(Path(where))


# --- a local folder ---------------------------------------------------------------------------------

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

#: Whether this OS lets a folder be held open and acted in by descriptor (Linux, macOS).
DIR_FD = (
    os.name == "posix"
    and bool(_NOFOLLOW)
    and bool(_DIRECTORY)
    and {os.open, os.stat, os.unlink, os.rename, os.mkdir, os.link} <= os.supports_dir_fd
    and os.scandir in os.supports_fd
)

#: The file whose exclusive lock serialises replacements and deletions in a local DEST.
_GUARD = ".optin-dest.guard"
#: How long a replacement waits for another one in the same folder before it gives up.
GUARD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20


class LocalDest(Dest):
    """A local folder as DEST (see the module's docstring). Use :meth:`open`; :meth:`close` when done."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.url = str(path)
        self._fd: int | None = fd
        self._uid = platform_calls.user_id()
        self._guard_thread = threading.Lock()

    @classmethod
    def open(cls, path: Path) -> LocalDest:
        """Open (creating it 0700 when missing) the folder ``path``.

        :raises DestUnusable: it is a symbolic link, not a folder, another user's, or this OS cannot
            act in a folder by descriptor.
        """
        if not DIR_FD:
            msg = (
                f"a local DEST ({path}) needs folders acted in by descriptor (Linux, macOS), which this "
                "system lacks. Fix: use an s3:// DEST"
            )
            raise DestUnusable(msg)
        path = path.absolute()  # never resolve(): that would follow a link
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise _unusable_folder(path, exc) from None
        try:
            fd = os.open(path, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC)
        except OSError as exc:
            raise _unusable_folder(path, exc) from None
        dest = cls(path, fd)
        try:
            dest._check_owner(os.fstat(fd), str(path))
        except BaseException:
            dest.close()
            raise
        return dest

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    @property
    def fd(self) -> int:
        """The folder's descriptor. :raises DestError: the DEST was closed."""
        if self._fd is None:
            msg = f"DEST {self.url} was closed. Fix: this is a bug; open the DEST again"
            raise DestError(msg)
        return self._fd

    # --- folders --------------------------------------------------------------------------------

    def _check_owner(self, st: os.stat_result, shown: str) -> None:
        if self._uid is not None and st.st_uid != self._uid:
            msg = (
                f"{shown} belongs to another user (uid {st.st_uid}); a DEST holds decrypted data and "
                "must be yours alone. Fix: choose a folder of your own"
            )
            raise DestUnusable(msg)

    @contextlib.contextmanager
    def _folder(self, key: str, *, create: bool) -> Iterator[tuple[int, str]]:
        """The descriptor of ``key``'s folder (walked from DEST, never through a link) and its last name.

        :raises FileNotFoundError: a folder is missing and ``create`` is False.
        """
        parts = check_key(key).split("/")
        fds: builtins.list[int] = []
        current = self.fd
        try:
            for i, name in enumerate(parts[:-1]):
                shown = self.where("/".join(parts[: i + 1]))
                flags = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC
                try:
                    fd = os.open(name, flags, dir_fd=current)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o700, dir_fd=current)
                    try:
                        fd = os.open(name, flags, dir_fd=current)
                    except OSError as exc:
                        raise self._refused_entry(current, name, shown, "a folder", exc) from None
                except OSError as exc:
                    raise self._refused_entry(current, name, shown, "a folder", exc) from None
                fds.append(fd)
                self._check_owner(os.fstat(fd), shown)
                current = fd
            yield current, parts[-1]
        finally:
            for fd in fds:
                os.close(fd)

    def _refused_entry(self, dir_fd: int, name: str, shown: str, expected: str, exc: OSError) -> OptinError:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return _os_error(shown, "open", exc)
        kind = _kind(st)
        if kind == expected:
            return _os_error(shown, "open", exc)
        msg = (
            f"{shown} is {kind} where the dataset keeps {expected}; optin never follows links or writes "
            f"outside DEST, so nothing was written there. Fix: remove it (ls -l {shown}) and run the "
            "command again"
        )
        return DestUnusable(msg)

    # --- writing --------------------------------------------------------------------------------

    def _write_temp(self, dir_fd: int, name: str, data: bytes) -> str:
        """``data`` in a new ``.<name>.tmp-<16 hex>`` (0600, fsynced) in ``dir_fd``; its name."""
        tmp = f".{name}.tmp-{secrets.token_hex(8)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
        fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.close(fd)
        return tmp

    def _link_new(self, dir_fd: int, name: str, data: bytes, shown: str) -> None:
        tmp = self._write_temp(dir_fd, name, data)
        try:
            os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            msg = (
                f"cannot write {shown}: an object is already there, and objects of this kind are never "
                "overwritten. Fix: this is a bug or a second writer; check that one command at a time "
                "writes to DEST"
            )
            raise ObjectExists(msg) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
        os.fsync(dir_fd)

    def put_new(self, key: str, data: bytes) -> str:
        shown = self.where(check_key(key))
        try:
            with self._folder(key, create=True) as (dir_fd, name):
                self._link_new(dir_fd, name, data, shown)
        except OSError as exc:
            raise _os_error(shown, "write", exc) from None
        return hashlib.sha256(data).hexdigest()

    def replace(self, key: str, data: bytes, *, expected: str | None) -> str:
        shown = self.where(check_key(key))
        try:
            with self._guard(shown), self._folder(key, create=True) as (dir_fd, name):
                current = self._etag_of(dir_fd, name, shown)
                if current != expected:
                    raise _changed(shown, expected, current)
                if expected is None:
                    self._link_new(dir_fd, name, data, shown)
                else:
                    tmp = self._write_temp(dir_fd, name, data)
                    try:
                        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.unlink(tmp, dir_fd=dir_fd)
                        raise
                    os.fsync(dir_fd)
        except ObjectExists:
            raise _changed(shown, expected, "new") from None
        except OSError as exc:
            raise _os_error(shown, "replace", exc) from None
        return hashlib.sha256(data).hexdigest()

    @contextlib.contextmanager
    def _guard(self, shown: str) -> Iterator[None]:
        """The DEST's replacement lock: one replacement or deletion at a time (threads and processes)."""
        flags = os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC
        with self._guard_thread:
            try:
                fd = os.open(_GUARD, flags, 0o600, dir_fd=self.fd)
            except OSError as exc:
                raise _os_error(self.where(_GUARD), "lock", exc) from None
            try:
                deadline = time.monotonic() + GUARD_TIMEOUT_S
                while not platform_calls.try_lock(fd):
                    if time.monotonic() > deadline:
                        msg = (
                            f"cannot change {shown}: another process has held {self.where(_GUARD)} for "
                            f"{GUARD_TIMEOUT_S:.0f} s. Fix: check that one command at a time writes to DEST"
                        )
                        raise DestError(msg)
                    time.sleep(0.002)
                try:
                    yield
                finally:
                    platform_calls.release_lock(fd)
            finally:
                os.close(fd)

    # --- reading --------------------------------------------------------------------------------

    def _open_file(self, dir_fd: int, name: str, shown: str) -> int | None:
        """A read descriptor of the regular file ``name`` (never a link, FIFO or device); None if none."""
        try:
            fd = os.open(name, os.O_RDONLY | _NOFOLLOW | _NONBLOCK | _CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._refused_entry(dir_fd, name, shown, "a regular file", exc) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            msg = f"{shown} is {_kind(st)}, not a regular file. Fix: remove it and run the command again"
            raise DestUnusable(msg)
        return fd

    def _etag_of(self, dir_fd: int, name: str, shown: str) -> str | None:
        fd = self._open_file(dir_fd, name, shown)
        if fd is None:
            return None
        try:
            digest = hashlib.sha256()
            while chunk := os.read(fd, _CHUNK):
                digest.update(chunk)
            return digest.hexdigest()
        finally:
            os.close(fd)

    def get(self, key: str, *, max_size: int) -> Blob:
        shown = self.where(check_key(key))
        try:
            with self._folder(key, create=False) as (dir_fd, name):
                fd = self._open_file(dir_fd, name, shown)
                if fd is None:
                    raise _missing(shown)
                try:
                    size = os.fstat(fd).st_size
                    if size > max_size:
                        raise _too_large(shown, size, max_size)
                    chunks: builtins.list[bytes] = []
                    left = max_size + 1
                    while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
                        chunks.append(chunk)
                        left -= len(chunk)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            raise _missing(shown) from None
        except OSError as exc:
            raise _os_error(shown, "read", exc) from None
        data = b"".join(chunks)
        if len(data) > max_size:  # it grew while read
            raise _too_large(shown, len(data), max_size)
        return Blob(data, hashlib.sha256(data).hexdigest())

    def head(self, key: str) -> ObjectInfo | None:
        shown = self.where(check_key(key))
        try:
            with self._folder(key, create=False) as (dir_fd, name):
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    return None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(shown, "look at", exc) from None
        if not stat.S_ISREG(st.st_mode):
            msg = f"{shown} is {_kind(st)}, not a regular file. Fix: remove it and run the command again"
            raise DestUnusable(msg)
        return ObjectInfo(key, st.st_size, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        folder, _, _ = prefix.rpartition("/")
        if folder:
            try:
                with self._folder(folder + "/x", create=False) as (dir_fd, _name):
                    found = self._walk(dir_fd, folder)
            except FileNotFoundError:
                return
        else:
            found = self._walk(self.fd, "")
        yield from (info for info in sorted(found, key=lambda i: i.key) if info.key.startswith(prefix))

    def _walk(self, dir_fd: int, folder: str) -> builtins.list[ObjectInfo]:
        out: builtins.list[ObjectInfo] = []
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        for name, st in entries:
            if name.startswith("."):
                continue  # temporary files, the guard
            key = f"{folder}/{name}" if folder else name
            if _key_problem(key):
                continue
            if stat.S_ISREG(st.st_mode):
                out.append(ObjectInfo(key, st.st_size, None))
            elif stat.S_ISDIR(st.st_mode):
                try:
                    fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
                except OSError as exc:
                    raise self._refused_entry(dir_fd, name, self.where(key), "a folder", exc) from None
                try:
                    self._check_owner(os.fstat(fd), self.where(key))
                    out.extend(self._walk(fd, key))
                finally:
                    os.close(fd)
            else:
                msg = (
                    f"{self.where(key)} is {_kind(st)}; a DEST holds only folders and regular files, and "
                    "optin never follows links. Fix: remove it and run the command again"
                )
                raise DestUnusable(msg)
        return out

    def delete(self, key: str) -> bool:
        shown = self.where(check_key(key))
        try:
            with self._guard(shown), self._folder(key, create=False) as (dir_fd, name):
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    return False
                if not stat.S_ISREG(st.st_mode):
                    msg = f"{shown} is {_kind(st)}, not an object; it was not deleted. Fix: look at it"
                    raise DestUnusable(msg)
                os.unlink(name, dir_fd=dir_fd)
                os.fsync(dir_fd)
                return True
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _os_error(shown, "delete", exc) from None


def _kind(st: os.stat_result) -> str:
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file (FIFO, socket or device)"


def _unusable_folder(path: Path, exc: OSError) -> DestUnusable:
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        msg = (
            f"DEST {path} is {_kind(st)}, not a folder; optin never follows links in DEST. "
            "Fix: give the real folder's path, or a new folder"
        )
    else:
        msg = f"cannot open DEST {path}: {exc.strerror or type(exc).__name__}. Fix: give a folder of yours"
    return DestUnusable(msg)


def _os_error(shown: str, what: str, exc: OSError) -> DestError:
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        msg = f"cannot {what} {shown}: {exc.strerror}. Fix: make DEST a folder you can write"
        return DestUnusable(msg)
    if exc.errno == errno.ELOOP:
        msg = f"cannot {what} {shown}: it is a symbolic link, never followed. Fix: remove the link"
        return DestUnusable(msg)
    msg = f"cannot {what} {shown}: {exc.strerror or type(exc).__name__}. Fix: check the disk, then run again"
    return DestError(msg)


def _changed(shown: str, expected: str | None, current: str | None) -> ObjectChanged:
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


def _missing(shown: str) -> ObjectMissing:
    return ObjectMissing(f"no object {shown}. Fix: check DEST (is it a dataset? was it built?)")


def _too_large(shown: str, size: int, max_size: int) -> ObjectTooLarge:
    msg = (
        f"{shown} is {size} bytes, more than the {max_size} bytes this object may have; it was not read. "
        "Fix: DEST holds an object optin did not write; rebuild or restore DEST"
    )
    return ObjectTooLarge(msg)


# --- S3 ---------------------------------------------------------------------------------------------

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", re.ASCII)
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_CONFLICT = {"PreconditionFailed", "ConditionalRequestConflict"}
#: Timeouts and retries of the S3 client: a store that does not answer fails the command, never hangs it.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60


def parse_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (prefix without slashes at its ends, may be empty).

    :raises DestUnusable: not such a URL, or a bucket name or prefix outside the rules.
    """
    rest = url[len("s3://") :] if url.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        msg = (
            f"DEST {url!r} does not start with s3:// and a bucket name (3-63 of a-z 0-9 . -). "
            "Fix: give s3://bucket/prefix"
        )
        raise DestUnusable(msg)
    if prefix:
        try:
            check_key(prefix)
        except ObjectKeyRefused:
            msg = (
                f"the prefix of DEST {url!r} is not a plain folder path (letters, digits, _ = . - and /, "
                "no '..'). Fix: choose a simpler prefix"
            )
            raise DestUnusable(msg) from None
    return bucket, prefix


class S3Dest(Dest):
    """``s3://bucket/prefix`` as DEST, through a boto3 S3 client (see the module's docstring)."""

    def __init__(self, bucket: str, prefix: str, client: Any) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._client = client
        self._versioning: str | None = None

    @classmethod
    def open(cls, url: str, *, session: Any = None) -> S3Dest:
        """The DEST ``url`` with a client from boto3's standard configuration (or ``session``'s),
        once the bucket answered (:meth:`check_bucket`: some stores create a bucket on the first write,
        so a misspelt name would otherwise become a new bucket).

        :raises DestUnusable: no such bucket, credentials refused or missing, a broken profile.
        """
        bucket, prefix = parse_s3_url(url)
        import boto3
        from botocore.config import Config

        config = Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        try:
            client = (session or boto3.session.Session()).client("s3", config=config)
        except Exception as exc:  # botocore's configuration errors (a profile that is not there, ...)
            msg = (
                f"cannot set up the S3 client for {url}: {type(exc).__name__}. Fix: check AWS_PROFILE, "
                "AWS_CONFIG_FILE and AWS_ENDPOINT_URL"
            )
            raise DestUnusable(msg) from None
        dest = cls(bucket, prefix, client)
        dest.check_bucket()
        return dest

    def check_bucket(self) -> None:
        """One listing of at most one key (a GET: its error answer names the problem, a HEAD's would not).

        :raises DestUnusable: the bucket is not there, or the credentials are refused or missing.
        """
        base = f"{self.prefix}/" if self.prefix else ""
        self._call("open DEST", "", "list_objects_v2", Prefix=base, MaxKeys=1)

    def _full(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, key: str, what: str, exc: Exception) -> DestError:
        """Our error for a failed S3 call: the code the store gave, never its free text or a body."""
        from botocore.exceptions import (
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        shown = self.where(key)  # checked by the caller (or "" for DEST itself)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "unknown"))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _DENIED or status == 403:
                msg = (
                    f"cannot {what} {shown}: the store refused the credentials ({code}). Fix: check "
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that they may read "
                    f"and write bucket {self.bucket}"
                )
                return DestUnusable(msg)
            if code == "NoSuchBucket":
                msg = (
                    f"cannot {what} {shown}: there is no bucket {self.bucket}. Fix: create it, or fix the URL"
                )
                return DestUnusable(msg)
            msg = f"cannot {what} {shown}: the store answered {code} (HTTP {status}). Fix: check the store"
            return DestError(msg)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            msg = (
                f"cannot {what} {shown}: no S3 credentials were found. Fix: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            )
            return DestUnusable(msg)
        if isinstance(exc, EndpointConnectionError):
            msg = (
                f"cannot {what} {shown}: the S3 endpoint does not answer. Fix: check AWS_ENDPOINT_URL "
                "(or the profile's endpoint_url) and the network"
            )
            return DestError(msg)
        msg = f"cannot {what} {shown}: {type(exc).__name__}. Fix: check the store and the network"
        return DestError(msg)

    def _call(self, what: str, key: str, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = getattr(self._client, method)(Bucket=self.bucket, **kwargs)
        except Exception as exc:
            raise self._fail(key, what, exc) from None
        return answer

    @staticmethod
    def _code(exc: Exception) -> tuple[str, int | None]:
        response = getattr(exc, "response", None)
        if not isinstance(response, dict):
            return "", None
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code, status if isinstance(status, int) else None

    def put_new(self, key: str, data: bytes) -> str:
        full = self._full(key)
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=full, Body=data, IfNoneMatch="*")
        except Exception as exc:
            code, status = self._code(exc)
            if code in _CONFLICT or status in (409, 412):
                msg = (
                    f"cannot write {self.where(key)}: an object is already there, and objects of this kind "
                    "are never overwritten. Fix: this is a bug or a second writer; check that one command "
                    "at a time writes to DEST"
                )
                raise ObjectExists(msg) from None
            raise self._fail(key, "write", exc) from None
        return str(answer["ETag"])

    def replace(self, key: str, data: bytes, *, expected: str | None) -> str:
        full = self._full(key)
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            answer = self._client.put_object(Bucket=self.bucket, Key=full, Body=data, **condition)
        except Exception as exc:
            code, status = self._code(exc)
            if code in _CONFLICT or code == "NoSuchKey" or status in (404, 409, 412):
                raise _changed(self.where(key), expected, "unknown" if status != 404 else None) from None
            raise self._fail(key, "replace", exc) from None
        return str(answer["ETag"])

    def get(self, key: str, *, max_size: int) -> Blob:
        full = self._full(key)
        shown = self.where(check_key(key))
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            code, status = self._code(exc)
            if code in ("NoSuchKey", "404") or status == 404:
                raise _missing(shown) from None
            raise self._fail(key, "read", exc) from None
        body = answer["Body"]
        try:
            size = int(answer.get("ContentLength", 0))
            if size > max_size:
                raise _too_large(shown, size, max_size)
            data = bytes(body.read(max_size + 1))
        except DestError:
            raise
        except Exception as exc:
            raise self._fail(key, "read", exc) from None
        finally:
            body.close()
        if len(data) > max_size:
            raise _too_large(shown, len(data), max_size)
        return Blob(data, str(answer["ETag"]))

    def head(self, key: str) -> ObjectInfo | None:
        full = self._full(key)
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=full)
        except Exception as exc:
            code, status = self._code(exc)
            if code in ("NoSuchKey", "404", "NotFound") or status == 404:
                return None
            raise self._fail(key, "look at", exc) from None
        return ObjectInfo(key, int(answer["ContentLength"]), str(answer["ETag"]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        _check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call("list", prefix, "list_objects_v2", Prefix=base + prefix, **extra)
            for item in page.get("Contents", []):
                full = str(item["Key"])
                if not full.startswith(base) or full.endswith("/"):
                    continue  # "dir/" markers (pyarrow's S3FileSystem writes them)
                key = full[len(base) :]
                if _key_problem(key):
                    continue
                yield ObjectInfo(key, int(item["Size"]), str(item.get("ETag", "")) or None)
            if not page.get("IsTruncated"):
                return
            token = str(page["NextContinuationToken"])

    def versioning(self) -> str:
        """The bucket's versioning state: ``Enabled``, ``Suspended`` or ``""`` (never enabled)."""
        if self._versioning is None:
            answer = self._call("read the versioning of", "", "get_bucket_versioning")
            self._versioning = str(answer.get("Status", ""))
        return self._versioning

    def delete(self, key: str) -> bool:
        full = self._full(key)
        existed = self.head(key) is not None
        versions: builtins.list[str] = []
        if self.versioning() in ("Enabled", "Suspended"):
            markers: dict[str, str] = {}
            while True:
                answer = self._call(
                    "list the versions of", key, "list_object_versions", Prefix=full, **markers
                )
                for item in [*answer.get("Versions", []), *answer.get("DeleteMarkers", [])]:
                    if item.get("Key") == full:
                        versions.append(str(item["VersionId"]))
                if not answer.get("IsTruncated"):
                    break
                markers = {
                    "KeyMarker": str(answer["NextKeyMarker"]),
                    "VersionIdMarker": str(answer["NextVersionIdMarker"]),
                }
        if not versions:
            self._call("delete", key, "delete_object", Key=full)
        for version in versions:
            self._call("delete", key, "delete_object", Key=full, VersionId=version)
        return existed or bool(versions)
