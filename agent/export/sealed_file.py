"""Encrypt a stream of plaintext chunks straight into one file, written atomically.

:func:`seal_to_file` is how a bundle reaches the disk (agent/export/bundle.py): the tar is
produced chunk by chunk, pyrage's ``encrypt_io`` (which bundle.py passes in: the cipher stays
there) pulls it through a small reader and pushes
the age file into a temporary name beside the target (``O_EXCL``, mode 0600 from the first
byte), its SHA-256 computed on the way; the file is fsynced and renamed over the target,
and the rename fsynced.  Only ciphertext is ever written: no plaintext temp file, no
spool.  Memory is one chunk plus pyrage's buffers (64 KiB), whatever the bundle's size.

On any failure the temporary file is removed and nothing is left at the target; an error
raised while producing a chunk (a frame that changed, a store error) is raised as it is,
never as pyrage's wrapper.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.errors import ExportError
from agent.paths import fsync_dir


class _ChunkReader:
    """A readable over ``chunks`` (what ``encrypt_io`` reads); remembers the error a chunk raised."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = memoryview(b"")
        self.error: BaseException | None = None
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        try:
            while not self._buf:
                chunk = next(self._chunks, None)
                if chunk is None:
                    return b""
                self._buf = memoryview(chunk)
        except BaseException as exc:
            self.error = exc
            raise
        n = len(self._buf) if size is None or size < 0 else min(size, len(self._buf))
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        self.total += n
        return out

    def readable(self) -> bool:
        return True


class _HashingSink:
    """A writable to the file descriptor ``fd`` that hashes and counts what goes through."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def write(self, data: Any) -> int:
        view = memoryview(data)
        try:
            done = 0
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except BaseException as exc:
            self.error = exc
            raise
        self.hash.update(view)
        self.size += len(view)
        return len(view)

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True


#: Encrypts everything ``reader.read`` gives into ``writer.write`` (pyrage's ``encrypt_io`` bound to
#: the recipients: agent/export/bundle.py, the one export module that imports pyrage).
Encrypt = Callable[[Any, Any], None]


def seal_to_file(
    out_dir: Path, name: str, chunks: Iterable[bytes], encrypt: Encrypt
) -> tuple[Path, int, str]:
    """Encrypt ``chunks`` with ``encrypt`` into ``out_dir/name`` (created mode 0600, atomically).

    :returns: the file's path, its size and the hex SHA-256 of its bytes.
    :raises ExportError: the file cannot be written (the message names the folder and the fix).
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(out_dir, exc) from exc
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp-{secrets.token_hex(4)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o600)
    except OSError as exc:
        raise _cannot_write(out_dir, exc) from exc
    source = _ChunkReader(chunks)
    sink = _HashingSink(fd)
    try:
        try:
            encrypt(source, sink)
        except Exception:
            if source.error is not None:
                raise source.error from None
            if sink.error is not None:
                raise sink.error from None
            msg = "the bundle could not be encrypted (age); nothing was written. Fix: export again"
            raise ExportError(msg) from None
        if source.error is not None:  # never swallowed, even if the encryptor carried on
            raise source.error
        os.fsync(fd)
        os.close(fd)
        fd = -1
        tmp.replace(target)
        fsync_dir(out_dir)
    except BaseException as exc:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc is not source.error:  # the disk, not the data's source
            raise _cannot_write(out_dir, exc) from exc
        raise
    return target, sink.size, sink.hash.hexdigest()


def _cannot_write(out_dir: Path, exc: OSError) -> ExportError:
    why = exc.strerror or type(exc).__name__
    msg = f"cannot write the bundle into {out_dir}: {why}. Fix: choose a writable --out directory"
    return ExportError(msg)


__all__ = ["seal_to_file"]
