"""``optin dataset build SRC DEST``: the driver (docs/dataset.md, "Building").

Under DEST's lock: read what the current version holds (ledger, register, sessions), list SRC,
run pass 1 on every new candidate, plan, run pass 2 on every part, write the build's ledger file
and publish the new version. The engines run the task functions of :mod:`agent.dataset.passes`;
this module only decides and counts. A bundle never stops the build: it is ingested, skipped,
quarantined with a reason code, or deferred to the next build (exit 1).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.dataset import layout, tables
from agent.dataset.engines import engine as make_engine
from agent.dataset.intake import Identity
from agent.dataset.lock import Lock
from agent.dataset.manifest import Change, PartObject, Study
from agent.dataset.next_version import publish_next
from agent.dataset.passes import PartJob, PartResult, Settings, check, write_part
from agent.dataset.plan import (
    DEFAULT_SHARD_SIZE,
    Accepted,
    Deferred,
    Duplicate,
    Quarantined,
    Skipped,
    bind_study,
    plan,
)
from agent.dataset.source import Candidate, Source, open_source
from agent.dataset.stores import open_dest
from agent.dataset.version_files import (
    ledger_rows,
    rewrite_ledger,
    withdrawn_keys,
    write_ledger,
)
from agent.dataset.versions import read_current
from agent.dataset.withdraw import purge_pending
from agent.errors import UsageError
from agent.export.inspect import load_identity_file
from agent.export.reasons import REASONS
from agent.untrusted_text import visible

#: Default ``--max-bundle-size``: a worker holds about one bundle's plaintext.
DEFAULT_MAX_BUNDLE = 4 << 30

#: ``progress(stage, done, total)``: stage ``check`` (bundles) or ``write`` (parts).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class BuildOptions:
    src: str
    dest: str
    identity_file: Path
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    max_bundle_size: int = DEFAULT_MAX_BUNDLE
    retry_quarantined: frozenset[str] = frozenset()
    keep_days: int = 7
    study_id: str | None = None
    break_lock: bool = False


@dataclass
class BuildReport:
    """What a build did; :meth:`to_json` is ``--json``'s object."""

    dest: str
    parent: int | None
    version: int | None = None
    published_at: str | None = None
    found: int = 0
    ignored: int = 0
    skipped: int = 0
    ingested: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)
    deferred: list[Deferred] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    parts: list[PartObject] = field(default_factory=list)
    #: Deletions of withdrawn data (``pending_purge``) that failed again: kept for the next command.
    purge_failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.deferred and not self.purge_failures

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "parent": self.parent,
            "version": self.version,
            "published_at": self.published_at,
            "bundles": {
                "found": self.found,
                "ignored": self.ignored,
                "skipped": self.skipped,
                "ingested": self.ingested,
                "quarantined": len(self.quarantined),
                "deferred": len(self.deferred),
            },
            "quarantined": [
                {
                    "source": tables.source_name(q.name),
                    "sha256": q.sha256,
                    "size": q.size,
                    "reason": q.reason,
                    "stage": q.stage,
                }
                for q in self.quarantined
            ],
            "deferred": [{"source": tables.source_name(d.name)} for d in self.deferred],
            "duplicates": [
                {"session": d.session, "kept": d.kept, "quarantined": d.quarantined} for d in self.duplicates
            ],
            "added": {
                "parts": [p.id for p in self.parts],
                "samples": sum(p.steps for p in self.parts),
                "bytes": sum(p.shard.size for p in self.parts),
            },
        }


def load_identity(path: Path) -> Identity:
    """The study identity, checked as ``optin inspect`` checks it (a UsageError names the file and line)."""
    return Identity(tuple(str(i) for i in load_identity_file(path)))


