"""The Parquet tables of a part, and the ledger (docs/dataset.md, "Parquet tables", "The ledger").

A part's five tables — ``sessions``, ``steps``, ``events``, ``frames``, ``tasks`` — are made by
:class:`PartTables` from each checked :class:`~agent.export.bundle_checks.Bundle` the part holds
and its :class:`Placed` samples (a :class:`~agent.dataset.samples.Sample` and where the shard
writer put it).  Rows are buffered per table and written as a Parquet row group (zstd) every
:data:`ROW_GROUP_ROWS` rows, or sooner when the buffered text grows past
:data:`ROW_GROUP_BYTES`, into an in-memory file; so a part's rows are streamed, never held whole:
memory is one bundle (the caller's) plus one open row group per table plus the compressed files.

The schemas (:data:`SCHEMAS`) are the spec's columns, types and nullability; every table has
``part`` and ``build_version``; ``ingest_date`` is not stored (readers take it from the Hive path
``ingest_date=YYYY-MM-DD``).  Times are ``timestamp[ns, tz=UTC]``, from the first
``session_start`` marker's ``mono_ns`` / ``wall_ns`` as :mod:`agent.dataset.samples` computes
them (null without an anchor, or outside 64 bits).

:func:`check_bundle` runs every check :meth:`PartTables.add_bundle` makes of a bundle beyond
``optin inspect``'s and :func:`~agent.dataset.samples.samples`' (stated manifest fields the
``sessions`` table needs, every ``frames.jsonl`` line's geometry, the task list), raising
:class:`~agent.dataset.samples.SampleRefused` with its reason code: pass 1 calls it, so pass 2
never meets a bundle it cannot write.  :meth:`PartTables.add_bundle` checks everything before it
appends a row.

The ledger (:class:`LedgerRow`, :func:`ledger_bytes`, :func:`read_ledger`), :func:`read_table`
and :func:`filter_part` (a withdrawal's rewrite of a part without some sessions) complete it.
A file that is not the table it should be is refused with :class:`TableInvalid`.

Captured content (typed text, titles, names, instructions) goes into cells, never into a message.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from agent.canonical_json import canonical
from agent.dataset.dest import DestError
from agent.dataset.samples import BUNDLE_SCHEMAS, INT32_MAX, INT32_MIN, Sample, SampleRefused
from agent.export.bundle_checks import Bundle
from agent.export.counts import is_integer
from agent.export.recount import each_line, json_object, view
from agent.untrusted_text import visible

#: At most this many rows in a row group (64 Ki).
ROW_GROUP_ROWS = 64 * 1024
#: A row group is also closed once its rows' text (records, manifests, typed text) passes this,
#: so that no string column of one group nears Arrow's 2 GiB per array.
ROW_GROUP_BYTES = 128 << 20
#: The Parquet compression of every table.
COMPRESSION = "zstd"
#: A part's tables, in the order :meth:`PartTables.finish` gives them.
PART_TABLES = ("sessions", "steps", "events", "frames", "tasks")
#: A ``source`` column holds at most this many characters (escaped, then cut).
MAX_SOURCE_CHARS = 1024
#: ``redactions.where`` values (docs/dataset.md, sessions).
REDACTION_PLACES = ("typed", "paste", "titles", "screen", "instructions", "elements")
#: The ledger's ``outcome`` values.
INGESTED, QUARANTINED = "ingested", "quarantined"
#: ``loss`` fields that come from the ``session_stop`` marker (null without one).
_STOP_LOSS = ("dropped_events", "frame_failures", "frames_skipped", "pastes_lost")
#: ``loss.elements`` fields.
_ELEMENT_LOSS = ("found", "not_accessible", "no_element", "failed", "late", "dropped", "steps_without")
_PART_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1

# --- schemas -------------------------------------------------------------------------------------

_TS = pa.timestamp("ns", tz="UTC")
_I32, _I64, _F64, _STR, _BOOL = pa.int32(), pa.int64(), pa.float64(), pa.string(), pa.bool_()
_COUNTS = pa.map_(_STR, _I64)


def _f(name: str, kind: Any, nullable: bool = False) -> Any:
    return pa.field(name, kind, nullable=nullable)


def _n(name: str, kind: Any) -> Any:
    return pa.field(name, kind, nullable=True)


_TAIL = [_f("part", _STR), _f("build_version", _I64)]

#: Every table's columns, types and nullability (docs/dataset.md, "Parquet tables").
SCHEMAS: dict[str, Any] = {
    "sessions": pa.schema(
        [
            _f("session", _STR),
            _f("volunteer", _STR),
            _f("signing_key", _STR),
            _f("volunteer_verified", _BOOL),
            _f("bundle_sha256", _STR),
            _f("bundle_schema", _STR),
            _f("agent_version", _STR),
            _f("bundle_size", _I64),
            _f("source", _STR),
            _f("study_id", _STR),
            _f("study_name", _STR),
            _f("consent_version", _STR),
            _f("consent_text_sha256", _STR),
            _n("consent_terms_sha256", _STR),
            _f("consent_scopes", pa.list_(_STR)),
            _n("consent_granted_at", _TS),
            _n("utc_start", _TS),
            _f("duration_s", _F64),
            _f("steps", _I64),
            _f("frames", _I64),
            _f("events", _I64),
            _n("tasks", _I64),
            _f("steps_by_action", _COUNTS),
            _f(
                "redactions",
                pa.list_(pa.struct([_f("where", _STR), _f("entity", _STR), _f("count", _I64)])),
            ),
            _f("redaction_policy_sha256", _STR),
            _f("redaction_policy_version", _STR),
            _n("loss_dropped_events", _I64),
            _n("loss_frame_failures", _I64),
            _n("loss_frames_skipped", _I64),
            _n("loss_pastes_lost", _I64),
            _f("loss_frames_left_out_ocr_failed", _I64),
            _f("loss_pauses", _I64),
            _f("loss_cuts", _I64),
            _f("loss_paused_s", _F64),
            _f("loss_cut_s", _F64),
            _f("loss_clean_stop", _BOOL),
            _f("loss_store_problems", pa.list_(_STR)),
            _n("elements_api", _STR),
            _n(
                "loss_elements",
                pa.struct([_n(k, _I64) if k == "dropped" else _f(k, _I64) for k in _ELEMENT_LOSS]),
            ),
            _f("manifest", _STR),
            _f("first_seen", _TS),
            *_TAIL,
        ]
    ),
    "steps": pa.schema(
        [
            _f("key", _STR),
            _f("session", _STR),
            _f("volunteer", _STR),
            _f("step", _I32),
            _f("action", _STR),
            *(_n(k, _I32) for k in ("x", "y", "to_x", "to_y", "dx", "dy")),
            _n("button", _STR),
            _n("text", _STR),
            _f("keys", pa.list_(_STR)),
            *(_n(k, _F64) for k in ("norm_x", "norm_y", "norm_to_x", "norm_to_y")),
            _n("code", _STR),
            _f("has_image", _BOOL),
            *(_n(k, _I32) for k in ("frame_line", "frame_left", "frame_top", "frame_width", "frame_height")),
            _f("t_start_ns", _I64),
            _f("t_end_ns", _I64),
            _n("utc_start", _TS),
            _n("utc_end", _TS),
            _f("after_gap", _BOOL),
            # Every field of the window may be null: the OS may not tell its geometry (agent/events.py).
            _n(
                "window",
                pa.struct(
                    [
                        _n("title", _STR),
                        _n("app_class", _STR),
                        *(_n(k, _I32) for k in ("x", "y", "width", "height")),
                    ]
                ),
            ),
            _n("element", _STR),
            _n("element_role", _STR),
            _n("element_name", _STR),
            _n("task_id", _STR),
            _f("events", pa.list_(_I32)),
            _f("shard", _STR),
            *(
                _f(k, _I64)
                for k in (
                    "shard_offset",
                    "shard_end",
                    "json_offset",
                    "json_size",
                    "image_offset",
                    "image_size",
                )
            ),
            *_TAIL,
        ]
    ),
    "events": pa.schema(
        [
            _f("session", _STR),
            _f("volunteer", _STR),
            _f("line", _I32),
            _f("k", _STR),
            _f("t_ns", _I64),
            _n("utc", _TS),
            _f("record", _STR),
            *_TAIL,
        ]
    ),
    "frames": pa.schema(
        [
            _f("session", _STR),
            _f("volunteer", _STR),
            _f("line", _I32),
            _f("t_ns", _I64),
            _n("utc", _TS),
            *(_f(k, _I32) for k in ("left", "top", "width", "height")),
            _f("format", _STR),
            _f("reason", _STR),
            _f("member", _STR),
            _f("in_samples", _BOOL),
            *_TAIL,
        ]
    ),
    "tasks": pa.schema(
        [
            _f("session", _STR),
            _f("volunteer", _STR),
            _f("task_id", _STR),
            _f("source", _STR),
            _n("instruction", _STR),
            _n("hints_app", _STR),
            _n("hints_url", _STR),
            _n("time_limit_s", _I32),
            _f("outcome", _STR),
            _f("t_start_ns", _I64),
            _f("t_end_ns", _I64),
            _n("utc_start", _TS),
            _n("utc_end", _TS),
            _n("step_first", _I32),
            _n("step_last", _I32),
            _f("step_count", _I64),
            _f("steps_by_action", _COUNTS),
            *_TAIL,
        ]
    ),
    "ledger": pa.schema(
        [
            _f("sha256", _STR),
            _f("size", _I64),
            _f("source", _STR),
            _f("source_etag", _STR),
            _f("outcome", _STR),
            _n("reason", _STR),
            _n("stage", _STR),
            _n("session", _STR),
            _n("volunteer", _STR),
            _n("part", _STR),
            _f("first_seen", _TS),
            _f("build_version", _I64),
        ]
    ),
}


class TableInvalid(DestError):
    """A Parquet file of DEST is not the table it should be (another schema, or not Parquet at all)."""


@dataclass(frozen=True)
class Placed:
    """A sample and where the shard writer put it (the ``steps`` table's shard columns).

    :ivar shard: the shard's DEST-relative path; ``offset``/``end``: the sample's byte range in it;
        ``json_*``/``image_*``: each member's data (as in the shard index).
    """

    sample: Sample
    shard: str
    offset: int
    end: int
    json_offset: int
    json_size: int
    image_offset: int
    image_size: int


def source_name(name: str) -> str:
    """A SRC-relative name as the ``source`` columns hold it: escaped (visible), at most 1,024 characters."""
    return visible(name, limit=MAX_SOURCE_CHARS)


# --- checks of a bundle --------------------------------------------------------------------------


def _refuse(reason: str, message: str) -> NoReturn:
    raise SampleRefused(reason, message)


def _utf8(value: Any) -> bool:
    """``value`` is a string Arrow can store (no lone surrogate from a ``\\ud800`` escape)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any, what: str) -> str:
    if not _utf8(value):
        _refuse("manifest_types", f"the manifest's {what} is not a string (UTF-8)")
    text: str = value
    return text


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        _refuse("manifest_types", f"the manifest has no {what} object")
    return value


