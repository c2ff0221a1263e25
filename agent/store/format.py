"""The segment byte format, v2: the store's cipher module (with keyfile.py and signing.py, the only ones).

``docs/format.md`` is the normative specification; this module implements its
cryptography, and :mod:`agent.store.segment_layout` the parts that need no key
(constants, names, the header parser, the RECOVERY and DELETION bodies, the
keyless framing scan); the names of both are importable from here.  In short, a
segment is::

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
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.errors import KeyError_, StoreCorrupt, StoreFormatError
from agent.store.segment_layout import (
    DATA_RECORD_TYPES,
    DELETION,
    EVENTS,
    FRAME,
    HEADER_SIZE,
    KEY_MATERIAL_OFFSET,
    KEY_MATERIAL_SIZE,
    KEY_SIZE,
    MAGIC,
    MAX_PLAINTEXT,
    RECORD_HEAD,
    RECOVERY,
    RECOVERY_SHAPES,
    SEAL,
    SEAL_BODY,
    SEAL_CLOSES_SESSION,
    SEAL_RECOVERED,
    SESSION_ID_SIZE,
    TAG_SIZE,
    VERSION,
    WRAP_AD_SIZE,
    ZERO_COMMIT,
    DeletionInfo,
    Framing,
    RecoveryInfo,
    SegmentHeader,
    check_header_fields,
    check_record_head,
    header_prefix,
    is_segment_name,
    parse_header,
    parse_seal,
    record_ad,
    record_nonce,
    scan_framing,
    segment_commit,
    segment_index,
    segment_name,
    session_id_bytes,
)

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
        check_header_fields(session_id, index, prev_commit)
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
        self._write_record(SEAL, SEAL_BODY.pack(self._counter, flags), final=True)
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
        size = RECORD_HEAD.size + len(plaintext) + TAG_SIZE
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        record = memoryview(self._buffer)[:size]
        RECORD_HEAD.pack_into(record, 0, size - RECORD_HEAD.size, record_type)
        self._aead.encrypt_into(nonce, plaintext, ad, record[RECORD_HEAD.size :])
        self._hash.update(record[: RECORD_HEAD.size])
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
    prefix = header_prefix(session_id, index, prev_commit, ephemeral_public)
    wrap = AESGCM(_wrap_key(shared, ephemeral_public, recipient))
    return prefix + wrap.encrypt(_WRAP_NONCE, file_key, prefix), file_key


def _open_target(target: BinaryIO | str | os.PathLike[str]) -> tuple[BinaryIO, bool]:
    if isinstance(target, (str, os.PathLike)):
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(Path(target), flags, 0o600)
        return os.fdopen(fd, "wb", buffering=0), True  # one write per record; nothing held back
    return target, False


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
    header = parse_header(view, name)
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


def _unwrap(header: SegmentHeader, identity: bytes, name: str) -> bytes:
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
        if size - offset < RECORD_HEAD.size:
            body.tail = size - offset
            return body
        length, record_type = RECORD_HEAD.unpack_from(view, offset)
        check_record_head(length, record_type, name, offset)
        end = offset + RECORD_HEAD.size + length
        if end > size:
            body.tail = size - offset
            return body
        final = record_type == SEAL
        try:
            plaintext = aead.decrypt(
                record_nonce(counter, final=final),
                view[offset + RECORD_HEAD.size : end],
                record_ad(header_hash, counter, record_type),
            )
        except InvalidTag:
            msg = f"{name}: {_AUTH_FAILED} at offset {offset}"
            raise StoreCorrupt(msg, offset=offset) from None
        if final:
            body.flags = parse_seal(plaintext, counter, name, offset)
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


class Spool:
    """Bytes set aside for the length of one task (an export), encrypted, in a file with no name.

    What an export makes once and needs again later (a frame rebuilt from patches, a frame masked
    by OCR) is put here instead of in memory, so memory does not grow with the session.  The file
    is made with :func:`tempfile.TemporaryFile` in ``directory`` (the store's data folder: on disk,
    private; never a tmpfs that would hold it in memory): on Linux it never has a name
    (``O_TMPFILE``), elsewhere its name is removed at once, and it is gone when closed or when the
    process dies.  Each piece is AES-256-GCM under a key made here and held only by this object
    (never written), with its index as nonce and associated data: nothing readable reaches the
    disk, and a piece changed, moved or swapped fails to open (opaque :class:`StoreCorrupt`).
    Thread-safe.
    """

    _AD = b"optin-spool-1"

    def __init__(self, directory: Path) -> None:
        import tempfile
        import threading
        import weakref

        self._file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed by close()
        self._closer = weakref.finalize(self, self._file.close)  # when the last frame using it goes
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))
        self._lock = threading.Lock()
        self._end = 0
        self._count = 0

    def put(self, data: bytes) -> tuple[int, int, int]:
        """Set ``data`` aside; returns where it is: ``(index, offset, length)``."""
        with self._lock:
            index = self._count
            sealed = self._aead.encrypt(index.to_bytes(12, "big"), data, self._AD + index.to_bytes(8, "big"))
            offset = self._end
            self._file.seek(offset)
            self._file.write(sealed)
            self._count, self._end = index + 1, offset + len(sealed)
        return index, offset, len(sealed)

    def get(self, where: tuple[int, int, int]) -> bytes:
        """The bytes :meth:`put` returned ``where`` for.

        :raises StoreCorrupt: they do not open (the file was changed): opaque.
        """
        index, offset, length = where
        with self._lock:
            self._file.flush()
            self._file.seek(offset)
            sealed = self._file.read(length)
        try:
            return self._aead.decrypt(index.to_bytes(12, "big"), sealed, self._AD + index.to_bytes(8, "big"))
        except InvalidTag:
            msg = "the export's spool file failed authentication"
            raise StoreCorrupt(msg) from None

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._end

    def close(self) -> None:
        self._closer()


__all__ = [
    "DATA_RECORD_TYPES",
    "DELETION",
    "EVENTS",
    "FRAME",
    "HEADER_SIZE",
    "KEY_MATERIAL_OFFSET",
    "KEY_MATERIAL_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_PLAINTEXT",
    "RECOVERY",
    "RECOVERY_SHAPES",
    "SEAL",
    "SEAL_CLOSES_SESSION",
    "SEAL_RECOVERED",
    "SESSION_ID_SIZE",
    "TAG_SIZE",
    "VERSION",
    "WRAP_AD_SIZE",
    "ZERO_COMMIT",
    "DeletionInfo",
    "Framing",
    "RecoveryInfo",
    "SegmentContents",
    "SegmentWriter",
    "Spool",
    "check_key",
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
