"""Act only on regular files and real directories inside the store (P8: deletion never leaves it).

Every deletion of the store (crypto-shredding, ``sessions delete``, ``purge``, ``delete-last``,
the budget and retention, cuts, the study's ``after_export = "delete"``) goes through a
:class:`StoreDir`: a directory held open by its descriptor.  The sessions folder is opened as
configured (``OPTIN_HOME`` may live on another disk, reached through a link the volunteer made);
everything *inside* it is opened relative to that descriptor and never followed:

* a session directory is opened with ``O_DIRECTORY | O_NOFOLLOW``;
* entries are listed with ``lstat`` (``fstatat`` without following links);
* a file is opened with ``O_NOFOLLOW | O_NONBLOCK`` (a FIFO or a device never blocks nor
  wakes up) and kept only if ``fstat`` says it is a regular file;
* unlink, rmdir and rename act relative to the directory's descriptor, so a folder swapped for
  a link after it was opened is not the one acted on.

A symbolic link, FIFO, socket, device or folder where a session folder, a segment, ``meta.json``
or ``review.json`` should be is *refused*: never opened, followed or removed.  The caller reports
it (:class:`UnsafeEntry`, a :class:`~agent.errors.StoreError`) with a message that names the path,
what it is and the fix; a deletion the volunteer asked for says what was not deleted and why.

Where the platform cannot act relative to a directory descriptor (Windows), the same checks are
made by path with ``lstat`` just before each step: the same refusals, with a race window that
the descriptors close on Linux and macOS.

Nothing here reads content: names, kinds, sizes and link targets (paths) only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shlex
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from agent.backends import platform_calls
from agent.errors import NotFound, StoreError, UsageError
from agent.untrusted_text import visible

#: What a session folder may be called (:func:`check_session_id` also refuses ``..``).
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
_REPARSE_POINT = getattr(stat, "FILE_ATTRIBUTE_REPARSE_POINT", 0x400)

#: Whether directories are held open and acted in by descriptor (Linux, macOS, the BSDs).
#: Elsewhere (Windows) every step is checked by path with ``lstat`` instead.
DIR_FD = (
    os.name == "posix"
    and bool(_NOFOLLOW)
    and bool(_DIRECTORY)
    and {os.open, os.stat, os.unlink, os.rmdir, os.rename, os.readlink}
    <= os.supports_dir_fd  # rename: replace too
    and os.scandir in os.supports_fd
)

#: Whether a session folder has a writer lock (an exclusive ``flock`` on its directory, POSIX).
#: Where it has none (Windows), whether a session's writer is alive cannot be told.
WRITER_LOCK = sys.platform != "win32"

#: Expected kinds, as messages name them.
A_FILE = "a regular file"
A_SESSION = "a session folder"


def check_session_id(session_id: str) -> None:
    """:raises UsageError: ``session_id`` is not a plain session id (path separators, ``..``)."""
    if not SESSION_ID.fullmatch(session_id) or ".." in session_id:
        msg = (
            f"{session_id!r} is not a session id; ids look like 20261127T213000Z-1a2b3c4d. "
            "Fix: run: optin sessions"
        )
        raise UsageError(msg)


def not_found(sessions: Path, session_id: str) -> NotFound:
    """The error for a session that is not in the sessions folder ``sessions``, with the fix."""
    msg = f"no session {session_id!r} in {sessions}. Fix: run: optin sessions (lists the ids)"
    return NotFound(msg)


def open_session(sessions: Path, session_id: str, *, refused: str) -> tuple[StoreDir, StoreDir]:
    """The sessions folder ``sessions`` and the folder of ``session_id`` in it, both held open (the
    caller closes both: ``with root, folder:``); the session's folder is never reached through a link.

    :param refused: what was not done when the session's folder is refused (``session X was not cut``).
    :raises UsageError: ``session_id`` is not a session id.
    :raises NotFound: there is no such session.
    :raises UnsafeEntry: a link, file, FIFO... stands where its folder should be.
    """
    check_session_id(session_id)
    root = StoreDir.open_root(sessions)
    if root is None:
        raise not_found(sessions, session_id)
    try:
        try:
            return root, root.open_dir(session_id)
        except FileNotFoundError:
            raise not_found(sessions, session_id) from None
        except UnsafeEntry as exc:
            raise exc.with_lead(refused) from None
    except BaseException:
        root.close()
        raise


def kind_of(st: os.stat_result) -> str:
    """What an ``lstat`` result is, in words (``symbolic link``, ``FIFO``, ``regular file``...)."""
    mode = st.st_mode
    if stat.S_ISLNK(mode) or (getattr(st, "st_file_attributes", 0) & _REPARSE_POINT):
        return "symbolic link"
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return name
    return "file of an unknown type"


def is_plain_file(st: os.stat_result) -> bool:
    """A regular file that is not a link (nor a Windows reparse point)."""
    return stat.S_ISREG(st.st_mode) and not getattr(st, "st_file_attributes", 0) & _REPARSE_POINT


def is_plain_dir(st: os.stat_result) -> bool:
    """A real directory: not a link to one (nor a Windows junction)."""
    return stat.S_ISDIR(st.st_mode) and not getattr(st, "st_file_attributes", 0) & _REPARSE_POINT


def is_real_dir(path: Path) -> bool:
    """``path`` is a real directory (``lstat``: a link to a directory is not one)."""
    try:
        return is_plain_dir(os.lstat(path))
    except OSError:
        return False


@dataclass(frozen=True)
class Refused:
    """An entry of the store that optin would not act on, and why (no content: paths and kinds).

    :ivar path: where it is.
    :ivar kind: what it is (:func:`kind_of`), e.g. ``symbolic link``.
    :ivar expected: what optin keeps there, e.g. ``a regular file``.
    :ivar target: where a link points (its text, read with ``readlink``, never followed).
    :ivar names: for a regular file that has other names (hard links), how many it has.
    """

    path: str
    kind: str
    expected: str
    target: str | None = None
    names: int = 1

    @property
    def message(self) -> str:
        """One sentence: the path, what it is, and the fix."""
        shown = visible(self.path, limit=300)
        quoted = shlex.quote(shown)
        if self.names > 1:
            return (
                f"{shown} has {self.names} names (hard links): shredding it would change the same bytes "
                "under its other names too, which may be outside optin's store. Fix: find them "
                f"(find / -xdev -samefile {quoted}) and remove the names that are not optin's, or remove "
                f"this one yourself (rm {quoted}); then run the command again"
            )
        if self.kind == "symbolic link":
            to = f" (to {visible(self.target, limit=300)})" if self.target is not None else ""
            return (
                f"{shown} is a symbolic link{to} where optin keeps {self.expected}; optin never follows "
                f"links in its store, so nothing it points to was touched. Fix: look at it (ls -l {quoted}); "
                "if it points to optin data you moved, move that back in place of the link, otherwise "
                f"remove the link (rm {quoted}); then run the command again"
            )
        remove = f"rm -r {quoted}" if self.kind == "folder" else f"rm {quoted}"
        return (
            f"{shown} is a {self.kind} where optin keeps {self.expected}; optin never opens or removes it. "
            f"Fix: move it out of optin's store, or remove it yourself ({remove}) if it is not needed; "
            "then run the command again"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with the message)."""
        return {
            "path": self.path,
            "kind": self.kind,
            "expected": self.expected,
            "target": self.target,
            "names": self.names,
            "message": self.message,
        }


