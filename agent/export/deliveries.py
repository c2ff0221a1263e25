"""What optin remembers of each exported bundle and its delivery to the study (docs/upload.md,
"Volunteer side state"): ``data/exports/<session>.json``, one small file per exported session.

The export writes it (state ``exported``); ``optin upload`` updates it (``uploading`` with the bytes
the intake acknowledged, ``delivered``, or ``refused`` with the intake's reason); ``optin sessions``
shows it, also for a session the study's retention has already deleted. It holds the bundle's path
(the folder the volunteer chose), size and SHA-256, the study id, times, states and reason codes:
never captured content. A damaged file reads as a damaged delivery, never as delivered (fail closed).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from agent.canonical_json import canonical
from agent.export.recount import json_object
from agent.paths import Dirs, ensure_private_dir
from agent.store.safe_fs import SESSION_ID, StoreDir, UnsafeEntry
from agent.store.writer import utc_timestamp

#: The states of a delivery, in the order they happen; ``damaged``: the file could not be read.
STATES = ("exported", "uploading", "delivered", "refused", "damaged")
#: Largest delivery file read (one is a few hundred bytes; the path is the longest part).
MAX_BYTES = 64 * 1024
SUFFIX = ".json"


@dataclass(frozen=True)
class Delivery:
    """One exported bundle and how far its delivery went."""

    session: str
    bundle: str  #: the bundle's absolute path, as written
    size: int
    sha256: str
    study: str
    exported_at: str
    state: str = "exported"
    #: bytes the intake acknowledged (``uploading``), or the size (``delivered``)
    sent: int = 0
    #: the intake's reason code and message (``refused``), or the last failure while ``uploading``
    reason: str = ""
    message: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def shown_state(self) -> str:
        """The state as ``optin sessions`` shows it: ``uploading 42 %``, ``refused: <reason>``."""
        if self.state == "uploading" and self.size:
            return f"uploading {100 * self.sent // self.size} %"
        if self.state == "refused":
            return f"refused: {self.reason}"
        return self.state


def _file_name(session: str) -> str:
    if not SESSION_ID.fullmatch(session):
        msg = f"not a session id: {session!r}"
        raise ValueError(msg)
    return session + SUFFIX


def record_export(dirs: Dirs, session: str, bundle: Path, *, size: int, sha256: str, study: str) -> Delivery:
    """Remember a bundle the export just wrote (a new export of the session starts its delivery again)."""
    now = utc_timestamp(time.time())
    delivery = Delivery(session, str(bundle.resolve()), size, sha256, study, now, updated_at=now)
    save(dirs, delivery)
    return delivery


def save(dirs: Dirs, delivery: Delivery) -> None:
    """Write ``delivery`` (atomically, 0600, fsynced)."""
    folder_path = ensure_private_dir(dirs.exports)
    with StoreDir.open(folder_path, follow=True, expected="the exports folder") as folder:
        folder.write_file(_file_name(delivery.session), canonical(delivery.to_json()))


def updated(delivery: Delivery, **changes: Any) -> Delivery:
    """``delivery`` with ``changes`` and a new ``updated_at``."""
    return replace(delivery, **changes, updated_at=utc_timestamp(time.time()))


def load(dirs: Dirs, session: str) -> Delivery | None:
    """The delivery of ``session`` (None when it was never exported since deliveries existed)."""
    try:
        folder = StoreDir.open(dirs.exports, follow=True, expected="the exports folder")
    except FileNotFoundError:
        return None
    with folder:
        return _read(folder, _file_name(session), session)


def load_all(dirs: Dirs) -> list[Delivery]:
    """Every delivery, by session id."""
    try:
        folder = StoreDir.open(dirs.exports, follow=True, expected="the exports folder")
    except FileNotFoundError:
        return []
    out = []
    with folder:
        for name, _st in sorted(folder.entries()):
            session = name.removesuffix(SUFFIX)
            if name.endswith(SUFFIX) and SESSION_ID.fullmatch(session):
                found = _read(folder, name, session)
                if found is not None:
                    out.append(found)
    return out


def _read(folder: StoreDir, name: str, session: str) -> Delivery | None:
    try:
        blob = folder.read_file(name, limit=MAX_BYTES)
    except FileNotFoundError:
        return None
    except (OSError, UnsafeEntry):
        return damaged(session)
    doc = json_object(blob)
    delivery = _parse(doc, session) if doc is not None else None
    return delivery if delivery is not None else damaged(session)


def damaged(session: str) -> Delivery:
    """What a delivery file that cannot be read stands for: nothing is known, nothing is sent."""
    return Delivery(session, "", 0, "", "", "", state="damaged")


def _parse(doc: dict[str, Any], session: str) -> Delivery | None:
    fields = Delivery.__dataclass_fields__
    if set(doc) != set(fields):
        return None
    ints = ("size", "sent")
    if any(not isinstance(doc[k], int) or isinstance(doc[k], bool) or doc[k] < 0 for k in ints):
        return None
    if any(not isinstance(doc[k], str) for k in fields if k not in ints):
        return None
    delivery = Delivery(**doc)
    if (
        delivery.session != session
        or delivery.state not in STATES[:-1]
        or delivery.sent > delivery.size
        or len(delivery.sha256) != 64
        or not Path(delivery.bundle).is_absolute()
    ):
        return None
    return delivery


__all__ = ["STATES", "Delivery", "damaged", "load", "load_all", "record_export", "save", "updated"]
