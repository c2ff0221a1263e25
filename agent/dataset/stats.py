"""``optin dataset stats``: the numbers of a version, read from its tables (docs/dataset.md, "optin
dataset stats", "Dataset card").

:func:`collect` reads only objects the version lists, never a shard: each part's ``sessions`` and
``tasks`` table files, the ledger files and the withdrawal register, every one checked against the
size and SHA-256 the manifest gives (:func:`agent.dataset.version_files.read_listed`). Steps by action
come from the ``sessions`` table's ``steps_by_action`` (the same counts as the ``steps`` table's rows,
which are larger: a row per sample with its text) and samples without image from the manifest's
parts, so the card that every publication writes costs a read of the small tables only. It reads one
file at a time and only the columns it counts, folding each file into running totals, so memory is
one table file plus what the numbers themselves need (a duration per session, a step count per
volunteer, the quarantine list).

:class:`Stats` is the one implementation of these numbers: ``stats --json`` is :meth:`Stats.to_json`,
the text is :func:`render_stats`, and the dataset card (:mod:`agent.dataset.card`) is written from the
same object. What it holds is counts and distributions; the only captured names it carries are the
quarantine's SRC names (for the operator to find the file), shown escaped, and never put in the card.

:func:`run_stats` is the command: open DEST, read ``CURRENT`` (or ``versions/vN.json``), with
``--check`` first ask the store for the size of every listed object.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agent.dataset import tables
from agent.dataset.dest import Dest, DestError
from agent.dataset.layout import version_path
from agent.dataset.manifest import FileObject, Version
from agent.errors import UsageError
from agent.untrusted_text import visible

#: The nine actions, in the spec's order (docs/dataset.md, "The sample JSON").
ACTIONS = (
    "click",
    "double_click",
    "right_click",
    "middle_click",
    "drag",
    "scroll",
    "type",
    "hotkey",
    "key",
)
#: ``loss`` counts stated by the ``session_stop`` marker (null in the table without one).
STOP_LOSS = ("dropped_events", "frame_failures", "frames_skipped", "pastes_lost")
#: Every ``loss`` count that means data was lost (a session with one above 0 is a session with loss).
LOSS_COUNTS = (*STOP_LOSS, "frames_left_out_ocr_failed")
#: ``loss_elements`` fields.
ELEMENT_LOSS = ("found", "not_accessible", "no_element", "failed", "late", "dropped", "steps_without")
#: Bins of a distribution's histogram.
HISTOGRAM_BINS = 20
#: A text from the data (a consent version, an entity name, a scope, a SRC name) is shown at most this long.
MAX_SHOWN = 80

_SESSION_COLUMNS = [
    "volunteer",
    "consent_version",
    "consent_scopes",
    "duration_s",
    "steps",
    "steps_by_action",
    "events",
    "redactions",
    *(f"loss_{k}" for k in LOSS_COUNTS),
    "loss_pauses",
    "loss_cuts",
    "loss_paused_s",
    "loss_cut_s",
    "loss_clean_stop",
    "loss_store_problems",
    "loss_elements",
]


class CheckFailed(DestError):
    """``stats --check``: an object the version lists is missing from DEST or not its size (exit 1)."""


@dataclass(frozen=True)
class Histogram:
    """A distribution as ``counts[i]`` values in ``[edges[i], edges[i + 1])`` (the last bin closed)."""

    edges: tuple[float, ...]
    counts: tuple[int, ...]
    #: How many values, their minimum, median and maximum (0 when there are none).
    n: int
    low: float
    median: float
    high: float

    def to_json(self) -> dict[str, Any]:
        return {
            "edges": list(self.edges),
            "counts": list(self.counts),
            "n": self.n,
            "min": self.low,
            "median": self.median,
            "max": self.high,
        }


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is at least ``value`` (1 for 0 or less)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if step * power >= value:
            return step * power
    return 10.0 * power  # pragma: no cover - the loop always returns


def histogram(values: Sequence[float], *, bins: int = HISTOGRAM_BINS, integers: bool = False) -> Histogram:
    """``values`` in ``bins`` equal bins from 0 to a round ceiling of their maximum.

    With ``integers`` the bin width is a whole number (steps per volunteer), so no bin is empty by
    construction.
    """
    ordered = sorted(values)
    n = len(ordered)
    top = max(ordered[-1], 0.0) if n else 0.0
    if integers:
        width = max(1, math.ceil(nice_ceiling(top + 1) / bins))
        edges = tuple(float(width * i) for i in range(bins + 1))
        while edges[-1] <= top and n:  # the maximum must fall inside the last, closed bin
            width += 1
            edges = tuple(float(width * i) for i in range(bins + 1))
    else:
        ceiling = nice_ceiling(top)
        edges = tuple(ceiling * i / bins for i in range(bins + 1))
    counts = [0] * bins
    for v in ordered:
        # Values below 0 (none in a valid table) count in the first bin, the maximum in the last.
        i = 0 if v <= edges[0] else min(bins - 1, max(0, _bin_of(v, edges)))
        counts[i] += 1
    median = 0.0
    if n:
        mid = n // 2
        median = float(ordered[mid]) if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Histogram(
        edges=edges,
        counts=tuple(counts),
        n=n,
        low=float(ordered[0]) if n else 0.0,
        median=median,
        high=float(ordered[-1]) if n else 0.0,
    )


def _bin_of(value: float, edges: Sequence[float]) -> int:
    lo, hi = 0, len(edges) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if value >= edges[mid]:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class Stats:
    """Every number of ``optin dataset stats`` and of the dataset card, for one version."""

    version: int
    published_at: str
    study: dict[str, str]
    tool: str
    parts: int
    totals: dict[str, Any]
    steps_by_action: dict[str, int]
    tasks_by_outcome: dict[str, int]
    tasks_by_source: dict[str, dict[str, int]]
    redactions: dict[str, dict[str, int]]
    loss: dict[str, Any]
    consent_versions: dict[str, dict[str, Any]]
    shards: dict[str, int]
    quarantine: list[dict[str, Any]]
    withdrawals: int
    pending_purge: list[str]
    versioning: str
    #: Each session's duration in minutes, and each volunteer's step count: sorted, no pseudonym.
    session_minutes: list[float] = field(default_factory=list)
    steps_per_volunteer: list[int] = field(default_factory=list)
    #: ``--check``: how many listed objects were found whole (None: not checked).
    checked: int | None = None

    @property
    def quarantine_by_reason(self) -> dict[str, int]:
        return dict(sorted(Counter(str(q["reason"]) for q in self.quarantine).items()))

    def session_histogram(self) -> Histogram:
        return histogram(self.session_minutes)

    def volunteer_histogram(self) -> Histogram:
        return histogram([float(v) for v in self.steps_per_volunteer], integers=True)

    def to_json(self) -> dict[str, Any]:
        """``--json``'s object (docs/dataset.md, "optin dataset stats")."""
        return {
            "version": self.version,
            "published_at": self.published_at,
            "study": dict(self.study),
            "tool": {"optin": self.tool},
            "totals": dict(self.totals),
            "steps_by_action": dict(self.steps_by_action),
            "tasks_by_outcome": dict(self.tasks_by_outcome),
            "tasks_by_source": {k: dict(v) for k, v in self.tasks_by_source.items()},
            "redactions": {k: dict(v) for k, v in self.redactions.items()},
            "loss": dict(self.loss),
            "consent_versions": {k: dict(v) for k, v in self.consent_versions.items()},
            "shards": dict(self.shards),
            "quarantine": [dict(q) for q in self.quarantine],
            "quarantine_by_reason": self.quarantine_by_reason,
            "withdrawals": self.withdrawals,
            "pending_purge": list(self.pending_purge),
            "versioning": self.versioning,
            "distributions": {
                "session_minutes": self.session_histogram().to_json(),
                "steps_per_volunteer": self.volunteer_histogram().to_json(),
            },
            "checked": self.checked,
        }

    def render(self) -> str:
        return render_stats(self)


