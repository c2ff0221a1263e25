"""The segment byte format: known-answer vector (shared with docs/format.md), nonce pins, tampering."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest

from agent.errors import KeyError_, StoreCorrupt, StoreFormatError
from agent.store import format as fmt
from tests.unit.store_helpers import doc_vector as store_doc_vector
from tests.unit.store_helpers import spec_commit

DOC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
SESSION_NAME = "20261127T213000Z-1a2b3c4d"
RECORD_HEADS = (140, 175, 210)  # offsets of the three record heads in the vector


def doc_vector() -> dict[str, str]:
    """The ``name hex`` block after the known-answer marker in docs/format.md."""
    return store_doc_vector("format.md", "known-answer vector")


V = doc_vector()


def kat_segment() -> bytes:
    buf = io.BytesIO()
    writer = fmt.SegmentWriter(
        buf,
        session_id=fmt.session_id_bytes(SESSION_NAME),
        index=0,
        prev_commit=fmt.ZERO_COMMIT,
        recipient=fmt.public_from_private(bytes.fromhex(V["identity"])),
        _ephemeral_private=bytes.fromhex(V["ephemeral-secret"]),
        _file_key=bytes.fromhex(V["file-key"]),
    )
    writer.append(int(V["record-0-type"], 16), bytes.fromhex(V["record-0"]))
    writer.append(int(V["record-1-type"], 16), bytes.fromhex(V["record-1"]))
    commit = writer.seal(closes_session=True)
    assert commit == bytes.fromhex(V["commit"])
    assert writer.bytes_written == len(buf.getvalue())
    return buf.getvalue()


IDENTITY = bytes.fromhex(V["identity"])


# --- known answers ------------------------------------------------------------------------


def test_known_answer_vector_matches_docs() -> None:
    data = kat_segment()
    assert data.hex() == V["segment"]
    assert spec_commit(data).hex() == V["commit"]
    assert len(data) == 240


def test_known_answer_keys_and_session_id() -> None:
    assert fmt.public_from_private(IDENTITY).hex() == V["recipient"]
    assert fmt.public_from_private(bytes.fromhex(V["ephemeral-secret"])).hex() == V["ephemeral-share"]
    assert fmt.session_id_bytes(SESSION_NAME).hex() == V["session-id"]


def test_known_answer_follows_the_spec_independently() -> None:
    """Re-derive the vector from docs/format.md's formulas with the primitives directly.

    This is a second, test-only implementation of the spec (it is why this test, not the
    agent, imports ``cryptography``): it catches a drift between the document and the code.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    def hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)

    seg = bytes.fromhex(V["segment"])
    assert seg[:8] == b"optinSG\x02"
    assert seg[8:24].hex() == V["session-id"]
    assert seg[24:28] == b"\x00\x00\x00\x00"
    assert seg[28:60] == bytes(32)
    eph = seg[60:92]
    assert eph.hex() == V["ephemeral-share"]
    recipient = bytes.fromhex(V["recipient"])
    shared = X25519PrivateKey.from_private_bytes(IDENTITY).exchange(X25519PublicKey.from_public_bytes(eph))
    assert shared.hex() == V["shared-secret"]
    wrap_key = hkdf(shared, eph + recipient, b"optin/v1 wrap")
    assert wrap_key.hex() == V["wrap-key"]
    file_key = AESGCM(wrap_key).decrypt(bytes(12), seg[92:140], seg[:92])
    assert file_key.hex() == V["file-key"]
    header_hash = hashlib.sha256(seg[:140]).digest()
    assert header_hash.hex() == V["header-hash"]
    payload = AESGCM(hkdf(file_key, header_hash, b"optin/v1 payload"))
    assert hkdf(file_key, header_hash, b"optin/v1 payload").hex() == V["payload-key"]

    offset, plaintexts = 140, []
    for i in range(3):
        length = int.from_bytes(seg[offset : offset + 4], "big")
        rtype = seg[offset + 4]
        final = rtype == 0x7F
        nonce = i.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
        ad = header_hash + i.to_bytes(8, "big") + bytes([rtype])
        if i == 1:
            assert ad.hex() == V["record-1-ad"]
        plaintexts.append((rtype, payload.decrypt(nonce, seg[offset + 5 : offset + 5 + length], ad)))
        offset += 5 + length
    assert offset == len(seg)
    assert plaintexts == [
        (1, bytes.fromhex(V["record-0"])),
        (2, bytes.fromhex(V["record-1"])),
        (0x7F, (2).to_bytes(8, "big") + b"\x02"),
    ]


