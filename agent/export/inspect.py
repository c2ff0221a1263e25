"""Collector side: check a decrypted bundle against its manifest.

This first version checks a bundle's tar (after ``age -d``): every member is
listed in the manifest with the right SHA-256, nothing unlisted is present, no
member escapes its directory.  ``optin inspect`` / ``unpack`` (decrypting with
the study identity, signatures) come with the export issue.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from typing import Any

from agent.errors import ExportError

#: Largest member accepted (a frame is well under this).
MAX_MEMBER = 256 * 1024 * 1024


def read_bundle_tar(tar_bytes: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Return ``(manifest, members)`` of a decrypted bundle, verified.

    :raises ExportError: a member is missing, unlisted, altered, a link, or escapes.
    """
    members: dict[str, bytes] = {}
    prefix: str | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    msg = f"bundle member {info.name!r} is not a regular file"
                    raise ExportError(msg)
                top, _, rest = info.name.partition("/")
                if not rest or ".." in info.name.split("/") or info.name.startswith("/"):
                    msg = f"bundle member {info.name!r} has an unsafe path"
                    raise ExportError(msg)
                if prefix is None:
                    prefix = top
                if top != prefix or info.size > MAX_MEMBER:
                    msg = f"bundle member {info.name!r} is outside the session or too large"
                    raise ExportError(msg)
                f = tar.extractfile(info)
                members[rest] = f.read() if f else b""
    except tarfile.TarError as exc:
        msg = "the bundle is not a valid tar archive (damaged, or not decrypted?)"
        raise ExportError(msg) from exc
    if "manifest.json" not in members:
        msg = "the bundle has no manifest.json"
        raise ExportError(msg)
    manifest = json.loads(members.pop("manifest.json"))
    listed: dict[str, str] = manifest.get("members", {})
    if set(listed) != set(members):
        extra = sorted(set(members) - set(listed))
        missing = sorted(set(listed) - set(members))
        msg = f"bundle members do not match the manifest (unlisted: {extra}, missing: {missing})"
        raise ExportError(msg)
    for name, blob in members.items():
        if hashlib.sha256(blob).hexdigest() != listed[name]:
            msg = f"bundle member {name!r} does not match its SHA-256 in the manifest"
            raise ExportError(msg)
    return manifest, members
