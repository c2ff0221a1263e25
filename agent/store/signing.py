"""The volunteer's signing key and per-study pseudonym, derived from their identity.

docs/export-format.md (``optin-bundle/1``, "Keys and the volunteer id") specifies both:
no second secret is stored, so a volunteer who can unlock their sessions can sign their
exports, and a study sees one stable pseudonym that no other study shares.

* ``seed = HKDF-SHA-256(ikm=identity, salt="", info="optin signing key v1", L=32)``, the
  Ed25519 private key (RFC 8032);
* ``id = HMAC-SHA-256(seed, "optin volunteer id v1" || 0x00 || study id)[:16]``, hex.

Verification failures are one opaque answer (False), never a reason.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNING_INFO = b"optin signing key v1"
VOLUNTEER_ID_LABEL = b"optin volunteer id v1"
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32


def signing_seed(identity: bytes) -> bytes:
    """The 32-byte Ed25519 seed derived from the volunteer's X25519 identity."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SIGNING_INFO).derive(identity)


def public_signing_key(identity: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key that verifies the volunteer's bundles."""
    key = Ed25519PrivateKey.from_private_bytes(signing_seed(identity))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(identity: bytes, message: bytes) -> bytes:
    """Ed25519 signature of ``message`` with the volunteer's derived key."""
    return Ed25519PrivateKey.from_private_bytes(signing_seed(identity)).sign(message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid signature of ``message`` by ``public_key`` (opaque on failure)."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def volunteer_id(identity: bytes, study_id: str) -> str:
    """The volunteer's pseudonym for one study: 32 hex characters, the same in every export to it."""
    mac = hmac.new(signing_seed(identity), VOLUNTEER_ID_LABEL + b"\x00" + study_id.encode(), hashlib.sha256)
    return mac.digest()[:16].hex()