# --- collecting -------------------------------------------------------------------------------------


def _read_listed(dest: Dest, listed: FileObject) -> bytes:
    # Imported here: version_files imports the card, which imports this module.
    from agent.dataset.version_files import read_listed

    return read_listed(dest, listed)


def _columns(dest: Dest, listed: FileObject, table: str, columns: Sequence[str]) -> Any:
    """Some columns of one listed table file, after checking its SHA-256 and exact schema."""
    data = _read_listed(dest, listed)
    parquet = _open_checked(data, table, dest.where(listed.path))
    try:
        return parquet.read(columns=list(columns))
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = f"{dest.where(listed.path)} cannot be read ({type(exc).__name__}): the file is damaged"
        raise tables.TableInvalid(msg) from None


def _open_checked(data: bytes, table: str, where: str) -> Any:
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        msg = (
            f"{where} is not a Parquet file ({type(exc).__name__}). Fix: the file was changed or "
            "replaced in DEST; restore it, or rebuild the dataset"
        )
        raise tables.TableInvalid(msg) from None
    if not schema.equals(tables.SCHEMAS[table], check_metadata=False):
        msg = (
            f"{where} is not the {table} table of optin-dataset/1. Fix: the file was changed or replaced "
            "in DEST; restore it, or rebuild the dataset"
        )
        raise tables.TableInvalid(msg)
    return parquet


