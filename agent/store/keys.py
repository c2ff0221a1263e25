"""The volunteer's X25519 key pair, kept under ``Dirs.keys`` (mode 0700).

The recorder needs only the public key (``recipient``), so recording never asks
for a passphrase.  Reading (review, export, verify) needs the private key, the
*identity*, which lives in one of two places, chosen at ``optin keys init``
(``docs/keys.md`` is the normative description):

``identity.ref`` + the OS keyring
    when a real keyring backend is available (:func:`keyring_backend`): the
    identity is stored under service ``optin``, user = its key id
    (:func:`key_id`); the small ``identity.ref`` file (0600) says so.  Unlocking
    needs no passphrase: the OS keyring is unlocked by the volunteer's login.
``identity``, passphrase-wrapped (``optin-sec2``)
    otherwise: scrypt + ChaCha20-Poly1305 (:func:`agent.store.keyfile.wrap_identity`).
    The passphrase comes from ``OPTIN_PASSPHRASE_FILE`` (its first line), else a
    terminal prompt, else a :class:`KeyError_` that says how to provide one.

An identity file written by an older version (``optin-sec1:``, unwrapped) is
still read, with a warning; ``optin keys change-passphrase`` wraps it.

Every key file is written by :func:`agent.paths.write_private_file` (0600 from
its first byte, atomic).  No message or log line carries a passphrase or key
material: only paths, key ids (a hash of the *public* key) and variable names.

The ``recipient`` file carries its own check (a second line with the key id, so
a changed bit is found) and must agree with the public key kept beside the
identity when that is on this machine; recording refuses a recipient that fails
either, and one that group or others can write to, with the fix (P5: a recorder
must never encrypt to a key nobody holds).  A recipient written by an older
version (one line, no check) is still read, and rewritten with its check once
it agrees with the identity's public key.

This module creates, unlocks, rewraps and removes the pair, and asks for passphrases;
the parts it is built from are :mod:`agent.store.key_files` (file names, key text,
small readers), :mod:`agent.store.keyring_store` (the OS keyring and ``identity.ref``),
:mod:`agent.store.recipient_file` (the recipient file and its checks) and
:mod:`agent.store.key_report` (``optin keys show``).  Their public names are importable
from here too.
"""

from __future__ import annotations

import getpass
import logging
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from agent.errors import KeyError_
from agent.paths import Dirs, check_private_dir, ensure_private_dir, write_private_file
from agent.store import keyfile
from agent.store.format import generate_keypair, public_from_private
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
from agent.store.key_report import describe, key_info
from agent.store.keyring_store import (
    KEYRING_MIN_PRIORITY,
    KEYRING_REF_VERSION,
    KEYRING_SERVICE,
    keyring_backend,
    keyring_forget,
    keyring_identity,
    keyring_put,
    read_ref,
    ref_text,
    replaced_ref,
)
from agent.store.recipient_file import add_recipient_check, load_recipient, stored_public, write_recipient

log = logging.getLogger(__name__)

#: First line of a passphrase-wrapped identity file.
WRAPPED_IDENTITY_VERSION = keyfile.IDENTITY_WRAP_VERSION
#: Environment variable: a file whose first line is the passphrase (non-interactive unlock).
PASSPHRASE_FILE_ENV = "OPTIN_PASSPHRASE_FILE"  # noqa: S105 - a variable name, not a secret
#: Environment variable: a file whose first line is the new passphrase (change-passphrase).
NEW_PASSPHRASE_FILE_ENV = "OPTIN_NEW_PASSPHRASE_FILE"  # noqa: S105 - a variable name
#: Passphrase files larger than this without a line break are refused.
MAX_PASSPHRASE_BYTES = 64 * 1024
#: Prompts allowed for an interactive unlock.
UNLOCK_ATTEMPTS = 3

Storage = Literal["auto", "keyring", "file"]


# --- public API -----------------------------------------------------------------------------------------


