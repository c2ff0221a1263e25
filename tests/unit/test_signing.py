"""The per-study signing key and volunteer id (docs/export-format.md, "Keys and the volunteer id"):
the spec's known answers, an independent derivation from the spec's words, the id a collector
recomputes from a public key, and signatures that fail when anything changes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from agent.store import signing

IDENTITY = bytes(range(32))
STUDY = "web-tasks-2026"
#: Known answers for IDENTITY, as docs/export-format.md prints them.
SEED = "775ad4bff1e5726fd1bf2f38b448cbab12c45334437b93d6160ab4e3d96e81d6"
PUBLIC = "618001c64a3e38e367594203a2046478e1be7f1c4dce6739fa22ac506142dd1a"
PUBLIC_B64 = "YYABxko+OONnWUIDogRkeOG+fxxNzmc5+iKsUGFC3Ro="
VOLUNTEER = "4e043fa221a4110a7fe2f061c1f25333"
SIGNATURE = (
    "f69f6cc433d8573a10097affd31c0e5d709edb2cfcac231203f98f7f31f6403a"
    "a3d8969ee30c8ec393a22020b39d76ca30ed2fedf3ab1f237f3af48ffd373903"
)  # of b"manifest" (Ed25519 is deterministic)
OTHER_STUDY = "another-study"
OTHER_SEED = "382153cf8440cb98a14340f5da19ffba433ab5d1f757aedf2ca6fb268a5b380f"
OTHER_PUBLIC = "ad44fbc73fafaf7d31689b0313cee7506b7233cdd105e9f6a930be41b1c90962"
OTHER_VOLUNTEER = "d70b0838e169dddc7e852d91b54408d7"
#: optin-bundle/1 (one key for every study; the id is an HMAC under the seed).
V1_SEED = "4b468bd3ad4e05aa76b33bbb9e19f00960d691f29255092d27478ea0cb6125a4"
V1_PUBLIC = "c92830395b2865b092a3d4c274d5ac8f2632d16ac84ea535d8d175715c53f23f"
V1_VOLUNTEER = "1a70955b4c27f070b217d66f8acec94a"


def test_known_answers() -> None:
    assert signing.signing_seed(IDENTITY, STUDY).hex() == SEED
    assert signing.public_signing_key(IDENTITY, STUDY).hex() == PUBLIC
    assert base64.b64encode(bytes.fromhex(PUBLIC)).decode() == PUBLIC_B64
    assert signing.volunteer_id(IDENTITY, STUDY) == VOLUNTEER
    assert signing.sign(IDENTITY, STUDY, b"manifest").hex() == SIGNATURE
    assert signing.signing_seed(IDENTITY, OTHER_STUDY).hex() == OTHER_SEED
    assert signing.public_signing_key(IDENTITY, OTHER_STUDY).hex() == OTHER_PUBLIC
    assert signing.volunteer_id(IDENTITY, OTHER_STUDY) == OTHER_VOLUNTEER


def test_v1_known_answers() -> None:
    seed = signing.v1_signing_seed(IDENTITY)
    assert seed.hex() == V1_SEED and signing.public_key_of_seed(seed).hex() == V1_PUBLIC
    assert signing.v1_volunteer_id(IDENTITY, STUDY) == V1_VOLUNTEER


def _hkdf_by_hand(ikm: bytes, info: bytes) -> bytes:
    # HKDF-SHA-256 (RFC 5869) with an empty salt: extract with a zero key, one expand block
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_the_keys_and_ids_follow_the_spec_written_out_by_hand() -> None:
    for study, seed_hex, public_hex, vid in (
        (STUDY, SEED, PUBLIC, VOLUNTEER),
        (OTHER_STUDY, OTHER_SEED, OTHER_PUBLIC, OTHER_VOLUNTEER),
    ):
        seed = _hkdf_by_hand(IDENTITY, b"optin signing key v2\x00" + study.encode())
        assert seed.hex() == seed_hex
        public = bytes.fromhex(public_hex)
        digest = hashlib.sha256(b"optin volunteer id v2\x00" + study.encode() + b"\x00" + public).digest()
        assert digest[:16].hex() == vid
    v1 = _hkdf_by_hand(IDENTITY, b"optin signing key v1")
    assert v1.hex() == V1_SEED
    mac = hmac.new(v1, b"optin volunteer id v1\x00web-tasks-2026", hashlib.sha256).digest()
    assert mac[:16].hex() == V1_VOLUNTEER


def test_a_collector_recomputes_the_id_from_the_public_key_alone() -> None:
    assert signing.id_of_key(STUDY, bytes.fromhex(PUBLIC)) == VOLUNTEER
    # another key cannot claim the id, nor the same key in another study
    fresh = signing.public_key_of_seed(bytes(32))
    assert signing.id_of_key(STUDY, fresh) != VOLUNTEER
    assert signing.id_of_key(OTHER_STUDY, bytes.fromhex(PUBLIC)) != VOLUNTEER
    with pytest.raises(ValueError, match="32 bytes"):
        signing.id_of_key(STUDY, b"short")
    with pytest.raises(ValueError):
        signing.id_of_key("\ud800", bytes(32))  # not UTF-8: a hostile manifest's study id


def test_two_studies_see_unrelated_keys_and_ids_one_study_the_same() -> None:
    other = bytes(range(1, 33))
    keys = {
        signing.public_signing_key(IDENTITY, "a"),
        signing.public_signing_key(IDENTITY, "b"),
        signing.public_signing_key(other, "a"),
        signing.public_key_of_seed(signing.v1_signing_seed(IDENTITY)),
    }
    ids = {
        signing.volunteer_id(IDENTITY, "a"),
        signing.volunteer_id(IDENTITY, "b"),
        signing.volunteer_id(other, "a"),
        signing.v1_volunteer_id(IDENTITY, "a"),
    }
    assert len(keys) == 4 and len(ids) == 4
    assert signing.volunteer_id(IDENTITY, "a") == signing.volunteer_id(IDENTITY, "a")
    # the study id is length-delimited: "a" + NUL + ... cannot collide with a longer id
    assert signing.signing_seed(IDENTITY, "a") != signing.signing_seed(IDENTITY, "a\x00")


@pytest.mark.parametrize("change", ["message", "signature", "key", "study"])
def test_any_change_fails_verification(change: str) -> None:
    message = b'{"schema":"optin-bundle/2"}'
    sig = signing.sign(IDENTITY, STUDY, message)
    public = signing.public_signing_key(IDENTITY, STUDY)
    assert signing.verify(public, message, sig)
    if change == "message":
        message = message.replace(b"2", b"3")
    elif change == "signature":
        sig = bytes([sig[0] ^ 1]) + sig[1:]
    elif change == "key":
        public = signing.public_signing_key(bytes(32), STUDY)
    else:
        public = signing.public_signing_key(IDENTITY, OTHER_STUDY)
    assert not signing.verify(public, message, sig)


def test_malformed_inputs_are_just_invalid() -> None:
    assert not signing.verify(b"short", b"m", bytes(64))
    assert not signing.verify(bytes(32), b"m", b"short")
    assert not signing.verify(b"\xff" * 32, b"m", bytes(64))  # not a point on the curve


def test_the_spec_prints_these_answers() -> None:
    """docs/export-format.md and this file agree on every known answer."""
    from pathlib import Path

    spec = (Path(__file__).resolve().parents[2] / "docs" / "export-format.md").read_text(encoding="utf-8")
    spec = spec.replace("\n                ", "")  # the signature is printed on two lines
    answers = [SEED, PUBLIC, PUBLIC_B64, VOLUNTEER, SIGNATURE, OTHER_SEED, OTHER_PUBLIC, OTHER_VOLUNTEER]
    answers += [V1_SEED, V1_PUBLIC, V1_VOLUNTEER, IDENTITY.hex(), STUDY, OTHER_STUDY]
    assert [a for a in answers if a not in spec] == []