class _Folder:
    """Running totals, folded from one table file at a time."""

    def __init__(self) -> None:
        self.sessions = 0
        self.seconds = 0.0
        self.events = 0
        self.minutes: list[float] = []
        self.volunteer_steps: dict[str, int] = defaultdict(int)
        self.steps_by_action: Counter[str] = Counter()
        self.steps = 0
        self.without_image = 0
        self.tasks = 0
        self.tasks_by_outcome: Counter[str] = Counter()
        self.tasks_by_source: dict[str, Counter[str]] = defaultdict(Counter)
        self.redactions: dict[str, Counter[str]] = defaultdict(Counter)
        self.loss: Counter[str] = Counter()
        self.loss_unknown: Counter[str] = Counter()
        self.paused_s = 0.0
        self.cut_s = 0.0
        self.elements: Counter[str] = Counter()
        self.consent_sessions: Counter[str] = Counter()
        self.consent_volunteers: dict[str, set[str]] = defaultdict(set)
        self.consent_scopes: dict[str, Counter[str]] = defaultdict(Counter)
        self.quarantine: list[dict[str, Any]] = []

    def sessions_file(self, table: Any) -> None:
        rows = table.to_pylist()
        for row in rows:
            self.sessions += 1
            duration = float(row["duration_s"])
            self.seconds += duration
            self.minutes.append(duration / 60)
            self.events += int(row["events"])
            self.steps += int(row["steps"])
            self.volunteer_steps[row["volunteer"]] += int(row["steps"])
            for action, count in row["steps_by_action"]:
                self.steps_by_action[str(action)] += int(count)
            version = str(row["consent_version"])
            self.consent_sessions[version] += 1
            self.consent_volunteers[version].add(row["volunteer"])
            self.consent_scopes[version].update(set(row["consent_scopes"]))
            for r in row["redactions"]:
                self.redactions[str(r["where"])][str(r["entity"])] += int(r["count"])
            self._loss(row)

    def _loss(self, row: Mapping[str, Any]) -> None:
        lost = False
        for k in LOSS_COUNTS:
            value = row[f"loss_{k}"]
            if value is None:
                self.loss_unknown[k] += 1
                continue
            self.loss[k] += int(value)
            lost = lost or value > 0
        clean = bool(row["loss_clean_stop"])
        problems = bool(row["loss_store_problems"])
        self.loss["unclean_stops"] += not clean
        self.loss["sessions_with_store_problems"] += problems
        self.loss["sessions_with_loss"] += lost or not clean or problems
        self.loss["pauses"] += int(row["loss_pauses"])
        self.loss["cuts"] += int(row["loss_cuts"])
        self.paused_s += float(row["loss_paused_s"])
        self.cut_s += float(row["loss_cut_s"])
        elements = row["loss_elements"]
        if elements is not None:
            self.elements["sessions"] += 1
            for k in ELEMENT_LOSS:
                self.elements[k] += int(elements[k] or 0)

    def tasks_file(self, table: Any) -> None:
        self.tasks += table.num_rows
        for row in table.to_pylist():
            outcome, source = str(row["outcome"]), str(row["source"])
            self.tasks_by_outcome[outcome] += 1
            self.tasks_by_source[source][outcome] += 1

    def ledger_file(self, rows: Iterable[tables.LedgerRow]) -> None:
        self.quarantine += [
            {"sha256": r.sha256, "size": r.size, "source": r.source, "reason": r.reason, "stage": r.stage}
            for r in rows
            if r.outcome == tables.QUARANTINED
        ]