def _int32(value: Any) -> bool:
    return is_integer(value) and INT32_MIN <= value <= INT32_MAX


def _count(value: Any) -> int | None:
    """A stated count as an int64 cell, or None when it is not a non-negative 64-bit integer."""
    return value if is_integer(value) and value >= 0 else None


def _seconds(value: Any, what: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan
    except OverflowError:
        number = math.nan
    if not math.isfinite(number):
        _refuse("manifest_types", f"the manifest's {what} is not a finite number of seconds")
    return number


def timestamp_ns(text: Any) -> int | None:
    """An RFC 3339 time (``2026-11-27T21:30:00Z``) as nanoseconds since the epoch; None if it is not one."""
    if not isinstance(text, str) or not 0 < len(text) <= 64:
        return None
    iso = text[:-1] + "+00:00" if text[-1] in "Zz" else text
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    delta = when - _EPOCH
    ns = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
    return ns if _INT64_MIN <= ns <= _INT64_MAX else None


def clock_anchor(events_jsonl: bytes | memoryview) -> tuple[int, int] | None:
    """The first ``session_start`` marker's (``mono_ns``, ``wall_ns``), as samples.py reads it.

    Reads ``events.jsonl`` up to that marker only (normally its first line).
    """
    for line in each_line(events_jsonl):
        record = json_object(line)
        if record is None or record.get("k") != "marker" or record.get("marker") != "session_start":
            continue
        detail = record.get("detail")
        mono = detail.get("mono_ns") if isinstance(detail, Mapping) else None
        wall = detail.get("wall_ns") if isinstance(detail, Mapping) else None
        return (mono, wall) if is_integer(mono) and is_integer(wall) else None
    return None


def utc_ns(anchor: tuple[int, int] | None, t_ns: int) -> int | None:
    """``wall_ns + (t_ns - mono_ns)``, or None without an anchor or outside 64 bits."""
    if anchor is None:
        return None
    utc = anchor[1] + (t_ns - anchor[0])
    return utc if _INT64_MIN <= utc <= _INT64_MAX else None


@dataclass(frozen=True)
class _Checked:
    """What :func:`check_bundle` found, for :meth:`PartTables.add_bundle` to write."""

    session: dict[str, Any]  # the sessions row but part, build_version, source, sha256, size, events
    anchor: tuple[int, int] | None
    tasks: list[dict[str, Any]]


def check_bundle(bundle: Bundle) -> None:
    """Refuse a bundle whose rows the tables could not hold (call it in pass 1, after samples()).

    :raises SampleRefused: ``schema_unknown``, ``manifest_types`` (a stated field the ``sessions``
        table needs is missing or of the wrong type: the consent receipt's ``text_sha256`` and
        ``scopes``, the redaction policy's SHA-256 and version, ...), ``stream_invalid`` (a
        ``frames.jsonl`` line without 32-bit ``left``, ``top``, ``width``, ``height`` or string
        ``format`` and ``reason``), ``tasks_invalid``.
    """
    _check(bundle)


def _check(bundle: Bundle) -> _Checked:
    manifest = bundle.manifest
    schema = manifest.get("schema")
    if schema not in BUNDLE_SCHEMAS:
        _refuse("schema_unknown", f"the manifest's schema is not one of {', '.join(BUNDLE_SCHEMAS)}")
    v3 = schema == "optin-bundle/3"
    events = view(bundle.members, "events.jsonl") if "events.jsonl" in bundle.members else b""
    anchor = clock_anchor(events)
    frames = _check_frames(bundle)
    row = _session_fields(bundle, v3, anchor)
    row["frames"] = frames
    tasks = _task_rows(manifest, anchor) if v3 else []
    row["tasks"] = len(tasks) if v3 else None
    return _Checked(session=row, anchor=anchor, tasks=tasks)


def _session_fields(bundle: Bundle, v3: bool, anchor: tuple[int, int] | None) -> dict[str, Any]:
    manifest = bundle.manifest
    volunteer = _mapping(manifest.get("volunteer"), "volunteer")
    consent = _mapping(manifest.get("consent"), "consent")
    redaction = _mapping(manifest.get("redaction"), "redaction")
    policy = _mapping(redaction.get("policy"), "redaction.policy")
    loss = _mapping(manifest.get("loss"), "loss")
    scopes = consent.get("scopes")
    if not (isinstance(scopes, list) and all(_utf8(s) for s in scopes)):
        _refuse("manifest_types", "the manifest's consent.scopes is not a list of strings")
    terms_sha256 = consent.get("terms_sha256")
    problems = loss.get("store_problems")
    if not (isinstance(problems, list) and all(_utf8(p) for p in problems)):
        _refuse("manifest_types", "the manifest's loss.store_problems is not a list of strings")
    row: dict[str, Any] = {
        "session": _text(manifest.get("session"), "session"),
        "volunteer": _text(volunteer.get("id"), "volunteer.id"),
        "signing_key": _text(volunteer.get("signing_key"), "volunteer.signing_key"),
        "volunteer_verified": bool(bundle.id_verified),
        "bundle_schema": manifest["schema"],
        "agent_version": _text(manifest.get("agent_version"), "agent_version"),
        "study_id": _text(consent.get("study_id"), "consent.study_id"),
        "study_name": _text(consent.get("study_name"), "consent.study_name"),
        "consent_version": _text(consent.get("consent_version"), "consent.consent_version"),
        "consent_text_sha256": _text(consent.get("text_sha256"), "consent.text_sha256"),
        # "" in a receipt of an optin that had no terms yet: it covers nothing, so null.
        "consent_terms_sha256": terms_sha256 if _utf8(terms_sha256) and terms_sha256 else None,
        "consent_scopes": list(scopes),
        "consent_granted_at": timestamp_ns(consent.get("granted_at")),
        "utc_start": None if anchor is None else anchor[1],
        "duration_s": _seconds(manifest.get("duration_s"), "duration_s"),
        "steps": sum(bundle.steps_by_action.values()),
        "steps_by_action": sorted(bundle.steps_by_action.items()),
        "redactions": _redactions(redaction.get("counts")),
        "redaction_policy_sha256": _text(redaction.get("policy_sha256"), "redaction.policy_sha256"),
        "redaction_policy_version": _text(policy.get("version"), "redaction.policy.version"),
        **{f"loss_{k}": _count(loss.get(k)) for k in _STOP_LOSS},
        "loss_frames_left_out_ocr_failed": _stated_count(loss, "frames_left_out_ocr_failed"),
        "loss_pauses": _stated_count(loss, "pauses"),
        "loss_cuts": _stated_count(loss, "cuts"),
        "loss_paused_s": _seconds(loss.get("paused_s"), "loss.paused_s"),
        "loss_cut_s": _seconds(loss.get("cut_s"), "loss.cut_s"),
        "loss_clean_stop": _stated_bool(loss, "clean_stop"),
        "loss_store_problems": list(problems),
        "elements_api": None,
        "loss_elements": None,
        "manifest": bytes(bundle.manifest_bytes).decode("utf-8"),
    }
    if v3:
        elements = _mapping(manifest.get("elements"), "elements")
        api = elements.get("api")
        if api is not None and not _utf8(api):
            _refuse("manifest_types", "the manifest's elements.api is not a string or null")
        row["elements_api"] = api
        row["loss_elements"] = _element_loss(loss.get("elements"))
    return row


def _stated_count(loss: Mapping[str, Any], key: str) -> int:
    value = _count(loss.get(key))
    if value is None:
        _refuse("manifest_types", f"the manifest's loss.{key} is not a count")
    return value


def _stated_bool(loss: Mapping[str, Any], key: str) -> bool:
    value = loss.get(key)
    if not isinstance(value, bool):
        _refuse("manifest_types", f"the manifest's loss.{key} is not true or false")
    return value


def _redactions(counts: Any) -> list[dict[str, Any]]:
    """``redaction.counts`` as (where, entity, count) rows, places of the spec only, zeros left out."""
    if not isinstance(counts, Mapping):
        _refuse("manifest_types", "the manifest's redaction.counts is not a table of counts")
    out: list[dict[str, Any]] = []
    for where in REDACTION_PLACES:
        table = counts.get(where, {})
        if not isinstance(table, Mapping):
            _refuse("manifest_types", f"the manifest's redaction.counts.{where} is not a table of counts")
        for entity, n in sorted(table.items()):
            if not (_utf8(entity) and _count(n) is not None):
                _refuse("manifest_types", f"the manifest's redaction.counts.{where} is not a table of counts")
            if n:
                out.append({"where": where, "entity": entity, "count": n})
    return out


def _element_loss(value: Any) -> dict[str, int | None] | None:
    if value is None:
        return None
    ok = isinstance(value, Mapping) and all(
        _count(value.get(k)) is not None or (k == "dropped" and value.get(k) is None) for k in _ELEMENT_LOSS
    )
    if not ok:
        _refuse("manifest_types", "the manifest's loss.elements is not null or a table of counts")
    return {k: value.get(k) for k in _ELEMENT_LOSS}


def _frame_row(record: Mapping[str, Any] | None) -> bool:
    return (
        isinstance(record, Mapping)
        and is_integer(record.get("t_ns"))
        and all(_int32(record.get(k)) for k in ("left", "top", "width", "height"))
        and all(_utf8(record.get(k)) for k in ("format", "reason", "member"))
    )


def _check_frames(bundle: Bundle) -> int:
    """Each ``frames.jsonl`` line has what its ``frames`` row needs; how many lines."""
    if "frames.jsonl" not in bundle.members:
        return 0
    count = 0
    for line in each_line(view(bundle.members, "frames.jsonl")):
        if not _frame_row(json_object(line)):
            _refuse(
                "stream_invalid",
                f"frames.jsonl line {count + 1} has no 32-bit left, top, width and height, or no format, "
                "reason and member strings",
            )
        count += 1
    return count


def _task_rows(manifest: Mapping[str, Any], anchor: tuple[int, int] | None) -> list[dict[str, Any]]:
    tasks = manifest.get("tasks")
    if not isinstance(tasks, list):
        _refuse("tasks_invalid", "the manifest's tasks is not a list")
    rows = []
    for n, task in enumerate(tasks):
        row = _task_row(task, anchor)
        if row is None:
            _refuse("tasks_invalid", f"task {n + 1} of the manifest's tasks is not a task object")
        rows.append(row)
    return rows


def _task_row(task: Any, anchor: tuple[int, int] | None) -> dict[str, Any] | None:
    """A ``tasks`` row of a manifest task (less ``session``, ``volunteer``, ``part``, ...), or None."""
    if not isinstance(task, Mapping):
        return None
    hints, steps = task.get("hints"), task.get("steps")
    start, end = task.get("t_start_ns"), task.get("t_end_ns")
    if not (
        isinstance(hints, Mapping) and isinstance(steps, Mapping) and is_integer(start) and is_integer(end)
    ):
        return None
    span, by_action = steps.get("range"), steps.get("by_action")
    if not (span is None or (isinstance(span, list) and len(span) == 2 and all(_int32(v) for v in span))):
        return None
    ok = (
        all(_utf8(task.get(k)) for k in ("id", "source", "outcome"))
        and all(v is None or _utf8(v) for v in (task.get("instruction"), hints.get("app"), hints.get("url")))
        and (task.get("time_limit_s") is None or _int32(task.get("time_limit_s")))
        and _count(steps.get("count")) is not None
        and isinstance(by_action, Mapping)
        and all(_utf8(k) and _count(v) is not None for k, v in by_action.items())
    )
    if not ok or not isinstance(by_action, Mapping):
        return None
    return {
        "task_id": task["id"],
        "source": task["source"],
        "instruction": task.get("instruction"),
        "hints_app": hints.get("app"),
        "hints_url": hints.get("url"),
        "time_limit_s": task.get("time_limit_s"),
        "outcome": task["outcome"],
        "t_start_ns": start,
        "t_end_ns": end,
        "utc_start": utc_ns(anchor, start),
        "utc_end": utc_ns(anchor, end),
        "step_first": None if span is None else span[0],
        "step_last": None if span is None else span[1],
        "step_count": steps["count"],
        "steps_by_action": sorted(by_action.items()),
    }


# --- writing -------------------------------------------------------------------------------------


class _TableFile:
    """One table's Parquet file in memory, written a row group at a time (rows or Arrow tables in)."""

    def __init__(self, schema: Any, row_group_rows: int, row_group_bytes: int) -> None:
        self.schema = schema
        self.names = schema.names
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.sink = pa.BufferOutputStream()
        self.writer = pq.ParquetWriter(self.sink, schema, compression=COMPRESSION)
        self.columns: list[list[Any]] = [[] for _ in self.names]
        self.rows = 0
        self.weight = 0
        self.pending: list[Any] = []  # Arrow tables (filter_part)
        self.pending_rows = 0
        self.count = 0

    def add(self, row: Mapping[str, Any], weight: int = 0) -> None:
        """Buffer one row (every column of the schema); ``weight``: bytes of its long texts."""
        self.add_values([row[name] for name in self.names], weight)

    def add_values(self, values: Sequence[Any], weight: int = 0) -> None:
        """Buffer one row given as its values in the schema's column order."""
        for column, value in zip(self.columns, values, strict=True):
            column.append(value)
        self.rows += 1
        self.weight += weight
        if self.rows >= self.row_group_rows or self.weight >= self.row_group_bytes:
            self._flush_rows()

    def _flush_rows(self) -> None:
        if self.rows:
            arrays = [
                pa.array(column, type=field.type)
                for column, field in zip(self.columns, self.schema, strict=True)
            ]
            self.columns, self.rows, self.weight = [[] for _ in self.names], 0, 0
            self._write(pa.Table.from_arrays(arrays, schema=self.schema))

    def add_table(self, table: Any) -> None:
        """Buffer an Arrow table of this schema; write whole row groups of it as they fill."""
        if table.num_rows == 0:
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self.row_group_rows:
            whole = pa.concat_tables(self.pending)
            self._write(whole.slice(0, self.row_group_rows))
            rest = whole.slice(self.row_group_rows)
            self.pending, self.pending_rows = [rest], rest.num_rows

    def _write(self, table: Any) -> None:
        self.writer.write_table(table, row_group_size=self.row_group_rows)
        self.count += table.num_rows

    def finish(self) -> tuple[bytes, int]:
        self._flush_rows()
        if self.pending_rows:
            self._write(pa.concat_tables(self.pending))
        self.pending, self.pending_rows = [], 0
        self.writer.close()
        return self.sink.getvalue().to_pybytes(), self.count


def _check_part(part: str) -> None:
    if not (isinstance(part, str) and _PART_ID.fullmatch(part)):
        msg = f"part id {part!r} is not 32 lower-case hex digits"
        raise ValueError(msg)


class PartTables:
    """The five table files of one part, bundle by bundle (docs/dataset.md, "Parts").

    Add bundles in the part's order (pseudonym, then session id); within a bundle the rows keep
    step and line order.  A bundle that fails a check is refused before any of its rows is
    buffered; any other failure halfway leaves the object unusable (start the part again).
    """

    def __init__(
        self,
        part: str,
        build_version: int,
        first_seen_ns: int,
        *,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
    ) -> None:
        """:param row_group_rows: rows per row group (the spec's 64 Ki; smaller in tests)."""
        _check_part(part)
        if not (is_integer(build_version) and build_version >= 0 and is_integer(first_seen_ns)):
            msg = "build_version must be a non-negative integer and first_seen_ns a 64-bit integer"
            raise ValueError(msg)
        if not (
            isinstance(row_group_rows, int) and 1 <= row_group_rows <= ROW_GROUP_ROWS and row_group_bytes >= 1
        ):
            msg = f"row_group_rows must be from 1 to {ROW_GROUP_ROWS}, and row_group_bytes at least 1"
            raise ValueError(msg)
        self.part = part
        self.build_version = build_version
        self.first_seen_ns = first_seen_ns
        self._files = {
            name: _TableFile(SCHEMAS[name], row_group_rows, row_group_bytes) for name in PART_TABLES
        }
        self._last: tuple[str, str] | None = None
        self._state = "open"

    def add_bundle(
        self, bundle: Bundle, *, sha256: str, size: int, source: str, placed: Sequence[Placed]
    ) -> None:
        """Append a bundle's rows: one ``sessions`` row, a ``steps`` row per placed sample, an
        ``events`` row per ``events.jsonl`` line, a ``frames`` row per ``frames.jsonl`` line and a
        ``tasks`` row per manifest task.

        :param sha256: the ``.optin.tar.age`` file's SHA-256 (hex); ``size``: its bytes;
            ``source``: its SRC-relative name (escaped and cut here).
        :param placed: the bundle's samples in step order, every step once, where the shard has them.
        :raises SampleRefused: :func:`check_bundle` refuses it (nothing of it was added).
        :raises ValueError: the arguments do not fit (samples of another session, out of order,
            a bundle not after the previous one in (pseudonym, session) order, a closed object).
        """
        if self._state != "open":
            msg = f"the part's tables are {self._state}: no bundle can be added"
            raise ValueError(msg)
        checked = _check(bundle)
        session, volunteer = checked.session["session"], checked.session["volunteer"]
        _check_placed(bundle, session, placed)
        if not (isinstance(sha256, str) and _SHA256.fullmatch(sha256) and is_integer(size) and size >= 0):
            msg = "sha256 must be 64 lower-case hex digits and size a non-negative integer"
            raise ValueError(msg)
        order = (volunteer, session)
        if self._last is not None and order <= self._last:
            msg = "bundles must be added in (pseudonym, session id) order, each session once"
            raise ValueError(msg)
        self._state = "broken (a bundle failed halfway)"
        tail = {"part": self.part, "build_version": self.build_version}
        who = {"session": session, "volunteer": volunteer}
        self._add_steps(placed, bundle, tail)
        events = self._add_events(bundle, who, tail, checked.anchor)
        self._add_frames(bundle, who, tail, checked.anchor, placed)
        for task in checked.tasks:
            self._files["tasks"].add({**who, **task, **tail})
        row: dict[str, Any] = {
            **checked.session,
            "bundle_sha256": sha256,
            "bundle_size": size,
            "source": source_name(source),
            "events": events,
            "first_seen": self.first_seen_ns,
            **tail,
        }
        self._files["sessions"].add(row, len(row["manifest"]))
        self._last = order
        self._state = "open"

    def _add_steps(self, placed: Sequence[Placed], bundle: Bundle, tail: dict[str, Any]) -> None:
        steps = self._files["steps"]
        for where in placed:
            doc = where.sample.doc
            member = json.loads(bundle.members[f"{where.sample.step:06d}.json"])  # checked by inspect
            row = _step_row(doc, member["events"], where)
            steps.add({**row, **tail}, len(row["text"] or "") + len(row["element"] or ""))

    def _add_events(
        self, bundle: Bundle, who: dict[str, str], tail: dict[str, Any], anchor: tuple[int, int] | None
    ) -> int:
        table = self._files["events"]
        session, volunteer, part, version = (
            who["session"],
            who["volunteer"],
            tail["part"],
            tail["build_version"],
        )
        count = 0
        if "events.jsonl" not in bundle.members:  # inspect refuses such a bundle; nothing to write
            return count
        for line in each_line(view(bundle.members, "events.jsonl")):
            # The record is the line as the bundle has it: canonical JSON, valid UTF-8, a JSON object
            # of version 1 with a kind and a t_ns (inspect parsed it strictly already).
            text = line.decode("utf-8").removesuffix("\n")
            record = json.loads(text)
            t_ns = record["t_ns"]
            table.add_values(
                (session, volunteer, count, record["k"], t_ns, utc_ns(anchor, t_ns), text, part, version),
                len(text),
            )
            count += 1
        return count

    def _add_frames(
        self,
        bundle: Bundle,
        who: dict[str, str],
        tail: dict[str, Any],
        anchor: tuple[int, int] | None,
        placed: Sequence[Placed],
    ) -> None:
        table = self._files["frames"]
        used = {p.sample.doc["frame"]["line"] for p in placed if p.sample.has_image and p.sample.doc["frame"]}
        if "frames.jsonl" not in bundle.members:
            return
        for n, line in enumerate(each_line(view(bundle.members, "frames.jsonl"))):
            f = json.loads(line)  # check_bundle checked every field of it
            table.add(
                {
                    **who,
                    "line": n,
                    "t_ns": f["t_ns"],
                    "utc": utc_ns(anchor, f["t_ns"]),
                    **{k: f[k] for k in ("left", "top", "width", "height", "format", "reason", "member")},
                    "in_samples": n in used,
                    **tail,
                }
            )

    def finish(self) -> dict[str, tuple[bytes, int]]:
        """Each table's Parquet bytes and row count, in :data:`PART_TABLES` order (a table without
        rows is a valid file with its schema and no row group)."""
        if self._state != "open":
            msg = f"the part's tables are {self._state}"
            raise ValueError(msg)
        self._state = "finished"
        return {name: self._files[name].finish() for name in PART_TABLES}


def _check_placed(bundle: Bundle, session: str, placed: Sequence[Placed]) -> None:
    steps = sum(bundle.steps_by_action.values())
    if len(placed) != steps:
        msg = f"{len(placed)} placed samples for a bundle of {steps} steps"
        raise ValueError(msg)
    for n, where in enumerate(placed):
        sample = where.sample
        if sample.step != n or sample.doc.get("session") != session or sample.doc.get("step") != n:
            msg = f"placed sample {n} is not step {n} of the bundle's session"
            raise ValueError(msg)
        numbers = (
            where.offset,
            where.end,
            where.json_offset,
            where.json_size,
            where.image_offset,
            where.image_size,
        )
        if not (
            isinstance(where.shard, str) and where.shard and all(is_integer(v) and v >= 0 for v in numbers)
        ):
            msg = f"placed sample {n} has no shard path or a negative offset"
            raise ValueError(msg)


def _step_row(doc: Mapping[str, Any], events: Any, where: Placed) -> dict[str, Any]:
    raw, norm, frame = doc["raw"], doc["norm"], doc["frame"]
    element, task = doc["element"], doc["task"]
    return {
        "key": doc["key"],
        "session": doc["session"],
        "volunteer": doc["volunteer"],
        "step": doc["step"],
        "action": doc["action"],
        **{k: raw[k] for k in ("x", "y", "to_x", "to_y", "dx", "dy", "button", "text", "keys")},
        **{f"norm_{k}": norm[k] for k in ("x", "y", "to_x", "to_y")},
        "code": norm["code"],
        "has_image": doc["has_image"],
        "frame_line": None if frame is None else frame["line"],
        **{f"frame_{k}": None if frame is None else frame[k] for k in ("left", "top", "width", "height")},
        "t_start_ns": doc["t_start_ns"],
        "t_end_ns": doc["t_end_ns"],
        "utc_start": doc["utc_start_ns"],
        "utc_end": doc["utc_end_ns"],
        "after_gap": doc["after_gap"],
        "window": doc["window"],
        "element": None if element is None else canonical(element).decode("utf-8"),
        "element_role": None if element is None else element.get("role"),
        "element_name": None if element is None else element.get("name"),
        "task_id": None if task is None else task["id"],
        "events": list(events),
        "shard": where.shard,
        "shard_offset": where.offset,
        "shard_end": where.end,
        "json_offset": where.json_offset,
        "json_size": where.json_size,
        "image_offset": where.image_offset,
        "image_size": where.image_size,
    }


# --- reading and rewriting -------------------------------------------------------------------------


def _open(data: bytes | memoryview, table: str, where: str) -> Any:
    """``data`` as a Parquet file of ``table``'s exact schema, or :class:`TableInvalid`."""
    if table not in SCHEMAS:
        msg = f"{table!r} is not a table of optin-dataset/1 ({', '.join(SCHEMAS)})"
        raise ValueError(msg)
    fix = "Fix: the file was changed or replaced in DEST; restore it, or rebuild the dataset"
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        got = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        msg = f"{where} is not a Parquet file ({type(exc).__name__}). {fix}"
        raise TableInvalid(msg) from None
    want = SCHEMAS[table]
    if not got.equals(want, check_metadata=False):
        differs = [
            name
            for name in dict.fromkeys([*want.names, *got.names])
            if name not in got.names
            or name not in want.names
            or not got.field(name).equals(want.field(name), check_metadata=False)
        ]
        shown = ", ".join(visible(d, limit=40) for d in differs[:5])
        msg = f"{where} is not the {table} table of optin-dataset/1 (columns that differ: {shown}). {fix}"
        raise TableInvalid(msg)
    return parquet


def _read(parquet: Any, where: str) -> Any:
    try:
        return parquet.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = f"{where} cannot be read ({type(exc).__name__}): the file is damaged"
        raise TableInvalid(msg) from None


def read_table(data: bytes | memoryview, table: str, *, where: str | None = None) -> Any:
    """A table file's rows as a ``pyarrow.Table``, after checking it has exactly ``table``'s schema.

    :param where: the file as messages name it (a DEST-relative path).
    :raises TableInvalid: not Parquet, another schema, or damaged.
    """
    label = where or f"the {table} table file"
    return _read(_open(data, table, label), label)


def filter_part(
    tables: Mapping[str, bytes | memoryview],
    *,
    drop_sessions: Iterable[str],
    part: str,
    row_group_rows: int = ROW_GROUP_ROWS,
    shard: str | None = None,
    shift: Mapping[str, int] | None = None,
) -> dict[str, tuple[bytes, int]]:
    """A part's table files without the rows of ``drop_sessions``, their ``part`` set to ``part``.

    Read and written a row group at a time; every other row and column (``build_version``
    included) is kept as it is, in order.  With ``shard`` (the new part's shard path) and
    ``shift`` (per kept sample key, its new offset minus its old one: the withdrawal copies each
    sample's tar fragment byte for byte, so every range moves by the same amount), the ``steps``
    table's ``shard`` column is set to ``shard`` and ``shard_offset``, ``shard_end``,
    ``json_offset`` and ``image_offset`` are moved by the key's shift.

    :returns: each table's new Parquet bytes and row count.
    :raises TableInvalid: a file is not its table.
    :raises ValueError: ``shard`` without ``shift``, or a kept sample key that ``shift`` lacks.
    """
    _check_part(part)
    if (shard is None) != (shift is None):
        msg = "filter_part needs both shard and shift, or neither"
        raise ValueError(msg)
    drop = pa.array(sorted(set(drop_sessions)), type=_STR)
    out: dict[str, tuple[bytes, int]] = {}
    for name, data in tables.items():
        if name not in PART_TABLES:
            msg = f"{name!r} is not a table of a part ({', '.join(PART_TABLES)})"
            raise ValueError(msg)
        label = f"the {name} table file"
        parquet = _open(data, name, label)
        schema = SCHEMAS[name]
        target = _TableFile(schema, row_group_rows, ROW_GROUP_BYTES)
        index = schema.get_field_index("part")
        for group in range(parquet.num_row_groups):
            try:
                rows = parquet.read_row_group(group)
            except (pa.ArrowException, OSError, ValueError) as exc:
                msg = f"{label} cannot be read ({type(exc).__name__}): the file is damaged"
                raise TableInvalid(msg) from None
            kept = rows.filter(pc.invert(pc.is_in(rows.column("session"), value_set=drop)))
            kept = kept.set_column(index, schema.field(index), pa.array([part] * kept.num_rows, type=_STR))
            if name == "steps" and shard is not None and shift is not None:
                kept = _moved(kept, schema, shard, shift)
            target.add_table(kept)
        out[name] = target.finish()
    return out


def _moved(steps: Any, schema: Any, shard: str, shift: Mapping[str, int]) -> Any:
    """``steps`` rows pointing into ``shard``, each sample's byte ranges moved by its key's shift."""
    try:
        deltas = pa.array([shift[key] for key in steps.column("key").to_pylist()], type=_I64)
    except KeyError:
        msg = "a kept sample of the steps table has no new place in the shard"
        raise ValueError(msg) from None
    at = schema.get_field_index("shard")
    steps = steps.set_column(at, schema.field(at), pa.array([shard] * steps.num_rows, type=_STR))
    for column in ("shard_offset", "shard_end", "json_offset", "image_offset"):
        at = schema.get_field_index(column)
        steps = steps.set_column(at, schema.field(at), pc.add(steps.column(column), deltas))
    return steps


# --- the ledger ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerRow:
    """One bundle a build ingested or quarantined (docs/dataset.md, "The ledger and the quarantine")."""

    sha256: str
    size: int
    source: str
    source_etag: str
    outcome: str
    reason: str | None
    stage: str | None
    session: str | None
    volunteer: str | None
    part: str | None
    first_seen_ns: int
    build_version: int


_LEDGER_FIELDS = [f.name for f in fields(LedgerRow)]


def _ledger_problem(row: LedgerRow) -> str | None:
    """Why ``row`` is not a ledger row, or None."""
    problem = None
    if not (isinstance(row.sha256, str) and _SHA256.fullmatch(row.sha256)):
        problem = "its sha256 is not 64 lower-case hex digits"
    elif not (is_integer(row.size) and row.size >= 0):
        problem = "its size is not a non-negative integer"
    elif not (_utf8(row.source) and _utf8(row.source_etag)):
        problem = "its source or source_etag is not a string"
    elif not all(v is None or _utf8(v) for v in (row.session, row.volunteer, row.reason, row.stage)):
        problem = "its session, volunteer, reason or stage is not a string or null"
    elif not (is_integer(row.first_seen_ns) and is_integer(row.build_version) and row.build_version >= 0):
        problem = "its first_seen or build_version is not an integer"
    elif row.outcome == INGESTED:
        if (
            row.reason is not None
            or row.stage is not None
            or not (isinstance(row.part, str) and _PART_ID.fullmatch(row.part))
        ):
            problem = "it is ingested but has a reason or stage, or no part id"
    elif row.outcome == QUARANTINED:
        if not (row.reason and row.stage) or row.part is not None:
            problem = "it is quarantined but has no reason or stage, or has a part"
    else:
        problem = f"its outcome is not {INGESTED} or {QUARANTINED}"
    return problem


def ledger_bytes(rows: Iterable[LedgerRow]) -> bytes:
    """The ledger file of ``rows``: Parquet, sorted by ``sha256`` (each bundle once), sources escaped.

    :raises ValueError: a row breaks a rule of the ledger (the message says which row and rule).
    """
    ordered = sorted(rows, key=lambda r: r.sha256 if isinstance(r.sha256, str) else "")
    out = _TableFile(SCHEMAS["ledger"], ROW_GROUP_ROWS, ROW_GROUP_BYTES)
    previous = None
    for n, row in enumerate(ordered):
        problem = _ledger_problem(row)
        if problem is None and row.sha256 == previous:
            problem = "its sha256 is listed twice"
        if problem is not None:
            msg = f"ledger row {n + 1} (sorted by sha256): {problem}"
            raise ValueError(msg)
        previous = row.sha256
        cells = {name: getattr(row, name) for name in _LEDGER_FIELDS}
        cells["first_seen"] = cells.pop("first_seen_ns")
        cells["source"] = source_name(row.source)
        out.add(cells)
    data, _ = out.finish()
    return data


def read_ledger(data: bytes | memoryview, *, where: str = "the ledger file") -> list[LedgerRow]:
    """The rows of a ledger file, after checking its schema and every row.

    :raises TableInvalid: not Parquet, another table, or a row that breaks a rule of the ledger.
    """
    table = _read(_open(data, "ledger", where), where)
    table = table.set_column(
        table.schema.get_field_index("first_seen"),
        "first_seen_ns",
        table.column("first_seen").cast(_I64),
    )
    rows = []
    for n, cells in enumerate(table.to_pylist()):
        row = LedgerRow(**cells)
        problem = _ledger_problem(row)
        if problem is not None:
            msg = (
                f"{where} row {n + 1} is not a ledger row: {problem}. "
                "Fix: the file was changed in DEST; restore it or rebuild"
            )
            raise TableInvalid(msg)
        rows.append(row)
    return rows


__all__ = [
    "COMPRESSION",
    "INGESTED",
    "MAX_SOURCE_CHARS",
    "PART_TABLES",
    "QUARANTINED",
    "REDACTION_PLACES",
    "ROW_GROUP_BYTES",
    "ROW_GROUP_ROWS",
    "SCHEMAS",
    "LedgerRow",
    "PartTables",
    "Placed",
    "TableInvalid",
    "check_bundle",
    "clock_anchor",
    "filter_part",
    "ledger_bytes",
    "read_ledger",
    "read_table",
    "source_name",
    "timestamp_ns",
    "utc_ns",
]
