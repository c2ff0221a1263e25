"""The segment byte format, v2: with keyfile.py, the only modules that touch ciphers.

``docs/format.md`` is the normative specification; this module implements it
and nothing else.  In short, a segment is::

    header  = magic (8) | session id (16) | index (u32 BE) | prev commit (32)
              | ephemeral X25519 public key (32) | wrapped file key (48)
    record  = u32 BE ciphertext length | u8 record type | ciphertext
    segment = header | record* | SEAL record

Records are AES-256-GCM under a payload key derived from a fresh random file
key, with nonce = 11-byte BE counter || final flag (age's STREAM).  The file key
is wrapped to the volunteer's X25519 public key, so a writer needs only the
public key and a reader needs the private key ("identity").

Crash recovery (``docs/format.md``, Recovery rules) runs with the public key
only: :func:`scan_framing` reads the plaintext record heads without a key, and
:func:`write_recovery_segment` seals a session with one RECOVERY record.

Randomness is a private seam (``_ephemeral_private``, ``_file_key``) so tests
can build known-answer vectors; production code never passes them.

Errors: an authentication failure of any kind is :class:`StoreCorrupt` with the
opaque message ``segment authentication failed`` plus file name and offset;
structural problems are :class:`StoreFormatError` naming file and offset.
"""

from __future__ import annotations

import errno
import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import KeyError_, StoreCorrupt, StoreFormatError

#: Format version: the last byte of the magic.
VERSION = 2
#: First 8 bytes of every segment ("optin segment", version 2).
MAGIC = b"optinSG" + bytes([VERSION])
#: Size of keys, file keys and commits.
KEY_SIZE = 32
#: Size of the session id field.
SESSION_ID_SIZE = 16
#: Size of an AES-GCM tag.
TAG_SIZE = 16
#: The all-zero ``prev_commit`` of segment 0.
ZERO_COMMIT = bytes(KEY_SIZE)

#: Record types.
EVENTS = 0x01
FRAME = 0x02
RECOVERY = 0x03
DELETION = 0x04
SEAL = 0x7F
#: Types a writer may append (RECOVERY is written only by :func:`write_recovery_segment`,
#: DELETION only by :func:`write_deletion_segment`, SEAL only by :meth:`SegmentWriter.seal`).
DATA_RECORD_TYPES = frozenset({EVENTS, FRAME})
_RECORD_TYPES = frozenset({EVENTS, FRAME, RECOVERY, DELETION, SEAL})

#: Flags in the SEAL record.
SEAL_RECOVERED = 0x01
SEAL_CLOSES_SESSION = 0x02
_SEAL_FLAGS = SEAL_RECOVERED | SEAL_CLOSES_SESSION

#: Shapes of a crashed session's end, as recorded in a RECOVERY record (docs/format.md).
RECOVERY_SHAPES = {"unsealed": 1, "sealed": 2, "removed": 3}

#: Largest plaintext of one record (256 MiB): bounds a reader's allocation.
MAX_PLAINTEXT = 1 << 28

_FIXED = struct.Struct(">8s16sI32s32s")  # magic, session id, index, prev commit, ephemeral key
#: Bytes of the header covered by the wrap's associated data.
WRAP_AD_SIZE = _FIXED.size
#: Size of the whole header.
HEADER_SIZE = WRAP_AD_SIZE + KEY_SIZE + TAG_SIZE
#: Offset and size of a header's key material: the ephemeral share and the wrapped file key
#: (60 and 80).  Overwriting them makes the segment undecryptable (crypto-shredding, docs/format.md).
KEY_MATERIAL_OFFSET = WRAP_AD_SIZE - KEY_SIZE
KEY_MATERIAL_SIZE = HEADER_SIZE - KEY_MATERIAL_OFFSET
_RECORD_HEAD = struct.Struct(">IB")  # ciphertext length, record type
_AD_TAIL = struct.Struct(">QB")  # record index, record type
_SEAL_BODY = struct.Struct(">QB")  # count of records before the SEAL, flags
_RECOVERY_BODY = struct.Struct(">BIQQ")  # shape, segment index, original length, kept length
_DELETION_BODY = struct.Struct(">IIQQ")  # first removed segment, segments removed, bytes removed, when
_COUNTER_BYTES = 11
_MAX_INDEX = (1 << 32) - 1
_MAX_RECORDS = (1 << 64) - 1
_WRAP_NONCE = bytes(12)
_WRAP_INFO = b"optin/v1 wrap"
_PAYLOAD_INFO = b"optin/v1 payload"
_AUTH_FAILED = "segment authentication failed"


