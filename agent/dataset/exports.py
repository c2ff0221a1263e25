"""``optin dataset export DEST --format agentnet|aguvis OUT``: a version's tasks as training records
(docs/dataset.md, Exports).

:func:`run_export` reads the version (``CURRENT`` or ``versions/vN.json``), then, part by part, its
``tasks`` and ``steps`` tables, and decides every task there by the rule of
:func:`agent.dataset.trajectories.left_out_reason` (one trajectory per task ``done`` or ``failed`` with
an instruction and exportable steps; every other task counted under its reason). Only then does it
read a shard, and only one that holds a chosen step: once, front to back, skipping what it does not
need, checking its size and SHA-256 against the version manifest. Each chosen sample's image is
copied byte for byte to ``images/<session>/<NNNNNN>.webp``; the sample JSONs of one task are held
until its last one is read, turned into a :class:`~agent.dataset.trajectories.Trajectory` by the same
code (which must agree with the tables) and written as one ``trajectories.jsonl`` line (agentnet) or
one element per step of the ``aguvis.json`` array (streamed). ``optin-export.json`` is written last:
an OUT without it holds an unfinished export. Memory: one part's two tables, one sample JSON, one
task's sample JSONs and a 1 MiB copy buffer.

OUT is a local folder (absent or empty; folders 0700, files 0600, written through
:class:`~agent.dataset.dest_local.LocalDest`: ``O_EXCL | O_NOFOLLOW``, never through a link) or an
``s3://`` prefix with no object. Every OUT path is a literal or is built from a sample key, which is
checked again here. Instructions, typed text and element names are captured content: nothing here
logs them or puts them into a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agent import __version__
from agent.canonical_json import canonical
from agent.dataset import tables
from agent.dataset.dest import Dest, ObjectWriter
from agent.dataset.layout import LayoutError, utc
from agent.dataset.manifest import PartObject, Version
from agent.dataset.object_keys import check_key
from agent.dataset.samples import MAX_SAMPLE_JSON, parse_key
from agent.dataset.stats import plural
from agent.dataset.stores import open_dest
from agent.dataset.trajectories import (
    LEFT_OUT,
    StepFacts,
    Trajectory,
    agentnet,
    aguvis,
    image_path,
    left_out_reason,
    trajectory,
)
from agent.dataset.version_files import read_listed
from agent.dataset.versions import read_current, read_version
from agent.errors import DestUnusable, UsageError

__all__ = [
    "EXPORT_FILE",
    "EXPORT_SCHEMA",
    "FORMATS",
    "RECORD_FILES",
    "ExportReport",
    "PartPlan",
    "Wanted",
    "image_key",
    "open_out",
    "plan_part",
    "run_export",
]

#: ``--format`` values, and the file of records each writes in OUT.
RECORD_FILES = {"agentnet": "trajectories.jsonl", "aguvis": "aguvis.json"}
FORMATS = tuple(RECORD_FILES)
#: The record of an export, written last.
EXPORT_FILE = "optin-export.json"
EXPORT_SCHEMA = "optin-export/1"
_CHUNK = 1 << 20
_STEP_COLUMNS = (
    "key",
    "session",
    "step",
    "task_id",
    "has_image",
    "code",
    "after_gap",
    "shard",
    "shard_offset",
    "shard_end",
    "json_offset",
    "json_size",
    "image_offset",
    "image_size",
)
_TASK_COLUMNS = (
    "session",
    "task_id",
    "source",
    "instruction",
    "outcome",
    "step_first",
    "step_last",
    "step_count",
)
#: The fields of a sample's ``task`` that must be the ``tasks`` row's.
_TASK_FIELDS = {"id": "task_id", "source": "source", "instruction": "instruction", "outcome": "outcome"}
_FIX_DEST = "Fix: DEST was changed outside optin; restore it from a backup, or build into a new DEST"

Progress = Callable[[str, int, int], None]


# --- the result --------------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What an export wrote (also the content of ``optin-export.json``, with the tool and schema)."""

    format: str
    out: str
    dataset_version: int
    study: str
    published_at: str
    exported_at: str = ""
    trajectories: int = 0
    samples: int = 0
    shards_read: int = 0
    left_out: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEFT_OUT, 0))

    @property
    def tasks(self) -> int:
        """Every task of the version: exported or left out."""
        return self.trajectories + sum(self.left_out.values())

    def record(self) -> dict[str, Any]:
        """``optin-export.json``: what an operator needs to know which exports predate a withdrawal."""
        return {
            "schema": EXPORT_SCHEMA,
            "format": self.format,
            "file": RECORD_FILES[self.format],
            "dataset": {
                "study": self.study,
                "version": self.dataset_version,
                "published_at": self.published_at,
            },
            "exported_at": self.exported_at,
            "tool": {"optin": __version__},
            "written": {"trajectories": self.trajectories, "samples": self.samples, "images": self.samples},
            "left_out": dict(self.left_out),
            "tasks": self.tasks,
        }

    def to_json(self) -> dict[str, Any]:
        """``--json``: the record, where it went and how many shards were read."""
        return {**self.record(), "out": self.out, "shards_read": self.shards_read}

    def render(self) -> str:
        """What ``optin dataset export`` prints."""
        reasons = ", ".join(f"{n:,} {reason}" for reason, n in self.left_out.items() if n) or "none"
        left = sum(self.left_out.values())
        return "\n".join(
            [
                f"exported:  dataset version {self.dataset_version} of study {self.study} as {self.format}",
                f"written:   {plural(self.trajectories, 'trajectory', 'trajectories')}, "
                f"{plural(self.samples, 'step')} with their images, "
                f"to {self.out}",
                f"left out:  {left:,} of {plural(self.tasks, 'task')} ({reasons})",
                f"record:    {_join(self.out, EXPORT_FILE)} (the dataset version: redo exports made before "
                "a withdrawal)",
            ]
        )


