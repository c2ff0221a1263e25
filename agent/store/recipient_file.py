"""The recipient file: the public key the recorder encrypts to, and its checks.

``docs/keys.md`` is the normative description.  The ``recipient`` file carries its own
check (a second line with the key id, so a changed bit is found) and must agree with the
public key kept beside the identity when that is on this machine; recording refuses a
recipient that fails either, and one that group or others can write to, with the fix
(P5: a recorder must never encrypt to a key nobody holds).  A recipient written by an
older version (one line, no check) is still read, and rewritten with its check once it
agrees with the identity's public key (:func:`add_recipient_check`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from agent.errors import KeyError_
from agent.paths import Dirs, check_private_dir, check_private_file, write_private_file
from agent.store import keyfile
from agent.store.format import public_from_private
from agent.store.key_files import (
    IDENTITY_FILE,
    IDENTITY_PREFIX,
    RECIPIENT_CHECK_PREFIX,
    RECIPIENT_FILE,
    RECIPIENT_PREFIX,
    REF_FILE,
    check_identity_file,
    encode_recipient,
    key_id,
    parse_key_line,
    read_key_file,
)
from agent.store.keyring_store import read_ref
from agent.store.segment_layout import KEY_SIZE

log = logging.getLogger("agent.store.keys")  # the key store's log lines keep the name they had

_RECIPIENT_RE = re.compile(
    rf"{RECIPIENT_PREFIX}(?P<public>[0-9a-f]{{{2 * KEY_SIZE}}})\n"
    rf"{RECIPIENT_CHECK_PREFIX}(?P<check>[0-9a-f]{{16}})\n"
)


def load_recipient(dirs: Dirs) -> bytes:
    """The raw public key the recorder encrypts to (never needs a passphrase).

    Checked before it is used: the keys directory is private, the file is not
    writable by group or others, its check line (when it has one) matches its
    public key, and it is the public key kept beside the identity when that is
    on this machine.

    :raises KeyError_: the file is missing, malformed, damaged or not the identity's
        public key; the message says the fix.
    :raises EnvironmentProblem: the keys directory or the file is open to others.
    """
    if dirs.keys.is_dir():
        check_private_dir(dirs.keys)
    path = dirs.keys / RECIPIENT_FILE
    if path.exists():
        check_private_file(path)
    public, _checked = read_recipient(path, _rebuild_fix(dirs, path))
    _check_pair(dirs, path, public)
    return public


def write_recipient(path: Path, public: bytes) -> None:
    """``optin-pub1:<hex>`` and ``key-id <key id>`` lines, atomically, 0600 from creation."""
    text = f"{encode_recipient(public)}\n{RECIPIENT_CHECK_PREFIX}{key_id(public)}\n"
    write_private_file(path, text.encode("ascii"))


def read_recipient(path: Path, fix: str) -> tuple[bytes, bool]:
    """``(public key, has a check line)`` of a recipient file (either form).

    :raises KeyError_: malformed, or its check line does not match its public key.
    """
    blob = read_key_file(path)
    text = blob.decode("ascii", errors="replace")
    match = _RECIPIENT_RE.fullmatch(text)
    if match is None:
        if "\n" in text.strip():  # two lines or more: the checked form, damaged
            msg = (
                f"{path} is damaged: it is not two lines ({RECIPIENT_PREFIX} and 64 lowercase hex digits, "
                f"then {RECIPIENT_CHECK_PREFIX.strip()} and 16). {fix}"
            )
            raise KeyError_(msg)
        try:  # one line: written by optin 0.1 (no check)
            return parse_key_line(blob, path, RECIPIENT_PREFIX), False
        except KeyError_ as exc:
            msg = f"{exc}. {fix}"
            raise KeyError_(msg) from None
    public = bytes.fromhex(match["public"])
    if key_id(public) != match["check"]:
        msg = (
            f"{path} is damaged: its public key does not match its {RECIPIENT_CHECK_PREFIX.strip()} line "
            f"(a changed bit would send new recordings to a key nobody holds), so optin does not record. "
            f"{fix}"
        )
        raise KeyError_(msg)
    return public, True


def _rebuild_fix(dirs: Dirs, path: Path) -> str:
    """How to get a good recipient back: rebuilt from the identity here, else from a backup."""
    if (dirs.keys / REF_FILE).exists() or (dirs.keys / IDENTITY_FILE).exists():
        return (
            f"Fix: remove {path} and run `optin keys init`: it is rebuilt from the public key kept with "
            "your identity"
        )
    return (
        f"Fix: restore {path} from your backup (or copy the recipient `optin keys show` prints on the "
        "machine that holds your identity)"
    )


def _check_pair(dirs: Dirs, path: Path, public: bytes) -> None:
    """The recipient must be the public key kept beside the identity, when that is here."""
    if not ((dirs.keys / REF_FILE).exists() or (dirs.keys / IDENTITY_FILE).exists()):
        return  # the identity is kept elsewhere: the recipient's own check is all there is
    try:
        stored = stored_public(dirs)
    except KeyError_ as exc:
        # Fail closed: with the identity's public key unreadable, the recipient's own check line
        # (an unkeyed hash) is all that would vouch for it, and recordings might be unopenable.
        msg = (
            f"the identity beside {path} cannot be read ({exc}), so optin cannot check that new recordings "
            "go to a key you can open; it does not record. Fix: restore the keys folder from your backup, "
            "or start over with `optin keys init --force` (recordings made with the old key stay unreadable)"
        )
        raise KeyError_(msg) from None
    if stored != public:
        where = dirs.keys / (REF_FILE if (dirs.keys / REF_FILE).exists() else IDENTITY_FILE)
        msg = (
            f"{path} and {where} are not one key pair: new recordings would go to a key your identity "
            f"cannot open, so optin does not record. If {where} is yours, remove {path} and run "
            "`optin keys init` to rebuild it from the identity; otherwise restore both from your backup"
        )
        raise KeyError_(msg)


def add_recipient_check(dirs: Dirs, public: bytes) -> None:
    """Rewrite a recipient written without its check line, once it agrees with the identity
    kept here (one that cannot be checked against anything is left as it is)."""
    path = dirs.keys / RECIPIENT_FILE
    try:
        _, checked = read_recipient(path, "")
    except KeyError_:
        return
    if checked or not ((dirs.keys / REF_FILE).exists() or (dirs.keys / IDENTITY_FILE).exists()):
        return
    write_recipient(path, public)  # load_recipient has just checked it against the identity's key
    log.info("added its check line to the recipient file")


def stored_public(dirs: Dirs) -> bytes:
    """The public key stored beside the identity (for completing an interrupted init; no unlock)."""
    ref_path = dirs.keys / REF_FILE
    if ref_path.exists():
        return read_ref(ref_path)[2]
    path = dirs.keys / IDENTITY_FILE
    check_identity_file(path)
    blob = read_key_file(path)
    if blob.startswith(IDENTITY_PREFIX.encode("ascii")):
        return public_from_private(parse_key_line(blob, path, IDENTITY_PREFIX))
    try:
        return keyfile.parse_wrapped_identity(blob).public
    except KeyError_ as exc:
        msg = f"{path}: {exc}"
        raise KeyError_(msg) from None


__all__ = [
    "add_recipient_check",
    "load_recipient",
    "read_recipient",
    "stored_public",
    "write_recipient",
]