def test_nonce_encoding_is_pinned() -> None:
    assert fmt.record_nonce(0x5544332211, final=True) == bytes.fromhex("00 00 00 00 00 00 55 44 33 22 11 01")
    assert fmt.record_nonce(0, final=False) == bytes(12)
    assert fmt.record_nonce(2**88 - 1, final=False) == b"\xff" * 11 + b"\x00"
    text = DOC.read_text(encoding="utf-8")
    assert "record_nonce(counter = 0x5544332211, final = 1) = 000000000000554433221101" in text


def test_associated_data_layout() -> None:
    header_hash = bytes.fromhex(V["header-hash"])
    assert fmt.record_ad(header_hash, 1, fmt.FRAME).hex() == V["record-1-ad"]


def test_read_known_answer() -> None:
    contents = fmt.read_segment(kat_segment(), IDENTITY, name="kat.seg")
    assert contents.records == [(fmt.EVENTS, b"optin record 0"), (fmt.FRAME, b"optin record 1")]
    assert contents.sealed and contents.closes_session and not contents.recovered
    assert contents.commit == bytes.fromhex(V["commit"])
    assert contents.index == 0 and contents.prev_commit == fmt.ZERO_COMMIT
    assert contents.session_id == fmt.session_id_bytes(SESSION_NAME)
    assert contents.tail == 0


# --- keys and randomness ---------------------------------------------------------------------


def test_generate_keypair_is_fresh_and_consistent() -> None:
    private, public = fmt.generate_keypair()
    other, _ = fmt.generate_keypair()
    assert len(private) == len(public) == 32
    assert private != other
    assert fmt.public_from_private(private) == public


def test_production_segments_use_fresh_randomness() -> None:
    _, public = fmt.generate_keypair()
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        w = fmt.SegmentWriter(
            buf, session_id=bytes(16), index=0, prev_commit=fmt.ZERO_COMMIT, recipient=public
        )
        w.append(fmt.EVENTS, b"same")
        w.seal()
        outs.append(buf.getvalue())
    assert outs[0][60:140] != outs[1][60:140]  # ephemeral share and wrapped key differ
    assert outs[0][140:] != outs[1][140:]


def test_wrong_identity_is_opaque_corruption() -> None:
    other, _ = fmt.generate_keypair()
    with pytest.raises(StoreCorrupt) as info:
        fmt.read_segment(kat_segment(), other, name="kat.seg")
    assert str(info.value) == "kat.seg: segment authentication failed at offset 92"


def test_identity_must_be_32_bytes() -> None:
    with pytest.raises(KeyError_):
        fmt.read_segment(kat_segment(), b"short", name="kat.seg")
    with pytest.raises(KeyError_):
        fmt.public_from_private(bytes(31))


@pytest.mark.parametrize("recipient", [bytes(32), bytes(31)])
def test_unusable_recipient_is_refused(recipient: bytes) -> None:
    with pytest.raises(KeyError_):
        fmt.SegmentWriter(
            io.BytesIO(), session_id=bytes(16), index=0, prev_commit=fmt.ZERO_COMMIT, recipient=recipient
        )


# --- tampering ---------------------------------------------------------------------------------


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_every_single_bit_flip_is_detected() -> None:
    data = kat_segment()
    length_bytes = {h + k for h in RECORD_HEADS for k in range(4)}
    for bit in range(len(data) * 8):
        try:
            contents = fmt.read_segment(_flip(data, bit), IDENTITY, name="kat.seg")
        except (StoreCorrupt, StoreFormatError):
            continue
        # Only a length that now runs past the end of the file can read as a cut-off (unsealed) tail.
        assert bit // 8 in length_bytes, f"flip of bit {bit} went unnoticed"
        assert not contents.sealed
        assert contents.commit is None