def _join(where: str, name: str) -> str:
    return f"{where.rstrip('/')}/{name}"


# --- choosing trajectories from the tables (pure) ------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """A step to export: where its sample is in the shard, and which task it belongs to."""

    key: str
    session: str
    step: int
    task_id: str
    offset: int
    end: int
    json_offset: int
    json_size: int
    image_offset: int
    image_size: int


@dataclass(frozen=True)
class PartPlan:
    """One part's decisions: the tasks to export (their ``tasks`` rows, by (session, task id)), their
    steps in shard order, and every other task's reason."""

    tasks: dict[tuple[str, str], Mapping[str, Any]]
    steps: list[Wanted]
    left_out: Counter[str]


def _inconsistent(where: str, what: str) -> LayoutError:
    return LayoutError(f"{where} {what}. {_FIX_DEST}")


def plan_part(
    task_rows: Iterable[Mapping[str, Any]],
    step_rows: Iterable[Mapping[str, Any]],
    *,
    shard: str,
    shard_size: int,
    where: str = "the part",
) -> PartPlan:
    """Which tasks of a part are exported and which steps that needs (``steps`` rows of :data:`_STEP_COLUMNS`,
    ``tasks`` rows of :data:`_TASK_COLUMNS`).

    :raises LayoutError: the tables contradict each other or the shard (a task's steps are not
        ``step_first``..``step_last``, a step row names another shard or a byte range outside it or
        overlapping another): DEST was changed outside optin.
    """
    by_task: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for row in step_rows:
        if row["task_id"] is not None:
            by_task.setdefault((row["session"], row["task_id"]), []).append(row)
    plan = PartPlan({}, [], Counter())
    seen: set[tuple[str, str]] = set()
    for task in task_rows:
        ident = (task["session"], task["task_id"])
        if ident in seen:
            raise _inconsistent(where, "lists a task twice in its tasks table")
        seen.add(ident)
        rows = sorted(by_task.pop(ident, []), key=lambda r: r["step"])
        numbers = [r["step"] for r in rows]
        first = task["step_first"]
        expected = list(range(first, task["step_last"] + 1)) if first is not None else []
        if numbers != expected or len(rows) != task["step_count"]:
            raise _inconsistent(where, "has a task whose steps in the steps table are not its step range")
        reason = left_out_reason(task, [StepFacts.of_row(r) for r in rows])
        if reason is not None:
            plan.left_out[reason] += 1
            continue
        plan.tasks[ident] = task
        plan.steps.extend(_wanted(r, shard, where) for r in rows)
    if by_task:
        raise _inconsistent(where, "has steps of a task its tasks table does not list")
    plan.steps.sort(key=lambda w: w.offset)
    _check_ranges(plan.steps, shard_size, where)
    return plan


