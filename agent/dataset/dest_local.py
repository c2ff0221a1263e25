"""A local folder as DEST (docs/dataset.md, "Local DEST"): :class:`LocalDest`.

The folder is held open by its descriptor; every step is relative to a directory descriptor and never
follows a symbolic link (``O_NOFOLLOW``, ``lstat``); directories are created 0700 and files 0600, each
file written under ``.<name>.tmp-<16 hex>`` in its directory (``O_CREAT | O_EXCL | O_NOFOLLOW``),
fsynced, then linked (a new object: the link fails when the name exists) or renamed (a replacement, a
streamed whole object) into place, so a final name never holds a partial file. A folder, or a folder
below it, that is a link or another user's is refused. A local ETag is the SHA-256 of the content;
replacements and deletions are serialised by the lock of ``.optin-dest.guard`` (a rename alone cannot
compare-and-swap). Needs directory descriptors (Linux, macOS); elsewhere use an ``s3://`` DEST.
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
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from agent.backends import platform_calls
from agent.dataset.dest import (
    Blob,
    Dest,
    DestError,
    DestUnusable,
    ObjectExists,
    ObjectInfo,
    ObjectWriter,
    object_changed,
    object_missing,
    object_too_large,
)
from agent.dataset.object_keys import check_key, check_prefix, key_problem
from agent.errors import OptinError

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
#: A temporary file's name: ``.<name>.tmp-<16 hex>`` (:meth:`LocalDest.abort_uploads` removes old ones).
_TEMP = re.compile(r"\..+\.tmp-[0-9a-f]{16}", re.DOTALL)


def _temp_name(name: str) -> str:
    return f".{name}.tmp-{secrets.token_hex(8)}"


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
        tmp = _temp_name(name)
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
                    raise object_changed(shown, expected, current)
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
            raise object_changed(shown, expected, "new") from None
        except OSError as exc:
            raise _os_error(shown, "replace", exc) from None
        return hashlib.sha256(data).hexdigest()

    def writer(self, key: str) -> ObjectWriter:
        return _LocalWriter(self, check_key(key))

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
                    raise object_missing(shown)
                try:
                    size = os.fstat(fd).st_size
                    if size > max_size:
                        raise object_too_large(shown, size, max_size)
                    chunks: builtins.list[bytes] = []
                    left = max_size + 1
                    while left > 0 and (chunk := os.read(fd, min(left, _CHUNK))):
                        chunks.append(chunk)
                        left -= len(chunk)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            raise object_missing(shown) from None
        except OSError as exc:
            raise _os_error(shown, "read", exc) from None
        data = b"".join(chunks)
        if len(data) > max_size:  # it grew while read
            raise object_too_large(shown, len(data), max_size)
        return Blob(data, hashlib.sha256(data).hexdigest())

    def reader(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        shown = self.where(check_key(key))
        try:
            with self._folder(key, create=False) as (dir_fd, name):
                fd = self._open_file(dir_fd, name, shown)
        except FileNotFoundError:
            raise object_missing(shown) from None
        except OSError as exc:
            raise _os_error(shown, "read", exc) from None
        if fd is None:
            raise object_missing(shown)
        try:
            size = os.fstat(fd).st_size  # O_NONBLOCK changes nothing for a regular file
            stream = open(fd, "rb", buffering=_CHUNK)  # noqa: PTH123, SIM115 - a descriptor; the caller closes it
        except BaseException:
            os.close(fd)
            raise
        return stream, ObjectInfo(key, size, None)

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
        check_prefix(prefix)
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
            if key_problem(key):
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

    def abort_uploads(self, before: datetime.datetime) -> int:
        limit_ns = int(before.timestamp() * 1e9)
        try:
            return self._remove_temporaries(self.fd, "", limit_ns)
        except OSError as exc:
            raise _os_error(self.url, "clean up temporary files in", exc) from None

    def _remove_temporaries(self, dir_fd: int, folder: str, limit_ns: int) -> int:
        """Remove the ``.tmp-`` files older than ``limit_ns`` below ``dir_fd`` (links never followed)."""
        removed = 0
        with os.scandir(dir_fd) as it:
            entries = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        for name, st in entries:
            if stat.S_ISREG(st.st_mode) and _TEMP.fullmatch(name) and st.st_mtime_ns < limit_ns:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=dir_fd)
                    removed += 1
            elif stat.S_ISDIR(st.st_mode) and not name.startswith("."):
                key = f"{folder}/{name}" if folder else name
                try:
                    fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
                except OSError as exc:
                    raise self._refused_entry(dir_fd, name, self.where(key), "a folder", exc) from None
                try:
                    self._check_owner(os.fstat(fd), self.where(key))
                    removed += self._remove_temporaries(fd, key, limit_ns)
                finally:
                    os.close(fd)
        if removed:
            os.fsync(dir_fd)
        return removed


class _LocalWriter(ObjectWriter):
    """A whole object streamed into ``.<name>.tmp-<16 hex>`` (0600, ``O_EXCL | O_NOFOLLOW``), fsynced
    and renamed over the key on a clean exit; removed on an exception."""

    def __init__(self, dest: LocalDest, key: str) -> None:
        super().__init__(key, dest.where(key))
        self._dest = dest
        self._held = contextlib.ExitStack()
        self._dir_fd = -1
        self._name = ""
        self._tmp = ""
        self._fd: int | None = None

    def _open(self) -> None:
        try:
            self._dir_fd, self._name = self._held.enter_context(self._dest._folder(self.key, create=True))
            tmp = _temp_name(self._name)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
            self._fd = os.open(tmp, flags, 0o600, dir_fd=self._dir_fd)
            self._tmp = tmp
        except BaseException as exc:
            self._held.close()
            if isinstance(exc, OSError):
                raise _os_error(self.shown, "write", exc) from None
            raise

    def _write(self, view: memoryview) -> None:
        if self._fd is None:
            msg = f"cannot write {self.shown}: its temporary file is closed. Fix: this is a bug"
            raise DestError(msg)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise _os_error(self.shown, "write", exc) from None

    def _finish(self) -> ObjectInfo:
        fd, self._fd = self._fd, None
        if fd is None:
            msg = f"cannot finish {self.shown}: its temporary file is closed. Fix: this is a bug"
            raise DestError(msg)
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(self._tmp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            self._tmp = ""
            os.fsync(self._dir_fd)
        except OSError as exc:
            raise _os_error(self.shown, "write", exc) from None
        self._held.close()
        return ObjectInfo(self.key, self.size, self.sha256)

    def _abort(self) -> None:
        fd, self._fd = self._fd, None
        tmp, self._tmp = self._tmp, ""
        try:
            if fd is not None:
                os.close(fd)
            if tmp:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=self._dir_fd)
        finally:
            self._held.close()


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