def init_keys(dirs: Dirs, *, force: bool = False, storage: Storage = "auto") -> bytes:
    """Create the key pair and return the raw public key.

    The identity goes to the OS keyring when ``storage`` is ``"auto"`` or
    ``"keyring"`` and :func:`keyring_backend` finds one, otherwise to a
    passphrase-wrapped file (the passphrase from ``OPTIN_PASSPHRASE_FILE`` or
    asked twice on the terminal; an empty one is refused).  With ``"auto"`` a
    keyring that refuses to store the identity falls back to the file.

    Without ``force`` an existing ``recipient`` is refused (sessions recorded to
    it need its identity, which may be kept elsewhere); an identity whose
    ``recipient`` file is missing (an interrupted init) is completed instead,
    from the public key stored beside the identity (no unlock needed).  With
    ``force`` the old pair is replaced: the passphrase is obtained first, then
    the old ``recipient`` is removed, so no window exists in which the recorder
    could encrypt to a public key whose identity is gone.

    :raises KeyError_: a key pair exists and ``force`` is false; no passphrase
        source; ``storage="keyring"`` without a usable keyring.
    """
    if storage not in ("auto", "keyring", "file"):
        msg = f"storage {storage!r} is not one of auto, keyring, file"
        raise KeyError_(msg)
    ensure_private_dir(dirs.data)
    keys_dir = ensure_private_dir(dirs.keys)
    identity_path = keys_dir / IDENTITY_FILE
    ref_path = keys_dir / REF_FILE
    recipient_path = keys_dir / RECIPIENT_FILE
    if not force and recipient_path.exists():
        msg = (
            f"a key pair already exists in {keys_dir}; the sessions recorded to it need it. "
            "Fix: keep it (optin keys show), or replace it with: optin keys init --force "
            "(sessions recorded to the old key can then no longer be read)"
        )
        raise KeyError_(msg)
    if not force and (ref_path.exists() or identity_path.exists()):
        public = stored_public(dirs)
        write_recipient(recipient_path, public)
        return public

    backend = keyring_backend() if storage != "file" else None
    if storage == "keyring" and backend is None:
        msg = (
            "no OS keyring is available to this process (keyring found only its fail/null backend). "
            "Fix: run this inside your desktop session, or use: optin keys init --storage file"
        )
        raise KeyError_(msg)
    passphrase = None if backend is not None else _new_passphrase(PASSPHRASE_FILE_ENV, "optin keys init")
    old_ref = replaced_ref(ref_path)

    private, public = generate_keypair()
    recipient_path.unlink(missing_ok=True)
    in_keyring = False
    if backend is not None:
        try:
            keyring_put(backend, key_id(public), private)
            in_keyring = True
        except KeyError_:
            if storage == "keyring":
                raise
            log.warning("the OS keyring did not keep the identity; keeping a passphrase-protected file")
            passphrase = _new_passphrase(PASSPHRASE_FILE_ENV, "optin keys init")
    if in_keyring:
        write_private_file(ref_path, ref_text(public).encode("ascii"))
        identity_path.unlink(missing_ok=True)
    else:
        if passphrase is None:  # unreachable: the passphrase is asked for whenever the file is chosen
            msg = "no passphrase for the identity file"
            raise KeyError_(msg)
        write_private_file(identity_path, keyfile.wrap_identity(private, passphrase))
        ref_path.unlink(missing_ok=True)
    if old_ref is not None and old_ref[1] != key_id(public):
        keyring_forget(old_ref[0], old_ref[1])
    write_recipient(recipient_path, public)
    return public


def ensure_keys(dirs: Dirs) -> bytes:
    """The recipient (raw public key), creating the key pair on first use.

    An existing ``recipient`` is used as it is, even when its identity is kept
    elsewhere (the recorder never needs the identity).  Creating a pair needs a
    keyring or a passphrase source; without either this fails before anything
    is written, telling the volunteer to run ``optin keys init`` in a terminal.

    :raises KeyError_: no key pair yet and no way to protect a new one here.
    """
    if (dirs.keys / RECIPIENT_FILE).exists():
        public = load_recipient(dirs)
        add_recipient_check(dirs, public)
        return public
    stored = (dirs.keys / IDENTITY_FILE).exists() or (dirs.keys / REF_FILE).exists()
    if (
        not stored
        and keyring_backend() is None
        and not os.environ.get(PASSPHRASE_FILE_ENV)
        and not _interactive()
    ):
        msg = (
            "optin has no key pair yet and cannot protect a new one here: no OS keyring, no "
            f"{PASSPHRASE_FILE_ENV} and no terminal to ask for a passphrase. "
            "Fix: run `optin keys init` in a terminal, then start optin again"
        )
        raise KeyError_(msg)
    return init_keys(dirs)