def _wanted(row: Mapping[str, Any], shard: str, where: str) -> Wanted:
    if row["shard"] != shard:
        raise _inconsistent(where, "has a steps row naming another shard")
    key = row["key"]
    try:
        session, step = parse_key(key)
    except ValueError:
        raise _inconsistent(where, "has a steps row whose key is not a sample key") from None
    if (session, step) != (row["session"], row["step"]):
        raise _inconsistent(where, "has a steps row whose key is not its session and step")
    return Wanted(
        key=key,
        session=session,
        step=step,
        task_id=row["task_id"],
        offset=row["shard_offset"],
        end=row["shard_end"],
        json_offset=row["json_offset"],
        json_size=row["json_size"],
        image_offset=row["image_offset"],
        image_size=row["image_size"],
    )


def _check_ranges(steps: Sequence[Wanted], shard_size: int, where: str) -> None:
    """Each sample's members lie in order inside its ``[offset, end)``, the samples one after another
    inside the shard, and a sample JSON is at most :data:`MAX_SAMPLE_JSON` bytes."""
    previous_end = 0
    for w in steps:
        ordered = (
            previous_end <= w.offset < w.json_offset
            and 0 < w.json_size <= MAX_SAMPLE_JSON
            and w.json_offset + w.json_size <= w.image_offset
            and w.image_size >= 0
            and w.image_offset + w.image_size <= w.end <= shard_size
        )
        if not ordered:
            raise _inconsistent(where, "has a steps row whose byte ranges are not inside its shard, in order")
        previous_end = w.end


def image_key(key: str) -> str:
    """OUT's ``images/<session>/<NNNNNN>.webp`` for a sample key, checked twice: the key's grammar
    (``[A-Za-z0-9][A-Za-z0-9_-]{0,79}_NNNNNN``) and the object-name grammar.

    :raises ValueError: it is not a sample key.
    """
    session, step = parse_key(key)
    path = image_path(key)
    if path != f"images/{session}/{step:06d}.webp":
        msg = "the image path of a sample key is not images/<session>/<NNNNNN>.webp"
        raise ValueError(msg)
    return check_key(path)


# --- OUT ---------------------------------------------------------------------------------------------


def _check_out_place(dest_where: str, out: str) -> None:
    """OUT is not DEST nor inside it (DEST inside OUT: OUT is not empty, refused later)."""
    if out.startswith("s3://") != dest_where.startswith("s3://"):
        return
    if out.startswith("s3://"):
        d_bucket, _, d_prefix = dest_where[len("s3://") :].partition("/")
        o_bucket, _, o_prefix = out[len("s3://") :].partition("/")
        d_prefix, o_prefix = d_prefix.strip("/"), o_prefix.strip("/")
        inside = d_bucket == o_bucket and (
            not d_prefix or o_prefix == d_prefix or o_prefix.startswith(d_prefix + "/")
        )
    else:
        d_path, o_path = Path(dest_where).resolve(), Path(out).resolve()
        inside = o_path == d_path or o_path.is_relative_to(d_path)
    if inside:
        msg = (
            f"OUT {out} is inside DEST {dest_where}: DEST holds only what its versions list. "
            "Fix: export to a folder or prefix outside DEST"
        )
        raise UsageError(msg)


