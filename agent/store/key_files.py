"""The volunteer's key files: their names, the text form of a key, and the small readers.

``docs/keys.md`` is the normative description.  :mod:`agent.store.keys` creates and unlocks
the key pair; this module holds what every part of it shares: the file names under
``Dirs.keys``, the ``optin-pub1:`` / ``optin-sec1:`` line prefixes, the key id, and the
readers of a small key file whose errors never echo key material.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from agent.errors import KeyError_
from agent.store.segment_layout import KEY_SIZE

#: Text prefix of a recipient (public key) line.
RECIPIENT_PREFIX = "optin-pub1:"
#: Start of the recipient file's check line (followed by the key id of its public key).
RECIPIENT_CHECK_PREFIX = "key-id "
#: Text prefix of an unwrapped identity line (version 1 files, and the OS keyring entry).
IDENTITY_PREFIX = "optin-sec1:"

#: The public key the recorder encrypts to.
RECIPIENT_FILE = "recipient"
#: The identity, passphrase-wrapped (``optin-sec2``) or, from an older version, unwrapped.
IDENTITY_FILE = "identity"
#: Says the identity is kept in the OS keyring, and under which name.
REF_FILE = "identity.ref"
#: The fix for a missing or unreadable key file.
FIX_INIT = "Fix: run: optin keys init"


def key_id(public: bytes) -> str:
    """The key id of a public key: the first 16 hex digits of SHA-256(raw public key)."""
    return hashlib.sha256(public).hexdigest()[:16]


def encode_recipient(public: bytes) -> str:
    """The text form of a public key (``optin-pub1:`` + hex), as stored and shown."""
    if len(public) != KEY_SIZE:
        msg = f"public key must be {KEY_SIZE} bytes, got {len(public)}"
        raise KeyError_(msg)
    return RECIPIENT_PREFIX + public.hex()


def check_identity_file(path: Path) -> None:
    """Refuse a missing ``identity`` (or ``identity.ref``) file, or (on POSIX) one others can read."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        msg = f"no identity (private key) at {path}. {FIX_INIT}"
        raise KeyError_(msg) from None
    if os.name == "posix" and mode & 0o077:
        msg = f"{path} has mode {mode:04o}; an identity must be private. Fix: chmod 600 {path}"
        raise KeyError_(msg)


def read_key_file(path: Path) -> bytes:
    """The bytes of a small key file; a missing or unreadable one is a KeyError_ with the fix."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"no key at {path}. {FIX_INIT}"
        raise KeyError_(msg) from None
    except OSError as exc:
        msg = f"cannot read {path} ({type(exc).__name__}). {FIX_INIT} --force if the key is lost"
        raise KeyError_(msg) from None


def parse_key_line(blob: bytes, path: Path, prefix: str) -> bytes:
    """The 32-byte key of a one-line key file (``prefix`` + hex); the error never echoes the text."""
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return parse_key_text(text, str(path), prefix)


def parse_key_text(text: str, where: str, prefix: str) -> bytes:
    """``prefix`` + 64 lowercase hex digits (one line) → 32 bytes; the error never echoes the text."""
    line = text.strip()
    digits = line[len(prefix) :]
    if not line.startswith(prefix) or len(digits) != 2 * KEY_SIZE or not re.fullmatch("[0-9a-f]+", digits):
        msg = f"{where} is not an optin key file (expected one line: {prefix} and 64 lowercase hex digits)"
        raise KeyError_(msg)
    return bytes.fromhex(digits)


__all__ = [
    "FIX_INIT",
    "IDENTITY_FILE",
    "IDENTITY_PREFIX",
    "RECIPIENT_CHECK_PREFIX",
    "RECIPIENT_FILE",
    "RECIPIENT_PREFIX",
    "REF_FILE",
    "check_identity_file",
    "encode_recipient",
    "key_id",
    "parse_key_line",
    "parse_key_text",
    "read_key_file",
]
