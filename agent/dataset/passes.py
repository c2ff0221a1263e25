"""The two task functions of a build, run by either engine (docs/dataset.md, "Building").

:func:`check` is pass 1 for one candidate (reads it, writes nothing) and :func:`write_part` is
pass 2 for one part (reads its bundles again and writes the shard, its index and the five table
files under names derived from the bundles). Both take plain, picklable arguments and open SRC
and DEST themselves, so a process pool and a Ray cluster run exactly the same code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache

from agent.dataset import layout, tables
from agent.dataset.dest import Dest
from agent.dataset.intake import Identity, Opened, Outcome, Refusal, Unreadable, read_bundle
from agent.dataset.manifest import FileObject, PartObject
from agent.dataset.plan import Accepted, Deferred, Quarantined, Skipped
from agent.dataset.shard import Placed, ShardWriter, index_bytes
from agent.dataset.source import Candidate, Source, open_source
from agent.dataset.stores import open_dest
from agent.errors import OptinError

TABLES = ("sessions", "steps", "events", "frames", "tasks")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Settings:
    """What every task of one build shares (sent to each worker once)."""

    source: str
    dest: str
    identity: Identity
    #: Withdrawn pseudonyms and signing keys.
    withdrawn: frozenset[str]
    #: SHA-256 of every bundle the ledger holds that is not to be checked again.
    known: frozenset[str]
    max_bundle_size: int


CheckResult = Accepted | Quarantined | Deferred | Skipped


@cache
def _source(spec: str) -> Source:
    return open_source(spec)


@cache
def _dest(spec: str) -> Dest:
    return open_dest(spec)


def _hash(source: Source, name: str, size: int) -> str:
    """SHA-256 of a bundle too large to check, streamed (never held)."""
    digest = hashlib.sha256()
    f, _ = source.open(name)
    with f:
        left = size
        while left > 0 and (chunk := f.read(min(_CHUNK, left))):
            digest.update(chunk)
            left -= len(chunk)
    if left:
        msg = f"{source.where(name)} is not {size:,} bytes any more"
        raise OSError(msg)
    return digest.hexdigest()


def check(settings: Settings, candidate: Candidate) -> CheckResult:
    """Pass 1 for one candidate: accepted, quarantined (with its reason), skipped or deferred."""
    source = _source(settings.source)
    name, size, etag = candidate.name, candidate.size, candidate.etag
    try:
        if size > settings.max_bundle_size:
            why = f"{size:,} bytes, over --max-bundle-size {settings.max_bundle_size:,}"
            out: Outcome = Refusal(_hash(source, name, size), "too_large", "source", why)
        else:
            out = read_bundle(source, name, size, settings.identity, etag=etag, withdrawn=settings.withdrawn)
        if isinstance(out, Unreadable):
            return Deferred(name, out.message)
        sha = out.sha256 if out.sha256 is not None else _hash(source, name, size)
    except (OSError, OptinError) as exc:
        return Deferred(name, str(exc) or exc.__class__.__name__)
    if sha in settings.known:
        return Skipped(name, sha)
    if isinstance(out, Refusal):
        return Quarantined(
            name, size, etag, sha, out.reason, out.stage, out.message, out.session, out.volunteer
        )
    return _accepted(candidate, out)


def _accepted(candidate: Candidate, opened: Opened) -> Accepted:
    return Accepted(
        name=candidate.name,
        size=candidate.size,
        etag=candidate.etag,
        sha256=opened.sha256,
        session=opened.session,
        volunteer=opened.volunteer,
        signing_key=opened.signing_key,
        study=opened.study,
        study_name=str(opened.manifest["consent"].get("study_name", "")),
        schema=str(opened.manifest.get("schema")),
        room=opened.room,
        steps=opened.steps_count,
    )


@dataclass(frozen=True)
class PartJob:
    bundles: tuple[Accepted, ...]
    date: str
    build_version: int
    first_seen_ns: int


@dataclass(frozen=True)
class PartResult:
    """A written part (None when every bundle of it was deferred), the bundles in it, those deferred."""

    part: PartObject | None
    deferred: tuple[Deferred, ...]
    bundles: tuple[Accepted, ...] = ()


class _Again(Exception):
    """A bundle changed since pass 1: write the part again without it."""

    def __init__(self, deferred: Deferred) -> None:
        super().__init__(deferred.name)
        self.deferred = deferred


def write_part(settings: Settings, job: PartJob) -> PartResult:
    """Pass 2 for one part: its shard, index and table files, under names derived from its bundles.

    A bundle that is not what pass 1 read (another SHA-256, unreadable now) is left out and the
    part written again without it (its id follows from the bundles it holds); nothing of the
    attempt stays (the object writer discards an unfinished object).
    """
    left = list(job.bundles)
    deferred: list[Deferred] = []
    while left:
        try:
            return PartResult(_write(settings, job, left), tuple(deferred), tuple(left))
        except _Again as again:
            deferred.append(again.deferred)
            left = [b for b in left if b.name != again.deferred.name]
    return PartResult(None, tuple(deferred))


def _write(settings: Settings, job: PartJob, bundles: list[Accepted]) -> PartObject:
    source, dest = _source(settings.source), _dest(settings.dest)
    part = layout.part_id(b.sha256 for b in bundles)
    shard_path = layout.shard_path(job.date, part)
    rows = tables.PartTables(part, job.build_version, job.first_seen_ns)
    no_image = 0
    with dest.writer(shard_path) as sink:
        shard = ShardWriter(sink)
        for record in bundles:
            opened = read_bundle(
                source, record.name, record.size, settings.identity, etag=record.etag, dataset_checks=False
            )
            if not isinstance(opened, Opened) or opened.sha256 != record.sha256:
                why = (
                    "it changed since it was checked"
                    if isinstance(opened, Opened)
                    else "it cannot be read now"
                )
                raise _Again(Deferred(record.name, why))
            try:
                no_image += _append(shard, rows, shard_path, record, opened)
            except (OSError, OptinError):
                raise
            except Exception as exc:  # a bug pass 1 did not meet: the part is written without the bundle
                raise _Again(Deferred(record.name, f"unexpected {exc.__class__.__name__}")) from None
        shard.close()
    shard_file = FileObject(shard_path, sink.size, sink.sha256)
    index_file = _put(
        dest, layout.index_path(job.date, part), index_bytes(shard_path, sink.size, sink.sha256, shard.placed)
    )
    files = {
        table: _put(dest, layout.table_path(table, job.date, part), data, rows=count)
        for table, (data, count) in rows.finish().items()
    }
    return PartObject(
        id=part,
        ingest_date=job.date,
        build_version=job.build_version,
        bundles=len(bundles),
        sessions=len(bundles),
        steps=len(shard.placed),
        samples_without_image=no_image,
        shard=shard_file,
        index=index_file,
        tables=files,
        volunteers=tuple(sorted({b.volunteer for b in bundles})),
        signing_keys=tuple(sorted({b.signing_key for b in bundles if b.signing_key})),
    )


def _append(
    shard: ShardWriter, rows: tables.PartTables, shard_path: str, record: Accepted, opened: Opened
) -> int:
    """Append one checked bundle's samples to the shard and its rows to the tables; its samples
    without image."""
    placed = []
    no_image = 0
    for sample in opened.samples():
        placed.append(tables.Placed(sample, shard_path, *_offsets(shard.add(sample))))
        no_image += not sample.has_image
    rows.add_bundle(
        opened.bundle,
        sha256=record.sha256,
        size=record.size,
        source=tables.source_name(record.name),
        placed=placed,
    )
    return no_image


def _offsets(placed: Placed) -> tuple[int, int, int, int, int, int]:
    return (
        placed.offset,
        placed.end,
        placed.json_offset,
        placed.json_size,
        placed.image_offset,
        placed.image_size,
    )


def _put(dest: Dest, path: str, data: bytes, *, rows: int | None = None) -> FileObject:
    with dest.writer(path) as sink:
        sink.write(data)
    return FileObject(path, len(data), hashlib.sha256(data).hexdigest(), rows)


__all__ = ["TABLES", "CheckResult", "PartJob", "PartResult", "Settings", "check", "write_part"]