def _sorted_counts(counter: Mapping[str, int]) -> dict[str, int]:
    return {k: int(counter[k]) for k in sorted(counter)}


def dest_versioning(dest: Dest) -> str:
    """``enabled``, ``suspended`` or ``off`` for an S3 bucket, ``none`` for a folder; ``unknown`` when
    the store does not say (a DestError: no permission to ask)."""
    ask = getattr(dest, "versioning", None)
    if not callable(ask):
        return "none"
    try:
        state = str(ask())
    except DestError:
        return "unknown"
    return state.lower() if state in ("Enabled", "Suspended") else "off"


def collect(dest: Dest, version: Version, *, versioning: bool = True) -> Stats:
    """The numbers of ``version`` from the tables it lists (never a shard), one file at a time.

    ``version`` may be one not yet published (the card is written before ``CURRENT``): its
    ``published_at`` is then ``""``. ``versioning=False`` leaves the bucket's versioning unasked
    (``"not read"``; the card does not show it).

    :raises DestError: a listed object is missing, not its size or SHA-256, or not its table
        (:class:`~agent.dataset.tables.TableInvalid`).
    """
    folder = _Folder()
    for part in version.parts:
        folder.sessions_file(_columns(dest, part.tables["sessions"], "sessions", _SESSION_COLUMNS))
        folder.without_image += part.samples_without_image
        folder.tasks_file(_columns(dest, part.tables["tasks"], "tasks", ["source", "outcome"]))
    for listed in version.ledger:
        folder.ledger_file(tables.read_ledger(_read_listed(dest, listed), where=dest.where(listed.path)))
    from agent.dataset.version_files import register_lines

    withdrawals = len(register_lines(dest, version))
    return _stats(version, folder, withdrawals, dest_versioning(dest) if versioning else "not read")


def _stats(version: Version, f: _Folder, withdrawals: int, versioning: str) -> Stats:
    loss: dict[str, Any] = {
        "sessions_with_loss": f.loss["sessions_with_loss"],
        "unclean_stops": f.loss["unclean_stops"],
        "sessions_with_store_problems": f.loss["sessions_with_store_problems"],
        **{k: f.loss[k] for k in LOSS_COUNTS},
        "sessions_without_stop_counts": max((f.loss_unknown[k] for k in STOP_LOSS), default=0),
        "pauses": f.loss["pauses"],
        "paused_s": round(f.paused_s, 3),
        "cuts": f.loss["cuts"],
        "cut_s": round(f.cut_s, 3),
        "elements": {k: f.elements[k] for k in ("sessions", *ELEMENT_LOSS)},
    }
    consent = {
        v: {
            "sessions": f.consent_sessions[v],
            "volunteers": len(f.consent_volunteers[v]),
            "scopes": _sorted_counts(f.consent_scopes[v]),
        }
        for v in sorted(f.consent_sessions)
    }
    steps_by_action = {a: f.steps_by_action[a] for a in ACTIONS if f.steps_by_action[a]}
    steps_by_action |= {a: f.steps_by_action[a] for a in sorted(f.steps_by_action) if a not in ACTIONS}
    totals: dict[str, Any] = {
        "volunteers": len(f.volunteer_steps),
        "sessions": f.sessions,
        "hours": round(f.seconds / 3600, 4),
        "steps": f.steps,
        "samples_without_image": f.without_image,
        "tasks": f.tasks,
        "events": f.events,
        "bytes": version.totals.bytes,
    }
    quarantine = sorted(f.quarantine, key=lambda q: (str(q["reason"]), str(q["source"]), str(q["sha256"])))
    return Stats(
        version=version.version,
        published_at=version.published_at,
        study={"id": version.study.id, "name": version.study.name},
        tool=version.tool,
        parts=len(version.parts),
        totals=totals,
        steps_by_action=steps_by_action,
        tasks_by_outcome=_sorted_counts(f.tasks_by_outcome),
        tasks_by_source={s: _sorted_counts(f.tasks_by_source[s]) for s in sorted(f.tasks_by_source)},
        redactions={
            w: _sorted_counts(f.redactions[w])
            for w in [*tables.REDACTION_PLACES, *sorted(set(f.redactions) - set(tables.REDACTION_PLACES))]
            if f.redactions.get(w)
        },
        loss=loss,
        consent_versions=consent,
        shards={"count": len(version.parts), "bytes": sum(p.shard.size for p in version.parts)},
        quarantine=quarantine,
        withdrawals=withdrawals,
        pending_purge=list(version.pending_purge),
        versioning=versioning,
        session_minutes=sorted(f.minutes),
        steps_per_volunteer=sorted(f.volunteer_steps.values()),
    )


