"""The identity in the OS keyring: finding a real keyring, ``identity.ref``, storing and reading.

``docs/keys.md`` is the normative description.  When :func:`keyring_backend` finds a real
OS keyring, :func:`agent.store.keys.init_keys` stores the identity there under service
``optin``, user = its key id, and writes the small ``identity.ref`` file (0600) that says
so.  Unlocking then needs no passphrase: the OS keyring is unlocked by the volunteer's
login.  Keyring errors are reported by their type name only (their text may carry anything).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from agent.errors import KeyError_
from agent.store.format import public_from_private
from agent.store.key_files import (
    IDENTITY_PREFIX,
    RECIPIENT_PREFIX,
    check_identity_file,
    encode_recipient,
    key_id,
    parse_key_text,
    read_key_file,
)
from agent.store.segment_layout import KEY_SIZE

log = logging.getLogger("agent.store.keys")  # the key store's log lines keep the name they had

#: First line of ``identity.ref``.
KEYRING_REF_VERSION = "optin-keyring1"
#: Keyring service name under which identities are stored.
KEYRING_SERVICE = "optin"
#: Smallest keyring backend priority accepted as a real OS keyring (see :func:`keyring_backend`).
KEYRING_MIN_PRIORITY = 1.0
_REF_RE = re.compile(
    rf"{KEYRING_REF_VERSION}\nservice (?P<service>[a-z0-9._-]{{1,64}})\nuser (?P<user>[0-9a-f]{{16}})\n"
    rf"{RECIPIENT_PREFIX}(?P<public>[0-9a-f]{{{2 * KEY_SIZE}}})\n"
)


def keyring_backend() -> Any | None:
    """The OS keyring to keep the identity in, or None when there is no real one.

    "Real" means: ``keyring.get_keyring()`` answers without error, it is not the
    ``fail`` or ``null`` backend, and its priority is at least
    :data:`KEYRING_MIN_PRIORITY` (1: keyring's own threshold for "recommended";
    the fallbacks of ``keyrings.alt`` sit below it and would keep the identity in
    a weaker file than our passphrase-wrapped one).  A chainer counts only when
    its first backend passes the same test.  ``PYTHON_KEYRING_BACKEND`` (a
    keyring variable) forces a backend, e.g. ``keyring.backends.fail.Keyring``
    to never use a keyring.
    """
    try:
        import keyring
        from keyring.backends import chainer, fail, null
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, (fail.Keyring, null.Keyring)):
            return None
        first = backend
        if isinstance(backend, chainer.ChainerBackend):
            chained = list(backend.backends)
            if not chained:
                return None
            first = chained[0]
        if isinstance(first, (fail.Keyring, null.Keyring)) or float(first.priority) < KEYRING_MIN_PRIORITY:
            return None
    except Exception:  # a backend whose detection fails (no D-Bus, locked API) is no keyring here
        return None
    return backend


def ref_text(public: bytes) -> str:
    """The four lines of ``identity.ref`` for ``public``: version, service, user (key id), public key."""
    return (
        f"{KEYRING_REF_VERSION}\nservice {KEYRING_SERVICE}\nuser {key_id(public)}\n"
        f"{encode_recipient(public)}\n"
    )


def read_ref(path: Path) -> tuple[str, str, bytes]:
    """``(service, user, public key)`` of an ``identity.ref`` file."""
    check_identity_file(path)
    match = _REF_RE.fullmatch(read_key_file(path).decode("ascii", errors="replace"))
    if match is None:
        msg = (
            f"{path} is not an optin keyring reference (expected four lines: {KEYRING_REF_VERSION}, "
            "service, user, public key). Fix: restore it from your backup"
        )
        raise KeyError_(msg)
    public = bytes.fromhex(match["public"])
    if key_id(public) != match["user"]:
        msg = (
            f"{path}: its user (key id) is not the key id of its public key. Fix: restore it from your backup"
        )
        raise KeyError_(msg)
    return match["service"], match["user"], public


def replaced_ref(path: Path) -> tuple[str, str, bytes] | None:
    """The reference being replaced by ``init --force``, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        return read_ref(path)
    except KeyError_:
        log.warning("the replaced identity.ref is unreadable; its keyring entry (if any) is left in place")
        return None


def keyring_put(backend: Any, user: str, private: bytes) -> None:
    """Store the identity in the keyring and read it back; KeyError_ (type name only) on any failure."""
    value = IDENTITY_PREFIX + private.hex()
    try:
        backend.set_password(KEYRING_SERVICE, user, value)
        stored = backend.get_password(KEYRING_SERVICE, user)
    except Exception as exc:  # keyring backends raise their own types (KeyringLocked, D-Bus errors)
        msg = f"the OS keyring refused to store the identity ({type(exc).__name__})"
        raise KeyError_(msg) from None
    if stored != value:
        msg = "the OS keyring did not return the identity it was given"
        raise KeyError_(msg)


def keyring_forget(service: str, user: str) -> None:
    """Best effort: remove an identity from the keyring (``init --force``, ``uninstall --purge``)."""
    backend = keyring_backend()
    if backend is None:
        log.warning("could not remove the identity (key id %s) from the OS keyring: none here", user)
        return
    try:
        backend.delete_password(service, user)
    except Exception as exc:  # already gone, or the keyring refused: the new pair is in place either way
        log.warning(
            "could not remove the identity (key id %s) from the OS keyring (%s)",
            user,
            type(exc).__name__,
        )


def keyring_identity(ref_path: Path) -> bytes:
    """The identity the OS keyring keeps for ``identity.ref``, checked against its public key.

    :raises KeyError_: no keyring here, the keyring refused or has no entry, or the entry
        is malformed or not the private half of the reference's public key.
    """
    service, user, public = read_ref(ref_path)
    backend = keyring_backend()
    if backend is None:
        msg = (
            f"the identity is kept in the OS keyring (service {service!r}, key id {user}), but no OS keyring "
            "is available to this process. Fix: run optin inside your desktop session, where the keyring "
            "is unlocked"
        )
        raise KeyError_(msg)
    try:
        value = backend.get_password(service, user)
    except Exception as exc:  # keyring backends raise their own types
        msg = (
            f"the OS keyring did not give the identity (key id {user}): {type(exc).__name__}. "
            "Fix: unlock your keyring and try again"
        )
        raise KeyError_(msg) from None
    if value is None:
        msg = (
            f"the OS keyring has no optin identity for key id {user} (service {service!r}). "
            "Fix: restore it into the keyring from your backup, or run: optin keys init --force"
        )
        raise KeyError_(msg)
    where = f"the OS keyring entry for key id {user}"
    private = parse_key_text(str(value), where, IDENTITY_PREFIX)
    if public_from_private(private) != public:
        msg = (
            f"{where} is not the identity of {ref_path}. Fix: restore the matching identity from your backup"
        )
        raise KeyError_(msg)
    return private


__all__ = [
    "KEYRING_MIN_PRIORITY",
    "KEYRING_REF_VERSION",
    "KEYRING_SERVICE",
    "keyring_backend",
    "keyring_forget",
    "keyring_identity",
    "keyring_put",
    "read_ref",
    "ref_text",
    "replaced_ref",
]
