"""The derived signing key and volunteer id (docs/export-format.md, optin-bundle/1): vectors,
an independent derivation from the spec's words, and signatures that fail when anything changes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from agent.store import signing

IDENTITY = bytes(range(32))
#: Known answers for IDENTITY (also in docs/export-format.md's design when it is built).
SEED = "4b468bd3ad4e05aa76b33bbb9e19f00960d691f29255092d27478ea0cb6125a4"
PUBLIC = "c92830395b2865b092a3d4c274d5ac8f2632d16ac84ea535d8d175715c53f23f"
VOLUNTEER = "1a70955b4c27f070b217d66f8acec94a"  # study "web-tasks-2026"
SIGNATURE = (
    "a9964d5df1058ca11e07f0b343e4771ebbf3b294fd533c2566267ba16b031646"
    "f865495408052157cdc62a4db1d97b614c5090d233536d5cb3ad090e13069102"
)  # of b"manifest" (Ed25519 is deterministic)


def test_known_answers() -> None:
    assert signing.signing_seed(IDENTITY).hex() == SEED
    assert signing.public_signing_key(IDENTITY).hex() == PUBLIC
    assert signing.volunteer_id(IDENTITY, "web-tasks-2026") == VOLUNTEER
    assert signing.sign(IDENTITY, b"manifest").hex() == SIGNATURE


def test_seed_follows_the_spec_written_out_by_hand() -> None:
    # HKDF-SHA-256 (RFC 5869) with an empty salt: extract with a zero key, one expand block
    prk = hmac.new(b"\x00" * 32, IDENTITY, hashlib.sha256).digest()
    okm = hmac.new(prk, b"optin signing key v1" + b"\x01", hashlib.sha256).digest()
    assert okm.hex() == SEED
    mac = hmac.new(okm, b"optin volunteer id v1\x00web-tasks-2026", hashlib.sha256).digest()
    assert mac[:16].hex() == VOLUNTEER


def test_the_id_differs_per_study_and_per_volunteer() -> None:
    other = bytes(range(1, 33))
    ids = {
        signing.volunteer_id(IDENTITY, "a"),
        signing.volunteer_id(IDENTITY, "b"),
        signing.volunteer_id(other, "a"),
    }
    assert len(ids) == 3


@pytest.mark.parametrize("change", ["message", "signature", "key"])
def test_any_change_fails_verification(change: str) -> None:
    message = b'{"schema":"optin-bundle/1"}'
    sig = signing.sign(IDENTITY, message)
    public = signing.public_signing_key(IDENTITY)
    assert signing.verify(public, message, sig)
    if change == "message":
        message = message.replace(b"1", b"2")
    elif change == "signature":
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    else:
        public = signing.public_signing_key(bytes(32))
    assert not signing.verify(public, message, sig)


def test_malformed_inputs_are_just_invalid() -> None:
    assert not signing.verify(b"short", b"m", bytes(64))
    assert not signing.verify(bytes(32), b"m", b"short")
