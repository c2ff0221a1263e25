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
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from agent.errors import KeyError_
from agent.paths import Dirs, check_private_dir, check_private_file, ensure_private_dir, write_private_file
from agent.store import keyfile
from agent.store.format import KEY_SIZE, generate_keypair, public_from_private

log = logging.getLogger(__name__)

#: Text prefix of a recipient (public key) line.
RECIPIENT_PREFIX = "optin-pub1:"
#: Start of the recipient file's check line (followed by the key id of its public key).
RECIPIENT_CHECK_PREFIX = "key-id "
#: Text prefix of an unwrapped identity line (version 1 files, and the OS keyring entry).
IDENTITY_PREFIX = "optin-sec1:"
#: First line of a passphrase-wrapped identity file.
WRAPPED_IDENTITY_VERSION = keyfile.IDENTITY_WRAP_VERSION
#: First line of ``identity.ref``.
KEYRING_REF_VERSION = "optin-keyring1"
#: Keyring service name under which identities are stored.
KEYRING_SERVICE = "optin"
#: Smallest keyring backend priority accepted as a real OS keyring (see :func:`keyring_backend`).
KEYRING_MIN_PRIORITY = 1.0
#: Environment variable: a file whose first line is the passphrase (non-interactive unlock).
PASSPHRASE_FILE_ENV = "OPTIN_PASSPHRASE_FILE"  # noqa: S105 - a variable name, not a secret
#: Environment variable: a file whose first line is the new passphrase (change-passphrase).
NEW_PASSPHRASE_FILE_ENV = "OPTIN_NEW_PASSPHRASE_FILE"  # noqa: S105 - a variable name
#: Passphrase files larger than this without a line break are refused.
MAX_PASSPHRASE_BYTES = 64 * 1024
#: Prompts allowed for an interactive unlock.
UNLOCK_ATTEMPTS = 3

Storage = Literal["auto", "keyring", "file"]

_RECIPIENT_FILE = "recipient"
_IDENTITY_FILE = "identity"
_REF_FILE = "identity.ref"
_FIX_INIT = "Fix: run: optin keys init"
_RECIPIENT_RE = re.compile(
    rf"{RECIPIENT_PREFIX}(?P<public>[0-9a-f]{{{2 * KEY_SIZE}}})\n"
    rf"{RECIPIENT_CHECK_PREFIX}(?P<check>[0-9a-f]{{16}})\n"
)
_REF_RE = re.compile(
    rf"{KEYRING_REF_VERSION}\nservice (?P<service>[a-z0-9._-]{{1,64}})\nuser (?P<user>[0-9a-f]{{16}})\n"
    rf"{RECIPIENT_PREFIX}(?P<public>[0-9a-f]{{{2 * KEY_SIZE}}})\n"
)


# --- public API -----------------------------------------------------------------------------------------


def key_id(public: bytes) -> str:
    """The key id of a public key: the first 16 hex digits of SHA-256(raw public key)."""
    return hashlib.sha256(public).hexdigest()[:16]


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
    identity_path = keys_dir / _IDENTITY_FILE
    ref_path = keys_dir / _REF_FILE
    recipient_path = keys_dir / _RECIPIENT_FILE
    if not force and recipient_path.exists():
        msg = (
            f"a key pair already exists in {keys_dir}; the sessions recorded to it need it. "
            "Fix: keep it (optin keys show), or replace it with: optin keys init --force "
            "(sessions recorded to the old key can then no longer be read)"
        )
        raise KeyError_(msg)
    if not force and (ref_path.exists() or identity_path.exists()):
        public = _stored_public(dirs)
        _write_recipient(recipient_path, public)
        return public

    backend = keyring_backend() if storage != "file" else None
    if storage == "keyring" and backend is None:
        msg = (
            "no OS keyring is available to this process (keyring found only its fail/null backend). "
            "Fix: run this inside your desktop session, or use: optin keys init --storage file"
        )
        raise KeyError_(msg)
    passphrase = None if backend is not None else _new_passphrase(PASSPHRASE_FILE_ENV, "optin keys init")
    old_ref = _old_ref(ref_path)

    private, public = generate_keypair()
    recipient_path.unlink(missing_ok=True)
    in_keyring = False
    if backend is not None:
        try:
            _keyring_put(backend, key_id(public), private)
            in_keyring = True
        except KeyError_:
            if storage == "keyring":
                raise
            log.warning("the OS keyring did not keep the identity; keeping a passphrase-protected file")
            passphrase = _new_passphrase(PASSPHRASE_FILE_ENV, "optin keys init")
    if in_keyring:
        write_private_file(ref_path, _ref_text(public).encode("ascii"))
        identity_path.unlink(missing_ok=True)
    else:
        if passphrase is None:  # unreachable: the passphrase is asked for whenever the file is chosen
            msg = "no passphrase for the identity file"
            raise KeyError_(msg)
        write_private_file(identity_path, keyfile.wrap_identity(private, passphrase))
        ref_path.unlink(missing_ok=True)
    if old_ref is not None and old_ref[1] != key_id(public):
        _keyring_forget(old_ref[0], old_ref[1])
    _write_recipient(recipient_path, public)
    return public