@pytest.mark.parametrize("offset", [0, 7, 8, 24, 28, 60, 92, 139, 144, 150, 174, 179, 214, 239])
def test_bit_flip_errors_name_the_file(offset: int) -> None:
    with pytest.raises((StoreCorrupt, StoreFormatError)) as info:
        fmt.read_segment(_flip(kat_segment(), offset * 8), IDENTITY, name="000000.seg")
    assert str(info.value).startswith("000000.seg: ")


def test_flipped_ciphertext_message_is_opaque() -> None:
    with pytest.raises(StoreCorrupt) as info:
        fmt.read_segment(_flip(kat_segment(), 160 * 8), IDENTITY, name="x.seg")
    assert str(info.value) == "x.seg: segment authentication failed at offset 140"


def test_reordered_records_are_detected() -> None:
    data = kat_segment()
    a, b, c = RECORD_HEADS
    swapped = data[:a] + data[b:c] + data[a:b] + data[c:]
    with pytest.raises(StoreCorrupt):
        fmt.read_segment(swapped, IDENTITY, name="kat.seg")


def test_dropped_record_is_detected() -> None:
    data = kat_segment()
    a, b, _ = RECORD_HEADS
    with pytest.raises(StoreCorrupt):
        fmt.read_segment(data[:a] + data[b:], IDENTITY, name="kat.seg")


def test_data_after_seal_is_a_format_error() -> None:
    with pytest.raises(StoreFormatError, match=r"kat.seg: 1 bytes follow the SEAL record at offset 240"):
        fmt.read_segment(kat_segment() + b"\x00", IDENTITY, name="kat.seg")


def test_whole_record_after_seal_is_a_format_error() -> None:
    data = kat_segment()
    a, b, _ = RECORD_HEADS
    with pytest.raises(StoreFormatError):
        fmt.read_segment(data + data[a:b], IDENTITY, name="kat.seg")


def test_truncation_never_reads_as_sealed() -> None:
    data = kat_segment()
    full = fmt.read_segment(data, IDENTITY, name="kat.seg").records
    for size in range(len(data)):
        if size < fmt.HEADER_SIZE:
            with pytest.raises(StoreFormatError, match=r"kat\.seg"):
                fmt.read_segment(data[:size], IDENTITY, name="kat.seg")
            continue
        contents = fmt.read_segment(data[:size], IDENTITY, name="kat.seg")
        assert not contents.sealed and contents.commit is None
        assert contents.records == full[: len(contents.records)]
        whole = sum(1 for h in RECORD_HEADS[1:] if size >= h)
        assert len(contents.records) == whole
        assert contents.tail == size - (RECORD_HEADS[whole] if whole < 3 else 240)


def test_bad_magic_and_version() -> None:
    data = kat_segment()
    with pytest.raises(StoreFormatError, match="not an optin segment"):
        fmt.read_segment(b"PK\x03\x04" + data[4:], IDENTITY, name="kat.seg")
    for version in (1, 3):  # 1: the pre-release format, whose commit differs (docs/format.md)
        with pytest.raises(StoreFormatError, match=f"version {version} is not supported"):
            fmt.read_segment(data[:7] + bytes([version]) + data[8:], IDENTITY, name="kat.seg")
    with pytest.raises(StoreFormatError, match="header ends at offset 100"):
        fmt.read_segment(data[:100], IDENTITY, name="kat.seg")


def test_unknown_record_type_names_offset() -> None:
    data = bytearray(kat_segment())
    data[RECORD_HEADS[1] + 4] = 0x05
    with pytest.raises(StoreFormatError, match=r"kat.seg: unknown record type 0x05 at offset 175"):
        fmt.read_segment(bytes(data), IDENTITY, name="kat.seg")