def load_identity(dirs: Dirs, *, ask: Callable[[str], bytes] | None = None) -> bytes:
    """The raw private key that decrypts the volunteer's sessions (the unlock).

    :param ask: asks for the passphrase (given the prompt) where a window does, instead of
        the terminal; it returns the passphrase's bytes, or raises KeyError_ when cancelled.

    From the OS keyring when ``identity.ref`` exists, else from the ``identity``
    file: ``optin-sec2`` is unwrapped with the passphrase from
    ``OPTIN_PASSPHRASE_FILE``, else from a terminal prompt (up to
    :data:`UNLOCK_ATTEMPTS` tries); ``optin-sec1`` (unwrapped) is read with a
    warning.  The key files must be private, and the identity must be the
    private half of ``recipient`` when that file exists.

    :raises KeyError_: missing, malformed, readable by others, no passphrase
        source, wrong passphrase (one opaque message), or not matching the recipient.
    """
    if dirs.keys.is_dir():
        check_private_dir(dirs.keys)
    ref_path = dirs.keys / REF_FILE
    path = dirs.keys / IDENTITY_FILE
    if ref_path.exists():
        private = keyring_identity(ref_path)
    else:
        check_identity_file(path)
        private = _file_identity(path, ask)
    recipient_path = dirs.keys / RECIPIENT_FILE
    if recipient_path.exists() and load_recipient(dirs) != public_from_private(private):
        where = ref_path if ref_path.exists() else path
        msg = (
            f"{where} and {recipient_path} are not one key pair. "
            "Fix: restore the matching identity from your backup, or run: optin keys init --force"
        )
        raise KeyError_(msg)
    return private


def forget_keys(dirs: Dirs) -> list[str]:
    """Remove the volunteer's key pair for good (``optin uninstall --purge``): the identity's OS
    keyring entry when it lives there, then every key file, each overwritten before it is
    unlinked.  Returns the names removed.  Sessions encrypted to the pair become unreadable."""
    removed: list[str] = []
    ref_path = dirs.keys / REF_FILE
    if ref_path.exists():
        try:
            service, user, _public = read_ref(ref_path)
        except KeyError_:
            log.warning("identity.ref is unreadable; its keyring entry (if any) is left in place")
        else:
            keyring_forget(service, user)
            removed.append("keyring entry")
    if dirs.keys.is_dir():
        for path in sorted(dirs.keys.iterdir()):
            if path.is_file() and not path.is_symlink():
                with path.open("r+b") as fh:
                    fh.write(os.urandom(path.stat().st_size))
                    fh.flush()
                    os.fsync(fh.fileno())
            path.unlink()
            removed.append(path.name)
        dirs.keys.rmdir()
    return removed


def change_passphrase(dirs: Dirs) -> Path:
    """Rewrap the identity file under a new passphrase; return its path.

    The old passphrase comes as for :func:`load_identity` (an ``optin-sec1`` file
    needs none: this is its upgrade); the new one from
    ``OPTIN_NEW_PASSPHRASE_FILE``, else asked twice on the terminal.  The new file
    gets the current default scrypt parameters and a fresh salt and nonce, and
    replaces the old one atomically.

    :raises KeyError_: the identity is in the OS keyring (it has no passphrase),
        or any failure of :func:`load_identity` or of getting the new passphrase.
    """
    ref_path = dirs.keys / REF_FILE
    if ref_path.exists():
        msg = (
            "the identity is kept in the OS keyring, which your login unlocks; it has no optin passphrase "
            "to change (optin keys show)"
        )
        raise KeyError_(msg)
    private = load_identity(dirs)
    passphrase = _new_passphrase(NEW_PASSPHRASE_FILE_ENV, "optin keys change-passphrase")
    path = dirs.keys / IDENTITY_FILE
    write_private_file(path, keyfile.wrap_identity(private, passphrase))
    return path


# --- the identity file ----------------------------------------------------------------------------------


def _file_identity(path: Path, ask: Callable[[str], bytes] | None = None) -> bytes:
    blob = read_key_file(path)
    if blob.startswith(IDENTITY_PREFIX.encode("ascii")):
        log.warning("the identity file is not passphrase-protected; protect it: optin keys change-passphrase")
        return parse_key_line(blob, path, IDENTITY_PREFIX)
    if not blob.startswith(WRAPPED_IDENTITY_VERSION.encode("ascii") + b"\n"):
        msg = (
            f"{path} is not an optin identity file (expected a first line {WRAPPED_IDENTITY_VERSION} "
            f"or {IDENTITY_PREFIX}...). Fix: restore it from your backup"
        )
        raise KeyError_(msg)
    try:
        keyfile.parse_wrapped_identity(blob)  # structural problems are reported before any prompt
    except KeyError_ as exc:
        msg = f"{path}: {exc}"
        raise KeyError_(msg) from None
    from_file = _passphrase_from_file(PASSPHRASE_FILE_ENV)
    if from_file is not None:
        return _unwrap(blob, from_file, path, f"the first line of {PASSPHRASE_FILE_ENV}")
    if ask is None and not _interactive():
        msg = (
            f"{path} is protected by a passphrase and there is no way to ask for it here. "
            f"Fix: set {PASSPHRASE_FILE_ENV} to a file whose first line is the passphrase, "
            "or run in a terminal"
        )
        raise KeyError_(msg)
    for attempt in range(1, UNLOCK_ATTEMPTS + 1):
        prompt = f"Passphrase for the optin identity ({path}): "
        passphrase = ask(prompt) if ask is not None else _prompt(prompt)
        try:
            return _unwrap(blob, passphrase, path, "as typed")
        except KeyError_:
            if attempt == UNLOCK_ATTEMPTS:
                raise
            sys.stderr.write("optin: wrong passphrase, try again\n")
    msg = "unreachable"  # the loop returns or raises
    raise KeyError_(msg)