def open_out(out: str) -> Dest:
    """OUT as a store to write: a local folder (created 0700 when absent) or an ``s3://`` prefix, empty.

    :raises UsageError: it holds something. :raises DestUnusable: a link, a file, another user's folder,
        a bucket that does not answer.
    """
    if not out.startswith("s3://"):
        try:
            st = os.lstat(out)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            msg = f"cannot look at OUT {out}: {exc.strerror or type(exc).__name__}. Fix: check the path"
            raise DestUnusable(msg) from None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a folder"
            msg = f"OUT {out} is {kind}; optin never follows links. Fix: give an absent or empty folder"
            raise DestUnusable(msg)
    dest = open_dest(out)
    try:
        fd = getattr(dest, "fd", None)  # a local OUT: every entry counts, hidden ones too
        if isinstance(fd, int):
            with os.scandir(fd) as entries:
                empty = next(entries, None) is None
        else:
            empty = next(iter(dest.list("")), None) is None
        if not empty:
            msg = (
                f"OUT {out} is not empty; an export never mixes with other files. "
                "Fix: give an absent or empty folder (or an s3:// prefix with no object)"
            )
            raise UsageError(msg)
    except BaseException:
        dest.close()
        raise
    return dest


# --- reading a shard ---------------------------------------------------------------------------------


class _Shard:
    """A shard read once, front to back, hashed as it goes."""

    def __init__(self, stream: BinaryIO, shown: str) -> None:
        self.stream = stream
        self.shown = shown
        self.pos = 0
        self.hash = hashlib.sha256()

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        while 0 < len(data) < n:  # a network stream may give less than asked before its end
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        if len(data) != n:
            raise _inconsistent(self.shown, f"ended early (at byte {self.pos + len(data):,})")
        self.hash.update(data)
        self.pos += n
        return data

    def skip_to(self, offset: int) -> None:
        while self.pos < offset:
            self._read(min(_CHUNK, offset - self.pos))

    def take(self, n: int) -> bytes:
        return self._read(n)

    def copy(self, n: int, writer: ObjectWriter) -> None:
        end = self.pos + n
        while self.pos < end:
            writer.write(self._read(min(_CHUNK, end - self.pos)))

    def finish(self, size: int, sha256: str) -> None:
        self.skip_to(size)
        if self.stream.read(1) or self.hash.hexdigest() != sha256:
            raise _inconsistent(self.shown, "is not the shard the version lists (SHA-256 or size)")


# --- the export --------------------------------------------------------------------------------------


class _Records:
    """The records file, streamed: JSON Lines (agentnet) or one JSON array (aguvis)."""

    def __init__(self, fmt: str, writer: ObjectWriter, dataset_version: int) -> None:
        self.fmt = fmt
        self.writer = writer
        self.version = dataset_version
        self.elements = 0

    def add(self, traj: Trajectory) -> None:
        if self.fmt == "agentnet":
            self.writer.write(canonical(agentnet(traj, self.version)) + b"\n")
            return
        for element in aguvis(traj, self.version):
            self.writer.write((b",\n" if self.elements else b"[\n") + canonical(element))
            self.elements += 1

    def close(self) -> None:
        if self.fmt == "aguvis":
            self.writer.write(b"\n]\n" if self.elements else b"[]\n")


