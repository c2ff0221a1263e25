"""Which sessions the volunteer approved for export, and which were exported.

``optin review`` (or ``optin export --approve``) writes ``review.json`` into the session's
directory.  It holds no content: times, counts, the redaction policy's SHA-256 and a
fingerprint of the session's segment files.  An approval is for what the volunteer saw:
if the session changes afterwards (a cut, ``delete-last``, retention) or the study's
redaction policy changes, the fingerprint or the policy hash no longer match and the
session must be reviewed again before it can be exported.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from agent.errors import UsageError
from agent.paths import Dirs
from agent.store.reader import session_dir
from agent.store.safe_fs import StoreDir, UnsafeEntry, is_plain_file
from agent.store.segment_layout import is_segment_name
from agent.store.writer import utc_timestamp

REVIEW_FILE = "review.json"
#: How much of a segment's start the fingerprint covers (its header: ids and the wrapped key).
HEADER_BYTES = 256
#: At most this much of ``review.json`` is read (it grows by one short entry per export).
REVIEW_LIMIT = 16 << 20


class NotApproved(UsageError):
    """The session was not approved for export, or changed since it was (exit 2)."""


def fingerprint(path: Path) -> str:
    """SHA-256 over each segment file's name, size and header (which holds the segment's freshly
    wrapped key): any cut, trim or rewrite changes it, even one that kept every size.

    Only a real session folder and regular segment files are read (never through a link, never a
    FIFO or a device): what is approved is what is in the store.

    :raises UnsafeEntry: the folder, or something where a segment should be, is not; the fix.
    """
    h = hashlib.sha256()
    with StoreDir.open(path) as folder:
        for name, st in sorted(folder.entries(), key=lambda e: e[0]):
            if not is_segment_name(name):
                continue
            if not is_plain_file(st):
                raise UnsafeEntry([folder.refusal(name, st)], lead=_UNSAFE.format(sid=path.name))
            fd, opened = folder.open_file(name)
            try:
                head = os.read(fd, HEADER_BYTES)
            finally:
                os.close(fd)
            h.update(f"{name}\0{opened.st_size}\0".encode() + hashlib.sha256(head).digest())
    return h.hexdigest()


_UNSAFE = "session {sid} cannot be approved or exported as it is"


def load(dirs: Dirs, session_id: str) -> dict[str, Any]:
    """The session's review record (empty when it has none, it is unreadable, or it is not a regular
    file: a link there is never followed, and the session then counts as not approved)."""
    try:
        return _load(session_dir(dirs, session_id))
    except (OSError, UnsafeEntry):
        return {}


def _load(path: Path) -> dict[str, Any]:
    """The review record of the session folder ``path``; {} when there is none or it is not JSON.

    :raises UnsafeEntry: the folder or ``review.json`` is not a real folder / a regular file.
    """
    with StoreDir.open(path) as folder:
        try:
            record = json.loads(folder.read_file(REVIEW_FILE, limit=REVIEW_LIMIT))
        except FileNotFoundError:
            return {}
        except UnsafeEntry as exc:
            raise exc.with_lead(_UNSAFE.format(sid=path.name)) from None
        except (OSError, ValueError, RecursionError):
            return {}
    if not isinstance(record, dict):
        return {}
    if not (isinstance(record.get("exports"), list) and all(isinstance(e, dict) for e in record["exports"])):
        record.pop("exports", None)  # not what optin writes: no export is known
    return record


def approve(dirs: Dirs, session_id: str, policy_sha256: str, summary: dict[str, Any]) -> dict[str, Any]:
    """Record that the volunteer approved the session as it is now; returns the approval."""
    path = session_dir(dirs, session_id)
    approval = {
        "approved_at": utc_timestamp(time.time()),
        "fingerprint": fingerprint(path),
        "policy_sha256": policy_sha256,
        "summary": summary,
    }
    _save(path, {**_load(path), "approval": approval})
    return approval


def state(dirs: Dirs, session_id: str, policy_sha256: str | None = None) -> str:
    """``approved``, ``changed`` (approved, then the session or the policy changed, or it now holds
    something that is not a regular file) or ``not approved``."""
    try:
        return _state(dirs, session_id, policy_sha256)
    except UnsafeEntry:
        return "changed"


def _state(dirs: Dirs, session_id: str, policy_sha256: str | None) -> str:
    """:func:`state`, raising :class:`UnsafeEntry` for a session that holds a link, FIFO or device."""
    path = session_dir(dirs, session_id)
    approval = _load(path).get("approval")
    if not isinstance(approval, dict):
        return "not approved"
    same = approval.get("fingerprint") == fingerprint(path)
    if not same or (policy_sha256 is not None and approval.get("policy_sha256") != policy_sha256):
        return "changed"
    return "approved"


def describe(dirs: Dirs, session_id: str) -> dict[str, Any]:
    """For ``optin sessions``: the approval state, how many times exported and when last."""
    exports = load(dirs, session_id).get("exports") or []
    last = exports[-1].get("exported_at") if exports and isinstance(exports[-1], dict) else None
    return {"approval": state(dirs, session_id), "exports": len(exports), "last_export": last}


def require(dirs: Dirs, session_id: str, policy_sha256: str) -> None:
    """:raises NotApproved: with the fix, unless the session is approved as it is now.
    :raises UnsafeEntry: the session holds a link, a FIFO or a device (nothing is exported).
    """
    found = _state(dirs, session_id, policy_sha256)
    if found == "approved":
        return
    why = (
        "was not approved"
        if found == "not approved"
        else "changed since it was approved (or the study's redaction did)"
    )
    msg = (
        f"session {session_id} {why}; nothing was exported. Fix: look at it with: optin review {session_id} "
        f"(or approve it unseen with: optin export {session_id} --approve --out DIR)"
    )
    raise NotApproved(msg)


def mark_exported(dirs: Dirs, session_id: str, bundle: Path, sha256: str) -> None:
    """Remember an export (file name and hash, never its directory) in the review record."""
    path = session_dir(dirs, session_id)
    record = _load(path)
    record.setdefault("exports", []).append(
        {
            "exported_at": utc_timestamp(time.time()),
            "bundle": bundle.name,
            "sha256": sha256,
        }
    )
    _save(path, record)


def _save(path: Path, record: dict[str, Any]) -> None:
    with StoreDir.open(path) as folder:
        folder.write_file(REVIEW_FILE, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