class UnsafeEntry(StoreError):
    """Entries of the store that are not regular files or real folders were refused, never followed.

    :ivar refused: each refused entry (path, kind, fix).
    :ivar partial: what the operation did do before it reported the refusals (e.g. the sessions it
        deleted), for callers that print it; None when it did nothing.
    """

    def __init__(
        self,
        refused: Sequence[Refused],
        *,
        lead: str = "",
        partial: object = None,
        notes: Sequence[str] | None = None,
    ) -> None:
        self.refused = tuple(refused)
        self.lead = lead
        self.partial = partial
        self.notes = tuple(notes) if notes is not None else tuple(r.message for r in self.refused)
        if not lead:
            text = "\n".join(self.notes)
        elif len(self.notes) == 1:
            text = f"{lead}: {self.notes[0]}"
        else:
            text = f"{lead}:" + "".join(f"\n- {note}" for note in self.notes)
        super().__init__(text)

    def with_lead(self, lead: str, *, partial: object = None) -> UnsafeEntry:
        """The same refusals, said in the caller's terms (``session X was not deleted``)."""
        return UnsafeEntry(
            self.refused,
            lead=lead,
            partial=partial if partial is not None else self.partial,
            notes=self.notes,
        )

    @classmethod
    def gather(
        cls, found: Iterable[Refused | UnsafeEntry], *, lead: str, partial: object = None
    ) -> UnsafeEntry:
        """One report of several refusals and refused operations (each keeps its own words)."""
        refused: list[Refused] = []
        notes: list[str] = []
        for item in found:
            if isinstance(item, UnsafeEntry):
                refused.extend(item.refused)
                notes.append(str(item))
            else:
                refused.append(item)
                notes.append(item.message)
        return cls(refused, lead=lead, partial=partial, notes=notes)


