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
  verifies with ``volunteer.signing_key`` and, in ``optin-bundle/2``, ``volunteer.id`` is the id
  of that key (``optin-bundle/1`` ids cannot be checked: :attr:`Bundle.id_verified` is False);
* every other member is listed once in ``members``, with the size its header declares (checked
  before its data is read) and the same SHA-256; no listed member is missing;
* every count and summary the manifest states is recomputed from the members
  (agent/export/counts.py, the writer's own functions), and what steps and frames point at exists.

Failures are :class:`~agent.errors.ExportError` (exit 1) that name the bundle, the member and the
check, never a member's content, with untrusted text shown by :func:`~agent.untrusted_text.visible`
and cut short; a wrong identity or a damaged age file gets one opaque answer, as age gives.
Identity files are read by :func:`load_identity_file`, whose errors never contain key text.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import stat
import tarfile
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

from agent.errors import ExportError, UsageError
from agent.export.recount import (
    EVENTS,
    FRAMES,
    MEMBER,
    SHOWN,
    Members,
    Recount,
    each_line,
    json_object,
    shown,
    view,
)
from agent.store import signing
from agent.untrusted_text import visible

#: The bundle layout this optin writes, and every layout it reads.
SCHEMA = "optin-bundle/2"
V1 = "optin-bundle/1"
SCHEMAS = (SCHEMA, V1)
#: Largest member (the spec's 1 GiB).
MAX_MEMBER_SIZE = 1 << 30
#: Largest ``manifest.json`` (parsed whole, once).
MAX_MANIFEST_SIZE = 64 << 20
#: The age header's limits, checked before pyrage sees it.
MAX_AGE_HEADER = 16 << 10
MAX_STANZAS = 64
#: Largest pax extended header, and most records in one (optin writes none: its names are short).
MAX_PAX_HEADER = 1 << 10
MAX_PAX_RECORDS = 8
#: Largest file :func:`load_identity_file` reads (an identity file is a few hundred bytes).
MAX_IDENTITY_FILE = 1 << 20

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"

_AGE_MAGIC = b"age-encryption.org/v1\n"
_AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_NOT_REGULAR = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_VOLUNTEER_ID = re.compile(r"[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REFETCH = "Fix: ask the volunteer to export the session again (the file was damaged or changed after export)"
_IDENTITY_FIX = "Fix: give the study's age identity file (the AGE-SECRET-KEY-1... lines age-keygen wrote)"
_BUNDLE_FIX = "Fix: give the path of the <session-id>.optin.tar.age file optin export wrote"
_HOSTILE_FIX = (
    "Fix: do not use it: optin never writes such a file (if a volunteer sent it, ask them to export the "
    "session again)"
)
_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class Bundle:
    """An opened bundle, every check passed; nothing of it is on disk.

    :ivar members: every member but ``manifest.json`` and ``manifest.sig``, by its
        name under ``<session-id>/``, in tar order (:class:`Members`; a dict of bytes works too).
    :ivar steps_by_action: the steps counted from the step members, by action.
    :ivar id_verified: ``volunteer.id`` is the id of the key that signed the manifest
        (``optin-bundle/2``); False for ``optin-bundle/1``, whose ids nobody can check.
    """

    path: Path
    session: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    members: Mapping[str, bytes]
    steps_by_action: dict[str, int]
    id_verified: bool = True

    def files(self) -> Iterator[tuple[str, bytes | memoryview]]:
        """Every member in tar order, ``manifest.json`` and ``manifest.sig`` first (read-only bytes)."""
        yield MANIFEST, self.manifest_bytes
        yield SIGNATURE, self.signature
        for name in self.members:
            yield name, view(self.members, name)

    def size(self) -> int:
        """Bytes of every member, ``manifest.json`` and ``manifest.sig`` included."""
        sizes = (len(view(self.members, name)) for name in self.members)
        return len(self.manifest_bytes) + len(self.signature) + sum(sizes)


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
        msg = f"no identity to decrypt {_path(path)} with. {_IDENTITY_FIX}"
        raise UsageError(msg)
    with _RegularFile(path) as (f, size):
        head = f.read(min(size, MAX_AGE_HEADER))
        _check_age_header(path, head, size)
        plaintext = _decrypt(path, _Replay(head, f, size), size, identities, identity_file)
    return check_tar(plaintext, path)


def _path(path: Path) -> str:
    """A bundle's path as messages show it (the volunteer chose the file name)."""
    return visible(str(path), limit=4 * SHOWN)


class _RegularFile:
    """``with _RegularFile(path) as (f, size)``: the open file and its size, or an ExportError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None

    def __enter__(self) -> tuple[IO[bytes], int]:
        where = _path(self.path)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
        flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(self.path, flags)  # O_NONBLOCK: opening a FIFO does not wait for a writer
        except FileNotFoundError:
            msg = f"bundle {where} does not exist. {_BUNDLE_FIX}"
            raise ExportError(msg) from None
        except OSError as exc:
            msg = f"cannot read bundle {where}: {exc.strerror or exc.__class__.__name__}"
            raise ExportError(msg) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
            msg = f"bundle {where} is not a regular file ({kind}): refusing to read it. {_BUNDLE_FIX}"
            raise ExportError(msg)
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
    where = _path(path)
    if head.startswith(_AGE_ARMOR):
        msg = f"{where} is an ASCII-armored age file; optin bundles are binary. {_BUNDLE_FIX}"
        raise ExportError(msg)
    if not head.startswith(_AGE_MAGIC):
        hint = " (it is a tar: already decrypted?)" if head[257:262] == b"ustar" else ""
        msg = (
            f"{where} is not an age file{hint}: it does not start with 'age-encryption.org/v1'. {_BUNDLE_FIX}"
        )
        raise ExportError(msg)
    end = head.find(b"\n---")
    header = head if end < 0 else head[: end + 1]
    stanzas = header.count(b"\n-> ")
    if stanzas > MAX_STANZAS:
        msg = (
            f"{where} has an age header with {'' if end >= 0 else 'at least '}{stanzas} recipient stanzas; "
            f"a bundle has at most {MAX_STANZAS}. Refused before decryption. {_HOSTILE_FIX}"
        )
        raise ExportError(msg)
    if end < 0 and size > len(head):
        msg = (
            f"{where} has an age header longer than {MAX_AGE_HEADER} bytes; a bundle's is shorter. "
            f"Refused before decryption. {_HOSTILE_FIX}"
        )
        raise ExportError(msg)


class _Replay:
    """A reader for pyrage: the header bytes already read, then the rest of the file up to ``size``."""

    def __init__(self, head: bytes, f: IO[bytes], size: int) -> None:
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
        reason = str(exc).lower()
    if "no matching keys" in reason:
        who = f"the identity in {identity_file}" if identity_file else "the given identity"
        msg = (
            f"cannot decrypt {_path(path)} with {who}: it is not one of the bundle's recipients "
            "(wrong study key?). Fix: use the identity of the study the session was exported to"
        )
    else:
        msg = f"cannot decrypt {_path(path)}: wrong key or damaged file. {_REFETCH}"
    raise ExportError(msg)


# --- the tar ----------------------------------------------------------------------------------------


class _Refused(Exception):
    """A tar header the spec does not allow, found while tarfile reads it."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header reader with the spec's limits, checked before tarfile acts on a header."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            msg = "it has a global or Solaris extended header (only per-member pax headers are allowed)"
            raise _Refused(msg)
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            msg = "it has a GNU long-name header (a bundle's names are short)"
            raise _Refused(msg)
        if self.type == tarfile.GNUTYPE_SPARSE:
            msg = f"member {shown(self.name)} is a sparse file, not a regular file"
            raise _Refused(msg)
        if self.type != tarfile.XHDTYPE:
            return super()._proc_member(tar)  # type: ignore[misc]
        if self.size > MAX_PAX_HEADER:
            msg = f"it has a pax extended header of {self.size} bytes (at most {MAX_PAX_HEADER})"
            raise _Refused(msg)
        if getattr(tar, "_optin_in_pax", False):
            msg = "it has two pax extended headers in a row"
            raise _Refused(msg)
        where = tar.fileobj.tell()
        _check_pax_records(tar.fileobj.read(self.size))
        tar.fileobj.seek(where)
        tar._optin_in_pax = True  # type: ignore[attr-defined]
        try:
            return super()._proc_member(tar)  # type: ignore[misc]
        finally:
            tar._optin_in_pax = False  # type: ignore[attr-defined]

    @staticmethod
    def _refuse_sparse(*_args: Any) -> NoReturn:
        msg = "it has a sparse member (GNU.sparse pax keys): its data is not in the file"
        raise _Refused(msg)

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse

    def _apply_pax_info(self, pax_headers: Mapping[str, str], encoding: str, errors: str) -> None:
        if any(key.startswith("GNU.sparse.") for key in pax_headers):
            self._refuse_sparse()
        super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]


_LONG_NUMBER = re.compile(rb"[0-9]{21}")


def _check_pax_records(payload: bytes) -> None:
    """Refuse a pax header that is not a sequence of ``"%d %s=%s\\n"`` records of the right lengths.

    Checked in linear time before tarfile parses it, because tarfile's parser (Python 3.11)
    backtracks: a long run of digits or a record whose length points into another costs time
    quadratic in the header's size.
    """
    if _LONG_NUMBER.search(payload):
        msg = "it has a pax extended header with a number of more than 20 digits"
        raise _Refused(msg)
    pos = records = 0
    while pos < len(payload):
        records += 1
        if records > MAX_PAX_RECORDS:
            msg = f"it has a pax extended header of more than {MAX_PAX_RECORDS} records"
            raise _Refused(msg)
        space = payload.find(b" ", pos, pos + 21)
        digits = payload[pos:space] if space > pos else b""
        end = pos + int(digits) if digits.isdigit() else pos
        record = payload[space + 1 : end]
        if (
            space < 0
            or end <= space + 1
            or end > len(payload)
            or not record.endswith(b"\n")
            or b"=" not in record[:-1]
        ):
            msg = "it has a malformed pax extended header (not length-prefixed key=value records)"
            raise _Refused(msg)
        if record.startswith(b"GNU.sparse."):
            _BoundedTarInfo._refuse_sparse()
        pos = end


def check_tar(plaintext: bytes, path: Path) -> Bundle:
    """Check a decrypted bundle's tar (``path`` is only for messages) and return it, opened.

    :raises ExportError: any check of the spec's "Reading" fails.
    """
    reader = _TarReader(path, plaintext)
    try:
        with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:", tarinfo=_BoundedTarInfo) as tar:
            while (info := tar.next()) is not None:
                reader.take(info)
                tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header; we need none
    except _Refused as exc:
        reader.refuse(str(exc), _HOSTILE_FIX)
    except (tarfile.TarError, ValueError, RecursionError):
        reader.refuse("the decrypted content is not a complete tar archive")
    return reader.finish()


class _TarReader:
    """The member-by-member checks of :func:`check_tar`, in tar order, then :meth:`finish`.

    The manifest and its signature come first, so every other member's declared
    size is known (and authenticated) before its data is read.
    """

    def __init__(self, path: Path, plaintext: bytes) -> None:
        self.path = path
        self.plaintext = plaintext
        self.top: str | None = None
        self.seen: set[str] = set()
        self.manifest: dict[str, Any] | None = None
        self.manifest_bytes = b""
        self.signature: bytes | None = None
        self.id_verified = False
        self.listed: dict[str, tuple[str, int]] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.members = Members(plaintext, self.spans)

    def refuse(self, what: str, fix: str = _REFETCH) -> NoReturn:
        msg = f"{_path(self.path)} is not a valid optin bundle: {what}. {fix}"
        raise ExportError(msg)

    def take(self, info: tarfile.TarInfo) -> None:
        """Check one member's header, then (only if it passes) read and check its data."""
        name = self._relative_name(info)
        if name in self.seen:
            self.refuse(f"member {shown(name)} appears twice in the tar")
        self.seen.add(name)
        if not 0 <= info.size <= MAX_MEMBER_SIZE:
            self.refuse(f"member {shown(name)} is {info.size} bytes, over the {MAX_MEMBER_SIZE}-byte limit")
        if self.manifest is None:
            self._take_manifest(info, name)
        elif self.signature is None:
            self._take_signature(info, name)
        else:
            self._take_member(info, name)

    def _relative_name(self, info: tarfile.TarInfo) -> str:
        """The member's name under ``<session-id>/``, after every check of the header and the name."""
        name = info.name
        if info.type not in _REGULAR:
            kind = _NOT_REGULAR.get(info.type, f"of tar type {info.type!r}")
            self.refuse(f"member {shown(name)} is {kind}, not a regular file")
        if info.sparse is not None:
            self.refuse(f"member {shown(name)} is a sparse file, not a regular file")
        if name.startswith("/"):
            self.refuse(f"member {shown(name)} has an absolute path")
        if ".." in name:
            self.refuse(f"member {shown(name)} contains '..'")
        if "\\" in name:
            self.refuse(f"member {shown(name)} contains a backslash")
        if _CONTROL.search(name) or name != name.encode("utf-8", "replace").decode("utf-8"):
            self.refuse(f"member {shown(name)} has a control character or is not UTF-8")
        top, _, rest = name.partition("/")
        if not rest or not _SESSION.fullmatch(top):
            self.refuse(f"member {shown(name)} is not a file name under a <session-id>/ directory")
        if self.top is None:
            self.top = top
        if top != self.top:
            self.refuse(f"member {shown(name)} is outside the bundle's directory '{self.top}/'")
        if not MEMBER.fullmatch(rest):
            self.refuse(
                f"member {shown(name)} is not a name a bundle holds (docs/export-format.md)", _HOSTILE_FIX
            )
        return rest

    def _span(self, info: tarfile.TarInfo) -> tuple[int, int]:
        """Where the member's data is in the plaintext: never more than the tar holds."""
        start = info.offset_data
        if start + info.size > len(self.plaintext):
            self.refuse(f"member {shown(info.name)} is cut short")
        return start, start + info.size

    def _read(self, info: tarfile.TarInfo) -> bytes:
        start, end = self._span(info)
        return self.plaintext[start:end]

    def _take_manifest(self, info: tarfile.TarInfo, name: str) -> None:
        if name != MANIFEST:
            self.refuse(f"the first member is {shown(name)}, not {MANIFEST}")
        if info.size > MAX_MANIFEST_SIZE:
            self.refuse(f"{MANIFEST} is {info.size} bytes, over the {MAX_MANIFEST_SIZE}-byte limit")
        data = self._read(info)
        manifest = json_object(data)
        if manifest is None:
            self.refuse(f"{MANIFEST} is not a JSON object (UTF-8, no duplicate keys, no NaN)")
        schema = manifest.get("schema")
        if schema not in SCHEMAS:
            msg = (
                f"{_path(self.path)} has schema {shown(schema)}, which this optin does not read (it reads "
                f"{', '.join(SCHEMAS)}). Fix: read it with the optin version that wrote it, or ask for a new "
                "export"
            )
            raise ExportError(msg)
        if manifest.get("session") != self.top:
            session = shown(manifest.get("session"))
            self.refuse(f"its members are under '{self.top}/' but the manifest's session is {session}")
        self.manifest, self.manifest_bytes = manifest, data

    def _take_signature(self, info: tarfile.TarInfo, name: str) -> None:
        if name != SIGNATURE:
            self.refuse(f"the second member is {shown(name)}, not {SIGNATURE}")
        if info.size != signing.SIGNATURE_SIZE:
            self.refuse(f"{SIGNATURE} is {info.size} bytes, not {signing.SIGNATURE_SIZE}")
        signature = self._read(info)
        manifest = self.manifest or {}  # take() read the manifest first
        key = self._signing_key(manifest)
        if not signing.verify(key, self.manifest_bytes, signature):
            self.refuse(
                f"{SIGNATURE} does not verify over {MANIFEST} with volunteer.signing_key "
                "(the manifest was changed after it was signed)"
            )
        self.id_verified = self._check_volunteer_id(manifest, key)
        self.signature = signature
        self.listed = self._listed(manifest)

    def _signing_key(self, manifest: dict[str, Any]) -> bytes:
        volunteer = manifest.get("volunteer")
        text = volunteer.get("signing_key") if isinstance(volunteer, dict) else None
        try:
            key = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) != signing.PUBLIC_KEY_SIZE:
            self.refuse("the manifest's volunteer.signing_key is not base64 of a 32-byte Ed25519 key")
        return key

    def _check_volunteer_id(self, manifest: dict[str, Any], key: bytes) -> bool:
        """Whether ``volunteer.id`` was checked against the key (``optin-bundle/2``); refuse a wrong one."""
        claimed = manifest["volunteer"].get("id")
        if not (isinstance(claimed, str) and _VOLUNTEER_ID.fullmatch(claimed)):
            self.refuse("the manifest's volunteer.id is not 32 lower-case hex characters")
        consent = manifest.get("consent")
        study = consent.get("study_id") if isinstance(consent, dict) else None
        if not isinstance(study, str):
            self.refuse("the manifest's consent.study_id is not a string")
        if manifest["schema"] == V1:
            return False  # an HMAC under the volunteer's private seed: nobody else can check it
        try:
            expected = signing.id_of_key(study, key)
        except ValueError:
            self.refuse("the manifest's consent.study_id is not valid UTF-8")
        if claimed != expected:
            self.refuse(
                f"its volunteer.id {claimed} is not the id of the key that signed it (that key is volunteer "
                f"{expected} in study {shown(study)}): someone signed it with their own key and another "
                "volunteer's id",
                "Fix: do not use it: it is forged (a volunteer's own bundles carry the id of their key)",
            )
        return True

    def _listed(self, manifest: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """The manifest's ``members`` as name → (sha256, size), after checking its shape."""
        table = manifest.get("members")
        if not isinstance(table, dict):
            self.refuse("the manifest has no members table")
        listed: dict[str, tuple[str, int]] = {}
        for name, entry in table.items():
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            if name in (MANIFEST, SIGNATURE):
                self.refuse(f"the manifest's members lists {name!r}, which it must not")
            if not MEMBER.fullmatch(name):
                self.refuse(
                    f"the manifest's members lists {shown(name)}, not a name a bundle holds", _HOSTILE_FIX
                )
            if not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
                self.refuse(f"the manifest's entry for {shown(name)} has no lower-case hex sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                self.refuse(f"the manifest's entry for {shown(name)} has no size")
            listed[name] = (digest, size)
        return listed

    def _take_member(self, info: tarfile.TarInfo, name: str) -> None:
        if name not in self.listed:
            self.refuse(f"member {shown(name)} is not listed in the manifest's members")
        digest, size = self.listed[name]
        if info.size != size:
            self.refuse(f"member {shown(name)} is {info.size} bytes in the tar, but the manifest says {size}")
        start, end = self._span(info)
        if hashlib.sha256(memoryview(self.plaintext)[start:end]).hexdigest() != digest:
            self.refuse(f"member {shown(name)} does not match its SHA-256 in the manifest")
        self.spans[name] = (start, end)

    def finish(self) -> Bundle:
        """The bundle, once the whole tar was read: nothing missing, every stated count recomputed."""
        if self.manifest is None:
            self.refuse(f"it has no {MANIFEST}")
        if self.signature is None:
            self.refuse(f"it has no {SIGNATURE}")
        missing = sorted(set(self.listed) - set(self.members))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            self.refuse(f"member {shown(missing[0])}{more}, listed in the manifest, is missing")
        by_action = Recount(self.members, self.listed, self.refuse).check(self.manifest)
        return Bundle(
            path=self.path,
            session=str(self.top),
            manifest=self.manifest,
            manifest_bytes=self.manifest_bytes,
            signature=self.signature,
            members=self.members,
            steps_by_action=by_action,
            id_verified=self.id_verified,
        )


# --- summary ----------------------------------------------------------------------------------------


def summarise(bundle: Bundle) -> dict[str, Any]:
    """What ``optin inspect`` reports of an opened bundle, JSON-ready (no member content).

    Strings are as the manifest holds them: :func:`render_summary` makes them safe to print.
    """
    m = bundle.manifest
    consent = _mapping(m.get("consent"))
    volunteer = _mapping(m.get("volunteer"))
    by_action = dict(sorted(bundle.steps_by_action.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "path": str(bundle.path),
        "session": bundle.session,
        "schema": m["schema"],
        "agent_version": m.get("agent_version"),
        "volunteer": {
            "id": volunteer.get("id"),
            "signing_key": volunteer.get("signing_key"),
            "id_verified": bundle.id_verified,
        },
        "study": {"id": consent.get("study_id"), "name": consent.get("study_name")},
        "consent_version": consent.get("consent_version"),
        "duration_s": m.get("duration_s"),
        "steps": {"count": sum(by_action.values()), "by_action": by_action},
        "frames": _line_count(bundle.members, FRAMES),
        "events": _line_count(bundle.members, EVENTS),
        "redactions": _mapping(m.get("redaction")).get("counts", {}),
        "loss": m.get("loss"),
        "members": {"count": len(bundle.members) + 2, "bytes": bundle.size()},
        "signature": "valid",
    }


def render_summary(summary: dict[str, Any]) -> str:
    """A short terminal text of :func:`summarise`'s result: aligned ``key: value`` lines.

    Every string that came from the bundle (or its file name) is shown with
    :func:`~agent.untrusted_text.visible` and cut short, so none can move the cursor, rewrite a
    line or reorder the text around it.
    """
    volunteer, study, steps = summary["volunteer"], summary["study"], summary["steps"]
    by_action = ", ".join(f"{_v(action)} {n}" for action, n in steps["by_action"].items())
    key = _v(volunteer["signing_key"])
    if volunteer.get("id_verified"):
        who = f"{_v(volunteer['id'])} (the id of signing key {key})"
        signed = "valid (unchanged since it was signed with that volunteer's key)"
    else:
        who = (
            f"{_v(volunteer['id'])} NOT verified: {_v(summary['schema'])} does not bind the id to its "
            f"signing key {key}; tell volunteers apart by that key"
        )
        signed = "valid (unchanged since it was signed with the key above)"
    rows = [
        ("bundle", visible(summary["path"])),
        ("session", _v(summary["session"])),
        ("schema", f"{_v(summary['schema'])}, written by optin {_v(summary['agent_version'])}"),
        ("volunteer", who),
        (
            "study",
            f"{_v(study['id'])} ({_v(study['name'])}), consent version {_v(summary['consent_version'])}",
        ),
        ("duration", "unknown" if summary["duration_s"] is None else f"{_v(summary['duration_s'])} s"),
        ("steps", f"{steps['count']}" + (f": {by_action}" if by_action else "")),
        ("frames", str(summary["frames"])),
        ("events", str(summary["events"])),
        ("redactions", _redactions_text(summary["redactions"])),
        ("loss", _flat_text(summary["loss"])),
        ("members", f"{summary['members']['count']}, {summary['members']['bytes']} bytes"),
        ("signature", signed),
    ]
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join(f"{key + ':':<{width}}{value}" for key, value in rows)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _v(value: Any) -> str:
    """A value from the bundle as the summary prints it: visible, cut short, ``unknown`` for None."""
    return "unknown" if value is None else visible(str(value), limit=SHOWN)


def _line_count(members: Mapping[str, bytes], name: str) -> int:
    """Lines of member ``name`` (0 when there is none), read where it is: no copy of the member."""
    return sum(1 for _ in each_line(view(members, name))) if name in members else 0


def _redactions_text(found: Any) -> str:
    """``typed EMAIL 1; screen EMAIL 2, TYPED 1`` (sources with no finds left out), or ``none``."""
    parts = [
        f"{_v(source)} {_flat_text(entities)}" for source, entities in _mapping(found).items() if entities
    ]
    return "; ".join(parts) or "none"


def _flat_text(value: Any) -> str:
    """``key value, ...`` of a flat mapping (lists as their items, or ``none``)."""
    if not isinstance(value, dict):
        return _v(value)
    items = []
    for key, item in value.items():
        shown_item = (", ".join(_v(i) for i in item) or "none") if isinstance(item, list) else _v(item)
        items.append(f"{_v(key)} {shown_item}")
    return ", ".join(items) or "none"


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
            raise ExportError(msg) from exc
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
            raise ExportError(msg)
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
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
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
        raise ExportError(msg)


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