def ensure_keys(dirs: Dirs) -> bytes:
    """The recipient (raw public key), creating the key pair on first use.

    An existing ``recipient`` is used as it is, even when its identity is kept
    elsewhere (the recorder never needs the identity).  Creating a pair needs a
    keyring or a passphrase source; without either this fails before anything
    is written, telling the volunteer to run ``optin keys init`` in a terminal.

    :raises KeyError_: no key pair yet and no way to protect a new one here.
    """
    if (dirs.keys / _RECIPIENT_FILE).exists():
        public = load_recipient(dirs)
        _add_recipient_check(dirs, public)
        return public
    stored = (dirs.keys / _IDENTITY_FILE).exists() or (dirs.keys / _REF_FILE).exists()
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
    path = dirs.keys / _RECIPIENT_FILE
    if path.exists():
        check_private_file(path)
    public, _checked = _read_recipient(path, _rebuild_fix(dirs, path))
    _check_pair(dirs, path, public)
    return public


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
    ref_path = dirs.keys / _REF_FILE
    path = dirs.keys / _IDENTITY_FILE
    if ref_path.exists():
        private = _keyring_identity(ref_path)
    else:
        _check_private_file(path)
        private = _file_identity(path, ask)
    recipient_path = dirs.keys / _RECIPIENT_FILE
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
    ref_path = dirs.keys / _REF_FILE
    if ref_path.exists():
        try:
            service, user, _public = _read_ref(ref_path)
        except KeyError_:
            log.warning("identity.ref is unreadable; its keyring entry (if any) is left in place")
        else:
            _keyring_forget(service, user)
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
    ref_path = dirs.keys / _REF_FILE
    if ref_path.exists():
        msg = (
            "the identity is kept in the OS keyring, which your login unlocks; it has no optin passphrase "
            "to change (optin keys show)"
        )
        raise KeyError_(msg)
    private = load_identity(dirs)
    passphrase = _new_passphrase(NEW_PASSPHRASE_FILE_ENV, "optin keys change-passphrase")
    path = dirs.keys / _IDENTITY_FILE
    write_private_file(path, keyfile.wrap_identity(private, passphrase))
    return path


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
    ref_path = dirs.keys / _REF_FILE
    path = dirs.keys / _IDENTITY_FILE
    try:
        if ref_path.exists():
            service, user, _ = _read_ref(ref_path)
            backend = keyring_backend()
            name = getattr(backend, "name", type(backend).__name__) if backend is not None else None
            info.update(storage="keyring", location=f"service {service!r}, user {user}", keyring=name)
        elif path.exists():
            blob = _read_bytes(path)
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


def encode_recipient(public: bytes) -> str:
    """The text form of a public key (``optin-pub1:`` + hex), as stored and shown."""
    if len(public) != KEY_SIZE:
        msg = f"public key must be {KEY_SIZE} bytes, got {len(public)}"
        raise KeyError_(msg)
    return RECIPIENT_PREFIX + public.hex()


# --- the recipient file ---------------------------------------------------------------------------------


def _write_recipient(path: Path, public: bytes) -> None:
    """``optin-pub1:<hex>`` and ``key-id <key id>`` lines, atomically, 0600 from creation."""
    text = f"{encode_recipient(public)}\n{RECIPIENT_CHECK_PREFIX}{key_id(public)}\n"
    write_private_file(path, text.encode("ascii"))


def _read_recipient(path: Path, fix: str) -> tuple[bytes, bool]:
    """``(public key, has a check line)`` of a recipient file (either form).

    :raises KeyError_: malformed, or its check line does not match its public key.
    """
    blob = _read_bytes(path)
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
            return _parse_key_line(blob, path, RECIPIENT_PREFIX), False
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
    if (dirs.keys / _REF_FILE).exists() or (dirs.keys / _IDENTITY_FILE).exists():
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
    if not ((dirs.keys / _REF_FILE).exists() or (dirs.keys / _IDENTITY_FILE).exists()):
        return  # the identity is kept elsewhere: the recipient's own check is all there is
    try:
        stored = _stored_public(dirs)
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
        where = dirs.keys / (_REF_FILE if (dirs.keys / _REF_FILE).exists() else _IDENTITY_FILE)
        msg = (
            f"{path} and {where} are not one key pair: new recordings would go to a key your identity "
            f"cannot open, so optin does not record. If {where} is yours, remove {path} and run "
            "`optin keys init` to rebuild it from the identity; otherwise restore both from your backup"
        )
        raise KeyError_(msg)