# --- keys -----------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """Return a fresh X25519 key pair as raw ``(private, public)`` 32-byte strings."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_from_private(private: bytes) -> bytes:
    """The raw X25519 public key of a raw private key.

    :raises KeyError_: ``private`` is not 32 bytes.
    """
    check_key(private, "identity")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def check_key(key: bytes, what: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_SIZE:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        msg = f"{what} key must be {KEY_SIZE} raw bytes, got {size}"
        raise KeyError_(msg)


def _x25519(private: bytes, public: bytes) -> bytes:
    """X25519; raises ValueError for a low-order (all-zero result) public key."""
    peer = X25519PublicKey.from_public_bytes(public)
    return X25519PrivateKey.from_private_bytes(private).exchange(peer)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(ikm)


def _wrap_key(shared: bytes, ephemeral_public: bytes, recipient: bytes) -> bytes:
    return _hkdf(shared, ephemeral_public + recipient, _WRAP_INFO)


# --- small pure pieces of the format --------------------------------------------------------


def session_id_bytes(session_id: str) -> bytes:
    """The 16-byte header session id of a session directory name: ``SHA-256(name)[:16]``."""
    return hashlib.sha256(session_id.encode("utf-8")).digest()[:SESSION_ID_SIZE]


def segment_name(index: int) -> str:
    """File name of segment ``index`` (``000000.seg``)."""
    return f"{index:06d}.seg"


def is_segment_name(name: str) -> bool:
    """``name`` is where a segment would be: ``*.seg``, not hidden (temp files start with a dot)."""
    return name.endswith(".seg") and not name.startswith(".")


def segment_index(name: str) -> int | None:
    """The index of the segment file ``name`` when it is exactly :func:`segment_name` of one, else None."""
    stem = name[: -len(".seg")]
    if not is_segment_name(name) or not stem.isdecimal() or segment_name(int(stem)) != name:
        return None
    return int(stem)


def record_nonce(counter: int, *, final: bool) -> bytes:
    """The 12-byte AEAD nonce: 11-byte big-endian record counter || final flag."""
    return counter.to_bytes(_COUNTER_BYTES, "big") + (b"\x01" if final else b"\x00")


def record_ad(header_hash: bytes, counter: int, record_type: int) -> bytes:
    """Associated data of a record: SHA-256(header) || u64 BE record index || u8 type."""
    return header_hash + _AD_TAIL.pack(counter, record_type)


def _header_prefix(session_id: bytes, index: int, prev_commit: bytes, ephemeral_public: bytes) -> bytes:
    return _FIXED.pack(MAGIC, session_id, index, prev_commit, ephemeral_public)


def _check_header_fields(session_id: bytes, index: int, prev_commit: bytes) -> None:
    if len(session_id) != SESSION_ID_SIZE:
        msg = f"session id must be {SESSION_ID_SIZE} bytes, got {len(session_id)}"
        raise ValueError(msg)
    if not 0 <= index <= _MAX_INDEX:
        msg = f"segment index {index} is out of range 0..{_MAX_INDEX}"
        raise ValueError(msg)
    if len(prev_commit) != KEY_SIZE:
        msg = f"prev_commit must be {KEY_SIZE} bytes, got {len(prev_commit)}"
        raise ValueError(msg)
    if (index == 0) != (prev_commit == ZERO_COMMIT):
        msg = "segment 0 and only segment 0 has the all-zero prev_commit"
        raise ValueError(msg)


# --- writing --------------------------------------------------------------------------------


class SegmentWriter:
    """Writes one segment: header at construction, records by :meth:`append`, then :meth:`seal`.

    ``target`` is a path (created exclusively with mode 0600 and closed at seal)
    or a binary file object (left open).  Not thread-safe: one writer thread.

    :param session_id: the 16-byte header session id (:func:`session_id_bytes`).
    :param index: this segment's position in the session, from 0.
    :param prev_commit: the commit of segment ``index - 1``; :data:`ZERO_COMMIT` for 0.
    :param recipient: the volunteer's raw X25519 public key.
    :raises KeyError_: ``recipient`` is not a usable X25519 public key.
    """

    def __init__(
        self,
        target: BinaryIO | str | os.PathLike[str],
        *,
        session_id: bytes,
        index: int,
        prev_commit: bytes,
        recipient: bytes,
        _ephemeral_private: bytes | None = None,
        _file_key: bytes | None = None,
    ) -> None:
        check_key(recipient, "recipient")
        _check_header_fields(session_id, index, prev_commit)
        header, file_key = _build_header(
            session_id,
            index,
            prev_commit,
            recipient,
            ephemeral_private=_ephemeral_private,
            file_key=_file_key,
        )
        self._header_hash = hashlib.sha256(header).digest()
        self._aead = AESGCM(_hkdf(file_key, self._header_hash, _PAYLOAD_INFO))
        self._hash = hashlib.sha256(header)  # the commit input: header, then each record's head and tag
        self._buffer = bytearray()  # one record at a time, reused: head || ciphertext || tag
        self._bytes = 0
        self._counter = 0
        self._commit: bytes | None = None
        self._file, self._owned = _open_target(target)
        self._write(memoryview(header))

    @property
    def bytes_written(self) -> int:
        """Bytes written so far, header included."""
        return self._bytes

    @property
    def records(self) -> int:
        """Data records appended so far (the SEAL record is not counted)."""
        return self._counter

    @property
    def sealed(self) -> bool:
        return self._commit is not None

    @property
    def commit(self) -> bytes | None:
        """The sealed segment's commit (:func:`segment_commit`), or None before :meth:`seal`."""
        return self._commit

    def append(self, record_type: int, plaintext: bytes) -> None:
        """Encrypt ``plaintext`` as one record of ``record_type`` (EVENTS or FRAME) and write it."""
        if self._commit is not None:
            msg = "segment is sealed; nothing may follow its SEAL record"
            raise StoreFormatError(msg)
        if record_type not in DATA_RECORD_TYPES:
            msg = f"record type 0x{record_type:02x} cannot be appended (use EVENTS or FRAME)"
            raise ValueError(msg)
        if len(plaintext) > MAX_PLAINTEXT:
            msg = f"record of {len(plaintext)} bytes exceeds the {MAX_PLAINTEXT}-byte limit"
            raise StoreFormatError(msg)
        if self._counter >= _MAX_RECORDS:
            msg = "segment has reached its record limit; start a new segment"
            raise StoreFormatError(msg)
        self._write_record(record_type, plaintext, final=False)

    def seal(self, *, closes_session: bool = False) -> bytes:
        """Write the SEAL record, fsync, close an owned file and return the segment's commit.

        :param closes_session: this is the last segment of a cleanly closed session.
        """
        return self._seal(SEAL_CLOSES_SESSION if closes_session else 0)

    def _seal(self, flags: int) -> bytes:
        if self._commit is not None:
            msg = "segment is already sealed"
            raise StoreFormatError(msg)
        self._write_record(SEAL, _SEAL_BODY.pack(self._counter, flags), final=True)
        self.flush(fsync=True)
        self._commit = self._hash.digest()
        if self._owned:
            self._file.close()
        return self._commit

    def flush(self, fsync: bool = False) -> None:
        """Hand buffered bytes to the OS; with ``fsync``, also to the disk."""
        if self._file.closed:
            return
        self._file.flush()
        if fsync:
            try:
                fileno = self._file.fileno()
            except (AttributeError, OSError):  # in-memory file objects have no descriptor
                return
            os.fsync(fileno)

    def close(self) -> None:
        """Close an owned file without sealing (the segment then reads as unsealed)."""
        if self._owned and not self._file.closed:
            self._file.close()

    def _write_record(self, record_type: int, plaintext: bytes, *, final: bool) -> None:
        nonce = record_nonce(self._counter, final=final)
        ad = record_ad(self._header_hash, self._counter, record_type)
        size = _RECORD_HEAD.size + len(plaintext) + TAG_SIZE
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        record = memoryview(self._buffer)[:size]
        _RECORD_HEAD.pack_into(record, 0, size - _RECORD_HEAD.size, record_type)
        self._aead.encrypt_into(nonce, plaintext, ad, record[_RECORD_HEAD.size :])
        self._hash.update(record[: _RECORD_HEAD.size])
        self._hash.update(record[size - TAG_SIZE :])
        self._write(record)
        if not final:
            self._counter += 1

    def _write(self, data: memoryview) -> None:
        """Write all of ``data`` (an unbuffered file may take less than asked in one call)."""
        done = 0
        while done < len(data):
            written = self._file.write(data[done:])
            if not written:
                msg = f"the file accepted no bytes at offset {self._bytes + done}"
                raise OSError(errno.EIO, msg)
            done += written
        self._bytes += done


def _build_header(
    session_id: bytes,
    index: int,
    prev_commit: bytes,
    recipient: bytes,
    *,
    ephemeral_private: bytes | None,
    file_key: bytes | None,
) -> tuple[bytes, bytes]:
    """Return ``(header, file_key)`` with the file key wrapped to ``recipient``."""
    if ephemeral_private is None:
        ephemeral_private = X25519PrivateKey.generate().private_bytes_raw()
    if file_key is None:
        file_key = os.urandom(KEY_SIZE)
    check_key(ephemeral_private, "ephemeral")
    check_key(file_key, "file")
    ephemeral_public = public_from_private(ephemeral_private)
    try:
        shared = _x25519(ephemeral_private, recipient)
    except ValueError:
        msg = "recipient key is not a usable X25519 public key"
        raise KeyError_(msg) from None
    prefix = _header_prefix(session_id, index, prev_commit, ephemeral_public)
    wrap = AESGCM(_wrap_key(shared, ephemeral_public, recipient))
    return prefix + wrap.encrypt(_WRAP_NONCE, file_key, prefix), file_key


def _open_target(target: BinaryIO | str | os.PathLike[str]) -> tuple[BinaryIO, bool]:
    if isinstance(target, (str, os.PathLike)):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(Path(target), flags, 0o600)
        return os.fdopen(fd, "wb", buffering=0), True  # one write per record; nothing held back
    return target, False


# --- crash recovery: the RECOVERY record and the keyless framing scan -----------------------


@dataclass(frozen=True)
class RecoveryInfo:
    """What crash recovery found at the end of a session: the plaintext of a RECOVERY record.

    :ivar shape: ``unsealed`` (segment ``segment`` had no SEAL; it was cut to its last
        complete record), ``sealed`` (it was sealed but had no successor; nothing was
        cut) or ``removed`` (segment ``segment`` had an incomplete header, or was never
        created, and the recovery segment took its place).
    :ivar segment: index of that segment.
    :ivar original: its length in bytes as recovery found it (0 when there was no file).
    :ivar kept: its length after recovery (0 when removed).
    """

    shape: str
    segment: int
    original: int
    kept: int

    def __post_init__(self) -> None:
        problem = _recovery_problem(self)
        if problem:
            msg = f"invalid recovery record: {problem}"
            raise ValueError(msg)

    @property
    def lost_bytes(self) -> int:
        """Bytes recovery cut or removed."""
        return self.original - self.kept

    def encode(self) -> bytes:
        """The 21-byte RECOVERY plaintext: u8 shape | u32 BE segment | u64 BE original | u64 BE kept."""
        return _RECOVERY_BODY.pack(RECOVERY_SHAPES[self.shape], self.segment, self.original, self.kept)

    @classmethod
    def decode(cls, plaintext: bytes, *, name: str, offset: int) -> RecoveryInfo:
        """Parse a RECOVERY plaintext; ``name`` and ``offset`` (of the record) go into errors.

        :raises StoreFormatError: wrong size, unknown shape or inconsistent lengths.
        """
        if len(plaintext) != _RECOVERY_BODY.size:
            msg = (
                f"{name}: RECOVERY record at offset {offset} has {len(plaintext)} bytes, "
                f"expected {_RECOVERY_BODY.size}"
            )
            raise StoreFormatError(msg, offset=offset)
        code, segment, original, kept = _RECOVERY_BODY.unpack(plaintext)
        shape = next((s for s, c in RECOVERY_SHAPES.items() if c == code), f"0x{code:02x}")
        try:
            return cls(shape=shape, segment=segment, original=original, kept=kept)
        except ValueError as exc:
            msg = f"{name}: malformed RECOVERY record at offset {offset} ({exc})"
            raise StoreFormatError(msg, offset=offset) from None


def _recovery_problem(info: RecoveryInfo) -> str | None:
    if info.shape not in RECOVERY_SHAPES:
        return f"unknown shape {info.shape}"
    if not 0 <= info.segment <= _MAX_INDEX or not 0 <= info.kept <= info.original < 1 << 64:
        return "segment index or lengths out of range"
    if info.shape == "removed" and (info.kept != 0 or info.original >= HEADER_SIZE):
        return "a removed segment is shorter than a header and keeps nothing"
    if info.shape == "sealed" and info.kept != info.original:
        return "nothing is cut from a sealed segment"
    if info.shape == "unsealed" and info.kept < HEADER_SIZE:
        return "a cut segment keeps at least its header"
    return None


def write_recovery_segment(
    target: BinaryIO | str | os.PathLike[str],
    *,
    session_id: bytes,
    index: int,
    prev_commit: bytes,
    recipient: bytes,
    info: RecoveryInfo,
    _ephemeral_private: bytes | None = None,
    _file_key: bytes | None = None,
) -> bytes:
    """Write a whole recovery segment (one RECOVERY record, SEAL with recovered | closes session).

    Needs only the recipient: recovery runs in the recorder, which never holds the
    identity.  Returns the segment's commit.  ``target`` is as for :class:`SegmentWriter`.
    """
    return _write_marker_segment(
        target,
        (session_id, index, prev_commit, recipient),
        RECOVERY,
        info.encode(),
        SEAL_RECOVERED | SEAL_CLOSES_SESSION,
        _ephemeral_private=_ephemeral_private,
        _file_key=_file_key,
    )


def _write_marker_segment(
    target: BinaryIO | str | os.PathLike[str],
    where: tuple[bytes, int, bytes, bytes],
    record_type: int,
    plaintext: bytes,
    flags: int,
    *,
    _ephemeral_private: bytes | None,
    _file_key: bytes | None,
) -> bytes:
    """A segment of exactly one non-data record and a SEAL with ``flags``; returns its commit.

    ``where`` is ``(session_id, index, prev_commit, recipient)``.  Recovery and tombstone
    segments are both written here, so they share every byte of the header and sealing code.
    """
    session_id, index, prev_commit, recipient = where
    writer = SegmentWriter(
        target,
        session_id=session_id,
        index=index,
        prev_commit=prev_commit,
        recipient=recipient,
        _ephemeral_private=_ephemeral_private,
        _file_key=_file_key,
    )
    writer._write_record(record_type, plaintext, final=False)
    return writer._seal(flags)


# --- deletion by the volunteer: the DELETION record (a tombstone segment) --------------------


@dataclass(frozen=True)
class DeletionInfo:
    """What ``optin delete-last`` removed from the end of a session: the plaintext of a DELETION record.

    :ivar segment: index of the first segment removed; the tombstone segment takes its place.
    :ivar segments: how many trailing segments were removed (at least 1).
    :ivar removed_bytes: their total size in bytes.
    :ivar deleted_at: when, in whole seconds since the Unix epoch (UTC).
    """

    segment: int
    segments: int
    removed_bytes: int
    deleted_at: int

    def __post_init__(self) -> None:
        if not (
            1 <= self.segment <= _MAX_INDEX
            and 1 <= self.segments <= _MAX_INDEX
            and 0 <= self.removed_bytes < 1 << 64
            and 0 <= self.deleted_at < 1 << 64
        ):
            msg = "invalid deletion record: a tombstone follows segment 0 or later and removes 1 or more"
            raise ValueError(msg)

    def encode(self) -> bytes:
        """The 24-byte DELETION plaintext: u32 BE segment | u32 BE segments | u64 BE bytes | u64 BE time."""
        return _DELETION_BODY.pack(self.segment, self.segments, self.removed_bytes, self.deleted_at)

    @classmethod
    def decode(cls, plaintext: bytes, *, name: str, offset: int) -> DeletionInfo:
        """Parse a DELETION plaintext; ``name`` and ``offset`` (of the record) go into errors.

        :raises StoreFormatError: wrong size or values out of range.
        """
        if len(plaintext) != _DELETION_BODY.size:
            msg = (
                f"{name}: DELETION record at offset {offset} has {len(plaintext)} bytes, "
                f"expected {_DELETION_BODY.size}"
            )
            raise StoreFormatError(msg, offset=offset)
        try:
            return cls(*_DELETION_BODY.unpack(plaintext))
        except ValueError as exc:
            msg = f"{name}: malformed DELETION record at offset {offset} ({exc})"
            raise StoreFormatError(msg, offset=offset) from None


def write_deletion_segment(
    target: BinaryIO | str | os.PathLike[str],
    *,
    session_id: bytes,
    prev_commit: bytes,
    recipient: bytes,
    info: DeletionInfo,
    _ephemeral_private: bytes | None = None,
    _file_key: bytes | None = None,
) -> bytes:
    """Write a tombstone segment (one DELETION record, SEAL with closes session) at index ``info.segment``.

    Like :func:`write_recovery_segment` it needs only the recipient.  Returns the commit.
    """
    return _write_marker_segment(
        target,
        (session_id, info.segment, prev_commit, recipient),
        DELETION,
        info.encode(),
        SEAL_CLOSES_SESSION,
        _ephemeral_private=_ephemeral_private,
        _file_key=_file_key,
    )


@dataclass(frozen=True)
class Framing:
    """A segment's record framing, read without any key: what crash recovery can see.

    The header fields are not authenticated here.

    :ivar end: offset just past the last complete record (:data:`HEADER_SIZE` when none).
    :ivar records: complete records, the SEAL included.
    :ivar first_type: type of the first complete record, or None.
    :ivar last_type: type of the last complete record, or None.
    :ivar stop: why the scan ended before the end of the data: None (it did not),
        ``partial`` (a record head or ciphertext runs past the end), ``bad-head``
        (an unknown type or an impossible length) or ``after-seal`` (bytes follow a SEAL).
    """

    session_id: bytes
    index: int
    prev_commit: bytes
    end: int
    records: int
    first_type: int | None
    last_type: int | None
    stop: str | None

    @property
    def sealed(self) -> bool:
        """The last complete record is a SEAL (not authenticated: no key was used)."""
        return self.last_type == SEAL

    @property
    def is_recovery_segment(self) -> bool:
        """Exactly a RECOVERY record and a SEAL, nothing else."""
        return self.records == 2 and self.first_type == RECOVERY and self.sealed and self.stop is None

    @property
    def is_deletion_segment(self) -> bool:
        """Exactly a DELETION record and a SEAL, nothing else (a tombstone)."""
        return self.records == 2 and self.first_type == DELETION and self.sealed and self.stop is None


def scan_framing(data: bytes, *, name: str) -> Framing:
    """Walk the record heads of a segment without decrypting anything.

    :raises StoreFormatError: bad magic or version, or fewer than :data:`HEADER_SIZE` bytes.
    """
    view = memoryview(data)
    header = _parse_header(view, name)
    count = 0
    first: int | None = None
    last: int | None = None
    walk = _RecordWalk(view)
    for _, _, record_type in walk:
        count += 1
        first = record_type if first is None else first
        last = record_type
    return Framing(
        header.session_id, header.index, header.prev_commit, walk.end, count, first, last, walk.stop
    )


class _RecordWalk:
    """Iterates ``(offset, end, record type)`` over the complete records after the header.

    Stops at a SEAL, at a head with an unknown type or impossible length, or at a
    record that runs past the data; afterwards :attr:`end` is the offset just past
    the last complete record and :attr:`stop` says why the walk ended early
    (None, ``partial``, ``bad-head`` or ``after-seal``; see :class:`Framing`).
    """

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self.end = HEADER_SIZE
        self.stop: str | None = None

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        view, size = self._view, len(self._view)
        while self.end < size:
            offset = self.end
            if size - offset < _RECORD_HEAD.size:
                self.stop = "partial"
                return
            length, record_type = _RECORD_HEAD.unpack_from(view, offset)
            if record_type not in _RECORD_TYPES or not TAG_SIZE <= length <= MAX_PLAINTEXT + TAG_SIZE:
                self.stop = "bad-head"
                return
            end = offset + _RECORD_HEAD.size + length
            if end > size:
                self.stop = "partial"
                return
            self.end = end
            yield offset, end, record_type
            if record_type == SEAL:
                self.stop = "after-seal" if end < size else None
                return


def segment_commit(data: bytes | memoryview) -> bytes:
    """The commit of a segment's bytes as they are (docs/format.md, Commit and chaining).

    SHA-256 over the header, each complete record's 5-byte head and 16-byte tag,
    and any bytes after the last complete record: a sealed segment's commit, and
    what a recovery segment's ``prev_commit`` binds when it is a cut, unsealed one.
    ``data`` must hold at least a header; the header is not parsed here.
    """
    view = memoryview(data)
    digest = hashlib.sha256(view[:HEADER_SIZE])
    walk = _RecordWalk(view)
    for offset, end, _ in walk:
        digest.update(view[offset : offset + _RECORD_HEAD.size])
        digest.update(view[end - TAG_SIZE : end])
    digest.update(view[walk.end :])
    return digest.digest()


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentContents:
    """What :func:`read_segment` found in one segment.

    :ivar records: the authenticated data records (EVENTS, FRAME), ``(record type, plaintext)``, in order.
    :ivar sealed: a valid SEAL record ended the segment.
    :ivar recovered: this is a recovery segment (its SEAL has the recovered flag).
    :ivar recovery: the decoded RECOVERY record of a recovery segment, else None.
    :ivar deletion: the decoded DELETION record of a tombstone segment, else None.
    :ivar tail: bytes after the last complete record of an unsealed segment
        (a record cut short by a crash); 0 when sealed.
    :ivar commit: the segment's commit (:func:`segment_commit`) when sealed, else None.
    """

    session_id: bytes
    index: int
    prev_commit: bytes
    records: list[tuple[int, bytes]]
    sealed: bool
    recovered: bool
    closes_session: bool
    commit: bytes | None
    tail: int
    recovery: RecoveryInfo | None = None
    deletion: DeletionInfo | None = None


@dataclass(frozen=True)
class _Header:
    session_id: bytes
    index: int
    prev_commit: bytes
    ephemeral_public: bytes
    wrapped_key: bytes
    raw: bytes


@dataclass
class _Body:
    """What :func:`_read_records` found after the header."""

    records: list[tuple[int, bytes]]
    recovery: RecoveryInfo | None = None
    deletion: DeletionInfo | None = None
    flags: int | None = None  # SEAL flags; None when unsealed
    tail: int = 0


def read_segment(data: bytes, identity: bytes, *, name: str) -> SegmentContents:
    """Authenticate and decrypt one segment.

    An unsealed segment is returned as its valid prefix with ``sealed=False``
    (the crash-recovery rule); deciding whether that is acceptable is the
    caller's job.  ``name`` appears in error messages.

    :raises StoreCorrupt: authentication failed (tampering, corruption or the wrong identity).
    :raises StoreFormatError: bad magic, short header, bad record type or length,
        bytes after SEAL, or a malformed SEAL or RECOVERY record.
    :raises KeyError_: ``identity`` is not 32 bytes.
    """
    check_key(identity, "identity")
    view = memoryview(data)
    header = _parse_header(view, name)
    file_key = _unwrap(header, identity, name)
    header_hash = hashlib.sha256(header.raw).digest()
    aead = AESGCM(_hkdf(file_key, header_hash, _PAYLOAD_INFO))
    body = _read_records(view, aead, header_hash, name)
    flags = body.flags
    sealed = flags is not None
    return SegmentContents(
        session_id=header.session_id,
        index=header.index,
        prev_commit=header.prev_commit,
        records=body.records,
        sealed=sealed,
        recovered=bool(flags and flags & SEAL_RECOVERED),
        closes_session=bool(flags and flags & SEAL_CLOSES_SESSION),
        commit=segment_commit(view) if sealed else None,
        tail=body.tail,
        recovery=body.recovery,
        deletion=body.deletion,
    )


def _parse_header(view: memoryview, name: str) -> _Header:
    magic = bytes(view[: len(MAGIC)])
    if magic != MAGIC[: len(magic)]:
        if len(magic) == len(MAGIC) and magic[:7] == MAGIC[:7]:
            msg = (
                f"{name}: segment format version {magic[7]} is not supported (this agent reads {VERSION}). "
                "Fix: use the optin version that recorded it (a newer one, if the number is higher)"
            )
            raise StoreFormatError(msg, offset=7)
        msg = f"{name}: not an optin segment (bad magic at offset 0)"
        raise StoreFormatError(msg, offset=0)
    if len(view) < HEADER_SIZE:
        msg = f"{name}: header ends at offset {len(view)}, expected {HEADER_SIZE} bytes"
        raise StoreFormatError(msg, offset=len(view))
    _, session_id, index, prev_commit, ephemeral = _FIXED.unpack_from(view)
    return _Header(
        session_id=session_id,
        index=index,
        prev_commit=prev_commit,
        ephemeral_public=ephemeral,
        wrapped_key=bytes(view[WRAP_AD_SIZE:HEADER_SIZE]),
        raw=bytes(view[:HEADER_SIZE]),
    )


def _unwrap(header: _Header, identity: bytes, name: str) -> bytes:
    """The file key, or an opaque StoreCorrupt (never says which step failed)."""
    try:
        shared = _x25519(identity, header.ephemeral_public)
        recipient = public_from_private(identity)
        wrap = AESGCM(_wrap_key(shared, header.ephemeral_public, recipient))
        return wrap.decrypt(_WRAP_NONCE, header.wrapped_key, header.raw[:WRAP_AD_SIZE])
    except (InvalidTag, ValueError):
        msg = f"{name}: {_AUTH_FAILED} at offset {WRAP_AD_SIZE}"
        raise StoreCorrupt(msg, offset=WRAP_AD_SIZE) from None


def _read_records(view: memoryview, aead: AESGCM, header_hash: bytes, name: str) -> _Body:
    """Authenticate the records after the header, in order."""
    body = _Body(records=[])
    offset = HEADER_SIZE
    size = len(view)
    counter = 0
    while offset < size:
        if size - offset < _RECORD_HEAD.size:
            body.tail = size - offset
            return body
        length, record_type = _RECORD_HEAD.unpack_from(view, offset)
        _check_record_head(length, record_type, name, offset)
        end = offset + _RECORD_HEAD.size + length
        if end > size:
            body.tail = size - offset
            return body
        final = record_type == SEAL
        try:
            plaintext = aead.decrypt(
                record_nonce(counter, final=final),
                view[offset + _RECORD_HEAD.size : end],
                record_ad(header_hash, counter, record_type),
            )
        except InvalidTag:
            msg = f"{name}: {_AUTH_FAILED} at offset {offset}"
            raise StoreCorrupt(msg, offset=offset) from None
        if final:
            body.flags = _parse_seal(plaintext, counter, name, offset)
            _check_seal_end(body, name, offset, end, size)
            return body
        _take_record(body, record_type, plaintext, counter=counter, name=name, offset=offset)
        counter += 1
        offset = end
    return body


def _take_record(
    body: _Body, record_type: int, plaintext: bytes, *, counter: int, name: str, offset: int
) -> None:
    """Keep a data record, or decode a RECOVERY or DELETION record (allowed only as record 0, alone)."""
    if record_type in (RECOVERY, DELETION):
        kind = "RECOVERY" if record_type == RECOVERY else "DELETION"
        if counter != 0:
            msg = f"{name}: {kind} record at offset {offset} is not the first record"
            raise StoreFormatError(msg, offset=offset)
        if record_type == RECOVERY:
            body.recovery = RecoveryInfo.decode(plaintext, name=name, offset=offset)
        else:
            body.deletion = DeletionInfo.decode(plaintext, name=name, offset=offset)
        return
    if body.recovery is not None or body.deletion is not None:
        kind = "RECOVERY" if body.recovery is not None else "DELETION"
        msg = f"{name}: data record at offset {offset} follows a {kind} record"
        raise StoreFormatError(msg, offset=offset)
    body.records.append((record_type, plaintext))


def _check_seal_end(body: _Body, name: str, offset: int, end: int, size: int) -> None:
    """Nothing after the SEAL; the recovered flag exactly on recovery segments, which close the session."""
    if end != size:
        msg = f"{name}: {size - end} bytes follow the SEAL record at offset {end}"
        raise StoreFormatError(msg, offset=end)
    flags = body.flags or 0
    if body.recovery is not None and flags != SEAL_RECOVERED | SEAL_CLOSES_SESSION:
        msg = f"{name}: the SEAL at offset {offset} of a recovery segment lacks a required flag"
        raise StoreFormatError(msg, offset=offset)
    if body.recovery is None and flags & SEAL_RECOVERED:
        msg = f"{name}: the SEAL at offset {offset} has the recovered flag but there is no RECOVERY record"
        raise StoreFormatError(msg, offset=offset)
    if body.deletion is not None and flags != SEAL_CLOSES_SESSION:
        msg = f"{name}: the SEAL at offset {offset} of a tombstone segment must close the session"
        raise StoreFormatError(msg, offset=offset)


def _check_record_head(length: int, record_type: int, name: str, offset: int) -> None:
    if record_type not in _RECORD_TYPES:
        msg = f"{name}: unknown record type 0x{record_type:02x} at offset {offset}"
        raise StoreFormatError(msg, offset=offset)
    if not TAG_SIZE <= length <= MAX_PLAINTEXT + TAG_SIZE:
        msg = f"{name}: record length {length} out of range at offset {offset}"
        raise StoreFormatError(msg, offset=offset)


def _parse_seal(plaintext: bytes, counter: int, name: str, offset: int) -> int:
    if len(plaintext) != _SEAL_BODY.size:
        msg = f"{name}: SEAL record at offset {offset} has {len(plaintext)} bytes, expected {_SEAL_BODY.size}"
        raise StoreFormatError(msg, offset=offset)
    count, flags = _SEAL_BODY.unpack(plaintext)
    if count != counter or flags & ~_SEAL_FLAGS:
        msg = f"{name}: malformed SEAL record at offset {offset}"
        raise StoreFormatError(msg, offset=offset)
    return int(flags)


__all__ = [
    "DATA_RECORD_TYPES",
    "DELETION",
    "EVENTS",
    "FRAME",
    "HEADER_SIZE",
    "KEY_MATERIAL_OFFSET",
    "KEY_MATERIAL_SIZE",
    "MAGIC",
    "MAX_PLAINTEXT",
    "RECOVERY",
    "RECOVERY_SHAPES",
    "SEAL",
    "VERSION",
    "ZERO_COMMIT",
    "DeletionInfo",
    "Framing",
    "RecoveryInfo",
    "SegmentContents",
    "SegmentWriter",
    "generate_keypair",
    "is_segment_name",
    "public_from_private",
    "read_segment",
    "record_ad",
    "record_nonce",
    "scan_framing",
    "segment_commit",
    "segment_index",
    "segment_name",
    "session_id_bytes",
    "write_deletion_segment",
    "write_recovery_segment",
]
