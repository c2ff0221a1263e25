"""The passphrase-wrapped identity file, ``optin-sec2`` (specified in docs/keys.md).

The volunteer's X25519 private key, sealed with ChaCha20-Poly1305 under a key
that scrypt derives from their passphrase.  The version line, the scrypt
parameters and the public key are the associated data, so an edited parameter
or a swapped public key fails to open.  Failures to open are opaque.  With
:mod:`agent.store.format` and :mod:`agent.store.signing` this is the only module
that touches ciphers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from agent.errors import KeyError_
from agent.store.format import KEY_SIZE, TAG_SIZE, check_key, public_from_private

#: First line of a passphrase-wrapped identity file.
IDENTITY_WRAP_VERSION = "optin-sec2"
#: Size of the random scrypt salt.
IDENTITY_SALT_SIZE = 16
#: Size of the ChaCha20-Poly1305 nonce.
IDENTITY_NONCE_SIZE = 12
#: The one message of every failed unwrap: it never says which check failed.
UNLOCK_FAILED = "wrong passphrase, or the identity file is damaged"
_IDENTITY_SALT_LABEL = b"optin-sec2"
_PUB_PREFIX = "optin-pub1:"
_HEX = "[0-9a-f]"
_IDENTITY_RE = re.compile(
    rf"(?P<header>{IDENTITY_WRAP_VERSION}\n"
    rf"scrypt ln=(?P<ln>[1-9][0-9]?) r=(?P<r>[1-9][0-9]?) p=(?P<p>[1-9][0-9]?)"
    rf" salt=(?P<salt>{_HEX}{{{2 * IDENTITY_SALT_SIZE}}})\n"
    rf"{_PUB_PREFIX}(?P<public>{_HEX}{{{2 * KEY_SIZE}}})\n)"
    rf"chacha20poly1305 nonce=(?P<nonce>{_HEX}{{{2 * IDENTITY_NONCE_SIZE}}})"
    rf" sealed=(?P<sealed>{_HEX}{{{2 * (KEY_SIZE + TAG_SIZE)}}})\n"
)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters: N = 2**log_n, block size r, parallelism p."""

    log_n: int
    r: int
    p: int

    def __str__(self) -> str:
        return f"scrypt N=2^{self.log_n} r={self.r} p={self.p}"


#: What new identity files get: 128 MiB of memory, about 0.34 s on the reference machine (docs/keys.md).
DEFAULT_SCRYPT = ScryptParams(log_n=17, r=8, p=1)
#: The parameters :func:`wrap_identity` uses when none are given (tests lower it for speed).
SCRYPT_PARAMS = DEFAULT_SCRYPT
#: Reading refuses files outside these bounds (a denial-of-service guard, and no optin writes them).
SCRYPT_MIN_LOG_N = 10
SCRYPT_MAX_LOG_N = 20
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16
#: Upper bound on N*r*p (work; 8 times the default).  As p >= 1 it also bounds memory, 128*N*r, to 1 GiB.
SCRYPT_MAX_WORK = 1 << 23


@dataclass(frozen=True)
class WrappedIdentity:
    """The parsed, not yet authenticated, fields of an ``optin-sec2`` file."""

    params: ScryptParams
    salt: bytes
    public: bytes
    nonce: bytes
    sealed: bytes
    header: bytes


def check_scrypt_params(params: ScryptParams) -> None:
    """Refuse cost parameters outside the documented bounds.

    :raises KeyError_: a bound is exceeded; the message names it.
    """
    n = 1 << params.log_n if 0 <= params.log_n < 64 else 1 << 64
    problems = []
    if not SCRYPT_MIN_LOG_N <= params.log_n <= SCRYPT_MAX_LOG_N:
        problems.append(f"N=2^{params.log_n} is outside 2^{SCRYPT_MIN_LOG_N}..2^{SCRYPT_MAX_LOG_N}")
    if not 1 <= params.r <= SCRYPT_MAX_R:
        problems.append(f"r={params.r} is outside 1..{SCRYPT_MAX_R}")
    if not 1 <= params.p <= SCRYPT_MAX_P:
        problems.append(f"p={params.p} is outside 1..{SCRYPT_MAX_P}")
    if not problems and n * params.r * params.p > SCRYPT_MAX_WORK:
        problems.append(f"N*r*p exceeds 2^{SCRYPT_MAX_WORK.bit_length() - 1}")
    if problems:
        msg = f"identity file has unacceptable scrypt parameters ({'; '.join(problems)})"
        raise KeyError_(msg)


