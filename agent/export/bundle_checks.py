"""The decrypted bundle's tar, checked member by member: :func:`check_tar` and :class:`Bundle`.

docs/export-format.md ("Reading", "Limits") is the contract; :mod:`agent.export.inspect`
opens the file and its age layer and hands the plaintext here.  The tar is read without
extracting anything, each header checked before its data: regular files and single small
pax headers only, no sparse members, names from the spec's grammar (so never deep), under
the one ``<session-id>/`` the manifest names; ``manifest.json`` and ``manifest.sig`` come
first and the signature verifies; every other member is listed once in ``members`` with
the size its header declares and the same SHA-256; then every count the manifest states is
recomputed (:class:`~agent.export.recount.Recount`).

Failures are :class:`~agent.errors.ExportError` that name the bundle, the member and the
check, never a member's content, with the check's code as ``reason`` (docs/dataset.md "Reason
codes", agent/export/reasons.py); a failure after the signature and the volunteer id were
checked also carries the manifest's ``session`` and ``volunteer.id`` (for ``optin-bundle/1``: the
id its valid signature covers).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from agent.errors import ExportError
from agent.export.recount import MEMBER, SHOWN, TASKS, V3, Members, Recount, json_object, shown, view
from agent.store import signing
from agent.untrusted_text import visible

#: The bundle layout this optin writes, and every layout it reads (each by its own rules).
SCHEMA = V3
V2 = "optin-bundle/2"
V1 = "optin-bundle/1"
SCHEMAS = (SCHEMA, V2, V1)
#: Largest member (the spec's 1 GiB).
MAX_MEMBER_SIZE = 1 << 30
#: Largest ``manifest.json`` (parsed whole, once).
MAX_MANIFEST_SIZE = 64 << 20
#: Largest pax extended header, and most records in one (optin writes none: its names are short).
MAX_PAX_HEADER = 1 << 10
MAX_PAX_RECORDS = 8

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: The fix of a refusal for a file damaged or changed after export.
REFETCH_FIX = (
    "Fix: ask the volunteer to export the session again (the file was damaged or changed after export)"
)
#: The fix of a refusal for a file optin never writes.
HOSTILE_FIX = (
    "Fix: do not use it: optin never writes such a file (if a volunteer sent it, ask them to export the "
    "session again)"
)
_REGULAR = (tarfile.REGTYPE, tarfile.AREGTYPE)
_NOT_REGULAR = {
    tarfile.SYMTYPE: "a symbolic link",
    tarfile.LNKTYPE: "a hard link",
    tarfile.DIRTYPE: "a directory",
    tarfile.CHRTYPE: "a character device",
    tarfile.BLKTYPE: "a block device",
    tarfile.FIFOTYPE: "a FIFO",
    tarfile.GNUTYPE_SPARSE: "a sparse file",
}
_SESSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_VOLUNTEER_ID = re.compile(r"[0-9a-f]{32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Bundle:
    """An opened bundle, every check passed; nothing of it is on disk.

    :ivar members: every member but ``manifest.json`` and ``manifest.sig``, by its
        name under ``<session-id>/``, in tar order (:class:`Members`; a dict of bytes works too).
    :ivar steps_by_action: the steps counted from the step members, by action.
    :ivar id_verified: ``volunteer.id`` is the id of the key that signed the manifest
        (``optin-bundle/2`` and ``/3``); False for ``optin-bundle/1``, whose ids nobody can check.
    """

    path: Path
    session: str
    manifest: dict[str, Any]
    manifest_bytes: bytes
    signature: bytes
    members: Mapping[str, bytes]
    steps_by_action: dict[str, int]
    id_verified: bool = True

    def files(self) -> Iterator[tuple[str, bytes | memoryview]]:
        """Every member in tar order, ``manifest.json`` and ``manifest.sig`` first (read-only bytes)."""
        yield MANIFEST, self.manifest_bytes
        yield SIGNATURE, self.signature
        for name in self.members:
            yield name, view(self.members, name)

    def size(self) -> int:
        """Bytes of every member, ``manifest.json`` and ``manifest.sig`` included."""
        sizes = (len(view(self.members, name)) for name in self.members)
        return len(self.manifest_bytes) + len(self.signature) + sum(sizes)


def shown_path(path: Path) -> str:
    """A bundle's path as messages show it (the volunteer chose the file name)."""
    return visible(str(path), limit=4 * SHOWN)