# --- the command ------------------------------------------------------------------------------------


def listed_objects(version: Version) -> list[FileObject]:
    """Every object ``version`` lists with its size (its own manifest aside), in path order."""
    files = [f for p in version.parts for f in p.files()] + list(version.ledger)
    files += [version.register] if version.register else []
    files += [version.wids] if version.wids else []
    files += version.card.files() if version.card else []
    return sorted(files, key=lambda f: f.path)


def check_objects(dest: Dest, version: Version) -> int:
    """Ask the store for every listed object's size (one HEAD or ``stat`` each).

    :returns: how many were checked.
    :raises CheckFailed: some are missing or not their size; the message names them (up to 10) and
        how many there are.
    """
    problems: list[str] = []
    files = listed_objects(version)
    for listed in files:
        info = dest.head(listed.path)
        if info is None:
            problems.append(f"{dest.where(listed.path)} is missing")
        elif info.size != listed.size:
            problems.append(
                f"{dest.where(listed.path)} is {info.size:,} bytes, not the {listed.size:,} listed"
            )
    if dest.head(version_path(version.version)) is None:
        problems.append(f"{dest.where(version_path(version.version))} is missing")
    if problems:
        shown = "; ".join(problems[:10]) + ("; …" if len(problems) > 10 else "")
        msg = (
            f"version {version.version} is not whole in DEST: {len(problems)} of {len(files) + 1} listed "
            f"objects are missing or of the wrong size: {shown}. Fix: restore them from a backup, or "
            "rebuild into a new DEST"
        )
        raise CheckFailed(msg)
    return len(files) + 1


def run_stats(where: str, version: int | None = None, check: bool = False) -> Stats:
    """``optin dataset stats DEST [--version N] [--check]``.

    :raises UsageError: DEST is a local folder that does not exist, or has no published version.
    :raises LayoutError: version ``N`` is not kept in DEST, or a manifest is damaged.
    :raises CheckFailed: ``check`` and a listed object is missing or of the wrong size.
    :raises DestError: DEST cannot be read, or a table is not what the version lists.
    """
    from agent.dataset.stores import open_dest
    from agent.dataset.versions import read_current, read_version

    if not where.startswith("s3://") and "://" not in where and where.strip() and not Path(where).is_dir():
        msg = f"DEST {visible(where)} is not a folder. Fix: give the DEST a build wrote (a folder or s3://…)"
        raise UsageError(msg)
    with open_dest(where) as dest:
        if version is None:
            chosen = read_current(dest)
            if chosen is None:
                msg = (
                    f"DEST {visible(where)} has no published version (no CURRENT). "
                    "Fix: run optin dataset build SRC DEST first, or give the right DEST"
                )
                raise UsageError(msg)
        else:
            if version < 1:
                msg = f"--version {version} is not a version number. Fix: give a number from 1"
                raise UsageError(msg)
            chosen = read_version(dest, version)
        checked = check_objects(dest, chosen) if check else None
        stats = collect(dest, chosen)
    stats.checked = checked
    return stats


# --- text -------------------------------------------------------------------------------------------


