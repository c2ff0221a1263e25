"""Reading, publishing and garbage-collecting a dataset's versions (docs/dataset.md: Versions and
publishing, Garbage collection and retention, A command killed midway).

A reader: :func:`read_current` (``CURRENT`` at most 4 KiB, the manifest it names at most 256 MiB and
with the SHA-256 ``CURRENT`` gives, every path checked) or :func:`read_version`. A writer holding the
:class:`~agent.dataset.lock.Lock`, once its parts and ledger are written: :func:`publish` (steps 1-5 of
"Publishing"), which ends with :func:`gc`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.dataset.dest import Dest, DestError, ObjectChanged, ObjectExists, ObjectMissing, ObjectTooLarge
from agent.dataset.layout import (
    CURRENT_KEY,
    GC_PREFIXES,
    MAX_CURRENT,
    MAX_MANIFEST,
    TOP_WIDS,
    LayoutError,
    card_dir,
    parse_utc,
    utc,
    version_of_path,
    version_path,
    wids_path,
)
from agent.dataset.lock import Lock
from agent.dataset.manifest import Card, Current, FileObject, Version

#: Top copies larger than this are deleted, not read, before they are replaced (a local ETag needs a read).
MAX_TOP_COPY = 64 * 1024 * 1024
_CARD_FILE = re.compile(r"README\.md|features\.json|plots/[a-z0-9][a-z0-9_-]{0,63}\.png", re.ASCII)


class PublishConflict(DestError):
    """Another writer published (or is publishing) meanwhile: nothing visible changed (exit 1)."""


class GcIncomplete(DestError):
    """Garbage collection could not delete everything; :attr:`deleted` says what it did delete."""

    def __init__(self, message: str, deleted: list[str]) -> None:
        super().__init__(message)
        self.deleted = deleted


# --- reading ------------------------------------------------------------------------------------------


def read_pointer(dest: Dest) -> tuple[Current, str] | None:
    """``CURRENT`` and its ETag; None when DEST has no published version.

    :raises LayoutError: it is over 4 KiB or not a pointer optin wrote.
    """
    try:
        blob = dest.get(CURRENT_KEY, max_size=MAX_CURRENT)
    except ObjectMissing:
        return None
    except ObjectTooLarge:
        msg = (
            f"refused {dest.where(CURRENT_KEY)}: it is over {MAX_CURRENT} bytes, so optin did not write it. "
            "Fix: restore DEST from a copy or rebuild it"
        )
        raise LayoutError(msg) from None
    return Current.parse(blob.data, dest.where(CURRENT_KEY)), blob.etag


def read_version(dest: Dest, n: int, *, sha256: str | None = None) -> Version:
    """Version ``n``'s manifest, read strictly (and checked against ``sha256`` when given).

    :raises LayoutError: it is not kept in DEST, too large, damaged or forged.
    """
    key = version_path(n)
    shown = dest.where(key)
    try:
        blob = dest.get(key, max_size=MAX_MANIFEST)
    except ObjectMissing:
        msg = (
            f"version {n} is not in DEST (no {shown}). Fix: choose a version DEST keeps (optin dataset stats)"
        )
        raise LayoutError(msg) from None
    except ObjectTooLarge:
        msg = f"refused {shown}: it is over {MAX_MANIFEST} bytes. Fix: restore DEST from a copy or rebuild it"
        raise LayoutError(msg) from None
    if sha256 is not None and hashlib.sha256(blob.data).hexdigest() != sha256:
        msg = (
            f"refused {shown}: its SHA-256 is not the one {dest.where(CURRENT_KEY)} gives. Fix: it was "
            "changed after publishing; restore DEST from a copy or rebuild it"
        )
        raise LayoutError(msg)
    version = Version.parse(blob.data, shown)
    if version.version != n:
        msg = f"refused {shown}: it says it is version {version.version}. Fix: restore DEST or rebuild it"
        raise LayoutError(msg)
    return version


def read_current(dest: Dest) -> Version | None:
    """The published version (what ``CURRENT`` names, SHA-256 checked); None before the first."""
    pointer = read_pointer(dest)
    if pointer is None:
        return None
    current, _etag = pointer
    return read_version(dest, current.version, sha256=current.manifest_sha256)


# --- publishing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Published:
    """What :func:`publish` did: the version as published, what GC deleted, what best effort missed."""

    version: Version
    manifest_sha256: str
    deleted: list[str]
    warnings: list[str]


def publish(
    dest: Dest,
    lock: Lock,
    version: Version,
    *,
    card_files: Mapping[str, bytes],
    wids: bytes,
    keep_days: float = 7,
) -> Published:
    """Publish ``version`` (its parts, ledger and register already written), steps 1-5 of "Publishing".

    ``card_files``: ``README.md`` (required), ``features.json``, ``plots/<name>.png``; written under
    ``cards/vN/`` and copied to DEST's top with ``wids`` (``versions/vN.wids.json``, ``wids.json``).

    :raises PublishConflict: ``CURRENT`` does not name ``version``'s parent (before or after the manifest
        is written), or another writer wrote the manifest: ``CURRENT`` is unchanged.
    :raises LockLost: the lock was lost before ``CURRENT`` was written.
    """
    lock.check()
    n = version.version
    pointer = read_pointer(dest)
    _check_parent(dest, pointer, version)
    etag = pointer[1] if pointer else None
    # 1. the card and the wids descriptor (every other new object is the caller's)
    card = _write_card(dest, lock, n, card_files)
    published = dataclasses.replace(
        version, card=card, wids=_write_fresh(dest, lock, wids_path(n), wids), published_at=utc(lock.clock())
    )
    data = published.to_bytes()
    sha = hashlib.sha256(data).hexdigest()
    # 2. the manifest, after a killed command's leftover
    key = version_path(n)
    _remove_leftover(dest, lock, key)
    try:
        dest.put_new(key, data)
    except ObjectExists:
        raise _conflict(dest, key, "another writer wrote it meanwhile") from None
    # 3. CURRENT still names the parent
    again = read_pointer(dest)
    _check_parent(dest, again, version)
    if (again[1] if again else None) != etag:
        raise _conflict(dest, CURRENT_KEY, "it changed while this command published")
    lock.check()
    # 4. CURRENT
    try:
        dest.replace(CURRENT_KEY, Current(n, sha, published.published_at).to_bytes(), expected=etag)
    except ObjectChanged:
        raise _conflict(dest, CURRENT_KEY, "it changed while this command published") from None
    # 5. best effort: the top copies, then garbage collection
    warnings = _top_copies(dest, card_files, wids)
    deleted: list[str] = []
    try:
        deleted = gc(dest, lock, keep_days)
    except GcIncomplete as exc:
        deleted = exc.deleted
        warnings.append(str(exc))
    except DestError as exc:
        warnings.append(str(exc))
    return Published(published, sha, deleted, warnings)


def _check_parent(dest: Dest, pointer: tuple[Current, str] | None, version: Version) -> None:
    named = pointer[0].version if pointer else None
    if version.version != (version.parent or 0) + 1:
        msg = f"version {version.version} is not its parent's ({version.parent}) successor. Fix: a bug"
        raise LayoutError(msg)
    if named != version.parent:
        what = f"names version {named}" if named else "names no version"
        raise _conflict(
            dest, CURRENT_KEY, f"it {what}, not version {version.version}'s parent {version.parent}"
        )


def _conflict(dest: Dest, key: str, why: str) -> PublishConflict:
    msg = (
        f"did not publish: {dest.where(key)}: {why}, so another command wrote DEST (a broken lock?). Nothing "
        "visible changed. Fix: let the other command finish, then run this one again"
    )
    return PublishConflict(msg)


def _remove_leftover(dest: Dest, lock: Lock, key: str) -> None:
    """Delete a killed command's unreferenced object under ``key`` (it must predate the lock)."""
    if dest.head(key) is None:
        return
    if not lock.existed(key):
        raise _conflict(dest, key, "it was written after this command took the lock")
    dest.delete(key)


