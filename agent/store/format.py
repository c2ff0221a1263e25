"""The segment byte format, v1: the only module that touches ciphers.

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

Randomness is a private seam (``_ephemeral_private``, ``_file_key``) so tests
can build known-answer vectors; production code never passes them.

Errors: an authentication failure of any kind is :class:`StoreCorrupt` with the
opaque message ``segment authentication failed`` plus file name and offset;
structural problems are :class:`StoreFormatError` naming file and offset.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import KeyError_, StoreCorrupt, StoreFormatError

#: First 8 bytes of every v1 segment ("optin segment", version 1).
MAGIC = b"optinSG\x01"
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
SEAL = 0x7F
#: Types a writer may append (SEAL is written only by :meth:`SegmentWriter.seal`).
DATA_RECORD_TYPES = frozenset({EVENTS, FRAME})
_RECORD_TYPES = frozenset({EVENTS, FRAME, SEAL})

#: Flags in the SEAL record.
SEAL_RECOVERED = 0x01
SEAL_CLOSES_SESSION = 0x02
_SEAL_FLAGS = SEAL_RECOVERED | SEAL_CLOSES_SESSION

#: Largest plaintext of one record (256 MiB): bounds a reader's allocation.
MAX_PLAINTEXT = 1 << 28

_FIXED = struct.Struct(">8s16sI32s32s")  # magic, session id, index, prev commit, ephemeral key
#: Bytes of the header covered by the wrap's associated data.
WRAP_AD_SIZE = _FIXED.size
#: Size of the whole header.
HEADER_SIZE = WRAP_AD_SIZE + KEY_SIZE + TAG_SIZE
_RECORD_HEAD = struct.Struct(">IB")  # ciphertext length, record type
_AD_TAIL = struct.Struct(">QB")  # record index, record type
_SEAL_BODY = struct.Struct(">QB")  # data record count, flags
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
    _check_key(private, "identity")
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def _check_key(key: bytes, what: str) -> None:
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
        _check_key(recipient, "recipient")
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
        self._hash = hashlib.sha256()
        self._bytes = 0
        self._counter = 0
        self._commit: bytes | None = None
        self._file, self._owned = _open_target(target)
        self._write(header)

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
        """SHA-256 of the sealed segment, or None before :meth:`seal`."""
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

    def seal(self, recovered: bool = False, *, closes_session: bool = False) -> bytes:
        """Write the SEAL record, fsync, close an owned file and return the segment's commit.

        :param recovered: the segment was sealed by recovery after a crash.
        :param closes_session: this is the last segment of a cleanly closed session.
        """
        if self._commit is not None:
            msg = "segment is already sealed"
            raise StoreFormatError(msg)
        flags = (SEAL_RECOVERED if recovered else 0) | (SEAL_CLOSES_SESSION if closes_session else 0)
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
        ciphertext = self._aead.encrypt(nonce, plaintext, ad)
        self._write(_RECORD_HEAD.pack(len(ciphertext), record_type))
        self._write(ciphertext)
        if not final:
            self._counter += 1

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)
        self._bytes += len(data)


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
    _check_key(ephemeral_private, "ephemeral")
    _check_key(file_key, "file")
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
        return os.fdopen(fd, "wb"), True
    return target, False


# --- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentContents:
    """What :func:`read_segment` found in one segment.

    :ivar records: the authenticated data records, ``(record type, plaintext)``, in order.
    :ivar sealed: a valid SEAL record ended the segment.
    :ivar tail: bytes after the last complete record of an unsealed segment
        (a record cut short by a crash); 0 when sealed.
    :ivar commit: SHA-256 of the segment when sealed, else None.
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


@dataclass(frozen=True)
class _Header:
    session_id: bytes
    index: int
    prev_commit: bytes
    ephemeral_public: bytes
    wrapped_key: bytes
    raw: bytes


