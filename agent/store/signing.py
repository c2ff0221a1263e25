"""The volunteer's per-study signing key and pseudonym, derived from their identity.

docs/export-format.md ("Keys and the volunteer id") specifies both: no second secret is
stored, so a volunteer who can unlock their sessions can sign their exports; each study sees
its own key, and a pseudonym the study can check against that key.

* ``seed = HKDF-SHA-256(ikm=identity, salt="", info="optin signing key v2" || 0x00 || study id)``,
  the Ed25519 private key (RFC 8032);
* ``id = hex(SHA-256("optin volunteer id v2" || 0x00 || study id || 0x00 || public key)[:16])``:
  the collector recomputes it from the manifest (:func:`id_of_key`), so a bundle signed with one
  key cannot carry another volunteer's id.

``optin-bundle/1`` keys (one key for every study, an id nobody but the volunteer can check) are
kept as :func:`v1_signing_seed` and :func:`v1_volunteer_id`, for reading old bundles and for a
volunteer who names their old id. Verification failures are one opaque answer (False).
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SIGNING_INFO = b"optin signing key v2"
VOLUNTEER_ID_LABEL = b"optin volunteer id v2"
V1_SIGNING_INFO = b"optin signing key v1"
V1_VOLUNTEER_ID_LABEL = b"optin volunteer id v1"
SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = 32
#: Hex characters of a volunteer id (16 bytes).
VOLUNTEER_ID_CHARS = 32


def _study(study_id: str) -> bytes:
    """The study id's UTF-8 bytes (:class:`UnicodeEncodeError`, a ValueError, for lone surrogates)."""
    return study_id.encode("utf-8")


def _hkdf(identity: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(identity)


def signing_seed(identity: bytes, study_id: str) -> bytes:
    """The 32-byte Ed25519 seed of the volunteer's key for ``study_id``."""
    return _hkdf(identity, SIGNING_INFO + b"\x00" + _study(study_id))


def public_key_of_seed(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of ``seed``."""
    key = Ed25519PrivateKey.from_private_bytes(seed)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign_with_seed(seed: bytes, message: bytes) -> bytes:
    """Ed25519 signature of ``message`` with the private key ``seed``."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def public_signing_key(identity: bytes, study_id: str) -> bytes:
    """The raw 32-byte Ed25519 public key that verifies the volunteer's bundles for ``study_id``."""
    return public_key_of_seed(signing_seed(identity, study_id))


def sign(identity: bytes, study_id: str, message: bytes) -> bytes:
    """Ed25519 signature of ``message`` with the volunteer's key for ``study_id``."""
    return sign_with_seed(signing_seed(identity, study_id), message)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid signature of ``message`` by ``public_key`` (opaque on failure)."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def id_of_key(study_id: str, public_key: bytes) -> str:
    """The volunteer id that ``public_key`` stands for in ``study_id`` (32 hex characters).

    :raises ValueError: ``public_key`` is not 32 bytes, or ``study_id`` is not encodable as UTF-8.
    """
    if len(public_key) != PUBLIC_KEY_SIZE:
        msg = f"a signing key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}"
        raise ValueError(msg)
    digest = hashlib.sha256(VOLUNTEER_ID_LABEL + b"\x00" + _study(study_id) + b"\x00" + public_key)
    return digest.digest()[:16].hex()


def volunteer_id(identity: bytes, study_id: str) -> str:
    """The volunteer's pseudonym for one study: 32 hex characters, the same in every export to it."""
    return id_of_key(study_id, public_signing_key(identity, study_id))


# --- optin-bundle/1 ---------------------------------------------------------------------------------


def v1_signing_seed(identity: bytes) -> bytes:
    """The ``optin-bundle/1`` seed: one key for every study."""
    return _hkdf(identity, V1_SIGNING_INFO)


def v1_volunteer_id(identity: bytes, study_id: str) -> str:
    """The id ``optin-bundle/1`` bundles carry (an HMAC under the seed: only the volunteer can compute it)."""
    mac = hmac.new(
        v1_signing_seed(identity), V1_VOLUNTEER_ID_LABEL + b"\x00" + _study(study_id), hashlib.sha256
    )
    return mac.digest()[:16].hex()
