"""The segment byte layout, v2, without any key: what a segment's bytes mean.

``docs/format.md`` is the normative specification; :mod:`agent.store.format` encrypts and
decrypts segments, this module holds the parts of the format that need no cipher:

* the constants (magic, sizes, record types, SEAL flags) and the header's field layout;
* file names (:func:`segment_name`), the header session id, a record's nonce and associated data;
* the header parser and the checks of a record head and a SEAL body;
* the plaintext of the RECOVERY and DELETION records (:class:`RecoveryInfo`, :class:`DeletionInfo`);
* the keyless record walk: :func:`scan_framing` (what crash recovery can see) and
  :func:`segment_commit`.

Nothing here imports a cipher: the house rule "only the store's format, keyfile and
signing modules touch ciphers" keeps this module on the plain side.

Errors: structural problems are :class:`StoreFormatError` naming file and offset.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import StoreFormatError

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
#: Types a writer may append (RECOVERY is written only by
#: :func:`~agent.store.format.write_recovery_segment`, DELETION only by
#: :func:`~agent.store.format.write_deletion_segment`, SEAL only by
#: :meth:`~agent.store.format.SegmentWriter.seal`).
DATA_RECORD_TYPES = frozenset({EVENTS, FRAME})
#: Every record type a reader accepts.
RECORD_TYPES = frozenset({EVENTS, FRAME, RECOVERY, DELETION, SEAL})

#: Flags in the SEAL record.
SEAL_RECOVERED = 0x01
SEAL_CLOSES_SESSION = 0x02
#: Every flag a SEAL record may carry.
SEAL_FLAGS = SEAL_RECOVERED | SEAL_CLOSES_SESSION

#: Shapes of a crashed session's end, as recorded in a RECOVERY record (docs/format.md).
RECOVERY_SHAPES = {"unsealed": 1, "sealed": 2, "removed": 3}

#: Largest plaintext of one record (256 MiB): bounds a reader's allocation.
MAX_PLAINTEXT = 1 << 28

#: The header before the wrapped file key: magic, session id, index, prev commit, ephemeral key.
HEADER_FIXED = struct.Struct(">8s16sI32s32s")
#: Bytes of the header covered by the wrap's associated data.
WRAP_AD_SIZE = HEADER_FIXED.size
#: Size of the whole header.
HEADER_SIZE = WRAP_AD_SIZE + KEY_SIZE + TAG_SIZE
#: Offset and size of a header's key material: the ephemeral share and the wrapped file key
#: (60 and 80).  Overwriting them makes the segment undecryptable (crypto-shredding, docs/format.md).
KEY_MATERIAL_OFFSET = WRAP_AD_SIZE - KEY_SIZE
KEY_MATERIAL_SIZE = HEADER_SIZE - KEY_MATERIAL_OFFSET
#: The plaintext head of every record: ciphertext length (u32 BE), record type (u8).
RECORD_HEAD = struct.Struct(">IB")
_AD_TAIL = struct.Struct(">QB")  # record index, record type
#: The SEAL body: count of records before the SEAL (u64 BE), flags (u8).
SEAL_BODY = struct.Struct(">QB")
_RECOVERY_BODY = struct.Struct(">BIQQ")  # shape, segment index, original length, kept length
_DELETION_BODY = struct.Struct(">IIQQ")  # first removed segment, segments removed, bytes removed, when
_COUNTER_BYTES = 11
_MAX_INDEX = (1 << 32) - 1


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


def header_prefix(session_id: bytes, index: int, prev_commit: bytes, ephemeral_public: bytes) -> bytes:
    """The header's first :data:`WRAP_AD_SIZE` bytes (the wrap's associated data)."""
    return HEADER_FIXED.pack(MAGIC, session_id, index, prev_commit, ephemeral_public)


def check_header_fields(session_id: bytes, index: int, prev_commit: bytes) -> None:
    """Refuse header fields a writer must never write (ValueError: a caller's bug, not bad data)."""
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


# --- the header, record heads and the SEAL body ---------------------------------------------


@dataclass(frozen=True)
class SegmentHeader:
    """A parsed segment header (:func:`parse_header`); nothing in it is authenticated yet.

    :ivar raw: the whole header's bytes (the wrap's associated data is ``raw[:WRAP_AD_SIZE]``).
    """

    session_id: bytes
    index: int
    prev_commit: bytes
    ephemeral_public: bytes
    wrapped_key: bytes
    raw: bytes


def parse_header(view: memoryview, name: str) -> SegmentHeader:
    """The header at the start of ``view``; ``name`` goes into errors.

    :raises StoreFormatError: bad magic or version, or fewer than :data:`HEADER_SIZE` bytes.
    """
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
    _, session_id, index, prev_commit, ephemeral = HEADER_FIXED.unpack_from(view)
    return SegmentHeader(
        session_id=session_id,
        index=index,
        prev_commit=prev_commit,
        ephemeral_public=ephemeral,
        wrapped_key=bytes(view[WRAP_AD_SIZE:HEADER_SIZE]),
        raw=bytes(view[:HEADER_SIZE]),
    )


def check_record_head(length: int, record_type: int, name: str, offset: int) -> None:
    """Refuse a record head of an unknown type or an impossible length (StoreFormatError)."""
    if record_type not in RECORD_TYPES:
        msg = f"{name}: unknown record type 0x{record_type:02x} at offset {offset}"
        raise StoreFormatError(msg, offset=offset)
    if not TAG_SIZE <= length <= MAX_PLAINTEXT + TAG_SIZE:
        msg = f"{name}: record length {length} out of range at offset {offset}"
        raise StoreFormatError(msg, offset=offset)


def parse_seal(plaintext: bytes, counter: int, name: str, offset: int) -> int:
    """The flags of a SEAL plaintext that counts ``counter`` records before it (else StoreFormatError)."""
    if len(plaintext) != SEAL_BODY.size:
        msg = f"{name}: SEAL record at offset {offset} has {len(plaintext)} bytes, expected {SEAL_BODY.size}"
        raise StoreFormatError(msg, offset=offset)
    count, flags = SEAL_BODY.unpack(plaintext)
    if count != counter or flags & ~SEAL_FLAGS:
        msg = f"{name}: malformed SEAL record at offset {offset}"
        raise StoreFormatError(msg, offset=offset)
    return int(flags)


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


# --- the keyless record walk ----------------------------------------------------------------


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
    header = parse_header(view, name)
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
            if size - offset < RECORD_HEAD.size:
                self.stop = "partial"
                return
            length, record_type = RECORD_HEAD.unpack_from(view, offset)
            if record_type not in RECORD_TYPES or not TAG_SIZE <= length <= MAX_PLAINTEXT + TAG_SIZE:
                self.stop = "bad-head"
                return
            end = offset + RECORD_HEAD.size + length
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
        digest.update(view[offset : offset + RECORD_HEAD.size])
        digest.update(view[end - TAG_SIZE : end])
    digest.update(view[walk.end :])
    return digest.digest()


__all__ = [
    "DATA_RECORD_TYPES",
    "DELETION",
    "EVENTS",
    "FRAME",
    "HEADER_FIXED",
    "HEADER_SIZE",
    "KEY_MATERIAL_OFFSET",
    "KEY_MATERIAL_SIZE",
    "KEY_SIZE",
    "MAGIC",
    "MAX_PLAINTEXT",
    "RECORD_HEAD",
    "RECORD_TYPES",
    "RECOVERY",
    "RECOVERY_SHAPES",
    "SEAL",
    "SEAL_BODY",
    "SEAL_CLOSES_SESSION",
    "SEAL_FLAGS",
    "SEAL_RECOVERED",
    "SESSION_ID_SIZE",
    "TAG_SIZE",
    "VERSION",
    "WRAP_AD_SIZE",
    "ZERO_COMMIT",
    "DeletionInfo",
    "Framing",
    "RecoveryInfo",
    "SegmentHeader",
    "check_header_fields",
    "check_record_head",
    "header_prefix",
    "is_segment_name",
    "parse_header",
    "parse_seal",
    "record_ad",
    "record_nonce",
    "scan_framing",
    "segment_commit",
    "segment_index",
    "segment_name",
    "session_id_bytes",
]
