"""The volunteer's X25519 key pair, kept under ``Dirs.keys`` (mode 0700).

Two one-line text files:

``recipient``
    the public key, ``optin-pub1:`` + 64 lowercase hex digits.  The recorder
    reads only this file: it can encrypt but never decrypt.
``identity``
    the private key, ``optin-sec1:`` + 64 lowercase hex digits, mode 0600.  It is
    created 0600 with ``O_CREAT | O_EXCL`` (never world-readable, even briefly)
    and refused when its mode lets group or others read it.

.. note::
   In this skeleton the identity is stored unwrapped: the file mode and the
   private directory are its only protection.  A later issue wraps it with a
   passphrase (``OPTIN_PASSPHRASE_FILE``, ``optin keys change-passphrase``) or
   the OS keyring; :func:`load_identity` is the single place that will change.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from agent.errors import KeyError_
from agent.paths import Dirs, check_private_dir, ensure_private_dir, write_private_file
from agent.store.format import KEY_SIZE, generate_keypair, public_from_private

#: Text prefix of a recipient (public key) line.
RECIPIENT_PREFIX = "optin-pub1:"
#: Text prefix of an identity (private key) line.
IDENTITY_PREFIX = "optin-sec1:"

_RECIPIENT_FILE = "recipient"
_IDENTITY_FILE = "identity"
_FIX_INIT = "Fix: run: optin keys init"


def init_keys(dirs: Dirs, *, force: bool = False) -> bytes:
    """Create the key pair and return the raw public key.

    Without ``force`` an existing ``recipient`` is refused (sessions recorded to
    it need its identity, which may be kept elsewhere); an identity whose
    ``recipient`` file is missing (an interrupted init) is completed instead.
    With ``force`` the old pair is replaced: the old ``recipient`` is removed
    first, so no window exists in which the recorder could encrypt to a public
    key whose identity is gone.

    :raises KeyError_: a key pair exists and ``force`` is false.
    """
    ensure_private_dir(dirs.data)
    keys_dir = ensure_private_dir(dirs.keys)
    identity_path = keys_dir / _IDENTITY_FILE
    recipient_path = keys_dir / _RECIPIENT_FILE
    if not force and recipient_path.exists():
        msg = (
            f"a key pair already exists in {keys_dir}; the sessions recorded to it need it. "
            "Fix: keep it (optin keys show), or replace it with: optin keys init --force "
            "(sessions recorded to the old key can then no longer be read)"
        )
        raise KeyError_(msg)
    if not force and identity_path.exists():
        public = public_from_private(load_identity(dirs))
        _write_key_file(recipient_path, RECIPIENT_PREFIX, public)
        return public
    private, public = generate_keypair()
    recipient_path.unlink(missing_ok=True)
    _write_key_file(identity_path, IDENTITY_PREFIX, private)
    _write_key_file(recipient_path, RECIPIENT_PREFIX, public)
    return public


def ensure_keys(dirs: Dirs) -> bytes:
    """The recipient (raw public key), creating the key pair on first use.

    An existing ``recipient`` is used as it is, even when its identity is kept
    elsewhere (the recorder never needs the identity).
    """
    if (dirs.keys / _RECIPIENT_FILE).exists():
        return load_recipient(dirs)
    return init_keys(dirs)


def describe(dirs: Dirs) -> str:
    """What ``optin keys show`` prints: the recipient and where the key files are (never the identity)."""
    identity_path = dirs.keys / _IDENTITY_FILE
    where = str(identity_path) if identity_path.exists() else "not on this machine"
    return "\n".join(
        [
            f"recipient  {encode_recipient(load_recipient(dirs))}",
            f"identity   {where}",
            "sessions are encrypted to the recipient; reading them needs the identity",
        ]
    )


def load_recipient(dirs: Dirs) -> bytes:
    """The raw public key the recorder encrypts to.

    :raises KeyError_: the file is missing or malformed; the message says the fix.
    """
    return _read_key_file(dirs.keys / _RECIPIENT_FILE, RECIPIENT_PREFIX)


def load_identity(dirs: Dirs) -> bytes:
    """The raw private key that decrypts the volunteer's sessions.

    The identity must be private (no group/other permission bits) and, when a
    ``recipient`` file exists, must be its private half.

    :raises KeyError_: missing, malformed, readable by others, or not matching the recipient.
    """
    if dirs.keys.is_dir():
        check_private_dir(dirs.keys)
    path = dirs.keys / _IDENTITY_FILE
    _check_private_file(path)
    private = _read_key_file(path, IDENTITY_PREFIX)
    recipient_path = dirs.keys / _RECIPIENT_FILE
    if recipient_path.exists() and load_recipient(dirs) != public_from_private(private):
        msg = (
            f"{path} and {recipient_path} are not one key pair. "
            "Fix: restore the matching identity from your backup, or run: optin keys init --force"
        )
        raise KeyError_(msg)
    return private


def encode_recipient(public: bytes) -> str:
    """The text form of a public key (``optin-pub1:`` + hex), as stored and shown."""
    if len(public) != KEY_SIZE:
        msg = f"public key must be {KEY_SIZE} bytes, got {len(public)}"
        raise KeyError_(msg)
    return RECIPIENT_PREFIX + public.hex()


def _check_private_file(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        msg = f"no identity (private key) at {path}. {_FIX_INIT}"
        raise KeyError_(msg) from None
    if os.name == "posix" and mode & 0o077:
        msg = f"{path} has mode {mode:04o}; an identity must be private. Fix: chmod 600 {path}"
        raise KeyError_(msg)


def _read_key_file(path: Path, prefix: str) -> bytes:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        msg = f"no key at {path}. {_FIX_INIT}"
        raise KeyError_(msg) from None
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"cannot read {path} ({type(exc).__name__}). {_FIX_INIT} --force if the key is lost"
        raise KeyError_(msg) from None
    line = text.strip()
    digits = line[len(prefix) :]
    if not line.startswith(prefix) or len(digits) != 2 * KEY_SIZE or digits != digits.lower():
        msg = f"{path} is not an optin key file (expected one line: {prefix} and 64 lowercase hex digits)"
        raise KeyError_(msg)
    try:
        return bytes.fromhex(digits)
    except ValueError:
        msg = f"{path} is not an optin key file (expected one line: {prefix} and 64 lowercase hex digits)"
        raise KeyError_(msg) from None


def _write_key_file(path: Path, prefix: str, key: bytes) -> None:
    """Write ``prefix + hex(key)`` atomically; the file is 0600 from its creation."""
    write_private_file(path, (prefix + key.hex() + "\n").encode("ascii"))


__all__ = [
    "IDENTITY_PREFIX",
    "RECIPIENT_PREFIX",
    "describe",
    "encode_recipient",
    "ensure_keys",
    "init_keys",
    "load_identity",
    "load_recipient",
]