def _check_options(options: BuildOptions) -> None:
    unknown = sorted(options.retry_quarantined - {*REASONS, "all"})
    if unknown:
        codes = ", ".join(sorted(REASONS))
        msg = f"--retry-quarantined {unknown[0]!r} is not a reason code. Fix: use one of {codes}, or all"
        raise UsageError(msg)
    if options.shard_size < 1 or options.max_bundle_size < 1 or options.keep_days < 0:
        msg = "--shard-size and --max-bundle-size must be positive and --keep-days not negative"
        raise UsageError(msg)


def build(
    options: BuildOptions, *, progress: Progress | None = None, clock: Callable[[], int] = time.time_ns
) -> BuildReport:
    """Build SRC into DEST and publish a new version (see the module docstring).

    :raises UsageError: bad options, an identity that does not load, SRC and DEST overlapping,
        a DEST lock held by a live command, bundles of several studies without ``--study-id``.
    :raises DestError: DEST cannot be written or publishing failed.
    """
    _check_options(options)
    identity = load_identity(options.identity_file)
    source = open_source(options.src)
    if source.overlaps(options.dest):
        msg = (
            f"SRC {visible(options.src)} and DEST {visible(options.dest)} overlap: the build would read "
            "its own output. Fix: give two places, neither inside the other"
        )
        raise UsageError(msg)
    with (
        open_dest(options.dest) as dest,
        Lock.acquire(dest, "build", break_lock=options.break_lock) as lock,
    ):
        dest.abort_uploads(lock.started_at)
        current = read_current(dest)
        report = BuildReport(options.dest, current.version if current else None)
        purged = purge_pending(dest, current)  # a withdrawal killed after publishing left these
        report.purge_failures = purged.failures
        ledger = _Ledger(ledger_rows(dest, current), options.retry_quarantined)
        settings = Settings(
            source=source.spec,
            dest=options.dest,
            identity=identity,
            withdrawn=withdrawn_keys(dest, current),
            known=ledger.known,
            max_bundle_size=options.max_bundle_size,
        )
        todo = _candidates(source, ledger, report)
        with make_engine(options.engine, options.workers, options.ray_address) as runner:
            accepted = _pass1(runner.run(check, settings, todo), len(todo), report, progress)
            study = bind_study(accepted, current.study.id if current else None, options.study_id)
            decided = plan(
                accepted, ingested_sessions=ledger.ingested, study=study, shard_size=options.shard_size
            )
            report.skipped += len(decided.skipped)
            report.quarantined += decided.quarantined
            report.duplicates = decided.duplicates
            number = (current.version if current else 0) + 1
            now = clock()
            date = layout.utc(now)[:10]
            jobs = [PartJob(tuple(p), date, number, now) for p in decided.parts]
            written = _pass2(runner.run(write_part, settings, jobs), len(jobs), report, progress)
        report.ingested = sum(p.bundles for p in report.parts)
        if study is None or (not report.parts and not report.quarantined):
            return report  # nothing to record (a first build that accepted nothing binds no study)
        landed = {b.sha256: part.id for part, bundles in written for b in bundles}
        new_rows = [
            *(_ingested_row(b, landed[b.sha256], now, number) for _, bundles in written for b in bundles),
            *(_quarantined_row(q, now, number) for q in report.quarantined),
        ]
        redone = {r.sha256 for r in new_rows} & ledger.retried
        files, _ = rewrite_ledger(dest, current, number, lambda r: None if r.sha256 in redone else r)
        files.append(write_ledger(dest, number, date, new_rows))
        names = {r.study_name for r in accepted if r.study == study}
        published = publish_next(
            dest,
            lock,
            current,
            change=Change(
                "build",
                added_parts=tuple(p.id for p in report.parts),
                ingested=report.ingested,
                quarantined=len(report.quarantined),
                deferred=len(report.deferred),
            ),
            parts=[*(current.parts if current else ()), *report.parts],
            ledger=files,
            register=current.register if current else None,
            study=None if current else Study(study, min(names) if names else ""),
            keep_days=options.keep_days,
            pending_purge=purged.pending,
        )
        report.version = published.version.version
        report.published_at = published.version.published_at
        return report