def _write_fresh(dest: Dest, lock: Lock, key: str, data: bytes) -> FileObject:
    _remove_leftover(dest, lock, key)
    try:
        dest.put_new(key, data)
    except ObjectExists:
        raise _conflict(dest, key, "another writer wrote it meanwhile") from None
    return FileObject.of(key, data)


def _write_card(dest: Dest, lock: Lock, n: int, files: Mapping[str, bytes]) -> Card:
    bad = sorted(name for name in files if not _CARD_FILE.fullmatch(name))
    if bad or "README.md" not in files:
        msg = (
            f"cannot publish version {n}'s card: it needs README.md and may hold only features.json and "
            f"plots/<name>.png (got {', '.join(ascii(b)[:40] for b in bad) or 'no README.md'}). Fix: a bug"
        )
        raise LayoutError(msg)
    base = card_dir(n)
    written = {name: _write_fresh(dest, lock, f"{base}/{name}", data) for name, data in sorted(files.items())}
    plots = tuple(obj for name, obj in written.items() if name.startswith("plots/"))
    return Card(written["README.md"], written.get("features.json"), plots)


def _top_copies(dest: Dest, card_files: Mapping[str, bytes], wids: bytes) -> list[str]:
    """README.md, features.json, plots/*.png and wids.json at DEST's top; stale top plots deleted."""
    warnings: list[str] = []
    wanted = {**card_files, TOP_WIDS: wids}
    stale = [] if "features.json" in card_files else ["features.json"]
    try:
        stale += [i.key for i in dest.list("plots/") if i.key not in card_files]
    except DestError as exc:
        warnings.append(str(exc))
    for key, data in sorted(wanted.items()):
        try:
            _put_mutable(dest, key, data)
        except DestError as exc:
            warnings.append(str(exc))
    for key in stale:
        try:
            dest.delete(key)
        except DestError as exc:
            warnings.append(str(exc))
    return warnings


