"""What ``optin keys show`` reports: where the identity lives, never the identity itself."""

from __future__ import annotations

from typing import Any

from agent.errors import KeyError_
from agent.paths import Dirs
from agent.store import keyfile
from agent.store.key_files import (
    IDENTITY_FILE,
    IDENTITY_PREFIX,
    REF_FILE,
    encode_recipient,
    key_id,
    read_key_file,
)
from agent.store.keyring_store import keyring_backend, read_ref
from agent.store.recipient_file import load_recipient


def key_info(dirs: Dirs) -> dict[str, Any]:
    """What ``optin keys show`` reports, never the identity itself.

    Keys: ``recipient``, ``key_id``, ``storage`` (``keyring``, ``file``,
    ``file-unprotected``, ``elsewhere`` or ``unreadable``), ``location`` (path or
    keyring service/user), ``kdf`` (scrypt parameters of a wrapped file or None),
    ``keyring`` (the keyring backend's name or None), ``problem`` (why the
    identity could not be described, or None).
    """
    public = load_recipient(dirs)
    info: dict[str, Any] = {
        "recipient": encode_recipient(public),
        "key_id": key_id(public),
        "storage": "elsewhere",
        "location": None,
        "kdf": None,
        "keyring": None,
        "problem": None,
    }
    ref_path = dirs.keys / REF_FILE
    path = dirs.keys / IDENTITY_FILE
    try:
        if ref_path.exists():
            service, user, _ = read_ref(ref_path)
            backend = keyring_backend()
            name = getattr(backend, "name", type(backend).__name__) if backend is not None else None
            info.update(storage="keyring", location=f"service {service!r}, user {user}", keyring=name)
        elif path.exists():
            blob = read_key_file(path)
            if blob.startswith(IDENTITY_PREFIX.encode("ascii")):
                info.update(storage="file-unprotected", location=str(path))
            else:
                wrapped = keyfile.parse_wrapped_identity(blob)
                info.update(storage="file", location=str(path), kdf=str(wrapped.params))
    except KeyError_ as exc:
        info.update(storage="unreadable", problem=str(exc))
    return info


def describe(dirs: Dirs) -> str:
    """What ``optin keys show`` prints: recipient, key id, where the identity lives (never the identity)."""
    info = key_info(dirs)
    storage = info["storage"]
    if storage == "keyring":
        keyring_name = info.get("keyring") or "no keyring available to this process"
        where = f"in the OS keyring ({keyring_name}), {info['location']}; no passphrase"
    elif storage == "file":
        where = f"{info['location']}, passphrase-protected ({info['kdf']}, ChaCha20-Poly1305)"
    elif storage == "file-unprotected":
        where = f"{info['location']}, NOT passphrase-protected. Fix: optin keys change-passphrase"
    elif storage == "unreadable":
        where = f"cannot be described: {info['problem']}"
    else:
        where = "not on this machine"
    return "\n".join(
        [
            f"recipient  {info['recipient']}",
            f"key id     {info['key_id']}",
            f"identity   {where}",
            "sessions are encrypted to the recipient; reading them needs the identity",
        ]
    )


__all__ = ["describe", "key_info"]