class _Ledger:
    """What the current version's ledger says about SRC: what not to read again, what is ingested."""

    def __init__(self, rows: Sequence[tables.LedgerRow], retry: frozenset[str]) -> None:
        #: Quarantined bundles ``--retry-quarantined`` checks again.
        self.retried = {
            r.sha256 for r in rows if r.outcome == "quarantined" and ("all" in retry or r.reason in retry)
        }
        self.known = frozenset(r.sha256 for r in rows if r.sha256 not in self.retried)
        #: (source, size, ETag) of every bundle not checked again: pass 1's fast path.
        self.seen = {(r.source, r.size, r.source_etag) for r in rows if r.sha256 not in self.retried}
        self.ingested = {r.session: r.sha256 for r in rows if r.outcome == "ingested" and r.session}


def _candidates(source: Source, ledger: _Ledger, report: BuildReport) -> list[Candidate]:
    """SRC's bundles pass 1 must read: not ignored, not known by name, size and ETag."""
    todo: list[Candidate] = []
    for candidate in source.list():
        report.found += 1
        if candidate.kind != "bundle":
            report.ignored += 1
        elif (tables.source_name(candidate.name), candidate.size, candidate.etag) in ledger.seen:
            report.skipped += 1
        else:
            todo.append(candidate)
    return todo


def _pass1(
    results: Iterable[tuple[int, Any]], total: int, report: BuildReport, progress: Progress | None
) -> list[Accepted]:
    accepted: list[Accepted] = []
    refused: set[str] = set()
    for done, (_, result) in enumerate(results, start=1):
        if isinstance(result, Accepted):
            accepted.append(result)
        elif isinstance(result, Quarantined) and result.sha256 in refused:
            report.skipped += 1  # the same refused bundle under another name: one bundle, one row
        elif isinstance(result, Quarantined):
            refused.add(result.sha256)
            report.quarantined.append(result)
        elif isinstance(result, Deferred):
            report.deferred.append(result)
        elif isinstance(result, Skipped):
            report.skipped += 1
        if progress:
            progress("check", done, total)
    return accepted


def _pass2(
    results: Iterable[tuple[int, PartResult]], total: int, report: BuildReport, progress: Progress | None
) -> list[tuple[PartObject, Sequence[Accepted]]]:
    written: list[tuple[PartObject, Sequence[Accepted]]] = []
    for done, (_, result) in enumerate(results, start=1):
        report.deferred += result.deferred
        if result.part is not None:
            report.parts.append(result.part)
            written.append((result.part, result.bundles))
        if progress:
            progress("write", done, total)
    report.parts.sort(key=lambda p: p.id)
    return written


def _ingested_row(record: Accepted, part: str, now: int, version: int) -> tables.LedgerRow:
    return tables.LedgerRow(
        sha256=record.sha256,
        size=record.size,
        source=tables.source_name(record.name),
        source_etag=record.etag,
        outcome="ingested",
        reason=None,
        stage=None,
        session=record.session,
        volunteer=record.volunteer,
        part=part,
        first_seen_ns=now,
        build_version=version,
    )


def _quarantined_row(record: Quarantined, now: int, version: int) -> tables.LedgerRow:
    withdrawn = record.reason == "volunteer_withdrawn"
    return tables.LedgerRow(
        sha256=record.sha256,
        size=record.size,
        source=tables.source_name(record.name),
        source_etag=record.etag,
        outcome="quarantined",
        reason=record.reason,
        stage=record.stage,
        session=None if withdrawn else record.session,
        volunteer=None if withdrawn else record.volunteer,
        part=None,
        first_seen_ns=now,
        build_version=version,
    )


def summary_counts(report: BuildReport) -> Counter[str]:
    """Quarantined bundles by reason."""
    return Counter(q.reason for q in report.quarantined)


__all__ = [
    "DEFAULT_MAX_BUNDLE",
    "BuildOptions",
    "BuildReport",
    "Progress",
    "build",
    "load_identity",
    "summary_counts",
]
