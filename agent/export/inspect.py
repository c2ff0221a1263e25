"""Collector side: open, check and unpack an export bundle (``optin inspect`` / ``optin unpack``).

docs/export-format.md ("Limits", "What a reader recomputes", "Reading") is the contract.  A
bundle comes from outside — anyone who has the study file can make one — so every layer is
bounded by the file's real size before the next layer sees it:

* the path must be a regular file, and at most its size at open is read (not ``/dev/zero``);
* the age header is counted (stanzas, bytes) before pyrage sees it, and the plaintext may not
  outgrow the file;
* the tar is read without extracting anything, each header checked before its data: regular
  files and single small pax headers only, no sparse members, names from the spec's grammar
  (so never deep), under the one ``<session-id>/`` the manifest names;
* ``manifest.json`` and ``manifest.sig`` come first; the ``schema`` is known, ``manifest.sig``
  verifies with ``volunteer.signing_key`` and, from ``optin-bundle/2`` on, ``volunteer.id`` is the id
  of that key (``optin-bundle/1`` ids cannot be checked: :attr:`Bundle.id_verified` is False);
* every other member is listed once in ``members``, with the size its header declares (checked
  before its data is read) and the same SHA-256; no listed member is missing;
* every count and summary the manifest states is recomputed from the members
  (agent/export/counts.py, the writer's own functions), and what steps and frames point at exists;
* ``optin-bundle/3``: ``tasks.jsonl`` is the third member, and the task list, ``tasks.jsonl`` and
  every step's task are recomputed from the members and the consent terms (task_list.py).

Failures are :class:`~agent.errors.ExportError` (exit 1) that name the bundle, the member and the
check, never a member's content, with untrusted text shown by :func:`~agent.untrusted_text.visible`
and cut short; a wrong identity or a damaged age file gets one opaque answer, as age gives.  Each
refusal of a bundle carries its code (``reason``, ``stage``: docs/dataset.md "Reason codes",
agent/export/reasons.py) for a dataset build's quarantine; a path that is no regular file and an
unpack that cannot write refuse no bundle, and carry none.
Identity files are read by :func:`load_identity_file`, whose errors never contain key text.

The parts: this module reads identity files, opens the file and its age layer (pyrage), and
unpacks; :mod:`agent.export.bundle_checks` checks the decrypted tar member by member
(:func:`check_tar`, :class:`Bundle`), and :mod:`agent.export.bundle_report` is the report
(:func:`summarise`, :func:`render_summary`).  Their public names are importable from here too.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, Protocol

from agent.backends import platform_calls
from agent.errors import ExportError, UsageError
from agent.export.bundle_checks import (
    HOSTILE_FIX,
    MANIFEST,
    MAX_MANIFEST_SIZE,
    MAX_MEMBER_SIZE,
    MAX_PAX_HEADER,
    MAX_PAX_RECORDS,
    REFETCH_FIX,
    SCHEMA,
    SCHEMAS,
    SIGNATURE,
    V1,
    Bundle,
    check_tar,
    shown_path,
)
from agent.export.bundle_report import render_summary, summarise
from agent.export.reasons import NOT_A_REFUSAL

#: The age header's limits, checked before pyrage sees it.
MAX_AGE_HEADER = 16 << 10
MAX_STANZAS = 64
#: Largest file :func:`load_identity_file` reads (an identity file is a few hundred bytes).
MAX_IDENTITY_FILE = 1 << 20

_AGE_MAGIC = b"age-encryption.org/v1\n"
_AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_IDENTITY_FIX = "Fix: give the study's age identity file (the AGE-SECRET-KEY-1... lines age-keygen wrote)"
_BUNDLE_FIX = "Fix: give the path of the <session-id>.optin.tar.age file optin export wrote"
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


class Readable(Protocol):
    """What :func:`open_bundle_stream` reads: ``read(n)`` gives at most ``n`` bytes, ``b""`` at the end
    (a file, an object store's body, a hashing tee around either)."""

    def read(self, n: int, /) -> bytes: ...


# --- identity files ---------------------------------------------------------------------------------


def load_identity_file(path: Path) -> list[Any]:
    """The age X25519 identities in ``path`` (``AGE-SECRET-KEY-1...`` lines, ``#`` comments).

    :raises UsageError: the file is missing or unreadable, holds no identity, or a
        line is not one; the message names the file and line, never the key text.
    """
    blob = _read_identity_bytes(path)
    _refuse_other_key_files(path, blob)
    identities = []
    for number, raw in enumerate(blob.split(b"\n"), start=1):
        line = raw.strip()
        if line and not line.startswith(b"#"):
            identities.append(_parse_identity_line(path, number, line))
    if not identities:
        msg = f"identity file {path} holds no age identity (no AGE-SECRET-KEY-1... line). {_IDENTITY_FIX}"
        raise UsageError(msg)
    return identities


def identities_from_text(lines: Sequence[str]) -> list[Any]:
    """Identities :func:`load_identity_file` already read, from their text (a worker process gets
    them as text: pyrage's objects do not pickle)."""
    from pyrage import x25519

    return [x25519.Identity.from_str(line) for line in lines]


def _read_identity_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            blob = f.read(MAX_IDENTITY_FILE + 1)
    except FileNotFoundError:
        msg = f"identity file {path} does not exist. {_IDENTITY_FIX}"
        raise UsageError(msg) from None
    except OSError as exc:
        msg = f"cannot read identity file {path}: {exc.strerror or exc.__class__.__name__}. {_IDENTITY_FIX}"
        raise UsageError(msg) from None
    if len(blob) > MAX_IDENTITY_FILE:
        msg = f"{path} is too large to be an identity file (over {MAX_IDENTITY_FILE} bytes). {_IDENTITY_FIX}"
        raise UsageError(msg)
    return blob


def _refuse_other_key_files(path: Path, blob: bytes) -> None:
    """Name the usual wrong files: an age-encrypted identity, or the volunteer's own optin key."""
    if blob.startswith((_AGE_MAGIC, _AGE_ARMOR)):
        msg = (
            f"identity file {path} is itself age-encrypted (passphrase-protected). "
            "Fix: decrypt it first with age -d, or give the plain identity file"
        )
        raise UsageError(msg)
    if blob.startswith(b"optin-sec"):
        msg = (
            f"{path} is an optin volunteer identity, not a study identity: bundles are encrypted to the "
            f"study. {_IDENTITY_FIX}"
        )
        raise UsageError(msg)


def _parse_identity_line(path: Path, number: int, line: bytes) -> Any:
    """One pyrage X25519 identity; the error names the line, never its text."""
    from pyrage import x25519

    where = f"identity file {path}, line {number}"
    upper = line.upper()
    if upper.startswith(b"AGE-PLUGIN-"):
        msg = (
            f"{where}: plugin identities are not supported. Fix: use an X25519 identity (AGE-SECRET-KEY-1...)"
        )
        raise UsageError(msg)
    if line.startswith(b"age1"):
        msg = f"{where} is a recipient (public key), not an identity. {_IDENTITY_FIX}"
        raise UsageError(msg)
    if not upper.startswith(b"AGE-SECRET-KEY-1"):
        msg = f"{where} is not an age identity (expected AGE-SECRET-KEY-1... or a # comment). {_IDENTITY_FIX}"
        raise UsageError(msg)
    try:
        return x25519.Identity.from_str(line.decode("ascii"))
    except Exception:  # pyrage's IdentityError, or a UnicodeDecodeError; their text may quote the key
        msg = (
            f"{where} is not a valid age identity (damaged or cut short). Fix: copy it again from its source"
        )
        raise UsageError(msg) from None


# --- the file and its age layer ---------------------------------------------------------------------


def open_bundle(path: Path, identities: list[Any], *, identity_file: Path | None = None) -> Bundle:
    """Decrypt ``path`` in memory and check everything the spec asks of a reader.

    Memory is about the file's size (the plaintext, held once; members are views of it), time is
    linear in it; see docs/export-format.md, Limits.

    :param identity_file: where ``identities`` came from, for the wrong-key message.
    :raises UsageError: no identity was given.
    :raises ExportError: the file cannot be read or decrypted, or any check fails.
    """
    if not identities:
        msg = f"no identity to decrypt {shown_path(path)} with. {_IDENTITY_FIX}"
        raise UsageError(msg)
    with _RegularFile(path) as (f, size):
        return open_bundle_stream(f, size, path, identities, identity_file=identity_file)


def open_bundle_stream(
    f: Readable, size: int, path: Path, identities: list[Any], *, identity_file: Path | None = None
) -> Bundle:
    """:func:`open_bundle` on ``size`` bytes read from ``f`` (an object store's stream, a local
    file): exactly the same checks, in the same order, bounded by ``size`` (never more is read).

    :param path: how the bundle is named in messages and in the result (for an object in a
        bucket: ``Path(bucket) / key``).
    :raises UsageError: no identity was given.
    :raises ExportError: it cannot be decrypted, or any check fails.
    """
    if not identities:
        msg = f"no identity to decrypt {shown_path(path)} with. {_IDENTITY_FIX}"
        raise UsageError(msg)
    head = f.read(min(size, MAX_AGE_HEADER))
    _check_age_header(path, head, size)
    plaintext = _decrypt(path, _Replay(head, f, size), size, identities, identity_file)
    return check_tar(plaintext, path)


class _RegularFile:
    """``with _RegularFile(path) as (f, size)``: the open file and its size, or an ExportError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int]:
        where = shown_path(self.path)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags)  # O_NONBLOCK: opening a FIFO does not wait for a writer
        except FileNotFoundError:
            msg = f"bundle {where} does not exist. {_BUNDLE_FIX}"
            raise ExportError(msg, reason=NOT_A_REFUSAL) from None
        except OSError as exc:
            msg = f"cannot read bundle {where}: {exc.strerror or exc.__class__.__name__}"
            raise ExportError(msg, reason=NOT_A_REFUSAL) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
            msg = f"bundle {where} is not a regular file ({kind}): refusing to read it. {_BUNDLE_FIX}"
            raise ExportError(msg, reason=NOT_A_REFUSAL)
        self.file = os.fdopen(fd, "rb")
        return self.file, st.st_size

    def __exit__(self, *exc: object) -> None:
        if self.file is not None:
            self.file.close()


def _check_age_header(path: Path, head: bytes, size: int) -> None:
    """Refuse what is not binary age, or whose header is over the limits, before pyrage parses it.

    The header is the text up to and including the line that starts with ``---``; each stanza
    starts with a ``-> `` line (its body lines are base64, which has no ``-``).
    """
    where = shown_path(path)
    if head.startswith(_AGE_ARMOR):
        msg = f"{where} is an ASCII-armored age file; optin bundles are binary. {_BUNDLE_FIX}"
        raise ExportError(msg, reason="age_armored")
    if not head.startswith(_AGE_MAGIC):
        hint = " (it is a tar: already decrypted?)" if head[257:262] == b"ustar" else ""
        msg = (
            f"{where} is not an age file{hint}: it does not start with 'age-encryption.org/v1'. {_BUNDLE_FIX}"
        )
        raise ExportError(msg, reason="not_age")
    end = head.find(b"\n---")
    header = head if end < 0 else head[: end + 1]
    stanzas = header.count(b"\n-> ")
    if stanzas > MAX_STANZAS:
        msg = (
            f"{where} has an age header with {'' if end >= 0 else 'at least '}{stanzas} recipient stanzas; "
            f"a bundle has at most {MAX_STANZAS}. Refused before decryption. {HOSTILE_FIX}"
        )
        raise ExportError(msg, reason="age_header_limits")
    if end < 0 and size > len(head):
        msg = (
            f"{where} has an age header longer than {MAX_AGE_HEADER} bytes; a bundle's is shorter. "
            f"Refused before decryption. {HOSTILE_FIX}"
        )
        raise ExportError(msg, reason="age_header_limits")


class _Replay:
    """A reader for pyrage: the header bytes already read, then the rest of the file up to ``size``."""

    def __init__(self, head: bytes, f: Readable, size: int) -> None:
        self.head = head
        self.file = f
        self.left = size - len(head)

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out = self.head if n is None or n < 0 else self.head[:n]
            self.head = self.head[len(out) :]
            return out
        if self.left <= 0:
            return b""
        out = self.file.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(out)
        return out


class _PlaintextTooLarge(Exception):
    pass


class _Plaintext(io.BytesIO):
    """Where pyrage writes the plaintext: in memory, never more than ``cap`` bytes."""

    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def write(self, data: Any) -> int:
        if self.tell() + len(data) > self.cap:
            raise _PlaintextTooLarge
        return super().write(data)


def _decrypt(
    path: Path, source: _Replay, size: int, identities: list[Any], identity_file: Path | None
) -> bytes:
    """The plaintext (at most ``size`` bytes); pyrage's own error text never reaches the message."""
    import pyrage

    out = _Plaintext(size)
    try:
        pyrage.decrypt_io(source, out, identities)
        return out.getvalue()
    except Exception as exc:  # pyrage.DecryptError, OSError, and anything else its parser raises
        answer = str(exc).lower()
    if "no matching keys" in answer:
        who = f"the identity in {identity_file}" if identity_file else "the given identity"
        msg = (
            f"cannot decrypt {shown_path(path)} with {who}: it is not one of the bundle's recipients "
            "(wrong study key?). Fix: use the identity of the study the session was exported to"
        )
        raise ExportError(msg, reason="not_a_recipient")
    msg = f"cannot decrypt {shown_path(path)}: wrong key or damaged file. {REFETCH_FIX}"
    raise ExportError(msg, reason="decrypt_failed")


# --- unpacking --------------------------------------------------------------------------------------

_O_CREATE = (
    os.O_CREAT
    | os.O_EXCL
    | os.O_WRONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def unpack(bundle: Bundle, out_dir: Path) -> Path:
    """Write every member of a checked bundle under ``out_dir/<session-id>/``; return that directory.

    Directories are created (0755) by this call, files with ``O_EXCL | O_NOFOLLOW``
    (0644), so nothing is written through a symbolic link or over a file.  On a
    failure half-way, what was written is removed.

    :raises UsageError: ``out_dir`` is not a usable directory, or ``<session-id>``
        already exists there and is not an empty directory of this user.
    :raises ExportError: ``<session-id>`` is a symbolic link, or writing failed.
    """
    root = out_dir / bundle.session
    made: list[Path] = [root] if _make_session_dir(out_dir, root) else []
    written: list[Path] = []
    try:
        for name, blob in bundle.files():
            _write_member(root, name, blob, made, written)
    except BaseException as exc:
        _remove(written, made)
        if isinstance(exc, OSError):
            msg = (
                f"cannot unpack into {root}: {exc.strerror or exc.__class__.__name__}; nothing was left "
                "there. Fix: free space or choose another output directory"
            )
            raise ExportError(msg, reason=NOT_A_REFUSAL) from exc
        raise
    return root


def _make_session_dir(out_dir: Path, root: Path) -> bool:
    """Create ``root`` (True), or accept an empty directory of this user already there (False)."""
    fix = "Fix: choose another output directory"
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"the output directory {out_dir} is not a directory. {fix}"
        raise UsageError(msg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o755)
    except FileExistsError:
        _check_existing_session_dir(root)
        return False
    except OSError as exc:
        msg = f"cannot create {root}: {exc.strerror or exc.__class__.__name__}. {fix}"
        raise UsageError(msg) from None
    return True


def _check_existing_session_dir(root: Path) -> None:
    """Refuse a symbolic link, a file, a non-empty directory or another user's directory at ``root``."""
    fix = "Fix: remove it, or choose another output directory"
    try:
        st = root.lstat()
        if stat.S_ISLNK(st.st_mode):
            msg = f"{root} is a symbolic link; refusing to write through it. {fix}"
            raise ExportError(msg, reason=NOT_A_REFUSAL)
        empty = stat.S_ISDIR(st.st_mode) and not any(root.iterdir())
    except OSError as exc:
        msg = f"cannot use {root}: {exc.strerror or exc.__class__.__name__}. {fix}"
        raise UsageError(msg) from None
    if not stat.S_ISDIR(st.st_mode):
        msg = f"{root} exists and is not a directory. {fix}"
        raise UsageError(msg)
    if not empty:
        msg = f"{root} already exists and is not empty. {fix}"
        raise UsageError(msg)
    uid = platform_calls.user_id()
    if uid is not None and st.st_uid != uid:
        msg = f"{root} belongs to another user. {fix}"
        raise UsageError(msg)


def _write_member(
    root: Path, name: str, blob: bytes | memoryview, made: list[Path], written: list[Path]
) -> None:
    """Create the member's directories (once each) and the member itself, all inside ``root``."""
    parent = root
    for part in name.split("/")[:-1]:
        parent = parent / part
        if parent not in made:
            _check_inside(root, parent)
            parent.mkdir(mode=0o755)
            made.append(parent)
    target = root / name
    _check_inside(root, target)
    fd = os.open(target, _O_CREATE, 0o644)
    written.append(target)
    _write_all(fd, blob)


def _check_inside(root: Path, target: Path) -> None:
    """Belt and braces: ``target``, symbolic links resolved, is inside ``root``."""
    if not target.resolve().is_relative_to(root.resolve()):
        msg = f"refusing to write {target}: it resolves outside {root}"
        raise ExportError(msg, reason=NOT_A_REFUSAL)


def _write_all(fd: int, blob: bytes | memoryview) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(blob)


def _remove(written: list[Path], made: list[Path]) -> None:
    for path in reversed(written):
        with suppress(OSError):
            path.unlink()
    for path in reversed(made):
        with suppress(OSError):
            path.rmdir()


__all__ = [
    "MANIFEST",
    "MAX_AGE_HEADER",
    "MAX_IDENTITY_FILE",
    "MAX_MANIFEST_SIZE",
    "MAX_MEMBER_SIZE",
    "MAX_PAX_HEADER",
    "MAX_PAX_RECORDS",
    "MAX_STANZAS",
    "SCHEMA",
    "SCHEMAS",
    "SIGNATURE",
    "V1",
    "Bundle",
    "Readable",
    "check_tar",
    "load_identity_file",
    "open_bundle",
    "open_bundle_stream",
    "render_summary",
    "summarise",
    "unpack",
]