def parse_wrapped_identity(blob: bytes) -> WrappedIdentity:
    """Parse an ``optin-sec2`` file without the passphrase (nothing is authenticated yet).

    :raises KeyError_: the file is not a well-formed ``optin-sec2`` identity or
        its scrypt parameters are out of bounds (precise: structure is not secret).
    """
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    match = _IDENTITY_RE.fullmatch(text)
    if match is None:
        msg = (
            f"not an {IDENTITY_WRAP_VERSION} identity file (expected four lines: {IDENTITY_WRAP_VERSION}, "
            "scrypt parameters, the public key, the sealed key; see docs/keys.md): it is damaged. Fix: "
            "restore the keys folder from your backup (recordings can be opened only with this identity)"
        )
        raise KeyError_(msg)
    params = ScryptParams(int(match["ln"]), int(match["r"]), int(match["p"]))
    check_scrypt_params(params)
    return WrappedIdentity(
        params=params,
        salt=bytes.fromhex(match["salt"]),
        public=bytes.fromhex(match["public"]),
        nonce=bytes.fromhex(match["nonce"]),
        sealed=bytes.fromhex(match["sealed"]),
        header=match["header"].encode("ascii"),
    )


def wrap_identity(
    private: bytes,
    passphrase: bytes,
    *,
    params: ScryptParams | None = None,
    _salt: bytes | None = None,
    _nonce: bytes | None = None,
) -> bytes:
    """Seal a raw X25519 private key under a passphrase: the bytes of an ``optin-sec2`` file.

    :param params: scrypt cost; default :data:`SCRYPT_PARAMS`.
    :raises KeyError_: empty passphrase, or parameters out of bounds.
    """
    check_key(private, "identity")
    if not passphrase:
        msg = "an empty passphrase protects nothing; choose a passphrase"
        raise KeyError_(msg)
    params = SCRYPT_PARAMS if params is None else params
    check_scrypt_params(params)
    salt = os.urandom(IDENTITY_SALT_SIZE) if _salt is None else _salt
    nonce = os.urandom(IDENTITY_NONCE_SIZE) if _nonce is None else _nonce
    if len(salt) != IDENTITY_SALT_SIZE or len(nonce) != IDENTITY_NONCE_SIZE:
        msg = f"salt must be {IDENTITY_SALT_SIZE} bytes and nonce {IDENTITY_NONCE_SIZE} bytes"
        raise ValueError(msg)
    header = (
        f"{IDENTITY_WRAP_VERSION}\n"
        f"scrypt ln={params.log_n} r={params.r} p={params.p} salt={salt.hex()}\n"
        f"{_PUB_PREFIX}{public_from_private(private).hex()}\n"
    ).encode("ascii")
    key = _scrypt(passphrase, salt, params)
    sealed = ChaCha20Poly1305(key).encrypt(nonce, private, header)
    return header + f"chacha20poly1305 nonce={nonce.hex()} sealed={sealed.hex()}\n".encode("ascii")


def unwrap_identity(blob: bytes, passphrase: bytes) -> bytes:
    """The raw private key sealed in an ``optin-sec2`` file.

    :raises KeyError_: malformed file or bad parameters (precise), or
        :data:`UNLOCK_FAILED` for every authentication failure (opaque).
    """
    wrapped = parse_wrapped_identity(blob)
    try:
        key = _scrypt(passphrase, wrapped.salt, wrapped.params)
        private = ChaCha20Poly1305(key).decrypt(wrapped.nonce, wrapped.sealed, wrapped.header)
        if public_from_private(private) != wrapped.public:
            raise InvalidTag
    except (InvalidTag, ValueError, KeyError_):
        raise KeyError_(UNLOCK_FAILED) from None
    return private


def _scrypt(passphrase: bytes, salt: bytes, params: ScryptParams) -> bytes:
    kdf = Scrypt(
        salt=_IDENTITY_SALT_LABEL + salt, length=KEY_SIZE, n=1 << params.log_n, r=params.r, p=params.p
    )
    return kdf.derive(passphrase)


__all__ = [
    "DEFAULT_SCRYPT",
    "IDENTITY_NONCE_SIZE",
    "IDENTITY_SALT_SIZE",
    "IDENTITY_WRAP_VERSION",
    "SCRYPT_MAX_LOG_N",
    "SCRYPT_MAX_P",
    "SCRYPT_MAX_R",
    "SCRYPT_MAX_WORK",
    "SCRYPT_MIN_LOG_N",
    "SCRYPT_PARAMS",
    "UNLOCK_FAILED",
    "ScryptParams",
    "WrappedIdentity",
    "check_scrypt_params",
    "parse_wrapped_identity",
    "unwrap_identity",
    "wrap_identity",
]