def refusal(path: Path | str, st: os.stat_result, expected: str) -> Refused:
    """A :class:`Refused` for the entry ``path`` whose ``lstat`` is ``st``."""
    target = None
    if stat.S_ISLNK(st.st_mode):
        with contextlib.suppress(OSError):
            target = str(Path(path).readlink())
    names = st.st_nlink if is_plain_file(st) and st.st_nlink > 1 else 1
    return Refused(str(path), kind_of(st), expected, target, names)


_Held = TypeVar("_Held", bound="_Holds")


class _Holds:
    """What holds a descriptor: ``with`` closes it, and so does being collected."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Held) -> _Held:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class StoreDir(_Holds):
    """A directory of the store, held open without following links; every step is relative to it.

    Open the sessions folder with :meth:`open` (``follow=True``: the configured root), a session
    inside it with :meth:`open_dir`.  Close it (or use ``with``) to release the descriptor and the
    writer lock :meth:`lock` took.
    """

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self.fd = fd

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, follow: bool = False, expected: str = A_SESSION) -> StoreDir:
        """Open the directory ``path``; unless ``follow``, its last component must not be a link.

        :raises FileNotFoundError: there is nothing at ``path``.
        :raises UnsafeEntry: something that is not a real directory is there.
        """
        if DIR_FD:
            flags = os.O_RDONLY | _DIRECTORY | _CLOEXEC | (0 if follow else _NOFOLLOW)
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                raise
            except OSError as exc:
                raise cls._refuse_path(path, expected, exc) from None
            st = os.fstat(fd)
            if not stat.S_ISDIR(st.st_mode):  # O_DIRECTORY makes this impossible; be sure anyway
                os.close(fd)
                raise UnsafeEntry([Refused(str(path), kind_of(st), expected)])
            return cls(path, fd)
        st = path.stat() if follow else path.lstat()
        if not is_plain_dir(st):
            raise UnsafeEntry([refusal(path, st, expected)])
        return cls(path, None)

    @staticmethod
    def _refuse_path(path: Path, expected: str, exc: OSError) -> OSError | UnsafeEntry:
        try:
            st = os.lstat(path)
        except OSError:
            return exc
        return exc if is_plain_dir(st) else UnsafeEntry([refusal(path, st, expected)])

    @classmethod
    def open_root(cls, path: Path) -> StoreDir | None:
        """The store's root (the sessions folder) as configured, or None when it does not exist yet."""
        try:
            return cls.open(path, follow=True, expected="the sessions folder")
        except FileNotFoundError:
            return None

    def open_dir(self, name: str, *, expected: str = A_SESSION) -> StoreDir:
        """The directory ``name`` inside this one, never through a link.

        :raises FileNotFoundError: there is no ``name``.
        :raises UnsafeEntry: ``name`` is a link, a file, a FIFO...
        """
        _check_name(name)
        if self.fd is None:
            return StoreDir.open(self.path / name, expected=expected)
        try:
            fd = os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            raise
        except OSError as exc:
            st = self.lstat(name)
            if st is None or is_plain_dir(st):
                raise exc from None
            raise UnsafeEntry([self.refusal(name, st, expected)]) from None
        return StoreDir(self.path / name, fd)

    # --- looking --------------------------------------------------------------------------------

    def lstat(self, name: str) -> os.stat_result | None:
        """``lstat`` of ``name`` (a link is described, not followed); None when there is none."""
        _check_name(name)
        try:
            if self.fd is not None:
                return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
            return os.lstat(self.path / name)
        except FileNotFoundError:
            return None

    def entries(self) -> list[tuple[str, os.stat_result]]:
        """Every entry's name and ``lstat``, sorted by name (entries that vanish meanwhile are left out)."""
        out: list[tuple[str, os.stat_result]] = []
        with os.scandir(self.fd if self.fd is not None else self.path) as it:
            for entry in it:
                with contextlib.suppress(FileNotFoundError):
                    out.append((entry.name, entry.stat(follow_symlinks=False)))
        return sorted(out, key=lambda item: item[0])

    def refusal(self, name: str, st: os.stat_result, expected: str = A_FILE) -> Refused:
        """A :class:`Refused` for the entry ``name`` (``st`` its ``lstat``)."""
        if self.fd is not None and stat.S_ISLNK(st.st_mode):
            target = None
            with contextlib.suppress(OSError):
                target = os.readlink(name, dir_fd=self.fd)
            return Refused(str(self.path / name), kind_of(st), expected, target)
        return refusal(self.path / name, st, expected)

    def dirs(self, pattern: re.Pattern[str] = SESSION_ID) -> tuple[list[str], list[Refused]]:
        """Names of the real directories that ``pattern`` matches, and what else bears such a name.

        A link to a directory is refused (listed in the second list), never taken for a session.
        """
        names: list[str] = []
        refused: list[Refused] = []
        for name, st in self.entries():
            if not pattern.fullmatch(name):
                continue
            if is_plain_dir(st):
                names.append(name)
            else:
                refused.append(self.refusal(name, st, A_SESSION))
        return names, refused

    # --- files ----------------------------------------------------------------------------------

    def _plain_file(self, name: str) -> os.stat_result:
        """``lstat`` of ``name``, which must be a regular file.

        :raises FileNotFoundError: there is no ``name``.
        :raises UnsafeEntry: ``name`` is not a regular file.
        """
        st = self.lstat(name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(self.path / name))
        if not is_plain_file(st):
            raise UnsafeEntry([self.refusal(name, st)])
        return st

    def open_file(self, name: str, flags: int = os.O_RDONLY) -> tuple[int, os.stat_result]:
        """Open the regular file ``name`` (never a link, FIFO or device); its descriptor and ``fstat``.

        :raises FileNotFoundError: there is no ``name``.
        :raises UnsafeEntry: ``name`` is not a regular file.
        """
        self._plain_file(name)
        full = flags | _NOFOLLOW | _NONBLOCK | _CLOEXEC | _BINARY
        try:
            if self.fd is not None:
                fd = os.open(name, full, dir_fd=self.fd)
            else:
                fd = os.open(self.path / name, full)
        except FileNotFoundError:
            raise
        except OSError as exc:
            now = self.lstat(name)
            if now is None or is_plain_file(now):
                raise exc from None
            raise UnsafeEntry([self.refusal(name, now)]) from None
        try:
            opened = os.fstat(fd)
        except OSError:
            os.close(fd)
            raise
        if not stat.S_ISREG(opened.st_mode):  # replaced between the lstat and the open
            os.close(fd)
            raise UnsafeEntry([Refused(str(self.path / name), kind_of(opened), A_FILE)])
        return fd, opened

    def read_file(self, name: str, *, limit: int | None = None) -> bytes:
        """The bytes of the regular file ``name`` (at most ``limit``; its real size otherwise).

        :raises FileNotFoundError: there is no ``name``.
        :raises UnsafeEntry: ``name`` is not a regular file.
        """
        fd, st = self.open_file(name)
        try:
            want = st.st_size if limit is None else min(st.st_size, limit)
            chunks: list[bytes] = []
            got = 0
            while got < want:
                chunk = os.read(fd, min(want - got, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def create_file(self, name: str) -> int:
        """Create ``name`` exclusively (mode 0600, never through a link) for writing; its descriptor."""
        _check_name(name)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY
        if self.fd is not None:
            return os.open(name, flags, 0o600, dir_fd=self.fd)
        return os.open(self.path / name, flags, 0o600)

    def write_file(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically and durably with ``data`` (mode 0600), as
        :func:`agent.paths.write_private_file` does, but relative to this directory: the temp
        file is created exclusively (never through a link) and renamed over ``name`` (a rename
        replaces a link, never what it points to)."""
        tmp = f".{name}.tmp-{secrets.token_hex(4)}"
        fd = self.create_file(tmp)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            self.rename(tmp, name, replace=True)
        except BaseException:
            with contextlib.suppress(OSError, UnsafeEntry):
                self.unlink(tmp)
            raise
        self.fsync()

    # --- changing -------------------------------------------------------------------------------

    def unlink(self, name: str) -> None:
        """Remove the regular file ``name`` (one of its names).  A link or anything else is refused.

        :raises UnsafeEntry: ``name`` is not a regular file.
        """
        self._plain_file(name)
        if self.fd is not None:
            os.unlink(name, dir_fd=self.fd)  # unlinkat never follows the name
        else:
            (self.path / name).unlink()

    def rmdir(self, name: str) -> None:
        """Remove the empty real directory ``name``.

        :raises UnsafeEntry: ``name`` is a link or not a directory.
        """
        st = self.lstat(name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, "no such folder", str(self.path / name))
        if not is_plain_dir(st):
            raise UnsafeEntry([self.refusal(name, st, A_SESSION)])
        if self.fd is not None:
            os.rmdir(name, dir_fd=self.fd)
        else:
            (self.path / name).rmdir()

    def rename(self, src: str, dst: str, *, replace: bool = False) -> None:
        """Rename the entry ``src`` to ``dst`` in this directory (a rename never follows links)."""
        _check_name(src)
        _check_name(dst)
        if not replace and self.lstat(dst) is not None:
            raise FileExistsError(errno.EEXIST, "already exists", str(self.path / dst))
        move = os.replace if replace else os.rename
        if self.fd is not None:
            move(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        else:
            move(self.path / src, self.path / dst)

    def fsync(self) -> None:
        """Make the renames and removals in this directory durable (a no-op where it cannot be)."""
        if self.fd is not None:
            os.fsync(self.fd)

    @property
    def lockable(self) -> bool:
        """Whether this folder has a writer lock to take or ask about (held by descriptor, POSIX)."""
        return self.fd is not None and WRITER_LOCK

    def lock(self) -> None:
        """Take the session's writer lock (:func:`lock_dir`, as :func:`agent.store.writer.lock_session`).

        Held until :meth:`close`.  A no-op where there is no such lock (Windows).

        :raises StoreError: another process holds it (its writer is alive).
        """
        if self.fd is not None and WRITER_LOCK:
            lock_dir(self.fd, self.path)

    def writer_alive(self) -> bool | None:
        """Whether a writer holds this session's lock now; None where this cannot be told."""
        if self.fd is None or not WRITER_LOCK:
            return None
        try:
            probe = os.open(".", os.O_RDONLY | _DIRECTORY | _CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        try:
            lock_dir(probe, self.path)
        except StoreError:
            return True
        finally:
            os.close(probe)  # also drops a lock just taken
        return False

    def close(self) -> None:
        """Release the descriptor (and with it a lock :meth:`lock` took)."""
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)


def lock_dir(fd: int, path: Path) -> None:
    """Take the writer lock of the session directory open as ``fd`` (an exclusive ``flock``; POSIX:
    :func:`agent.backends.platform_calls.try_lock`).

    Held until ``fd`` is closed.  Callers check :data:`WRITER_LOCK` first.

    :raises StoreError: another process holds it (its writer is alive).
    """
    try:
        taken = platform_calls.try_lock(fd)
    except OSError:
        taken = False
    if not taken:
        msg = f"session directory {path} is held by another writer"
        raise StoreError(msg)


class Sessions(_Holds):
    """The sessions folder held open (:meth:`StoreDir.open_root`), with the real session folders in
    it and what else bears a session's name (:meth:`StoreDir.dirs`); empty when it does not exist.

    Use it with ``with``; open a listed session with :meth:`open_dir`.
    """

    def __init__(self, path: Path, pattern: re.Pattern[str] = SESSION_ID) -> None:
        self.path = path
        self.root = StoreDir.open_root(path)
        self.names: list[str] = []
        self.refused: list[Refused] = []
        if self.root is not None:
            self.names, self.refused = self.root.dirs(pattern)

    def open_dir(self, name: str) -> StoreDir:
        """The listed session folder ``name`` (:meth:`StoreDir.open_dir`)."""
        if self.root is None:
            raise FileNotFoundError(errno.ENOENT, "no sessions folder", str(self.path))
        return self.root.open_dir(name)

    def close(self) -> None:
        """Release the sessions folder's descriptor."""
        if self.root is not None:
            self.root.close()


def _check_name(name: str) -> None:
    """A single name inside a directory: never a path, ``.`` or ``..`` (callers pass listed names)."""
    if not name or name in (".", "..") or "/" in name or (os.sep != "/" and os.sep in name) or "\0" in name:
        msg = f"{visible(name)!r} is not a name inside a store folder"
        raise ValueError(msg)


def session_dirs(root: Path, pattern: re.Pattern[str] = SESSION_ID) -> tuple[list[Path], list[Refused]]:
    """The real session directories under ``root``, sorted, and what else bears a session's name.

    For listings that work by path (``optin sessions``, crash recovery): a link to a directory is
    in the second list, never in the first.  A missing ``root`` is an empty store.
    """
    with Sessions(root, pattern) as store:
        return [root / n for n in store.names], store.refused


def refusals_text(refused: Iterable[Refused]) -> str:
    """The refusals' messages, one per line (for logs and summaries)."""
    return "\n".join(r.message for r in refused)


__all__ = [
    "A_FILE",
    "A_SESSION",
    "DIR_FD",
    "SESSION_ID",
    "WRITER_LOCK",
    "Refused",
    "Sessions",
    "StoreDir",
    "UnsafeEntry",
    "check_session_id",
    "is_plain_dir",
    "is_plain_file",
    "is_real_dir",
    "kind_of",
    "lock_dir",
    "not_found",
    "open_session",
    "refusal",
    "refusals_text",
    "session_dirs",
]