def read_segment(data: bytes, identity: bytes, *, name: str) -> SegmentContents:
    """Authenticate and decrypt one segment.

    An unsealed segment is returned as its valid prefix with ``sealed=False``
    (the crash-recovery rule); deciding whether that is acceptable is the
    caller's job.  ``name`` appears in error messages.

    :raises StoreCorrupt: authentication failed (tampering, corruption or the wrong identity).
    :raises StoreFormatError: bad magic, short header, bad record type or length,
        bytes after SEAL, or a malformed SEAL record.
    :raises KeyError_: ``identity`` is not 32 bytes.
    """
    _check_key(identity, "identity")
    view = memoryview(data)
    header = _parse_header(view, name)
    file_key = _unwrap(header, identity, name)
    header_hash = hashlib.sha256(header.raw).digest()
    aead = AESGCM(_hkdf(file_key, header_hash, _PAYLOAD_INFO))
    records, flags, tail = _read_records(view, aead, header_hash, name)
    sealed = flags is not None
    return SegmentContents(
        session_id=header.session_id,
        index=header.index,
        prev_commit=header.prev_commit,
        records=records,
        sealed=sealed,
        recovered=bool(flags and flags & SEAL_RECOVERED),
        closes_session=bool(flags and flags & SEAL_CLOSES_SESSION),
        commit=hashlib.sha256(view).digest() if sealed else None,
        tail=tail,
    )


def _parse_header(view: memoryview, name: str) -> _Header:
    magic = bytes(view[: len(MAGIC)])
    if magic != MAGIC[: len(magic)]:
        if len(magic) == len(MAGIC) and magic[:7] == MAGIC[:7]:
            msg = f"{name}: segment format version {magic[7]} is not supported (this agent reads 1)"
        else:
            msg = f"{name}: not an optin segment (bad magic at offset 0)"
        raise StoreFormatError(msg)
    if len(view) < HEADER_SIZE:
        msg = f"{name}: header ends at offset {len(view)}, expected {HEADER_SIZE} bytes"
        raise StoreFormatError(msg)
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
        raise StoreCorrupt(msg) from None


def _read_records(
    view: memoryview, aead: AESGCM, header_hash: bytes, name: str
) -> tuple[list[tuple[int, bytes]], int | None, int]:
    """Return ``(records, seal flags or None when unsealed, tail bytes)``."""
    records: list[tuple[int, bytes]] = []
    offset = HEADER_SIZE
    size = len(view)
    while offset < size:
        if size - offset < _RECORD_HEAD.size:
            return records, None, size - offset
        length, record_type = _RECORD_HEAD.unpack_from(view, offset)
        _check_record_head(length, record_type, name, offset)
        end = offset + _RECORD_HEAD.size + length
        if end > size:
            return records, None, size - offset
        counter = len(records)
        final = record_type == SEAL
        try:
            plaintext = aead.decrypt(
                record_nonce(counter, final=final),
                view[offset + _RECORD_HEAD.size : end],
                record_ad(header_hash, counter, record_type),
            )
        except InvalidTag:
            msg = f"{name}: {_AUTH_FAILED} at offset {offset}"
            raise StoreCorrupt(msg) from None
        if final:
            flags = _parse_seal(plaintext, counter, name, offset)
            if end != size:
                msg = f"{name}: {size - end} bytes follow the SEAL record at offset {end}"
                raise StoreFormatError(msg)
            return records, flags, 0
        records.append((record_type, plaintext))
        offset = end
    return records, None, 0


def _check_record_head(length: int, record_type: int, name: str, offset: int) -> None:
    if record_type not in _RECORD_TYPES:
        msg = f"{name}: unknown record type 0x{record_type:02x} at offset {offset}"
        raise StoreFormatError(msg)
    if not TAG_SIZE <= length <= MAX_PLAINTEXT + TAG_SIZE:
        msg = f"{name}: record length {length} out of range at offset {offset}"
        raise StoreFormatError(msg)


def _parse_seal(plaintext: bytes, counter: int, name: str, offset: int) -> int:
    if len(plaintext) != _SEAL_BODY.size:
        msg = f"{name}: SEAL record at offset {offset} has {len(plaintext)} bytes, expected {_SEAL_BODY.size}"
        raise StoreFormatError(msg)
    count, flags = _SEAL_BODY.unpack(plaintext)
    if count != counter or flags & ~_SEAL_FLAGS:
        msg = f"{name}: malformed SEAL record at offset {offset}"
        raise StoreFormatError(msg)
    return int(flags)


__all__ = [
    "DATA_RECORD_TYPES",
    "EVENTS",
    "FRAME",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PLAINTEXT",
    "SEAL",
    "ZERO_COMMIT",
    "SegmentContents",
    "SegmentWriter",
    "generate_keypair",
    "public_from_private",
    "read_segment",
    "record_ad",
    "record_nonce",
    "segment_name",
    "session_id_bytes",
]