def _sample(data: bytes, want: Wanted, shown: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or doc.get("key") != want.key or doc.get("step") != want.step:
        raise _inconsistent(shown, f"holds at byte {want.json_offset:,} no sample JSON of its steps row")
    return doc


def _trajectory(
    samples: list[dict[str, Any]], task: Mapping[str, Any], want: Wanted, shown: str
) -> Trajectory:
    """The trajectory of a chosen task from its sample JSONs, which must agree with the tables."""
    first = samples[0].get("task")
    agrees = isinstance(first, Mapping) and all(first.get(k) == task[c] for k, c in _TASK_FIELDS.items())
    try:
        traj = trajectory(want.session, first, samples) if agrees and isinstance(first, Mapping) else None
    except (ValueError, KeyError, TypeError):
        traj = None
    if not isinstance(traj, Trajectory):
        raise _inconsistent(shown, "holds samples of a task that do not agree with its tables")
    return traj


def _export_part(dest: Dest, part: PartObject, out: Dest, records: _Records, report: ExportReport) -> None:
    tasks_file, steps_file = part.tables["tasks"], part.tables["steps"]
    task_rows = tables.read_table(read_listed(dest, tasks_file), "tasks", where=dest.where(tasks_file.path))
    step_rows = tables.read_table(read_listed(dest, steps_file), "steps", where=dest.where(steps_file.path))
    plan = plan_part(
        task_rows.select(list(_TASK_COLUMNS)).to_pylist(),
        step_rows.select(list(_STEP_COLUMNS)).to_pylist(),
        shard=part.shard.path,
        shard_size=part.shard.size,
        where=f"part {part.id}",
    )
    del task_rows, step_rows
    for reason, n in plan.left_out.items():
        report.left_out[reason] += n
    if not plan.steps:
        return
    shown = dest.where(part.shard.path)
    held: dict[tuple[str, str], list[dict[str, Any]]] = {}
    stream, info = dest.reader(part.shard.path)
    with stream:
        if info.size != part.shard.size:
            raise _inconsistent(shown, "is not the shard the version lists (size)")
        shard = _Shard(stream, shown)
        for want in plan.steps:
            ident = (want.session, want.task_id)
            shard.skip_to(want.json_offset)
            doc = _sample(shard.take(want.json_size), want, shown)
            shard.skip_to(want.image_offset)
            with out.writer(image_key(want.key)) as image:
                shard.copy(want.image_size, image)
            report.samples += 1
            samples = held.setdefault(ident, [])
            samples.append(doc)
            task = plan.tasks[ident]
            if len(samples) == task["step_count"]:
                records.add(_trajectory(held.pop(ident), task, want, shown))
                report.trajectories += 1
        shard.finish(part.shard.size, part.shard.sha256)
    report.shards_read += 1


def _read_version(dest: Dest, where: str, version: int | None) -> Version:
    if version is not None:
        return read_version(dest, version)
    current = read_current(dest)
    if current is None:
        msg = f"DEST {where} has no published version. Fix: run optin dataset build first"
        raise UsageError(msg)
    return current


def _open_dataset(where: str) -> Dest:
    """DEST to read; a local one must exist (opening would create it)."""
    if not where.startswith("s3://") and "://" not in where:
        try:
            st = os.lstat(where)
        except OSError:
            st = None
        if st is None or not stat.S_ISDIR(st.st_mode):
            msg = f"DEST {where} is not a folder. Fix: give the folder or s3:// prefix a build wrote"
            raise UsageError(msg)
    return open_dest(where)


def run_export(
    where: str, fmt: str, out: str, *, version: int | None = None, progress: Progress | None = None
) -> ExportReport:
    """Export version ``version`` (default: the current one) of DEST ``where`` as ``fmt`` into OUT.

    :param progress: called as ``progress("export", parts done, parts)``.
    :raises UsageError: an unknown format, a version number below 1, no published version, OUT not
        empty or inside DEST (exit 2). :raises DestUnusable: OUT or DEST cannot be used (exit 2).
    :raises DestError: reading DEST or writing OUT failed, or DEST was changed outside optin (exit 1);
        OUT then holds no ``optin-export.json``.
    """
    if fmt not in RECORD_FILES:
        msg = f"--format {fmt!r} is not one of {', '.join(FORMATS)}. Fix: choose one of them"
        raise UsageError(msg)
    if version is not None and version < 1:
        msg = f"--version {version} is not a version number. Fix: give 1 or more (optin dataset stats)"
        raise UsageError(msg)
    with _open_dataset(where) as dest:
        chosen = _read_version(dest, where, version)
        _check_out_place(where, out)
        with open_out(out) as target:
            report = ExportReport(fmt, out, chosen.version, chosen.study.id, chosen.published_at)
            parts = chosen.parts
            if progress is not None:
                progress("export", 0, len(parts))
            with target.writer(RECORD_FILES[fmt]) as writer:
                records = _Records(fmt, writer, chosen.version)
                for n, part in enumerate(parts, 1):
                    _export_part(dest, part, target, records, report)
                    if progress is not None:
                        progress("export", n, len(parts))
                records.close()
            report.exported_at = utc(time.time_ns())
            target.put_new(EXPORT_FILE, canonical(report.record()) + b"\n")
    return report