def shown(text: str, limit: int = MAX_SHOWN) -> str:
    """A text from the data (consent version, entity, scope, reason, SRC name) as printed: escaped, cut."""
    return visible(str(text), limit=limit)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{shown(k)} {v:,}" for k, v in counts.items()) or "none"


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 part``, ``2 parts``, ``1,204 bundles``."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"


def render_stats(stats: Stats) -> str:
    """What ``optin dataset stats`` prints (no pseudonym, session id or captured text; SRC names of
    quarantined bundles escaped)."""
    t = stats.totals
    loss = stats.loss
    lines = [
        f"version:       {stats.version}, published {stats.published_at or 'not yet'} "
        f"(optin {shown(stats.tool)})",
        f"study:         {shown(stats.study['id'])} ({shown(stats.study['name'])})",
        f"totals:        {plural(t['volunteers'], 'volunteer')}, {plural(t['sessions'], 'session')}, "
        f"{t['hours']:,.2f} hours, {plural(t['steps'], 'step')} "
        f"({t['samples_without_image']:,} without image), {plural(t['tasks'], 'task')}, "
        f"{plural(t['events'], 'event')}",
        f"steps:         {_counts(stats.steps_by_action)}",
        f"tasks:         {_counts(stats.tasks_by_outcome)}"
        + (
            " (" + "; ".join(f"{shown(s)}: {_counts(c)}" for s, c in stats.tasks_by_source.items()) + ")"
            if stats.tasks_by_source
            else ""
        ),
        "redactions:    "
        + (
            "; ".join(f"{shown(w)}: {_counts(c)}" for w, c in stats.redactions.items())
            if stats.redactions
            else "none"
        ),
        f"loss:          {plural(loss['sessions_with_loss'], 'session')} with loss, "
        f"{plural(loss['unclean_stops'], 'unclean stop')}; "
        + ", ".join(f"{k.replace('_', ' ')} {loss[k]:,}" for k in LOSS_COUNTS)
        + f"; {plural(loss['pauses'], 'pause')} ({loss['paused_s']:,.1f} s), "
        f"{plural(loss['cuts'], 'cut')} ({loss['cut_s']:,.1f} s)",
        "consent:       "
        + (
            "; ".join(
                f"version {shown(v)}: {plural(c['sessions'], 'session')}, "
                f"{plural(c['volunteers'], 'volunteer')}, scopes {_counts(c['scopes'])}"
                for v, c in stats.consent_versions.items()
            )
            or "none"
        ),
        f"shards:        {stats.shards['count']:,} ({stats.shards['bytes']:,} bytes); "
        f"all part objects {t['bytes']:,} bytes",
        f"quarantine:    {plural(len(stats.quarantine), 'bundle')}"
        + (f": {_counts(stats.quarantine_by_reason)}" if stats.quarantine else ""),
    ]
    lines += [
        f"               {q['sha256'][:12]}…  {q['size']:,} bytes  {shown(q['reason'])} "
        f"({shown(q['stage'])})  {shown(q['source'], 200)}"
        for q in stats.quarantine
    ]
    lines += [
        f"withdrawals:   {stats.withdrawals:,}",
        "pending purge: "
        + (
            f"{plural(len(stats.pending_purge), 'object')}: " + ", ".join(stats.pending_purge[:5])
            if stats.pending_purge
            else "none"
        ),
        f"versioning:    {_versioning_text(stats.versioning)}",
    ]
    if stats.checked is not None:
        lines.append(f"checked:       all {stats.checked:,} listed objects are in DEST with their sizes")
    return "\n".join(lines) + "\n"


def _versioning_text(state: str) -> str:
    return {
        "none": "none (a local folder)",
        "off": "off (a deletion deletes the object)",
        "enabled": "enabled (every deletion deletes every version of the object)",
        "suspended": "suspended (every deletion deletes every version of the object)",
        "unknown": "unknown (the store did not say)",
    }.get(state, state)


__all__ = [
    "ACTIONS",
    "CheckFailed",
    "Histogram",
    "Stats",
    "check_objects",
    "collect",
    "dest_versioning",
    "histogram",
    "listed_objects",
    "plural",
    "render_stats",
    "run_stats",
]
