"""Collector side: open, check and unpack an export bundle (``optin inspect`` / ``optin unpack``).

docs/export-format.md ("Reading") is the contract.  A
bundle is decrypted in memory with the study's age identity and its tar is read
without extracting anything; every check the spec asks of a reader is made before
:func:`unpack` may write a byte:

* every member is a regular file whose name is relative, has no ``..``, no
  backslash and stays under the one ``<session-id>/`` the manifest names;
* ``manifest.json`` and ``manifest.sig`` come first; the manifest's ``schema`` is
  known and ``manifest.sig`` verifies with ``volunteer.signing_key``;
* every other member is listed once in the manifest's ``members``, with the size
  its tar header declares (checked before its data is read, and never over
  :data:`MAX_MEMBER_SIZE`) and the same SHA-256; no listed member is missing;
* the step members agree with the manifest's ``steps``.

Failures are :class:`~agent.errors.ExportError` (exit 1) that name the bundle, the
member and the check, never a member's content; a wrong identity or a damaged age
file gets one opaque answer, as age gives.  Identity files are read by
:func:`load_identity_file`, whose errors never contain key text.

"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from agent.errors import ExportError, UsageError
from agent.store import signing

#: The bundle layout this reader reads.
SCHEMA = "optin-bundle/1"
#: Largest member of an ``optin-bundle/1`` bundle (the spec's 1 GiB).
MAX_MEMBER_SIZE = 1 << 30
#: Largest file :func:`load_identity_file` reads (an identity file is a few hundred bytes).
MAX_IDENTITY_FILE = 1 << 20

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"

_AGE_MAGIC = b"age-encryption.org/v1\n"
_AGE_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_NOT_REGULAR = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
}
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_STEP = re.compile(r"([0-9]{6})\.json")
_STEP_FRAME = re.compile(r"([0-9]{6})\.webp")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REFETCH = "Fix: ask the volunteer to export the session again (the file was damaged or changed after export)"
_IDENTITY_FIX = "Fix: give the study's age identity file (the AGE-SECRET-KEY-1... lines age-keygen wrote)"


@dataclass(frozen=True)
class Bundle:
    """An opened bundle, every check passed; nothing of it is on disk.

    :ivar members: every member but ``manifest.json`` and ``manifest.sig``, by its
        name under ``<session-id>/``, in tar order.
    :ivar steps_by_action: the steps counted from the step members, by action.
    """

    path: Path
    session: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    members: dict[str, bytes]
    steps_by_action: dict[str, int]

    def files(self) -> Iterator[tuple[str, bytes]]:
        """Every member in tar order, ``manifest.json`` and ``manifest.sig`` first."""
        yield MANIFEST, self.manifest_bytes
        yield SIGNATURE, self.signature
        yield from self.members.items()


# --- identity files ---------------------------------------------------------------------------------


def load_identity_file(path: Path) -> list[Any]:
    """The age X25519 identities in ``path`` (``AGE-SECRET-KEY-1...`` lines, ``#`` comments).

    :raises UsageError: the file is missing or unreadable, holds no identity, or a
        line is not one; the message names the file and line, never the key text.
    """
    blob = _read_identity_bytes(path)
    _refuse_other_key_files(path, blob)
    identities = []
    for number, raw in enumerate(blob.split(b"\n"), start=1):
        line = raw.strip()
        if line and not line.startswith(b"#"):
            identities.append(_parse_identity_line(path, number, line))
    if not identities:
        msg = f"identity file {path} holds no age identity (no AGE-SECRET-KEY-1... line). {_IDENTITY_FIX}"
        raise UsageError(msg)
    return identities


def _read_identity_bytes(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            blob = f.read(MAX_IDENTITY_FILE + 1)
    except FileNotFoundError:
        msg = f"identity file {path} does not exist. {_IDENTITY_FIX}"
        raise UsageError(msg) from None
    except OSError as exc:
        msg = f"cannot read identity file {path}: {exc.strerror or exc.__class__.__name__}. {_IDENTITY_FIX}"
        raise UsageError(msg) from None
    if len(blob) > MAX_IDENTITY_FILE:
        msg = f"{path} is too large to be an identity file (over {MAX_IDENTITY_FILE} bytes). {_IDENTITY_FIX}"
        raise UsageError(msg)
    return blob


def _refuse_other_key_files(path: Path, blob: bytes) -> None:
    """Name the usual wrong files: an age-encrypted identity, or the volunteer's own optin key."""
    if blob.startswith((_AGE_MAGIC, _AGE_ARMOR)):
        msg = (
            f"identity file {path} is itself age-encrypted (passphrase-protected). "
            "Fix: decrypt it first with age -d, or give the plain identity file"
        )
        raise UsageError(msg)
    if blob.startswith(b"optin-sec"):
        msg = (
            f"{path} is an optin volunteer identity, not a study identity: bundles are encrypted to the "
            f"study. {_IDENTITY_FIX}"
        )
        raise UsageError(msg)


def _parse_identity_line(path: Path, number: int, line: bytes) -> Any:
    """One pyrage X25519 identity; the error names the line, never its text."""
    from pyrage import x25519

    where = f"identity file {path}, line {number}"
    upper = line.upper()
    if upper.startswith(b"AGE-PLUGIN-"):
        msg = (
            f"{where}: plugin identities are not supported. Fix: use an X25519 identity (AGE-SECRET-KEY-1...)"
        )
        raise UsageError(msg)
    if line.startswith(b"age1"):
        msg = f"{where} is a recipient (public key), not an identity. {_IDENTITY_FIX}"
        raise UsageError(msg)
    if not upper.startswith(b"AGE-SECRET-KEY-1"):
        msg = f"{where} is not an age identity (expected AGE-SECRET-KEY-1... or a # comment). {_IDENTITY_FIX}"
        raise UsageError(msg)
    try:
        return x25519.Identity.from_str(line.decode("ascii"))
    except Exception:  # pyrage's IdentityError, or a UnicodeDecodeError; their text may quote the key
        msg = (
            f"{where} is not a valid age identity (damaged or cut short). Fix: copy it again from its source"
        )
        raise UsageError(msg) from None


# --- opening a bundle -------------------------------------------------------------------------------


def open_bundle(path: Path, identities: list[Any], *, identity_file: Path | None = None) -> Bundle:
    """Decrypt ``path`` in memory and check everything the spec asks of a reader.

    :param identity_file: where ``identities`` came from, for the wrong-key message.
    :raises UsageError: no identity was given.
    :raises ExportError: the file cannot be read or decrypted, or any check fails.
    """
    if not identities:
        msg = f"no identity to decrypt {path} with. {_IDENTITY_FIX}"
        raise UsageError(msg)
    blob = _read_bundle_bytes(path)
    _check_is_age(path, blob)
    return check_tar(_decrypt(path, blob, identities, identity_file), path)


def _read_bundle_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        msg = f"bundle {path} does not exist. Fix: give the path of a .optin.tar.age file"
        raise ExportError(msg) from None
    except OSError as exc:
        msg = f"cannot read bundle {path}: {exc.strerror or exc.__class__.__name__}"
        raise ExportError(msg) from None


def _check_is_age(path: Path, blob: bytes) -> None:
    if blob.startswith((_AGE_MAGIC, _AGE_ARMOR)):
        return
    hint = ""
    if blob[257:262] == b"ustar":
        hint = " (it is a tar: already decrypted?)"
    msg = (
        f"{path} is not an age file{hint}: it does not start with 'age-encryption.org/v1'. "
        "Fix: give the <session-id>.optin.tar.age file optin export wrote"
    )
    raise ExportError(msg)


def _decrypt(path: Path, blob: bytes, identities: list[Any], identity_file: Path | None) -> bytes:
    """The plaintext; pyrage's own error text never reaches the message."""
    import pyrage

    try:
        return bytes(pyrage.decrypt(blob, identities))
    except Exception as exc:  # pyrage.DecryptError, and anything else its parser raises
        reason = str(exc).lower()
    if "no matching keys" in reason:
        who = f"the identity in {identity_file}" if identity_file else "the given identity"
        msg = (
            f"cannot decrypt {path} with {who}: it is not one of the bundle's recipients (wrong study key?). "
            "Fix: use the identity of the study the session was exported to"
        )
    else:
        msg = f"cannot decrypt {path}: wrong key or damaged file. {_REFETCH}"
    raise ExportError(msg)


def check_tar(plaintext: bytes, path: Path) -> Bundle:
    """Check a decrypted bundle's tar (``path`` is only for messages) and return it, opened.

    :raises ExportError: any check of the spec's "Reading" fails.
    """
    reader = _TarReader(path)
    try:
        with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:") as tar:
            for info in tar:
                reader.take(tar, info)
    except tarfile.TarError:
        reader.refuse("the decrypted content is not a complete tar archive")
    return reader.finish()


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        msg = "duplicate key"
        raise ValueError(msg)
    return dict(pairs)


def _json_object(blob: bytes) -> dict[str, Any] | None:
    """``blob`` parsed as a JSON object (no duplicate keys), or None."""
    try:
        value = json.loads(blob.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


class _TarReader:
    """The member-by-member checks of :func:`check_tar`, in tar order.

    The manifest and its signature come first, so every other member's declared
    size is known (and authenticated) before its data is read.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.top: str | None = None
        self.seen: set[str] = set()
        self.manifest: dict[str, Any] | None = None
        self.manifest_bytes = b""
        self.signature: bytes | None = None
        self.listed: dict[str, tuple[str, int]] = {}
        self.members: dict[str, bytes] = {}

    def refuse(self, what: str) -> NoReturn:
        msg = f"{self.path} is not a valid optin bundle: {what}. {_REFETCH}"
        raise ExportError(msg)

    def take(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> None:
        """Check one member's header, then (only if it passes) read and check its data."""
        name = self._relative_name(info)
        if name in self.seen:
            self.refuse(f"member {name!r} appears twice in the tar")
        self.seen.add(name)
        if not 0 <= info.size <= MAX_MEMBER_SIZE:
            self.refuse(f"member {name!r} is {info.size} bytes, over the {MAX_MEMBER_SIZE}-byte limit")
        if self.manifest is None:
            self._take_manifest(tar, info, name)
        elif self.signature is None:
            self._take_signature(tar, info, name)
        else:
            self._take_member(tar, info, name)

    def _relative_name(self, info: tarfile.TarInfo) -> str:
        """The member's name under ``<session-id>/``, after every check of the name and type."""
        name = info.name
        if info.type not in _REGULAR:
            kind = _NOT_REGULAR.get(info.type, f"of tar type {info.type!r}")
            self.refuse(f"member {name!r} is {kind}, not a regular file")
        if name.startswith("/"):
            self.refuse(f"member {name!r} has an absolute path")
        if ".." in name:
            self.refuse(f"member {name!r} contains '..'")
        if "\\" in name:
            self.refuse(f"member {name!r} contains a backslash")
        if _CONTROL.search(name) or name != name.encode("utf-8", "replace").decode("utf-8"):
            self.refuse(f"member {name!r} has a control character or is not UTF-8")
        top, _, rest = name.partition("/")
        if not rest or "" in rest.split("/") or "." in name.split("/"):
            self.refuse(f"member {name!r} is not a file name under a <session-id>/ directory")
        if self.top is None:
            self.top = top
        if top != self.top:
            self.refuse(f"member {name!r} is outside the bundle's directory '{self.top}/'")
        return rest

    def _read(self, tar: tarfile.TarFile, info: tarfile.TarInfo) -> bytes:
        f = tar.extractfile(info)
        data = f.read() if f is not None else b""
        if len(data) != info.size:
            self.refuse(f"member {info.name!r} is cut short")
        return data

    def _take_manifest(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        if name != MANIFEST:
            self.refuse(f"the first member is {name!r}, not {MANIFEST}")
        data = self._read(tar, info)
        manifest = _json_object(data)
        if manifest is None:
            self.refuse(f"{MANIFEST} is not a JSON object (UTF-8, no duplicate keys)")
        schema = manifest.get("schema")
        if schema != SCHEMA:
            msg = (
                f"{self.path} has schema {schema!r}, which this optin does not read (it reads {SCHEMA!r}). "
                "Fix: read it with the optin version that wrote it, or ask for a new export"
            )
            raise ExportError(msg)
        if manifest.get("session") != self.top:
            self.refuse(
                f"its members are under '{self.top}/' but the manifest's session is "
                f"{manifest.get('session')!r}"
            )
        self.manifest, self.manifest_bytes = manifest, data

    def _take_signature(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        if name != SIGNATURE:
            self.refuse(f"the second member is {name!r}, not {SIGNATURE}")
        if info.size != signing.SIGNATURE_SIZE:
            self.refuse(f"{SIGNATURE} is {info.size} bytes, not {signing.SIGNATURE_SIZE}")
        signature = self._read(tar, info)
        manifest = self.manifest or {}  # take() read the manifest first
        if not signing.verify(self._signing_key(manifest), self.manifest_bytes, signature):
            self.refuse(
                f"{SIGNATURE} does not verify over {MANIFEST} with volunteer.signing_key "
                "(the manifest was changed after the volunteer's agent signed it)"
            )
        self.signature = signature
        self.listed = self._listed(manifest)

    def _signing_key(self, manifest: dict[str, Any]) -> bytes:
        volunteer = manifest.get("volunteer")
        text = volunteer.get("signing_key") if isinstance(volunteer, dict) else None
        try:
            key = base64.b64decode(text, validate=True) if isinstance(text, str) else b""
        except ValueError:
            key = b""
        if len(key) != signing.PUBLIC_KEY_SIZE:
            self.refuse("the manifest's volunteer.signing_key is not base64 of a 32-byte Ed25519 key")
        return key

    def _listed(self, manifest: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """The manifest's ``members`` as name → (sha256, size), after checking its shape."""
        table = manifest.get("members")
        if not isinstance(table, dict):
            self.refuse("the manifest has no members table")
        listed: dict[str, tuple[str, int]] = {}
        for name, entry in table.items():
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            if name in (MANIFEST, SIGNATURE):
                self.refuse(f"the manifest's members lists {name!r}, which it must not")
            if not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
                self.refuse(f"the manifest's entry for {name!r} has no lower-case hex sha256")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                self.refuse(f"the manifest's entry for {name!r} has no size")
            listed[name] = (digest, size)
        return listed

    def _take_member(self, tar: tarfile.TarFile, info: tarfile.TarInfo, name: str) -> None:
        if name not in self.listed:
            self.refuse(f"member {name!r} is not listed in the manifest's members")
        digest, size = self.listed[name]
        if info.size != size:
            self.refuse(f"member {name!r} is {info.size} bytes in the tar, but the manifest says {size}")
        data = self._read(tar, info)
        if hashlib.sha256(data).hexdigest() != digest:
            self.refuse(f"member {name!r} does not match its SHA-256 in the manifest")
        self.members[name] = data

    def finish(self) -> Bundle:
        """The bundle, once the whole tar was read: nothing missing, steps as declared."""
        if self.manifest is None:
            self.refuse(f"it has no {MANIFEST}")
        if self.signature is None:
            self.refuse(f"it has no {SIGNATURE}")
        missing = sorted(set(self.listed) - set(self.members))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            self.refuse(f"member {missing[0]!r}{more}, listed in the manifest, is missing")
        self._check_no_file_is_a_directory()
        by_action = self._count_steps(self.manifest)
        return Bundle(
            path=self.path,
            session=str(self.top),
            manifest=self.manifest,
            manifest_bytes=self.manifest_bytes,
            signature=self.signature,
            members=self.members,
            steps_by_action=by_action,
        )

    def _check_no_file_is_a_directory(self) -> None:
        """No member name is also the directory of another (``frames`` and ``frames/000001.webp``)."""
        for name in self.seen:
            parts = name.split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in self.seen:
                    self.refuse(f"member {'/'.join(parts[:i])!r} is a file and the directory of {name!r}")

    def _count_steps(self, manifest: dict[str, Any]) -> dict[str, int]:
        """Steps by action, counted from the members, refused unless the manifest's ``steps`` agree."""
        numbers = sorted(m[1] for name in self.members if (m := _STEP.fullmatch(name)))
        expected = [f"{i:06d}" for i in range(len(numbers))]
        if numbers != expected:
            gap = next(e for n, e in zip(numbers, expected, strict=True) if n != e)
            self.refuse(f"the step members are not numbered from 000000 without gaps (no {gap}.json)")
        for name in self.members:
            if (m := _STEP_FRAME.fullmatch(name)) and f"{m[1]}.json" not in self.members:
                self.refuse(f"member {name!r} is the frame of a step that has no {m[1]}.json")
        counts: Counter[str] = Counter()
        for number in numbers:
            step = _json_object(self.members[f"{number}.json"])
            if step is None or not isinstance(step.get("action"), str):
                self.refuse(f"step member '{number}.json' is not a JSON object with an action")
            counts[step["action"]] += 1
        declared = manifest.get("steps")
        count = declared.get("count") if isinstance(declared, dict) else None
        by_action = declared.get("by_action") if isinstance(declared, dict) else None
        nonzero = {k: v for k, v in by_action.items() if v} if isinstance(by_action, dict) else None
        if count != len(numbers) or nonzero != dict(counts):
            self.refuse(
                f"the manifest's steps say {count} ({by_action}) but the bundle holds "
                f"{len(numbers)} ({dict(sorted(counts.items()))})"
            )
        return dict(counts)


# --- summary ----------------------------------------------------------------------------------------


def summarise(bundle: Bundle) -> dict[str, Any]:
    """What ``optin inspect`` reports of an opened bundle, JSON-ready (no member content)."""
    m = bundle.manifest
    consent = _mapping(m.get("consent"))
    volunteer = _mapping(m.get("volunteer"))
    files = list(bundle.files())
    by_action = dict(sorted(bundle.steps_by_action.items(), key=lambda kv: (-kv[1], kv[0])))
    return {
        "path": str(bundle.path),
        "session": bundle.session,
        "schema": m["schema"],
        "agent_version": m.get("agent_version"),
        "volunteer": {"id": volunteer.get("id"), "signing_key": volunteer.get("signing_key")},
        "study": {"id": consent.get("study_id"), "name": consent.get("study_name")},
        "consent_version": consent.get("consent_version"),
        "duration_s": m.get("duration_s"),
        "steps": {"count": sum(by_action.values()), "by_action": by_action},
        "frames": _line_count(bundle.members.get("frames.jsonl", b"")),
        "events": _line_count(bundle.members.get("events.jsonl", b"")),
        "redactions": _mapping(m.get("redaction")).get("counts", {}),
        "loss": m.get("loss"),
        "members": {"count": len(files), "bytes": sum(len(blob) for _, blob in files)},
        "signature": "valid",
    }


def render_summary(summary: dict[str, Any]) -> str:
    """A short terminal text of :func:`summarise`'s result: aligned ``key: value`` lines."""
    volunteer, study, steps = summary["volunteer"], summary["study"], summary["steps"]
    by_action = ", ".join(f"{action} {n}" for action, n in steps["by_action"].items())
    rows = [
        ("bundle", summary["path"]),
        ("session", summary["session"]),
        ("schema", f"{summary['schema']}, written by optin {_text(summary['agent_version'])}"),
        ("volunteer", f"{_text(volunteer['id'])} (signing key {_text(volunteer['signing_key'])})"),
        (
            "study",
            f"{_text(study['id'])} ({_text(study['name'])}), consent version "
            f"{_text(summary['consent_version'])}",
        ),
        ("duration", "unknown" if summary["duration_s"] is None else f"{summary['duration_s']} s"),
        ("steps", f"{steps['count']}" + (f": {by_action}" if by_action else "")),
        ("frames", str(summary["frames"])),
        ("events", str(summary["events"])),
        ("redactions", _redactions_text(summary["redactions"])),
        ("loss", _flat_text(summary["loss"])),
        ("members", f"{summary['members']['count']}, {summary['members']['bytes']} bytes"),
        ("signature", f"{summary['signature']} (unchanged since the volunteer's agent signed it)"),
    ]
    width = max(len(key) for key, _ in rows) + 2
    return "\n".join(f"{key + ':':<{width}}{value}" for key, value in rows)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _line_count(blob: bytes) -> int:
    return blob.count(b"\n") + (1 if blob and not blob.endswith(b"\n") else 0)


def _redactions_text(counts: Any) -> str:
    """``typed EMAIL 1; screen EMAIL 2, TYPED 1`` (sources with no finds left out), or ``none``."""
    parts = [f"{source} {_flat_text(found)}" for source, found in _mapping(counts).items() if found]
    return "; ".join(parts) or "none"


def _flat_text(value: Any) -> str:
    """``key value, ...`` of a flat mapping (lists as their items, or ``none``)."""
    if not isinstance(value, dict):
        return _text(value)
    items = []
    for key, item in value.items():
        shown = (", ".join(map(str, item)) or "none") if isinstance(item, list) else _text(item)
        items.append(f"{key} {shown}")
    return ", ".join(items) or "none"


# --- unpacking --------------------------------------------------------------------------------------

_O_CREATE = (
    os.O_CREAT
    | os.O_EXCL
    | os.O_WRONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def unpack(bundle: Bundle, out_dir: Path) -> Path:
    """Write every member of a checked bundle under ``out_dir/<session-id>/``; return that directory.

    Directories are created (0755) by this call, files with ``O_EXCL | O_NOFOLLOW``
    (0644), so nothing is written through a symbolic link or over a file.  On a
    failure half-way, what was written is removed.

    :raises UsageError: ``out_dir`` is not a usable directory, or ``<session-id>``
        already exists there and is not an empty directory of this user.
    :raises ExportError: ``<session-id>`` is a symbolic link, or writing failed.
    """
    root = out_dir / bundle.session
    made: list[Path] = [root] if _make_session_dir(out_dir, root) else []
    written: list[Path] = []
    try:
        for name, blob in bundle.files():
            _write_member(root, name, blob, made, written)
    except BaseException as exc:
        _remove(written, made)
        if isinstance(exc, OSError):
            msg = (
                f"cannot unpack into {root}: {exc.strerror or exc.__class__.__name__}; nothing was left "
                "there. Fix: free space or choose another output directory"
            )
            raise ExportError(msg) from exc
        raise
    return root


def _make_session_dir(out_dir: Path, root: Path) -> bool:
    """Create ``root`` (True), or accept an empty directory of this user already there (False)."""
    fix = "Fix: choose another output directory"
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"the output directory {out_dir} is not a directory. {fix}"
        raise UsageError(msg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o755)
    except FileExistsError:
        _check_existing_session_dir(root)
        return False
    except OSError as exc:
        msg = f"cannot create {root}: {exc.strerror or exc.__class__.__name__}. {fix}"
        raise UsageError(msg) from None
    return True


def _check_existing_session_dir(root: Path) -> None:
    """Refuse a symbolic link, a file, a non-empty directory or another user's directory at ``root``."""
    fix = "Fix: remove it, or choose another output directory"
    try:
        st = root.lstat()
        if stat.S_ISLNK(st.st_mode):
            msg = f"{root} is a symbolic link; refusing to write through it. {fix}"
            raise ExportError(msg)
        empty = stat.S_ISDIR(st.st_mode) and not any(root.iterdir())
    except OSError as exc:
        msg = f"cannot use {root}: {exc.strerror or exc.__class__.__name__}. {fix}"
        raise UsageError(msg) from None
    if not stat.S_ISDIR(st.st_mode):
        msg = f"{root} exists and is not a directory. {fix}"
        raise UsageError(msg)
    if not empty:
        msg = f"{root} already exists and is not empty. {fix}"
        raise UsageError(msg)
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        msg = f"{root} belongs to another user. {fix}"
        raise UsageError(msg)


def _write_member(root: Path, name: str, blob: bytes, made: list[Path], written: list[Path]) -> None:
    """Create the member's directories (once each) and the member itself, all inside ``root``."""
    parent = root
    for part in name.split("/")[:-1]:
        parent = parent / part
        if parent not in made:
            _check_inside(root, parent)
            parent.mkdir(mode=0o755)
            made.append(parent)
    target = root / name
    _check_inside(root, target)
    fd = os.open(target, _O_CREATE, 0o644)
    written.append(target)
    _write_all(fd, blob)


def _check_inside(root: Path, target: Path) -> None:
    """Belt and braces: ``target``, symbolic links resolved, is inside ``root``."""
    if not target.resolve().is_relative_to(root.resolve()):
        msg = f"refusing to write {target}: it resolves outside {root}"
        raise ExportError(msg)


def _write_all(fd: int, blob: bytes) -> None:
    with os.fdopen(fd, "wb") as f:
        f.write(blob)


def _remove(written: list[Path], made: list[Path]) -> None:
    for path in reversed(written):
        with suppress(OSError):
            path.unlink()
    for path in reversed(made):
        with suppress(OSError):
            path.rmdir()


# --- schema 0 ---------------------------------------------------------------------------------------
