"""The next version of a dataset: its totals, card and wids descriptor, published.

:func:`publish_next` is what a build and a withdrawal call once they have written their objects:
it makes :class:`~agent.dataset.manifest.Version` N+1 from the current one, renders its card from
its tables (:mod:`agent.dataset.card`) and hands everything to
:func:`agent.dataset.versions.publish`.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent import __version__
from agent.canonical_json import canonical
from agent.dataset.card import card_files
from agent.dataset.dest import Dest
from agent.dataset.lock import Lock
from agent.dataset.manifest import Change, FileObject, PartObject, Study, Totals, Version
from agent.dataset.versions import Published, publish


def totals(parts: Iterable[PartObject]) -> Totals:
    listed = list(parts)
    return Totals(
        volunteers=len({v for p in listed for v in p.volunteers}),
        sessions=sum(p.sessions for p in listed),
        steps=sum(p.steps for p in listed),
        samples_without_image=sum(p.samples_without_image for p in listed),
        tasks=sum(p.tables["tasks"].rows or 0 for p in listed),
        events=sum(p.tables["events"].rows or 0 for p in listed),
        bytes=sum(f.size for p in listed for f in p.files()),
    )


def wids_descriptor(study: str, number: int, parts: Iterable[PartObject]) -> bytes:
    """The version's descriptor for ``wids.ShardListDataset`` (DEST-relative URLs)."""
    return canonical(
        {
            "__kind__": "wids-shard-index-v1",
            "name": f"optin-{study}-v{number}",
            "shardlist": [
                {"url": p.shard.path, "nsamples": p.steps, "filesize": p.shard.size} for p in parts
            ],
            "wids_version": 1,
        }
    )


def publish_next(
    dest: Dest,
    lock: Lock,
    current: Version | None,
    *,
    change: Change,
    parts: Iterable[PartObject],
    ledger: Iterable[FileObject],
    register: FileObject | None,
    study: Study | None = None,
    pending_purge: Iterable[str] = (),
    keep_days: float = 7,
) -> Published:
    """Publish the version after ``current`` with these objects, its totals, card and wids descriptor."""
    kept = sorted(parts, key=lambda p: p.id)
    version = Version.successor(
        current,
        change=change,
        tool=__version__,
        parts=kept,
        ledger=ledger,
        register=register,
        totals=totals(kept),
        pending_purge=pending_purge,
        study=study,
    )
    files = card_files(dest, version)
    wids = wids_descriptor(version.study.id, version.version, kept)
    return publish(dest, lock, version, card_files=files, wids=wids, keep_days=keep_days)


__all__ = ["publish_next", "totals", "wids_descriptor"]