def _unwrap(blob: bytes, passphrase: bytes, path: Path, source: str) -> bytes:
    try:
        return keyfile.unwrap_identity(blob, passphrase)
    except KeyError_:
        msg = (
            f"{keyfile.UNLOCK_FAILED} ({path}). Fix: check the passphrase ({source}); "
            "if it is right, restore the identity file from your backup"
        )
        raise KeyError_(msg) from None


# --- passphrases ----------------------------------------------------------------------------------------


def _interactive() -> bool:
    """True when a passphrase can be asked for: standard input is a terminal."""
    stdin = sys.stdin
    try:
        return stdin is not None and stdin.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdin
        return False


def _prompt(prompt: str) -> bytes:
    try:
        return getpass.getpass(prompt).encode("utf-8")
    except EOFError:
        msg = "no passphrase was entered (end of input)"
        raise KeyError_(msg) from None


def _passphrase_from_file(var: str) -> bytes | None:
    """The first line (without its line ending) of the file named by ``var``, or None when unset."""
    value = os.environ.get(var)
    if not value:
        return None
    path = Path(value).expanduser()
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_PASSPHRASE_BYTES + 1)
            mode = stat.S_IMODE(os.fstat(fh.fileno()).st_mode)
    except OSError as exc:
        msg = (
            f"{var}={path} cannot be read ({type(exc).__name__}). Fix: point {var} at a readable file "
            "whose first line is the passphrase, or unset it to be asked in a terminal"
        )
        raise KeyError_(msg) from None
    if b"\n" not in raw and len(raw) > MAX_PASSPHRASE_BYTES:
        msg = f"{var}={path} has no line break in its first {MAX_PASSPHRASE_BYTES} bytes. Fix: one line"
        raise KeyError_(msg)
    line = raw.split(b"\n", 1)[0].removesuffix(b"\r")
    if not line:
        msg = f"{var}={path}: its first line is empty. Fix: write the passphrase on the first line"
        raise KeyError_(msg)
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        msg = f"{var}={path}: its first line is not UTF-8 text. Fix: write the passphrase as UTF-8"
        raise KeyError_(msg) from None
    if os.name == "posix" and mode & 0o077:
        log.warning(
            "%s points at a file with mode %04o that others can read; Fix: chmod 600 %s", var, mode, path
        )
    return line


def _new_passphrase(var: str, command: str) -> bytes:
    """A new passphrase: from the file named by ``var``, else asked twice on the terminal."""
    from_file = _passphrase_from_file(var)
    if from_file is not None:
        return from_file
    if not _interactive():
        msg = (
            f"{command} needs a new passphrase to protect the identity and there is no way to ask for it "
            f"here. Fix: set {var} to a file whose first line is the new passphrase, or run in a terminal"
        )
        raise KeyError_(msg)
    first = _prompt("New passphrase for the optin identity: ")
    if not first:
        msg = "an empty passphrase protects nothing; nothing was changed. Fix: choose a passphrase"
        raise KeyError_(msg)
    if _prompt("Repeat the new passphrase: ") != first:
        msg = "the two passphrases differ; nothing was changed. Fix: run the command again"
        raise KeyError_(msg)
    return first


__all__ = [
    "IDENTITY_PREFIX",
    "KEYRING_MIN_PRIORITY",
    "KEYRING_REF_VERSION",
    "KEYRING_SERVICE",
    "NEW_PASSPHRASE_FILE_ENV",
    "PASSPHRASE_FILE_ENV",
    "RECIPIENT_CHECK_PREFIX",
    "RECIPIENT_PREFIX",
    "WRAPPED_IDENTITY_VERSION",
    "change_passphrase",
    "describe",
    "encode_recipient",
    "ensure_keys",
    "forget_keys",
    "init_keys",
    "key_id",
    "key_info",
    "keyring_backend",
    "load_identity",
    "load_recipient",
]
