"""``optin dataset withdraw DEST --volunteer ID``: remove a volunteer from every version, for good
(docs/dataset.md, "optin dataset withdraw", "The withdrawal register", Decision 10).

Holding DEST's lock, from the current version: (1) delete what a killed command left in
``pending_purge``; (2) find the sessions to remove: every ``sessions`` row of the pseudonym ID, plus
every row signed by a key of those rows (the ``optin-bundle/1`` rule); (3) rewrite every part that
holds one: its shard read once, every other sample's tar fragment copied byte for byte into a new
shard (never decoded or re-encoded), the five tables filtered (:func:`agent.dataset.tables.filter_part`,
the ``steps`` table's shard columns moved with the samples), under the id of the bundles it keeps;
(4) rewrite the ledger files without those sessions' rows and the ID's quarantine entries, and with
the new part ids; (5) write the register with a new line (also when nothing was found) and publish,
the replaced objects in ``pending_purge``; (6) delete at once every replaced object (every object
version on a versioned bucket) and every older version manifest that lists one.

A second withdrawal of the same ID finds nothing, publishes nothing and says when the first was.
``dry_run`` reads and reports the same without writing anything (not even ``LOCK``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent.canonical_json import canonical
from agent.dataset import layout, tables
from agent.dataset.dest import Dest, DestError
from agent.dataset.lock import Lock
from agent.dataset.manifest import Change, FileObject, PartObject, Version
from agent.dataset.next_version import publish_next
from agent.dataset.samples import SAMPLE_KEY
from agent.dataset.shard import BLOCK, IndexInvalid, Placed, index_bytes, read_index
from agent.dataset.stats import plural
from agent.dataset.stores import open_dest
from agent.dataset.version_files import (
    read_listed,
    register_lines,
    rewrite_ledger,
)
from agent.dataset.versions import read_current, read_version
from agent.errors import UsageError
from agent.untrusted_text import visible

#: ``progress(stage, done, total)``: stage ``rewrite`` (parts).
Progress = Callable[[str, int, int], None]

PSEUDONYM = re.compile(r"[0-9a-f]{32}", re.ASCII)
_CHUNK = 1 << 20
_END = bytes(2 * BLOCK)
#: At most this many SRC names in the text output (``--json`` lists them all).
_SHOWN_SOURCES = 10


class ShardMismatch(layout.LayoutError):
    """A shard or its index is not what the version lists (DEST changed outside optin): exit 1."""


@dataclass
class Removed:
    """What a withdrawal removes (the register line's ``removed`` and more)."""

    bundles: int = 0
    sessions: int = 0
    samples: int = 0
    samples_without_image: int = 0
    events: int = 0
    frames: int = 0
    tasks: int = 0
    quarantine: int = 0

    def register_json(self) -> dict[str, int]:
        """The register line's ``removed`` (docs/dataset.md, The withdrawal register)."""
        keys = ("bundles", "events", "quarantine", "samples", "sessions", "tasks")
        return {k: getattr(self, k) for k in keys}


@dataclass
class WithdrawReport:
    """What a withdrawal did (or, dry run, would do); :meth:`to_json` is ``--json``'s object."""

    dest: str
    volunteer: str
    dry_run: bool
    parent: int | None
    version: int | None = None
    published_at: str | None = None
    signing_keys: list[str] = field(default_factory=list)
    removed: Removed = field(default_factory=Removed)
    #: Ids of the parts that held the volunteer, of their replacements, and of those left empty.
    parts_rewritten: list[str] = field(default_factory=list)
    parts_added: list[str] = field(default_factory=list)
    parts_removed: list[str] = field(default_factory=list)
    ledger_files: int = 0
    #: SRC names of the removed bundles (ledger ``source``), for the operator to delete.
    sources: list[str] = field(default_factory=list)
    #: Objects deleted: data (parts, ledger files) and older version manifests.
    deleted: list[str] = field(default_factory=list)
    versions_deleted: list[int] = field(default_factory=list)
    #: ``pending_purge`` of an earlier command completed first.
    purged_first: list[str] = field(default_factory=list)
    #: Deletions that failed (still in ``pending_purge``) and why.
    not_deleted: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    #: When the same ID was withdrawn before (its first register line), else None.
    first_withdrawn_at: str | None = None
    first_version: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """False when a deletion failed (exit 1)."""
        return not self.not_deleted

    @property
    def found(self) -> bool:
        return bool(self.removed.sessions or self.removed.quarantine)

    def to_json(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "volunteer": self.volunteer,
            "dry_run": self.dry_run,
            "parent": self.parent,
            "version": self.version,
            "published_at": self.published_at,
            "signing_keys": list(self.signing_keys),
            "removed": dataclasses.asdict(self.removed),
            "parts": {
                "rewritten": list(self.parts_rewritten),
                "added": list(self.parts_added),
                "removed": list(self.parts_removed),
            },
            "ledger_files": self.ledger_files,
            "sources": list(self.sources),
            "deleted": list(self.deleted),
            "versions_deleted": list(self.versions_deleted),
            "purged_first": list(self.purged_first),
            "not_deleted": list(self.not_deleted),
            "first_withdrawn_at": self.first_withdrawn_at,
            "first_version": self.first_version,
            "warnings": list(self.warnings),
            "ok": self.ok,
        }

    def render(self) -> str:
        """The text the spec shows (docs/dataset.md, optin dataset withdraw)."""
        r = self.removed
        keys = self.signing_keys
        if keys:
            shown = f"signing key {keys[0][:8]}…, {len(keys)} key{'s' if len(keys) != 1 else ''}"
        else:
            shown = "no signing key in the dataset"
        quarantine = f"{r.quarantine:,} quarantine entr{'y' if r.quarantine == 1 else 'ies'}"
        data_deleted = len(self.deleted) - len(self.versions_deleted)
        older = len(self.versions_deleted)
        lines = [f"volunteer:   {self.volunteer} ({shown})"]
        if self.dry_run:
            lines.append("dry run:     nothing was written; this is what a withdrawal would do")
        if self.purged_first:
            lines.append(f"purged:      {len(self.purged_first):,} objects an earlier command left to delete")
        if self.first_withdrawn_at and not self.found:
            lines.append(
                f"already:     withdrawn at {self.first_withdrawn_at} (version {self.first_version}); "
                "nothing more to remove"
            )
        lines.append(
            f"removed:     {plural(r.sessions, 'session')}, {plural(r.samples, 'sample')} "
            f"({r.samples_without_image:,} without image), {plural(r.events, 'event')}, "
            f"{plural(r.tasks, 'task')}, {quarantine}"
        )
        lines.append(
            f"rewritten:   {plural(len(self.parts_rewritten), 'part')} "
            f"({len(self.parts_removed):,} removed), "
            f"{self.ledger_files:,} ledger file{'s' if self.ledger_files != 1 else ''}; "
            + (
                "nothing deleted (dry run)"
                if self.dry_run
                else f"{data_deleted:,} objects deleted, {older:,} older version"
                f"{'s' if older != 1 else ''} deleted"
            )
        )
        if self.version is not None:
            lines.append(f"published:   version {self.version}; later builds refuse this volunteer's bundles")
        elif self.dry_run:
            nxt = (self.parent or 0) + 1
            lines.append(f"published:   nothing (dry run; the withdrawal would publish version {nxt})")
        else:
            lines.append("published:   nothing (the register already refuses this volunteer's bundles)")
        if self.not_deleted:
            lines.append(
                f"not deleted: {len(self.not_deleted):,} objects (kept in pending_purge; the next optin "
                f"dataset command deletes them): {', '.join(self.not_deleted[:5])}"
                + (", …" if len(self.not_deleted) > 5 else "")
            )
            lines.extend(f"             {f}" for f in self.failures[:3])
        names = ", ".join(visible(s) for s in self.sources[:_SHOWN_SOURCES])
        more = ", …" if len(self.sources) > _SHOWN_SOURCES else ""
        lines.append(
            f"still yours: the bundles in SRC (delete them): {names or 'none recorded'}{more};"
            if self.sources
            else "still yours: any copy of their bundles in SRC (delete them);"
        )
        if self.version is not None:
            before = self.version
        elif self.first_version is not None and not self.dry_run:
            before = self.first_version
        else:
            before = (self.parent or 0) + 1
        lines.append(
            f"             exports made before version {before} (optin dataset export records its version "
            "in OUT/optin-export.json)"
        )
        return "\n".join(lines)


def check_volunteer(volunteer: str) -> str:
    """``volunteer`` if it is a pseudonym (32 lower-case hex). :raises UsageError: otherwise."""
    if not isinstance(volunteer, str) or not PSEUDONYM.fullmatch(volunteer):
        msg = (
            f"--volunteer {visible(str(volunteer), limit=80)} is not a pseudonym. Fix: give the volunteer's "
            "32 lower-case hex id (optin keys shows it to the volunteer; the sessions table has it)"
        )
        raise UsageError(msg)
    return volunteer


# --- finding what to remove -------------------------------------------------------------------------


@dataclass
class _Plan:
    """The sessions to remove, per part, and the ledger rule."""

    volunteer: str
    #: K: the signing keys of the volunteer's sessions rows.
    keys: set[str]
    #: part id -> the sessions of that part to remove (only parts that hold one).
    drop: dict[str, set[str]]
    #: every session to remove.
    sessions: set[str]

    def keep_row(self, row: tables.LedgerRow) -> bool:
        """Whether a ledger row stays: not the volunteer's (quarantine entries included), not a removed
        session's."""
        return row.volunteer != self.volunteer and (row.session is None or row.session not in self.sessions)


def _meets(part: PartObject, volunteer: str, keys: set[str]) -> bool:
    return volunteer in part.volunteers or not keys.isdisjoint(part.signing_keys)


def _find(dest: Dest, current: Version, volunteer: str) -> tuple[_Plan, dict[str, Any]]:
    """The sessions to remove (docs/dataset.md step 2) and each touched part's sessions table."""
    read: dict[str, Any] = {}

    def sessions_of(part: PartObject) -> Any:
        if part.id not in read:
            listed = part.tables["sessions"]
            read[part.id] = tables.read_table(read_listed(dest, listed), "sessions", where=listed.path)
        return read[part.id]

    keys: set[str] = set()
    for part in current.parts:
        if volunteer in part.volunteers:
            for row in sessions_of(part).select(["volunteer", "signing_key"]).to_pylist():
                if row["volunteer"] == volunteer and row["signing_key"]:
                    keys.add(row["signing_key"])
    drop: dict[str, set[str]] = {}
    for part in current.parts:
        if not _meets(part, volunteer, keys):
            continue
        rows = sessions_of(part).select(["session", "volunteer", "signing_key"]).to_pylist()
        gone = {r["session"] for r in rows if r["volunteer"] == volunteer or r["signing_key"] in keys}
        if gone:
            drop[part.id] = gone
    sessions = set().union(*drop.values()) if drop else set()
    return _Plan(volunteer, keys, drop, sessions), read


# --- rewriting a part -------------------------------------------------------------------------------


def _index(dest: Dest, part: PartObject) -> list[Placed]:
    """The part's index, checked against the shard the version lists and against itself."""
    try:
        return read_index(
            read_listed(dest, part.index),
            shard=part.shard.path,
            shard_size=part.shard.size,
            shard_sha256=part.shard.sha256,
            samples=part.steps,
        )
    except IndexInvalid as exc:
        msg = (
            f"refused {dest.where(part.index.path)}: {exc}. Fix: DEST was changed outside optin; restore "
            "it from a copy or rebuild"
        )
        raise ShardMismatch(msg) from None


def _copy(src: BinaryIO, n: int, digest: Any, sink: Any | None, shown: str) -> None:
    """Read ``n`` bytes of ``src`` into ``digest``, and into ``sink`` when given."""
    left = n
    while left > 0:
        chunk = src.read(min(_CHUNK, left))
        if not chunk:
            msg = f"{shown} ended early. Fix: DEST was changed outside optin; restore it or rebuild"
            raise ShardMismatch(msg)
        digest.update(chunk)
        if sink is not None:
            sink.write(chunk)
        left -= len(chunk)


def _rewrite_part(
    dest: Dest, part: PartObject, drop: set[str], sessions: Any
) -> tuple[PartObject | None, Removed]:
    """``part`` without the sessions ``drop`` (None when nothing is left), and what went."""
    rows = sessions.to_pylist()
    kept = [r for r in rows if r["session"] not in drop]
    gone = [r for r in rows if r["session"] in drop]
    removed = Removed(
        bundles=len(gone),
        sessions=len(gone),
        samples=sum(r["steps"] for r in gone),
        events=sum(r["events"] for r in gone),
        frames=sum(r["frames"] for r in gone),
        tasks=sum(r["tasks"] or 0 for r in gone),
    )
    data = {name: read_listed(dest, part.tables[name]) for name in tables.PART_TABLES}
    steps = tables.read_table(data["steps"], "steps", where=part.tables["steps"].path)
    flags = steps.select(["session", "has_image"]).to_pylist()
    removed.samples_without_image = sum(1 for f in flags if f["session"] in drop and not f["has_image"])
    if not kept:
        return None, removed
    new_id = layout.part_id(r["bundle_sha256"] for r in kept)
    date = part.ingest_date
    shard_path = layout.shard_path(date, new_id)
    entries = _index(dest, part)
    placed: list[Placed] = []
    shift: dict[str, int] = {}
    digest = hashlib.sha256()
    shown = dest.where(part.shard.path)
    src, _info = dest.reader(part.shard.path)
    with src, dest.writer(shard_path) as sink:
        at = 0
        for e in entries:
            keep = SAMPLE_KEY.fullmatch(e.key)[1] not in drop  # type: ignore[index]  # checked in _index
            _copy(src, e.end - e.offset, digest, sink if keep else None, shown)
            if keep:
                delta = at - e.offset
                shift[e.key] = delta
                placed.append(
                    Placed(
                        e.key,
                        e.offset + delta,
                        e.end + delta,
                        e.json_offset + delta,
                        e.json_size,
                        e.image_offset + delta,
                        e.image_size,
                    )
                )
                at += e.end - e.offset
        _copy(src, len(_END), digest, None, shown)
        if src.read(1) or digest.hexdigest() != part.shard.sha256:
            msg = (
                f"refused {shown}: it is not the shard the version lists (size or SHA-256 differ). Fix: "
                "restore DEST from a copy or rebuild"
            )
            raise ShardMismatch(msg)  # inside the writer: the new shard is discarded
        sink.write(_END)
    shard = FileObject(shard_path, sink.size, sink.sha256)
    index = _put(
        dest, layout.index_path(date, new_id), index_bytes(shard_path, sink.size, sink.sha256, placed)
    )
    filtered = tables.filter_part(data, drop_sessions=drop, part=new_id, shard=shard_path, shift=shift)
    files = {
        name: _put(dest, layout.table_path(name, date, new_id), body, rows=count)
        for name, (body, count) in filtered.items()
    }
    return (
        PartObject(
            id=new_id,
            ingest_date=date,
            build_version=part.build_version,
            bundles=len(kept),
            sessions=len(kept),
            steps=len(placed),
            shard=shard,
            index=index,
            tables=files,
            volunteers=tuple(sorted({r["volunteer"] for r in kept})),
            signing_keys=tuple(sorted({r["signing_key"] for r in kept if r["signing_key"]})),
            samples_without_image=part.samples_without_image - removed.samples_without_image,
        ),
        removed,
    )


def _put(dest: Dest, path: str, data: bytes, *, rows: int | None = None) -> FileObject:
    with dest.writer(path) as sink:
        sink.write(data)
    return FileObject.of(path, data, rows=rows)


def _count_part(dest: Dest, part: PartObject, drop: set[str], sessions: Any) -> Removed:
    """What rewriting ``part`` would remove (dry run: reads, writes nothing)."""
    rows = [r for r in sessions.to_pylist() if r["session"] in drop]
    listed = part.tables["steps"]
    steps = tables.read_table(read_listed(dest, listed), "steps", where=listed.path)
    flags = steps.select(["session", "has_image"]).to_pylist()
    return Removed(
        bundles=len(rows),
        sessions=len(rows),
        samples=sum(r["steps"] for r in rows),
        samples_without_image=sum(1 for f in flags if f["session"] in drop and not f["has_image"]),
        events=sum(r["events"] for r in rows),
        frames=sum(r["frames"] for r in rows),
        tasks=sum(r["tasks"] or 0 for r in rows),
    )


def _add(total: Removed, more: Removed) -> None:
    for f in dataclasses.fields(Removed):
        setattr(total, f.name, getattr(total, f.name) + getattr(more, f.name))


# --- older versions and deletions -------------------------------------------------------------------


def _older_holders(
    dest: Dest, current: Version, plan: _Plan, replaced: set[str], below: int
) -> tuple[set[str], set[str]]:
    """Objects of older versions holding withdrawn data, and every version manifest (below ``below``)
    that lists one of them or ``replaced`` (an unreadable one too: nothing can use it)."""
    manifests: dict[str, Version | None] = {}
    for info in dest.list("versions/"):
        n = layout.version_of_path(info.key)
        if n is None or n >= below:
            continue
        if n == current.version:
            manifests[info.key] = current
            continue
        try:
            manifests[info.key] = read_version(dest, n)
        except DestError:
            manifests[info.key] = None
    holders = set(replaced)
    current_paths = current.paths()
    checked: set[str] = set()
    for version in manifests.values():
        if version is None:
            continue
        for part in version.parts:
            if part.shard.path not in current_paths and _meets(part, plan.volunteer, plan.keys):
                holders.update(f.path for f in part.files())
        for listed in version.ledger:
            if listed.path in current_paths or listed.path in checked:
                continue
            checked.add(listed.path)
            try:
                rows = tables.read_ledger(read_listed(dest, listed), where=listed.path)
            except DestError:
                continue  # gone already, or damaged: not readable as a ledger
            if not all(plan.keep_row(r) for r in rows):
                holders.add(listed.path)
    holders = {h for h in holders if h in replaced or dest.head(h) is not None}
    doomed = {
        key
        for key, version in manifests.items()
        if version is None or not holders.isdisjoint(version.paths())
    }
    return holders, doomed


def _delete(dest: Dest, keys: Iterable[str], already: set[str]) -> tuple[list[str], list[str]]:
    """Delete every key of ``keys`` not in ``already`` that is there (every object version on a versioned
    bucket); adds what it deleted to ``already``. The keys that could not be deleted, and why."""
    failed: list[str] = []
    why: list[str] = []
    for key in sorted(set(keys)):
        if key in already:
            continue
        try:
            if dest.head(key) is not None:
                dest.delete(key)
                already.add(key)
        except DestError as exc:
            failed.append(key)
            why.append(str(exc))
    return failed, why


def _delete_all(dest: Dest, keys: Iterable[str], already: set[str], report: WithdrawReport) -> list[str]:
    failed, why = _delete(dest, keys, already)
    report.failures += why
    return failed


@dataclass(frozen=True)
class Purged:
    """What :func:`purge_pending` did: the paths deleted, those still pending, and why they are."""

    deleted: list[str]
    pending: list[str]
    failures: list[str]


def purge_pending(dest: Dest, current: Version | None) -> Purged:
    """Delete what ``current`` lists in ``pending_purge`` (a withdrawal killed after publishing, or a
    deletion that failed): the first thing every writing command does, under DEST's lock. The next
    version's ``pending_purge`` is :attr:`Purged.pending`."""
    if current is None or not current.pending_purge:
        return Purged([], [], [])
    done: set[str] = set()
    failed, why = _delete(dest, current.pending_purge, done)
    return Purged(sorted(done), failed, why)


def _complete_pending(dest: Dest, current: Version | None, report: WithdrawReport) -> list[str]:
    """Step 1: delete what the current version still lists in ``pending_purge``; the paths that stay."""
    purged = purge_pending(dest, current)
    report.purged_first = purged.deleted
    report.failures += purged.failures
    return purged.pending


# --- the command ------------------------------------------------------------------------------------


def run_withdraw(
    where: str,
    volunteer: str,
    *,
    dry_run: bool = False,
    break_lock: bool = False,
    progress: Progress | None = None,
    keep_days: float = 7,
) -> WithdrawReport:
    """Withdraw pseudonym ``volunteer`` from DEST ``where`` (see the module docstring).

    :raises UsageError: ``volunteer`` is not 32 lower-case hex, or DEST holds no dataset (exit 2).
    :raises LockHeld: another command holds DEST's lock (exit 2).
    :raises DestError: reading or writing DEST failed, or it holds objects optin did not write (exit 1).
    """
    check_volunteer(volunteer)
    if "://" not in where and not Path(where).is_dir():
        msg = (
            f"DEST {visible(where)} is not a folder, so it holds no dataset to withdraw from. Fix: give the "
            "folder or s3://bucket/prefix of the study's dataset"
        )
        raise UsageError(msg)
    with open_dest(where) as dest:
        if dry_run:
            current = read_current(dest)
            return _withdraw(dest, where, None, current, volunteer, dry_run=True, progress=progress)
        with Lock.acquire(dest, "withdraw", break_lock=break_lock) as lock:
            current = read_current(dest)
            return _withdraw(
                dest, where, lock, current, volunteer, dry_run=False, progress=progress, keep_days=keep_days
            )


def _withdraw(
    dest: Dest,
    where: str,
    lock: Lock | None,
    current: Version | None,
    volunteer: str,
    *,
    dry_run: bool,
    progress: Progress | None,
    keep_days: float = 7,
) -> WithdrawReport:
    if current is None:
        msg = (
            f"DEST {visible(where)} holds no dataset version (no CURRENT), so there is nothing to withdraw "
            "from and no register to record it in. Fix: give the DEST of the study's dataset"
        )
        raise UsageError(msg)
    run = _Run(dest, current, WithdrawReport(where, volunteer, dry_run, current.version))
    # 1. what a killed command left
    still_pending = [] if dry_run else _complete_pending(dest, current, run.report)
    if dry_run:
        run.report.purged_first = list(current.pending_purge)
    # 2. the sessions, 3. the parts, 4. the ledger
    run.find(volunteer)
    run.rewrite_parts(progress)
    ledger = run.rewrite_ledger()
    holders, manifests = _older_holders(dest, current, run.plan, run.replaced, run.number)
    report = run.report
    if dry_run:
        report.deleted = sorted(holders | manifests)
        report.versions_deleted = sorted(n for k in manifests if (n := layout.version_of_path(k)) is not None)
        return report
    if run.earlier and not (report.found or holders or manifests or report.purged_first or still_pending):
        return report  # a second withdrawal: the register refuses the volunteer already
    if lock is None:
        msg = "a withdrawal that writes needs DEST's lock. Fix: this is a bug"
        raise layout.LayoutError(msg)
    # 5. the register, then the version
    register = run.register(lock)
    pending = sorted((holders | manifests | set(still_pending)) - _listed_by(run.new_parts, ledger, register))
    published = publish_next(
        dest,
        lock,
        current,
        change=Change(
            "withdraw",
            added_parts=tuple(sorted(report.parts_added)),
            removed_parts=tuple(sorted(report.parts_rewritten)),
            volunteer=volunteer,
        ),
        parts=[*(p for p in current.parts if p.id not in run.plan.drop), *run.new_parts],
        ledger=ledger,
        register=register,
        pending_purge=pending,
        keep_days=keep_days,
    )
    report.version = published.version.version
    report.published_at = published.version.published_at
    report.warnings = list(published.warnings)
    # 6. at once: every replaced object and every older manifest listing one (publish's GC did most)
    gone = set(published.deleted)
    report.not_deleted = _delete_all(dest, pending, gone, report)
    report.deleted = sorted(gone & set(pending))
    report.versions_deleted = sorted(
        n for k in report.deleted if (n := layout.version_of_path(k)) is not None
    )
    return report


class _Run:
    """One withdrawal's state between its steps."""

    def __init__(self, dest: Dest, current: Version, report: WithdrawReport) -> None:
        self.dest = dest
        self.current = current
        self.report = report
        self.number = current.version + 1
        self.plan = _Plan(report.volunteer, set(), {}, set())
        self.sessions: dict[str, Any] = {}
        self.lines: list[dict[str, Any]] = []
        self.earlier: list[dict[str, Any]] = []
        self.touched: list[PartObject] = []
        self.new_parts: list[PartObject] = []
        self.moved: dict[str, str] = {}
        self.replaced: set[str] = set()

    def find(self, volunteer: str) -> None:
        self.plan, self.sessions = _find(self.dest, self.current, volunteer)
        self.report.signing_keys = sorted(self.plan.keys)
        self.lines = register_lines(self.dest, self.current)
        self.earlier = [line for line in self.lines if line.get("volunteer") == volunteer]
        if self.earlier:
            if not self.plan.keys:  # a repeat: the keys the first withdrawal refused
                listed = {str(k) for line in self.earlier for k in line.get("signing_keys", [])}
                self.report.signing_keys = sorted(listed)
            self.report.first_withdrawn_at = str(self.earlier[0].get("withdrawn_at"))
            first = self.earlier[0].get("version")
            self.report.first_version = first if isinstance(first, int) else None

    def rewrite_parts(self, progress: Progress | None) -> None:
        report, dest = self.report, self.dest
        self.touched = [p for p in self.current.parts if p.id in self.plan.drop]
        for done, part in enumerate(self.touched, start=1):
            report.parts_rewritten.append(part.id)
            drop, sessions = self.plan.drop[part.id], self.sessions[part.id]
            if report.dry_run:
                _add(report.removed, _count_part(dest, part, drop, sessions))
                if set(sessions.column("session").to_pylist()) <= drop:
                    report.parts_removed.append(part.id)
            else:
                new, removed = _rewrite_part(dest, part, drop, sessions)
                _add(report.removed, removed)
                if new is None:
                    report.parts_removed.append(part.id)
                else:
                    self.new_parts.append(new)
                    self.moved[part.id] = new.id
                    report.parts_added.append(new.id)
            if progress:
                progress("rewrite", done, len(self.touched))
        self.replaced = {f.path for p in self.touched for f in p.files()}

    def rewrite_ledger(self) -> list[FileObject]:
        """Step 4: the next version's ledger files (dry run: the current ones, counted)."""
        dropped: list[tables.LedgerRow] = []

        def keep(row: tables.LedgerRow) -> tables.LedgerRow | None:
            if not self.plan.keep_row(row):
                dropped.append(row)
                return None
            if row.part is not None and row.part in self.moved:
                return dataclasses.replace(row, part=self.moved[row.part])
            return row

        replaced: list[str] = []
        if self.report.dry_run:
            ledger = list(self.current.ledger)
            for listed in ledger:
                rows = tables.read_ledger(read_listed(self.dest, listed), where=listed.path)
                if [k for r in rows if (k := keep(r)) is not None] != rows:
                    replaced.append(listed.path)
        else:
            ledger, replaced = rewrite_ledger(self.dest, self.current, self.number, keep)
        self.report.ledger_files = len(replaced)
        self.report.removed.quarantine = sum(1 for r in dropped if r.outcome == tables.QUARANTINED)
        self.report.sources = sorted({r.source for r in dropped})
        self.replaced |= set(replaced)
        return ledger

    def register(self, lock: Lock) -> FileObject | None:
        """Step 5: the whole register with this withdrawal's line (a repeat that found nothing: as is)."""
        if self.earlier and not self.report.found:
            return self.current.register
        line = {
            "removed": self.report.removed.register_json(),
            "signing_keys": sorted(self.plan.keys),
            "version": self.number,
            "volunteer": self.report.volunteer,
            "withdrawn_at": layout.utc(lock.clock()),
        }
        body = b"".join(canonical(x) + b"\n" for x in [*self.lines, line])
        return _put(self.dest, layout.register_path(layout.register_id(body)), body)


def _listed_by(
    parts: Sequence[PartObject], ledger: Iterable[FileObject], register: FileObject | None
) -> set[str]:
    out = {f.path for p in parts for f in p.files()} | {f.path for f in ledger}
    return out | ({register.path} if register else set())


__all__ = [
    "Progress",
    "Purged",
    "Removed",
    "ShardMismatch",
    "WithdrawReport",
    "check_volunteer",
    "purge_pending",
    "run_withdraw",
]