def _add_recipient_check(dirs: Dirs, public: bytes) -> None:
    """Rewrite a recipient written without its check line, once it agrees with the identity
    kept here (one that cannot be checked against anything is left as it is)."""
    path = dirs.keys / _RECIPIENT_FILE
    try:
        _, checked = _read_recipient(path, "")
    except KeyError_:
        return
    if checked or not ((dirs.keys / _REF_FILE).exists() or (dirs.keys / _IDENTITY_FILE).exists()):
        return
    _write_recipient(path, public)  # load_recipient has just checked it against the identity's key
    log.info("added its check line to the recipient file")


# --- the identity file ----------------------------------------------------------------------------------


def _file_identity(path: Path, ask: Callable[[str], bytes] | None = None) -> bytes:
    blob = _read_bytes(path)
    if blob.startswith(IDENTITY_PREFIX.encode("ascii")):
        log.warning("the identity file is not passphrase-protected; protect it: optin keys change-passphrase")
        return _parse_key_line(blob, path, IDENTITY_PREFIX)
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


def _stored_public(dirs: Dirs) -> bytes:
    """The public key stored beside the identity (for completing an interrupted init; no unlock)."""
    ref_path = dirs.keys / _REF_FILE
    if ref_path.exists():
        return _read_ref(ref_path)[2]
    path = dirs.keys / _IDENTITY_FILE
    _check_private_file(path)
    blob = _read_bytes(path)
    if blob.startswith(IDENTITY_PREFIX.encode("ascii")):
        return public_from_private(_parse_key_line(blob, path, IDENTITY_PREFIX))
    try:
        return keyfile.parse_wrapped_identity(blob).public
    except KeyError_ as exc:
        msg = f"{path}: {exc}"
        raise KeyError_(msg) from None


# --- the OS keyring -------------------------------------------------------------------------------------


def _ref_text(public: bytes) -> str:
    return (
        f"{KEYRING_REF_VERSION}\nservice {KEYRING_SERVICE}\nuser {key_id(public)}\n"
        f"{encode_recipient(public)}\n"
    )


def _read_ref(path: Path) -> tuple[str, str, bytes]:
    """``(service, user, public key)`` of an ``identity.ref`` file."""
    _check_private_file(path)
    match = _REF_RE.fullmatch(_read_bytes(path).decode("ascii", errors="replace"))
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


def _old_ref(path: Path) -> tuple[str, str, bytes] | None:
    """The reference being replaced by ``init --force``, or None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        return _read_ref(path)
    except KeyError_:
        log.warning("the replaced identity.ref is unreadable; its keyring entry (if any) is left in place")
        return None


def _keyring_put(backend: Any, user: str, private: bytes) -> None:
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


def _keyring_forget(service: str, user: str) -> None:
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


def _keyring_identity(ref_path: Path) -> bytes:
    service, user, public = _read_ref(ref_path)
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
    private = _parse_key_text(str(value), where, IDENTITY_PREFIX)
    if public_from_private(private) != public:
        msg = (
            f"{where} is not the identity of {ref_path}. Fix: restore the matching identity from your backup"
        )
        raise KeyError_(msg)
    return private


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


# --- small files ----------------------------------------------------------------------------------------


def _check_private_file(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        msg = f"no identity (private key) at {path}. {_FIX_INIT}"
        raise KeyError_(msg) from None
    if os.name == "posix" and mode & 0o077:
        msg = f"{path} has mode {mode:04o}; an identity must be private. Fix: chmod 600 {path}"
        raise KeyError_(msg)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"no key at {path}. {_FIX_INIT}"
        raise KeyError_(msg) from None
    except OSError as exc:
        msg = f"cannot read {path} ({type(exc).__name__}). {_FIX_INIT} --force if the key is lost"
        raise KeyError_(msg) from None


def _parse_key_line(blob: bytes, path: Path, prefix: str) -> bytes:
    try:
        text = blob.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    return _parse_key_text(text, str(path), prefix)


def _parse_key_text(text: str, where: str, prefix: str) -> bytes:
    """``prefix`` + 64 lowercase hex digits (one line) → 32 bytes; the error never echoes the text."""
    line = text.strip()
    digits = line[len(prefix) :]
    if not line.startswith(prefix) or len(digits) != 2 * KEY_SIZE or not re.fullmatch("[0-9a-f]+", digits):
        msg = f"{where} is not an optin key file (expected one line: {prefix} and 64 lowercase hex digits)"
        raise KeyError_(msg)
    return bytes.fromhex(digits)


__all__ = [
    "IDENTITY_PREFIX",
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
    "init_keys",
    "key_id",
    "key_info",
    "keyring_backend",
    "load_identity",
    "load_recipient",
]