def _put_mutable(dest: Dest, key: str, data: bytes) -> None:
    info = dest.head(key)
    if info is None:
        dest.replace(key, data, expected=None)
        return
    if info.etag:
        dest.replace(key, data, expected=info.etag)
    elif info.size > MAX_TOP_COPY:
        dest.delete(key)
        dest.replace(key, data, expected=None)
    else:
        dest.replace(key, data, expected=dest.get(key, max_size=MAX_TOP_COPY).etag)


# --- garbage collection -------------------------------------------------------------------------------


def gc(dest: Dest, lock: Lock, keep_days: float = 7) -> list[str]:
    """docs/dataset.md, "Garbage collection and retention": keep the version ``CURRENT`` names, the one
    before it, and every older one published within ``keep_days``; delete every object under
    :data:`~agent.dataset.layout.GC_PREFIXES` that no kept manifest lists and that was in DEST when
    ``lock`` was taken (or is a manifest past retention), then the current manifest's ``pending_purge``,
    then what killed writers left (:meth:`~agent.dataset.dest.Dest.abort_uploads`: local ``.tmp-``
    files, S3 multipart uploads, older than the lock). Deletes nothing without ``CURRENT``. The keys it
    deleted, sorted.

    :raises GcIncomplete: some deletions failed (the rest were done); other DestErrors: nothing deleted.
    """
    lock.check()
    pointer = read_pointer(dest)
    if pointer is None:
        return []
    current = read_version(dest, pointer[0].version, sha256=pointer[0].manifest_sha256)
    cutoff = lock.clock() - datetime.timedelta(days=keep_days)
    numbers = sorted(
        {n for i in dest.list("versions/") if (n := version_of_path(i.key)) is not None}, reverse=True
    )
    kept = {current.version: current}
    older = [k for k in numbers if k < current.version]
    purge = set(current.pending_purge)
    older = [k for k in older if version_path(k) not in purge]  # a withdrawal overrides retention
    for rank, n in enumerate(older):
        try:
            old = read_version(dest, n)
        except LayoutError:
            if rank == 0:
                raise  # the previous version must stay readable: never collect around it
            continue  # unreadable: nothing can use it, so what only it lists is garbage
        if rank == 0 or parse_utc(old.published_at) >= cutoff:
            kept[n] = old
    listed = set().union(*(v.paths() for v in kept.values()))
    dropped = {version_path(n) for n in older if n not in kept}  # past retention: gone whatever their age
    doomed = [
        info.key
        for prefix in GC_PREFIXES
        for info in dest.list(prefix)
        if info.key not in listed and (lock.existed(info.key) or info.key in dropped)
    ]
    deleted: list[str] = []
    failed: list[str] = []
    for key in dict.fromkeys([*doomed, *(k for k in current.pending_purge if k not in listed)]):
        try:
            if dest.delete(key):
                deleted.append(key)
        except DestError as exc:
            failed.append(str(exc))
    try:
        dest.abort_uploads(lock.started_at)  # local .tmp- files, S3 incomplete multipart uploads
    except DestError as exc:
        failed.append(str(exc))
    if failed:
        msg = (
            f"garbage collection of {dest.url} deleted {len(deleted)} objects but failed {len(failed)} "
            f"times; the first: {failed[0]} The next command tries again"
        )
        raise GcIncomplete(msg, sorted(deleted))
    return sorted(deleted)