# --- the tar ----------------------------------------------------------------------------------------


class _Refused(Exception):
    """A tar header the spec does not allow, found while tarfile reads it."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's header reader with the spec's limits, checked before tarfile acts on a header."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in (tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            msg = "it has a global or Solaris extended header (only per-member pax headers are allowed)"
            raise _Refused(msg)
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            msg = "it has a GNU long-name header (a bundle's names are short)"
            raise _Refused(msg)
        if self.type == tarfile.GNUTYPE_SPARSE:
            msg = f"member {shown(self.name)} is a sparse file, not a regular file"
            raise _Refused(msg)
        if self.type != tarfile.XHDTYPE:
            member: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
            return member
        if self.size > MAX_PAX_HEADER:
            msg = f"it has a pax extended header of {self.size} bytes (at most {MAX_PAX_HEADER})"
            raise _Refused(msg)
        if getattr(tar, "_optin_in_pax", False):
            msg = "it has two pax extended headers in a row"
            raise _Refused(msg)
        where = tar.fileobj.tell()
        _check_pax_records(tar.fileobj.read(self.size))
        tar.fileobj.seek(where)
        tar._optin_in_pax = True  # type: ignore[attr-defined]
        try:
            after_pax: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
            return after_pax
        finally:
            tar._optin_in_pax = False  # type: ignore[attr-defined]

    @staticmethod
    def _refuse_sparse(*_args: Any) -> NoReturn:
        msg = "it has a sparse member (GNU.sparse pax keys): its data is not in the file"
        raise _Refused(msg)

    _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse

    def _apply_pax_info(self, pax_headers: Mapping[str, str], encoding: str, errors: str) -> None:
        if any(key.startswith("GNU.sparse.") for key in pax_headers):
            self._refuse_sparse()
        super()._apply_pax_info(pax_headers, encoding, errors)  # type: ignore[misc]


_LONG_NUMBER = re.compile(rb"[0-9]{21}")


def _check_pax_records(payload: bytes) -> None:
    """Refuse a pax header that is not a sequence of ``"%d %s=%s\\n"`` records of the right lengths.

    Checked in linear time before tarfile parses it, because tarfile's parser (Python 3.11)
    backtracks: a long run of digits or a record whose length points into another costs time
    quadratic in the header's size.
    """
    if _LONG_NUMBER.search(payload):
        msg = "it has a pax extended header with a number of more than 20 digits"
        raise _Refused(msg)
    pos = records = 0
    while pos < len(payload):
        records += 1
        if records > MAX_PAX_RECORDS:
            msg = f"it has a pax extended header of more than {MAX_PAX_RECORDS} records"
            raise _Refused(msg)
        space = payload.find(b" ", pos, pos + 21)
        digits = payload[pos:space] if space > pos else b""
        end = pos + int(digits) if digits.isdigit() else pos
        record = payload[space + 1 : end]
        if (
            space < 0
            or end <= space + 1
            or end > len(payload)
            or not record.endswith(b"\n")
            or b"=" not in record[:-1]
        ):
            msg = "it has a malformed pax extended header (not length-prefixed key=value records)"
            raise _Refused(msg)
        if record.startswith(b"GNU.sparse."):
            _BoundedTarInfo._refuse_sparse()
        pos = end


def check_tar(plaintext: bytes, path: Path) -> Bundle:
    """Check a decrypted bundle's tar (``path`` is only for messages) and return it, opened.

    :raises ExportError: any check of the spec's "Reading" fails.
    """
    reader = _TarReader(path, plaintext)
    try:
        with tarfile.open(fileobj=io.BytesIO(plaintext), mode="r:", tarinfo=_BoundedTarInfo) as tar:
            while (info := tar.next()) is not None:
                reader.take(info)
                tar.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header; we need none
    except _Refused as exc:
        reader.refuse(str(exc), HOSTILE_FIX, reason="tar_header")
    except (tarfile.TarError, ValueError, RecursionError):
        reader.refuse("the decrypted content is not a complete tar archive", reason="tar_header")
    except ExportError as exc:  # every refusal is the reader's (refuse() vouches); kept for any other
        reader.vouched(exc)
        raise
    try:
        return reader.finish()
    except ExportError as exc:
        reader.vouched(exc)
        raise


class _TarReader:
    """The member-by-member checks of :func:`check_tar`, in tar order, then :meth:`finish`.

    The manifest and its signature come first, so every other member's declared
    size is known (and authenticated) before its data is read.
    """

    def __init__(self, path: Path, plaintext: bytes) -> None:
        self.path = path
        self.plaintext = plaintext
        self.top: str | None = None
        self.seen: set[str] = set()
        self.manifest: dict[str, Any] | None = None
        self.manifest_bytes = b""
        self.signature: bytes | None = None
        self.id_verified = False
        #: (session, volunteer.id) once the signature and the volunteer id were checked.
        self.vouched_for: tuple[str, str] | None = None
        self.listed: dict[str, tuple[str, int]] = {}
        self.spans: dict[str, tuple[int, int]] = {}
        self.members = Members(plaintext, self.spans)

    def refuse(self, what: str, fix: str = REFETCH_FIX, *, reason: str) -> NoReturn:
        """Refuse the bundle under ``reason`` (a code of agent/export/reasons.py), naming ``what``."""
        msg = f"{shown_path(self.path)} is not a valid optin bundle: {what}. {fix}"
        raise self.vouched(ExportError(msg, reason=reason))

    def vouched(self, exc: ExportError) -> ExportError:
        """``exc`` with the session and volunteer, once the signature and the volunteer id passed."""
        if self.vouched_for is not None and exc.session is None:
            exc.session, exc.volunteer = self.vouched_for
        return exc

    def take(self, info: tarfile.TarInfo) -> None:
        """Check one member's header, then (only if it passes) read and check its data."""
        name = self._relative_name(info)
        if name in self.seen:
            self.refuse(f"member {shown(name)} appears twice in the tar", reason="member_name")
        self.seen.add(name)
        if not 0 <= info.size <= MAX_MEMBER_SIZE:
            self.refuse(
                f"member {shown(name)} is {info.size} bytes, over the {MAX_MEMBER_SIZE}-byte limit",
                reason="member_size",
            )
        if self.manifest is None:
            self._take_manifest(info, name)
        elif self.signature is None:
            self._take_signature(info, name)
        else:
            self._take_member(info, name)

    def _relative_name(self, info: tarfile.TarInfo) -> str:
        """The member's name under ``<session-id>/``, after every check of the header and the name."""
        name = info.name
        if info.type not in _REGULAR:
            kind = _NOT_REGULAR.get(info.type, f"of tar type {info.type!r}")
            self.refuse(f"member {shown(name)} is {kind}, not a regular file", reason="tar_header")
        if info.sparse is not None:
            self.refuse(f"member {shown(name)} is a sparse file, not a regular file", reason="tar_header")
        if name.startswith("/"):
            self.refuse(f"member {shown(name)} has an absolute path", reason="member_name")
        if ".." in name:
            self.refuse(f"member {shown(name)} contains '..'", reason="member_name")
        if "\\" in name:
            self.refuse(f"member {shown(name)} contains a backslash", reason="member_name")
        if _CONTROL.search(name) or name != name.encode("utf-8", "replace").decode("utf-8"):
            self.refuse(f"member {shown(name)} has a control character or is not UTF-8", reason="member_name")
        top, _, rest = name.partition("/")
        if not rest or not _SESSION.fullmatch(top):
            self.refuse(
                f"member {shown(name)} is not a file name under a <session-id>/ directory",
                reason="member_name",
            )
        if self.top is None:
            self.top = top
        if top != self.top:
            self.refuse(
                f"member {shown(name)} is outside the bundle's directory '{self.top}/'", reason="member_name"
            )
        if not MEMBER.fullmatch(rest):
            self.refuse(
                f"member {shown(name)} is not a name a bundle holds (docs/export-format.md)",
                HOSTILE_FIX,
                reason="member_name",
            )
        return rest

    def _span(self, info: tarfile.TarInfo) -> tuple[int, int]:
        """Where the member's data is in the plaintext: never more than the tar holds."""
        start = info.offset_data
        if start + info.size > len(self.plaintext):
            self.refuse(f"member {shown(info.name)} is cut short", reason="member_size")
        return start, start + info.size

    def _read(self, info: tarfile.TarInfo) -> bytes:
        start, end = self._span(info)
        return self.plaintext[start:end]

    def _take_manifest(self, info: tarfile.TarInfo, name: str) -> None:
        if name != MANIFEST:
            self.refuse(f"the first member is {shown(name)}, not {MANIFEST}", reason="manifest_order")
        if info.size > MAX_MANIFEST_SIZE:
            self.refuse(
                f"{MANIFEST} is {info.size} bytes, over the {MAX_MANIFEST_SIZE}-byte limit",
                reason="manifest_json",
            )
        data = self._read(info)
        manifest = json_object(data)
        if manifest is None:
            self.refuse(
                f"{MANIFEST} is not a JSON object (UTF-8, no duplicate keys, no NaN)", reason="manifest_json"
            )
        schema = manifest.get("schema")
        if schema not in SCHEMAS:
            msg = (
                f"{shown_path(self.path)} has schema {shown(schema)}, which this optin does not read "
                f"(it reads {', '.join(SCHEMAS)}). Fix: read it with the optin version that wrote it, "
                "or ask for a new export"
            )
            raise ExportError(msg, reason="schema_unknown")
        if manifest.get("session") != self.top:
            session = shown(manifest.get("session"))
            self.refuse(
                f"its members are under '{self.top}/' but the manifest's session is {session}",
                reason="session_mismatch",
            )
        self.manifest, self.manifest_bytes = manifest, data

    def _take_signature(self, info: tarfile.TarInfo, name: str) -> None:
        if name != SIGNATURE:
            self.refuse(f"the second member is {shown(name)}, not {SIGNATURE}", reason="manifest_order")
        if info.size != signing.SIGNATURE_SIZE:
            self.refuse(
                f"{SIGNATURE} is {info.size} bytes, not {signing.SIGNATURE_SIZE}", reason="signature_invalid"
            )
        signature = self._read(info)
        manifest = self.manifest or {}  # take() read the manifest first
        key = self._signing_key(manifest)
        if not signing.verify(key, self.manifest_bytes, signature):
            self.refuse(
                f"{SIGNATURE} does not verify over {MANIFEST} with volunteer.signing_key "
                "(the manifest was changed after it was signed)",
                reason="signature_invalid",
            )
        self.id_verified = self._check_volunteer_id(manifest, key)
        # Signed, and (optin-bundle/2 on) signed by the key of that id: from here a refusal names them.
        self.vouched_for = (str(self.top), manifest["volunteer"]["id"])
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
            self.refuse(
                "the manifest's volunteer.signing_key is not base64 of a 32-byte Ed25519 key",
                reason="signature_invalid",
            )
        return key

    def _check_volunteer_id(self, manifest: dict[str, Any], key: bytes) -> bool:
        """Whether ``volunteer.id`` was checked against its key (optin-bundle/2 on); refuse a wrong one."""
        claimed = manifest["volunteer"].get("id")
        if not (isinstance(claimed, str) and _VOLUNTEER_ID.fullmatch(claimed)):
            self.refuse(
                "the manifest's volunteer.id is not 32 lower-case hex characters", reason="manifest_types"
            )
        consent = manifest.get("consent")
        study = consent.get("study_id") if isinstance(consent, dict) else None
        if not isinstance(study, str):
            self.refuse("the manifest's consent.study_id is not a string", reason="manifest_types")
        if manifest["schema"] == V1:
            return False  # an HMAC under the volunteer's private seed: nobody else can check it
        try:
            expected = signing.id_of_key(study, key)
        except ValueError:
            self.refuse("the manifest's consent.study_id is not valid UTF-8", reason="manifest_types")
        if claimed != expected:
            self.refuse(
                f"its volunteer.id {claimed} is not the id of the key that signed it (that key is volunteer "
                f"{expected} in study {shown(study)}): someone signed it with their own key and another "
                "volunteer's id",
                "Fix: do not use it: it is forged (a volunteer's own bundles carry the id of their key)",
                reason="volunteer_id_mismatch",
            )
        return True

    def _listed(self, manifest: dict[str, Any]) -> dict[str, tuple[str, int]]:
        """The manifest's ``members`` as name → (sha256, size), after checking its shape."""
        table = manifest.get("members")
        if not isinstance(table, dict):
            self.refuse("the manifest has no members table", reason="manifest_types")
        listed: dict[str, tuple[str, int]] = {}
        for name, entry in table.items():
            digest = entry.get("sha256") if isinstance(entry, dict) else None
            size = entry.get("size") if isinstance(entry, dict) else None
            if name in (MANIFEST, SIGNATURE):
                self.refuse(f"the manifest's members lists {name!r}, which it must not", reason="member_name")
            if not MEMBER.fullmatch(name) or (name == TASKS and manifest["schema"] != V3):
                self.refuse(
                    f"the manifest's members lists {shown(name)}, not a name a bundle holds",
                    HOSTILE_FIX,
                    reason="member_name",
                )
            if not (isinstance(digest, str) and _SHA256_HEX.fullmatch(digest)):
                self.refuse(
                    f"the manifest's entry for {shown(name)} has no lower-case hex sha256",
                    reason="manifest_types",
                )
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                self.refuse(f"the manifest's entry for {shown(name)} has no size", reason="manifest_types")
            listed[name] = (digest, size)
        return listed

    def _take_member(self, info: tarfile.TarInfo, name: str) -> None:
        v3 = self.manifest is not None and self.manifest.get("schema") == V3
        if v3 and not self.spans and name != TASKS:
            self.refuse(f"the third member is {shown(name)}, not {TASKS}", reason="manifest_order")
        if not v3 and name == TASKS:
            self.refuse(
                f"member {shown(name)} is not a name an {self.manifest and self.manifest.get('schema')} "
                "bundle holds (docs/export-format.md)",
                HOSTILE_FIX,
                reason="member_name",
            )
        if name not in self.listed:
            self.refuse(
                f"member {shown(name)} is not listed in the manifest's members", reason="member_unlisted"
            )
        digest, size = self.listed[name]
        if info.size != size:
            self.refuse(
                f"member {shown(name)} is {info.size} bytes in the tar, but the manifest says {size}",
                reason="member_size",
            )
        start, end = self._span(info)
        if hashlib.sha256(memoryview(self.plaintext)[start:end]).hexdigest() != digest:
            self.refuse(
                f"member {shown(name)} does not match its SHA-256 in the manifest", reason="member_hash"
            )
        self.spans[name] = (start, end)

    def finish(self) -> Bundle:
        """The bundle, once the whole tar was read: nothing missing, every stated count recomputed."""
        if self.manifest is None:
            self.refuse(f"it has no {MANIFEST}", reason="manifest_order")
        if self.signature is None:
            self.refuse(f"it has no {SIGNATURE}", reason="manifest_order")
        missing = sorted(set(self.listed) - set(self.members))
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            self.refuse(
                f"member {shown(missing[0])}{more}, listed in the manifest, is missing",
                reason="member_missing",
            )
        by_action = Recount(self.members, self.listed, self.refuse).check(self.manifest)
        return Bundle(
            path=self.path,
            session=str(self.top),
            manifest=self.manifest,
            manifest_bytes=self.manifest_bytes,
            signature=self.signature,
            members=self.members,
            steps_by_action=by_action,
            id_verified=self.id_verified,
        )


__all__ = [
    "HOSTILE_FIX",
    "MANIFEST",
    "MAX_MANIFEST_SIZE",
    "MAX_MEMBER_SIZE",
    "MAX_PAX_HEADER",
    "MAX_PAX_RECORDS",
    "REFETCH_FIX",
    "SCHEMA",
    "SCHEMAS",
    "SIGNATURE",
    "V1",
    "Bundle",
    "check_tar",
    "shown_path",
    "view",
]