def test_absurd_record_length_is_a_format_error() -> None:
    data = bytearray(kat_segment())
    data[140:144] = (2**31).to_bytes(4, "big")
    with pytest.raises(StoreFormatError, match="record length 2147483648 out of range at offset 140"):
        fmt.read_segment(bytes(data), IDENTITY, name="kat.seg")
    data[140:144] = (15).to_bytes(4, "big")
    with pytest.raises(StoreFormatError, match="out of range"):
        fmt.read_segment(bytes(data), IDENTITY, name="kat.seg")


def test_retyped_record_fails_authentication() -> None:
    data = bytearray(kat_segment())
    data[RECORD_HEADS[0] + 4] = fmt.FRAME
    with pytest.raises(StoreCorrupt):
        fmt.read_segment(bytes(data), IDENTITY, name="kat.seg")


# --- writer contract -----------------------------------------------------------------------------


def _writer(target: object = None, **kw: object) -> fmt.SegmentWriter:
    args: dict[str, object] = {
        "session_id": bytes(16),
        "index": 0,
        "prev_commit": fmt.ZERO_COMMIT,
        "recipient": fmt.public_from_private(IDENTITY),
    }
    args.update(kw)
    return fmt.SegmentWriter(target if target is not None else io.BytesIO(), **args)  # type: ignore[arg-type]


def test_only_data_records_can_be_appended() -> None:
    w = _writer()
    with pytest.raises(ValueError, match="cannot be appended"):
        w.append(fmt.SEAL, b"")
    with pytest.raises(ValueError, match="cannot be appended"):
        w.append(fmt.RECOVERY, b"")


def test_nothing_after_seal() -> None:
    w = _writer()
    w.append(fmt.EVENTS, b"x")
    w.seal()
    assert w.sealed and w.records == 1
    with pytest.raises(StoreFormatError):
        w.append(fmt.EVENTS, b"y")
    with pytest.raises(StoreFormatError):
        w.seal()


def test_prev_commit_rules() -> None:
    with pytest.raises(ValueError, match="segment 0"):
        _writer(prev_commit=b"\x01" * 32)
    with pytest.raises(ValueError, match="segment 0"):
        _writer(index=1, prev_commit=fmt.ZERO_COMMIT)
    with pytest.raises(ValueError, match="session id"):
        _writer(session_id=b"short")
    with pytest.raises(ValueError, match="out of range"):
        _writer(index=2**32, prev_commit=b"\x01" * 32)


def test_seal_flags_round_trip() -> None:
    buf = io.BytesIO()
    w = _writer(buf, index=3, prev_commit=b"\x07" * 32)
    w.seal()
    contents = fmt.read_segment(buf.getvalue(), IDENTITY, name="s")
    assert contents.sealed and not contents.recovered and not contents.closes_session
    assert contents.records == [] and contents.index == 3 and contents.prev_commit == b"\x07" * 32


def test_path_target_is_private_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "000000.seg"
    old = os.umask(0)
    try:
        w = _writer(path)
    finally:
        os.umask(old)
    w.append(fmt.FRAME, b"\x00" * 1000)
    commit = w.seal()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spec_commit(path.read_bytes()) == commit
    with pytest.raises(FileExistsError):
        _writer(path)


def test_unsealed_writer_leaves_a_readable_prefix(tmp_path: Path) -> None:
    path = tmp_path / "000000.seg"
    w = _writer(path)
    w.append(fmt.EVENTS, b"one")
    w.append(fmt.EVENTS, b"two")
    w.flush(fsync=True)
    w.close()
    contents = fmt.read_segment(path.read_bytes(), IDENTITY, name="000000.seg")
    assert contents.records == [(fmt.EVENTS, b"one"), (fmt.EVENTS, b"two")]
    assert not contents.sealed and contents.tail == 0


def test_oversized_record_is_refused() -> None:
    w = _writer()

    class Huge(bytes):
        def __len__(self) -> int:
            return fmt.MAX_PLAINTEXT + 1

    with pytest.raises(StoreFormatError, match="exceeds"):
        w.append(fmt.FRAME, Huge())
