"""The Parquet tables of a part and the ledger (agent/dataset/tables.py; docs/dataset.md, "Parquet tables").

Bundles are real: tar members from the spec's words (tests/unit/test_inspect.py and
tests/hostile/test_bundles.py helpers), a signed manifest, age-encrypted, opened with
agent.export.inspect (every check of ``optin inspect``), made into samples by
agent.dataset.samples and placed at made-up shard offsets.  What the tables write is read back
with pyarrow and with DuckDB over files laid out as DEST lays them out
(``tables/<table>/ingest_date=YYYY-MM-DD/<part>.parquet``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from agent.dataset import tables
from agent.dataset.samples import SampleRefused, samples
from agent.dataset.tables import (
    PART_TABLES,
    ROW_GROUP_ROWS,
    SCHEMAS,
    LedgerRow,
    PartTables,
    Placed,
    TableInvalid,
    check_bundle,
    filter_part,
    ledger_bytes,
    read_ledger,
    read_table,
)
from agent.export import inspect
from agent.export.bundle_checks import Bundle
from agent.frame_codec import encode_image
from agent.store import signing
from tests.hostile.test_bundles import INSTRUCTION, TERMS, v3_bundle, v3_events, v3_steps, v3_task
from tests.study.synth import make_bundles, make_study_identity
from tests.unit.test_inspect import (
    SAMPLE_LOSS,
    SESSION,
    STUDY,
    STUDY_KEY,
    VOLUNTEER,
    canonical,
    entries_for,
    manifest_for,
    seal,
    tar_of,
    v1_manifest_for,
)

PART = "0123456789abcdef0123456789abcdef"
NEW_PART = "fedcba9876543210fedcba9876543210"
OTHER_SESSION = "20261128T050000Z-9c0d1e2f"
OTHER_VOLUNTEER = bytes(range(1, 33))
#: The session_start anchor: mono 0 is 2026-11-28T06:00:00Z.
WALL = 1_795_845_600_000_000_000
GRANTED = "2026-11-27T21:30:00Z"
GRANTED_NS = 1_795_815_000_000_000_000
SHA = "ab" * 32
SHA2 = "cd" * 32
FIRST_SEEN = 1_796_544_000_000_000_000  # 2026-12-06T00:00:00Z
DATE = "ingest_date=2026-12-06"
W, H = 64, 40
CONSENT: dict[str, Any] = {
    "study_id": STUDY,
    "study_name": "Web tasks",
    "consent_version": "1",
    "text_sha256": "1f" * 32,
    "scopes": ["keyboard", "pointer", "screen", "window_titles"],
    "granted_at": GRANTED,
    "agent_version": "0.3.0",
    "terms_sha256": "2e" * 32,
    "terms": TERMS,
}
POLICY: dict[str, Any] = {"name": "optin-redaction", "version": "4"}
REDACTION: dict[str, Any] = {
    "policy": POLICY,
    "policy_sha256": "3d" * 32,
    "frames_left_out_ocr_failed": 0,
    "counts": {"typed": {}, "paste": {}, "titles": {"HOSTNAME": 2}, "screen": {"EMAIL": 1, "TYPED": 0}},
}


def webp() -> bytes:
    return encode_image(Image.new("RGB", (W, H), (200, 10, 10)))


def frame_line(t_ns: int, member: str, reason: str = "click") -> dict[str, Any]:
    geometry = {"left": 0, "top": 0, "width": W, "height": H, "format": "webp"}
    return {"v": 1, "k": "frame", "t_ns": t_ns, **geometry, "reason": reason, "member": member}


def anchored(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first = {**events[0], "detail": {"mono_ns": 0, "wall_ns": WALL}}
    return [first, *events[1:]]


def lines(records: list[dict[str, Any]]) -> bytes:
    return b"".join(canonical(r) + b"\n" for r in records)


def kinds(events: list[dict[str, Any]], frames: int) -> dict[str, int]:
    out: dict[str, int] = {"frame": frames} if frames else {}
    for e in events:
        out[e["k"]] = out.get(e["k"], 0) + 1
    return dict(sorted(out.items()))


def v3_tar(
    *, session: str = SESSION, signer: bytes = VOLUNTEER, frames: list[dict[str, Any]] | None = None
) -> bytes:
    """An optin-bundle/3 tar: the sign-in task, a click with a frame, Enter without one, an unused frame."""
    events = anchored(v3_events())
    steps = v3_steps()
    steps[0]["frame"] = 0
    frames = (
        [frame_line(1_500_000_000, "000000.webp"), frame_line(3_500_000_000, "frames/000001.webp", "settled")]
        if frames is None
        else frames
    )
    members = {
        "tasks.jsonl": lines([v3_task()]),
        "000000.json": canonical(steps[0]),
        "000000.webp": webp(),
        "000001.json": canonical(steps[1]),
        "events.jsonl": lines(events),
        "frames.jsonl": lines(frames),
        "frames/000001.webp": encode_image(Image.new("RGB", (W, H), (1, 2, 3))),
    }
    manifest = manifest_for(
        members,
        signer=signer,
        schema="optin-bundle/3",
        agent_version="0.3.0",
        session=session,
        consent=CONSENT,
        redaction={**REDACTION, "counts": {**REDACTION["counts"], "instructions": {}, "elements": {}}},
        tasks=[v3_task()],
        elements={"version": 1, "api": None},
        steps={"version": 2, "count": 2, "by_action": {"click": 1, "key": 1}},
        counts=kinds(events, len(frames)),
        loss={**SAMPLE_LOSS, "elements": None},
        duration_s=5.0,
    )
    return tar_of(entries_for(members, manifest, signer=signer, session=session))


def old_tar(schema: str = "optin-bundle/2", *, session: str = SESSION) -> bytes:
    """An optin-bundle/2 (or /1) tar: a click with a frame and Enter, no tasks, no elements."""
    events = [e for e in anchored(v3_events()) if e["k"] not in ("task_start", "task_end")]
    steps: list[dict[str, Any]] = [
        {"action": "click", "x": 3, "y": 4, "button": "left", "frame": 0, "events": [1, 2]},
        {"action": "key", "keys": ["enter"], "frame": None, "events": [3]},
    ]
    steps[0].update(t_start_ns=2_000_000_000, t_end_ns=2_100_000_000)
    steps[1].update(t_start_ns=3_000_000_000, t_end_ns=3_000_000_000)
    frames = [frame_line(1_500_000_000, "000000.webp")]
    members = {
        "000000.json": canonical(steps[0]),
        "000000.webp": webp(),
        "000001.json": canonical(steps[1]),
        "events.jsonl": lines(events),
        "frames.jsonl": lines(frames),
    }
    fields: dict[str, Any] = {
        "session": session,
        "consent": {k: v for k, v in CONSENT.items() if k not in ("terms", "terms_sha256")},
        "redaction": REDACTION,
        "steps": {"version": 1, "count": 2, "by_action": {"click": 1, "key": 1}},
        "counts": kinds(events, 1),
        "loss": SAMPLE_LOSS,
        "duration_s": 5.0,
    }
    if schema == "optin-bundle/1":
        manifest = v1_manifest_for(members, **fields)
        seed = signing.v1_signing_seed(VOLUNTEER)
        return tar_of(entries_for(members, manifest, seed=seed, session=session))
    manifest = manifest_for(members, schema=schema, **fields)
    return tar_of(entries_for(members, manifest, session=session))


def opened(tmp_path: Path, tar: bytes, name: str = "b") -> tuple[Bundle, str, int]:
    """The bundle as ``optin inspect`` opens it, and its file's SHA-256 and size."""
    sealed = seal(tar)
    path = tmp_path / f"{name}.optin.tar.age"
    path.write_bytes(sealed)
    return inspect.open_bundle(path, [STUDY_KEY]), hashlib.sha256(sealed).hexdigest(), len(sealed)


def parsed(blob: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in blob.splitlines()]


def placed_of(bundle: Bundle, *, shard: str = f"shards/{DATE}/{PART}.tar", start: int = 0) -> list[Placed]:
    """The bundle's samples (agent.dataset.samples), placed at made-up offsets 4 KiB apart."""
    manifest = bundle.manifest
    count = manifest["steps"]["count"]
    frames = parsed(bundle.members["frames.jsonl"])
    made = samples(
        manifest,
        [json.loads(bundle.members[f"{n:06d}.json"]) for n in range(count)],
        tasks=manifest.get("tasks") if manifest["schema"] == "optin-bundle/3" else None,
        frames=frames,
        events=parsed(bundle.members["events.jsonl"]),
        images={n: bundle.members[f["member"]] for n, f in enumerate(frames)},
    )
    out = []
    for n, s in enumerate(made):
        offset = start + n * 4096
        image_offset = offset + 1024 + len(s.json) + (-len(s.json) % 512)
        out.append(
            Placed(s, shard, offset, offset + 4096, offset + 512, len(s.json), image_offset, len(s.image))
        )
    return out


def one_part(
    bundles: list[tuple[Bundle, str, int]], **kwargs: Any
) -> tuple[dict[str, tuple[bytes, int]], dict[str, list[Placed]]]:
    part = PartTables(PART, 7, FIRST_SEEN, **kwargs)
    places = {}
    for n, (bundle, sha, size) in enumerate(bundles):
        places[bundle.session] = placed_of(bundle, start=n * 65536)
        part.add_bundle(
            bundle,
            sha256=sha,
            size=size,
            source=f"in/{bundle.session}.optin.tar.age",
            placed=places[bundle.session],
        )
    return part.finish(), places


def rows(data: bytes) -> list[dict[str, Any]]:
    return list(pq.read_table(pa.BufferReader(data)).to_pylist())


def ts(ns: int) -> Any:
    return pa.scalar(ns, type=pa.timestamp("ns", tz="UTC")).as_py()


# --- rows from a real bundle --------------------------------------------------------------------


def test_rows_of_a_v3_bundle_read_back_with_pyarrow(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    files, places = one_part([(bundle, sha, size)])
    assert list(files) == list(PART_TABLES)
    assert {name: n for name, (_, n) in files.items()} == {
        "sessions": 1,
        "steps": 2,
        "events": 7,
        "frames": 2,
        "tasks": 1,
    }

    (session,) = rows(files["sessions"][0])
    pseudonym = bundle.manifest["volunteer"]["id"]
    assert session == {
        "session": SESSION,
        "volunteer": pseudonym,
        "signing_key": bundle.manifest["volunteer"]["signing_key"],
        "volunteer_verified": True,
        "bundle_sha256": sha,
        "bundle_schema": "optin-bundle/3",
        "agent_version": "0.3.0",
        "bundle_size": size,
        "source": f"in/{SESSION}.optin.tar.age",
        "study_id": STUDY,
        "study_name": "Web tasks",
        "consent_version": "1",
        "consent_text_sha256": "1f" * 32,
        "consent_terms_sha256": "2e" * 32,
        "consent_scopes": ["keyboard", "pointer", "screen", "window_titles"],
        "consent_granted_at": ts(GRANTED_NS),
        "utc_start": ts(WALL),
        "duration_s": 5.0,
        "steps": 2,
        "frames": 2,
        "events": 7,
        "tasks": 1,
        "steps_by_action": [("click", 1), ("key", 1)],
        "redactions": [
            {"where": "titles", "entity": "HOSTNAME", "count": 2},
            {"where": "screen", "entity": "EMAIL", "count": 1},
        ],
        "redaction_policy_sha256": "3d" * 32,
        "redaction_policy_version": "4",
        "loss_dropped_events": 0,
        "loss_frame_failures": 0,
        "loss_frames_skipped": 0,
        "loss_pastes_lost": 0,
        "loss_frames_left_out_ocr_failed": 0,
        "loss_pauses": 0,
        "loss_cuts": 0,
        "loss_paused_s": 0.0,
        "loss_cut_s": 0.0,
        "loss_clean_stop": True,
        "loss_store_problems": [],
        "elements_api": None,
        "loss_elements": None,
        "manifest": bundle.manifest_bytes.decode("utf-8"),
        "first_seen": ts(FIRST_SEEN),
        "part": PART,
        "build_version": 7,
    }

    click, enter = rows(files["steps"][0])
    where = places[SESSION][0]
    assert click == {
        "key": f"{SESSION}_000000",
        "session": SESSION,
        "volunteer": pseudonym,
        "step": 0,
        "action": "click",
        "x": 3,
        "y": 4,
        "to_x": None,
        "to_y": None,
        "dx": None,
        "dy": None,
        "button": "left",
        "text": None,
        "keys": [],
        "norm_x": 3 / W,
        "norm_y": 4 / H,
        "norm_to_x": None,
        "norm_to_y": None,
        "code": "pyautogui.click(x=0.0469, y=0.1000)",
        "has_image": True,
        "frame_line": 0,
        "frame_left": 0,
        "frame_top": 0,
        "frame_width": W,
        "frame_height": H,
        "t_start_ns": 2_000_000_000,
        "t_end_ns": 2_100_000_000,
        "utc_start": ts(WALL + 2_000_000_000),
        "utc_end": ts(WALL + 2_100_000_000),
        "after_gap": False,
        "window": None,
        "element": None,
        "element_role": None,
        "element_name": None,
        "task_id": "sign-in",
        "events": [2, 3],
        "shard": f"shards/{DATE}/{PART}.tar",
        "shard_offset": where.offset,
        "shard_end": where.end,
        "json_offset": where.json_offset,
        "json_size": where.json_size,
        "image_offset": where.image_offset,
        "image_size": where.image_size,
        "part": PART,
        "build_version": 7,
    }
    assert where.sample.doc["norm"]["code"] == click["code"]
    assert (enter["key"], enter["action"], enter["keys"], enter["has_image"]) == (
        f"{SESSION}_000001",
        "key",
        ["enter"],
        False,
    )
    assert (enter["frame_line"], enter["norm_x"], enter["events"], enter["shard_offset"]) == (
        None,
        None,
        [4],
        4096,
    )

    events = rows(files["events"][0])
    stream = bundle.members["events.jsonl"].splitlines()
    assert [e["line"] for e in events] == list(range(7))
    assert [e["record"].encode() for e in events] == stream
    assert [e["k"] for e in events] == [json.loads(line)["k"] for line in stream]
    assert [e["utc"] for e in events] == [ts(WALL + json.loads(line)["t_ns"]) for line in stream]
    assert {(e["session"], e["volunteer"], e["part"], e["build_version"]) for e in events} == {
        (SESSION, pseudonym, PART, 7)
    }

    frames = rows(files["frames"][0])
    assert [(f["line"], f["member"], f["reason"], f["in_samples"]) for f in frames] == [
        (0, "000000.webp", "click", True),
        (1, "frames/000001.webp", "settled", False),
    ]
    assert frames[0]["utc"] == ts(WALL + 1_500_000_000)
    assert (
        frames[1]["left"],
        frames[1]["top"],
        frames[1]["width"],
        frames[1]["height"],
        frames[1]["format"],
    ) == (
        0,
        0,
        W,
        H,
        "webp",
    )

    (task,) = rows(files["tasks"][0])
    nine = dict.fromkeys(
        ("click", "double_click", "drag", "hotkey", "key", "middle_click", "right_click", "scroll", "type"), 0
    )
    assert task == {
        "session": SESSION,
        "volunteer": pseudonym,
        "task_id": "sign-in",
        "source": "study",
        "instruction": INSTRUCTION,
        "hints_app": None,
        "hints_url": None,
        "time_limit_s": 600,
        "outcome": "done",
        "t_start_ns": 1_000_000_000,
        "t_end_ns": 4_000_000_000,
        "utc_start": ts(WALL + 1_000_000_000),
        "utc_end": ts(WALL + 4_000_000_000),
        "step_first": 0,
        "step_last": 1,
        "step_count": 2,
        "steps_by_action": sorted({**nine, "click": 1, "key": 1}.items()),
        "part": PART,
        "build_version": 7,
    }


def test_every_file_has_exactly_its_schema_zstd_and_no_ingest_date(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    files, _ = one_part([(bundle, sha, size)])
    for name, (data, count) in files.items():
        parquet = pq.ParquetFile(pa.BufferReader(data))
        assert parquet.schema_arrow.equals(SCHEMAS[name]), name
        assert parquet.metadata.num_rows == count
        assert "ingest_date" not in parquet.schema_arrow.names
        assert parquet.schema_arrow.names[-2:] == ["part", "build_version"]
        group = parquet.metadata.row_group(0)
        assert {group.column(i).compression for i in range(group.num_columns)} == {"ZSTD"}
        table = parquet.read()
        for field in SCHEMAS[name]:
            if not field.nullable:
                assert table.column(field.name).null_count == 0, (name, field.name)
        assert read_table(data, name).equals(table)
    for field in ("consent_granted_at", "utc_start", "first_seen"):
        assert SCHEMAS["sessions"].field(field).type == pa.timestamp("ns", tz="UTC")
    assert SCHEMAS["steps"].field("step").type == pa.int32()
    assert SCHEMAS["steps"].field("window").nullable and not SCHEMAS["steps"].field("key").nullable
    assert SCHEMAS["ledger"].names == [
        "sha256",
        "size",
        "source",
        "source_etag",
        "outcome",
        "reason",
        "stage",
        "session",
        "volunteer",
        "part",
        "first_seen",
        "build_version",
    ]


def test_duckdb_reads_the_files_as_dest_lays_them_out_with_ingest_date_from_the_path(tmp_path: Path) -> None:
    first, sha, size = opened(tmp_path, v3_tar(), "first")
    files, _ = one_part([(first, sha, size)])
    second, sha2, size2 = opened(tmp_path, old_tar(session=OTHER_SESSION), "second")
    later = PartTables(NEW_PART, 8, FIRST_SEEN + 86_400 * 10**9)
    later.add_bundle(second, sha256=sha2, size=size2, source="b.optin.tar.age", placed=placed_of(second))
    later_files = later.finish()
    paths: dict[str, list[str]] = {}
    for date, part, written in (("2026-12-06", PART, files), ("2026-12-07", NEW_PART, later_files)):
        for name, (data, _) in written.items():
            path = tmp_path / "tables" / name / f"ingest_date={date}" / f"{part}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            paths.setdefault(name, []).append(str(path))

    def sql(query: str, table: str, *params: Any) -> list[tuple[Any, ...]]:
        """``query`` over ``table``'s files as a reader lists them from a version manifest."""
        listed = ", ".join(f"'{p}'" for p in paths[table])
        relation = f"read_parquet([{listed}], hive_partitioning = true)"
        return duckdb.execute(query.replace("{T}", relation), list(params)).fetchall()

    assert sql("select key, step, action, ingest_date::varchar, part from {T} order by key", "steps") == [
        (f"{SESSION}_000000", 0, "click", "2026-12-06", PART),
        (f"{SESSION}_000001", 1, "key", "2026-12-06", PART),
        (f"{OTHER_SESSION}_000000", 0, "click", "2026-12-07", NEW_PART),
        (f"{OTHER_SESSION}_000001", 1, "key", "2026-12-07", NEW_PART),
    ]
    assert sql(
        "select session, tasks, bundle_schema, ingest_date::varchar from {T} order by session", "sessions"
    ) == [
        (SESSION, 1, "optin-bundle/3", "2026-12-06"),
        (OTHER_SESSION, None, "optin-bundle/2", "2026-12-07"),
    ]
    assert sql("select count(*), min(ingest_date)::varchar from {T}", "tasks") == [(1, "2026-12-06")]
    # Events stay whole: fields are read out of the record.
    markers = "select line, record->>'$.marker' from {T} where k = 'marker' and session = ? order by line"
    assert sql(markers, "events", SESSION) == [(0, "session_start"), (6, "session_stop")]
    assert sql("select count(*) from {T} where in_samples", "frames") == [(2,)]
    # Timestamps are UTC instants, to the nanosecond.
    query = "select typeof(utc_start), epoch_ns(utc_start) from {T} where key = ?"
    assert sql(query, "steps", f"{SESSION}_000000") == [("TIMESTAMPTZ_NS", WALL + 2_000_000_000)]


def test_a_bundle_without_tasks_v2_and_v1(tmp_path: Path) -> None:
    """optin-bundle/1 and /2: sessions.tasks null, no tasks rows, every task and element column null."""
    v2, sha, size = opened(tmp_path, old_tar(), "v2")
    v1, sha1, size1 = opened(tmp_path, old_tar("optin-bundle/1", session=OTHER_SESSION), "v1")
    part = PartTables(PART, 1, FIRST_SEEN)
    both = sorted(
        [(v2, sha, size), (v1, sha1, size1)], key=lambda b: (b[0].manifest["volunteer"]["id"], b[0].session)
    )
    for bundle, digest, length in both:
        part.add_bundle(bundle, sha256=digest, size=length, source="x", placed=placed_of(bundle))
    files = part.finish()
    assert files["tasks"][1] == 0 and read_table(files["tasks"][0], "tasks").num_rows == 0
    by_session = {row["session"]: row for row in rows(files["sessions"][0])}
    assert by_session[SESSION]["tasks"] is None and by_session[OTHER_SESSION]["tasks"] is None
    assert by_session[SESSION]["volunteer_verified"] and not by_session[OTHER_SESSION]["volunteer_verified"]
    assert by_session[OTHER_SESSION]["bundle_schema"] == "optin-bundle/1"
    assert all(r["elements_api"] is None and r["loss_elements"] is None for r in by_session.values())
    assert all(r["consent_terms_sha256"] is None for r in by_session.values())
    steps = rows(files["steps"][0])
    assert len(steps) == 4
    assert all(s["task_id"] is None and s["element"] is None and s["element_role"] is None for s in steps)
    assert [s["events"] for s in steps if s["session"] == SESSION] == [[1, 2], [3]]
    assert files["events"][1] == 10 and files["frames"][1] == 2


def test_a_v3_bundle_made_by_v3_bundle_and_its_elements(tmp_path: Path) -> None:
    """tests/hostile/test_bundles.py's v3_bundle (no frames, no anchor: UTC columns null)."""
    tar = v3_bundle(
        consent=CONSENT,
        redaction={**REDACTION, "counts": {**REDACTION["counts"], "instructions": {}, "elements": {}}},
    )
    bundle, sha, size = opened(tmp_path, tar)
    files, _ = one_part([(bundle, sha, size)])
    (session,) = rows(files["sessions"][0])
    assert session["utc_start"] is None and session["frames"] == 0 and session["tasks"] == 1
    steps = rows(files["steps"][0])
    assert [s["utc_start"] for s in steps] == [None, None] and [s["frame_line"] for s in steps] == [
        None,
        None,
    ]
    assert [s["code"] for s in steps] == [None, "pyautogui.press('enter')"]
    assert all(e["utc"] is None for e in rows(files["events"][0]))
    (task,) = rows(files["tasks"][0])
    assert task["utc_start"] is None and task["t_start_ns"] == 1_000_000_000
    assert files["frames"][1] == 0 and read_table(files["frames"][0], "frames").num_rows == 0


# --- row groups ---------------------------------------------------------------------------------------


def test_row_groups_are_cut_at_the_threshold(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    other, sha2, size2 = opened(tmp_path, v3_tar(session=OTHER_SESSION, signer=OTHER_VOLUNTEER), "o")
    pair = sorted([(bundle, sha, size), (other, sha2, size2)], key=lambda b: b[0].manifest["volunteer"]["id"])
    files, _ = one_part(pair, row_group_rows=3)
    groups = {
        name: [
            pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(i).num_rows
            for i in range(pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups)
        ]
        for name, (data, _) in files.items()
    }
    assert groups == {
        "sessions": [2],
        "steps": [3, 1],
        "events": [3, 3, 3, 3, 2],
        "frames": [3, 1],
        "tasks": [2],
    }
    # The same rows in the same order as with one group per table.
    whole, _ = one_part(pair)
    for name in PART_TABLES:
        assert rows(files[name][0]) == rows(whole[name][0])


def test_the_default_row_group_is_64_ki_rows() -> None:
    assert ROW_GROUP_ROWS == 65_536
    many = [ledger_row(f"{n:064x}") for n in range(ROW_GROUP_ROWS + 10)]
    data = ledger_bytes(many)
    meta = pq.ParquetFile(pa.BufferReader(data)).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [ROW_GROUP_ROWS, 10]


def test_row_groups_close_early_when_their_text_is_large(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    part = PartTables(PART, 1, FIRST_SEEN, row_group_bytes=1)
    part.add_bundle(bundle, sha256=sha, size=size, source="s", placed=placed_of(bundle))
    data, count = part.finish()["events"]
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == count == 7


# --- checks before any row ---------------------------------------------------------------------------


def test_a_refused_bundle_adds_nothing(tmp_path: Path) -> None:
    """A frames.jsonl line without its geometry (inspect does not read an unused frame's) and a
    consent receipt without text_sha256 are refused with their reason codes, before any row."""
    bad_frames = [
        frame_line(1_500_000_000, "000000.webp"),
        {"v": 1, "k": "frame", "t_ns": 3_500_000_000, "member": "frames/000001.webp"},
    ]
    broken, sha_b, size_b = opened(tmp_path, v3_tar(frames=bad_frames), "broken")
    with pytest.raises(SampleRefused, match=r"frames\.jsonl line 2") as info:
        check_bundle(broken)
    assert (info.value.reason, info.value.stage) == ("stream_invalid", "recount")

    no_receipt = v3_bundle(
        consent={k: v for k, v in CONSENT.items() if k != "text_sha256"},
        redaction={**REDACTION, "counts": {**REDACTION["counts"], "instructions": {}, "elements": {}}},
    )
    unreceipted, sha_u, size_u = opened(tmp_path, no_receipt, "unreceipted")
    with pytest.raises(SampleRefused, match=r"consent\.text_sha256") as info:
        check_bundle(unreceipted)
    assert (info.value.reason, info.value.stage) == ("manifest_types", "manifest")

    good, sha, size = opened(tmp_path, v3_tar(), "good")
    part = PartTables(PART, 1, FIRST_SEEN)
    for bundle, digest, length in ((broken, sha_b, size_b), (unreceipted, sha_u, size_u)):
        with pytest.raises(SampleRefused):
            part.add_bundle(bundle, sha256=digest, size=length, source="s", placed=placed_of(bundle))
    part.add_bundle(good, sha256=sha, size=size, source="s", placed=placed_of(good))
    files = part.finish()
    assert {name: n for name, (_, n) in files.items()} == {
        "sessions": 1,
        "steps": 2,
        "events": 7,
        "frames": 2,
        "tasks": 1,
    }
    assert {r["bundle_sha256"] for r in rows(files["sessions"][0])} == {sha}


def test_the_caller_must_keep_the_order_and_give_every_step(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    other, sha2, size2 = opened(tmp_path, v3_tar(session=OTHER_SESSION, signer=OTHER_VOLUNTEER), "o")
    first, second = sorted(
        [(bundle, sha, size), (other, sha2, size2)], key=lambda b: b[0].manifest["volunteer"]["id"]
    )
    part = PartTables(PART, 1, FIRST_SEEN)
    with pytest.raises(ValueError, match="placed samples"):
        part.add_bundle(first[0], sha256=first[1], size=first[2], source="s", placed=placed_of(first[0])[:1])
    for wrong in (placed_of(first[0])[::-1], placed_of(second[0])):
        with pytest.raises(ValueError, match="placed sample 0 is not step 0 of the bundle's session"):
            part.add_bundle(first[0], sha256=first[1], size=first[2], source="s", placed=wrong)
    with pytest.raises(ValueError, match="sha256"):
        part.add_bundle(first[0], sha256="x", size=first[2], source="s", placed=placed_of(first[0]))
    part.add_bundle(second[0], sha256=second[1], size=second[2], source="s", placed=placed_of(second[0]))
    with pytest.raises(ValueError, match="order"):
        part.add_bundle(first[0], sha256=first[1], size=first[2], source="s", placed=placed_of(first[0]))
    with pytest.raises(ValueError, match="order"):
        part.add_bundle(second[0], sha256=second[1], size=second[2], source="s", placed=placed_of(second[0]))
    assert {name: n for name, (_, n) in part.finish().items()}["sessions"] == 1
    with pytest.raises(ValueError, match="finished"):
        part.add_bundle(first[0], sha256=first[1], size=first[2], source="s", placed=placed_of(first[0]))
    with pytest.raises(ValueError, match="32 lower-case hex"):
        PartTables("../x", 1, FIRST_SEEN)


def test_an_empty_part_still_writes_five_readable_files() -> None:
    files = PartTables(PART, 1, FIRST_SEEN).finish()
    for name, (data, count) in files.items():
        assert count == 0 and read_table(data, name).num_rows == 0
        assert read_table(data, name).schema.equals(SCHEMAS[name])


def test_sources_are_escaped_and_cut() -> None:
    assert tables.source_name("in/\x1b[2Jx.optin.tar.age") == "in/\\u001b[2Jx.optin.tar.age"
    assert len(tables.source_name("a" * 5000)) == 1024
    assert tables.timestamp_ns(GRANTED) == GRANTED_NS
    assert tables.timestamp_ns("yesterday") is None and tables.timestamp_ns("2026-11-27T21:30:00") is None
    assert tables.utc_ns((10, (1 << 63) - 5), 20) is None and tables.utc_ns(None, 5) is None


# --- the ledger -------------------------------------------------------------------------------------------


def ledger_row(sha: str = SHA, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "sha256": sha,
        "size": 1234,
        "source": "incoming/a.optin.tar.age",
        "source_etag": '"9b2cf535f27731c974343645a3985328"',
        "outcome": "ingested",
        "reason": None,
        "stage": None,
        "session": SESSION,
        "volunteer": "4e043fa221a4110a7fe2f061c1f25333",
        "part": PART,
        "first_seen_ns": FIRST_SEEN,
        "build_version": 3,
    }
    values.update(fields)
    return LedgerRow(**values)


def test_ledger_round_trip() -> None:
    quarantined = ledger_row(
        SHA2,
        outcome="quarantined",
        reason="not_a_recipient",
        stage="age",
        session=None,
        volunteer=None,
        part=None,
    )
    odd_name = ledger_row(
        "00" * 32, source="in/\u202eevil.optin.tar.age", source_etag="10:1700000000000000000"
    )
    data = ledger_bytes([quarantined, ledger_row(), odd_name])
    back = read_ledger(data)
    assert back == [
        ledger_row("00" * 32, source="in/\\u202eevil.optin.tar.age", source_etag="10:1700000000000000000"),
        ledger_row(),
        quarantined,
    ]
    assert ledger_bytes(back) == data  # deterministic, and escaping twice changes nothing
    table = read_table(data, "ledger")
    assert table.schema.equals(SCHEMAS["ledger"])
    assert table.column("first_seen").to_pylist()[0] == ts(FIRST_SEEN)
    assert read_ledger(ledger_bytes([])) == []


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (ledger_row("AB" * 32), "sha256"),
        (ledger_row(size=-1), "size"),
        (ledger_row(outcome="skipped"), "outcome"),
        (ledger_row(reason="member_hash", stage="tar"), "ingested but"),
        (ledger_row(part=None), "ingested but"),
        (ledger_row(outcome="quarantined", reason="member_hash", stage="tar"), "quarantined but"),
        (ledger_row(outcome="quarantined", part=None), "quarantined but"),
    ],
)
def test_ledger_rows_that_break_a_rule_are_refused(row: LedgerRow, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ledger_bytes([row])


def test_the_same_bundle_twice_in_a_ledger_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        ledger_bytes([ledger_row(), ledger_row(size=5)])


def test_read_ledger_refuses_another_table_garbage_and_a_cut_file(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    files, _ = one_part([(bundle, sha, size)])
    with pytest.raises(
        TableInvalid, match=r"is not the ledger table of optin-dataset/1 \(columns that differ: sha256"
    ):
        read_ledger(files["steps"][0], where="tables/ledger/ingest_date=2026-12-06/x.parquet")
    for junk in (
        b"",
        b"not parquet at all",
        b"PAR1" + bytes(100) + b"PAR1",
        ledger_bytes([ledger_row()])[:-30],
    ):
        with pytest.raises(TableInvalid, match="is not a Parquet file") as info:
            read_ledger(junk)
        assert "Fix:" in str(info.value)
    # Same columns, one type changed: still another schema.
    changed = SCHEMAS["ledger"].set(1, pa.field("size", pa.int32(), nullable=False))
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([], schema=changed), sink)
    with pytest.raises(TableInvalid, match="columns that differ: size"):
        read_ledger(sink.getvalue().to_pybytes())
    # The right schema with a row that breaks a rule (written around ledger_bytes' checks).
    sink = pa.BufferOutputStream()
    cells = dataclasses.asdict(ledger_row())
    cells["first_seen"] = cells.pop("first_seen_ns")
    cells["outcome"] = "maybe"
    pq.write_table(pa.Table.from_pylist([cells], schema=SCHEMAS["ledger"]), sink)
    with pytest.raises(TableInvalid, match="row 1 is not a ledger row: its outcome"):
        read_ledger(sink.getvalue().to_pybytes())
    with pytest.raises(TableInvalid, match="is not the events table"):
        read_table(files["steps"][0], "events")
    with pytest.raises(ValueError, match="not a table"):
        read_table(files["steps"][0], "shards")


# --- withdrawal --------------------------------------------------------------------------------------------


def test_filter_part_drops_exactly_one_sessions_rows(tmp_path: Path) -> None:
    bundle, sha, size = opened(tmp_path, v3_tar())
    other, sha2, size2 = opened(tmp_path, v3_tar(session=OTHER_SESSION, signer=OTHER_VOLUNTEER), "o")
    pair = sorted([(bundle, sha, size), (other, sha2, size2)], key=lambda b: b[0].manifest["volunteer"]["id"])
    files, _ = one_part(pair, row_group_rows=4)
    before = {name: rows(data) for name, (data, _) in files.items()}
    filtered = filter_part(
        {n: d for n, (d, _) in files.items()}, drop_sessions={SESSION}, part=NEW_PART, row_group_rows=4
    )
    assert list(filtered) == list(PART_TABLES)
    for name in PART_TABLES:
        data, count = filtered[name]
        kept = rows(data)
        expected = [{**r, "part": NEW_PART} for r in before[name] if r["session"] != SESSION]
        assert kept == expected and count == len(expected) > 0, name
        assert len(kept) == len(before[name]) // 2
        assert pq.ParquetFile(pa.BufferReader(data)).schema_arrow.equals(SCHEMAS[name])
        groups = pq.ParquetFile(pa.BufferReader(data)).metadata
        assert all(groups.row_group(i).num_rows <= 4 for i in range(groups.num_row_groups))
    # Dropping nobody keeps every row; dropping both leaves valid empty files.
    same = filter_part({"steps": files["steps"][0]}, drop_sessions=set(), part=PART)
    assert rows(same["steps"][0]) == before["steps"]
    empty = filter_part(
        {n: d for n, (d, _) in files.items()}, drop_sessions={SESSION, OTHER_SESSION}, part=NEW_PART
    )
    assert all(count == 0 and read_table(data, name).num_rows == 0 for name, (data, count) in empty.items())
    with pytest.raises(TableInvalid):
        filter_part({"steps": files["events"][0]}, drop_sessions={SESSION}, part=NEW_PART)
    with pytest.raises(ValueError, match="not a table of a part"):
        filter_part({"ledger": ledger_bytes([])}, drop_sessions={SESSION}, part=NEW_PART)


# --- bundles of the real writer ----------------------------------------------------------------------------


def test_bundles_of_the_real_writer_fill_every_column(tmp_path: Path) -> None:
    """tests/study/synth.py's bundles (agent/export/bundle.py, the real redaction, task list and
    element rules) pass check_bundle, and their steps rows are their samples' fields."""
    identity_file, recipient = make_study_identity(tmp_path)
    made = make_bundles(tmp_path / "src", recipient, volunteers=2, sessions=1, seed=5)
    identities = inspect.load_identity_file(identity_file)
    opened_bundles = []
    for synth in made:
        sealed = synth.path.read_bytes()
        bundle = inspect.open_bundle(synth.path, identities)
        check_bundle(bundle)
        opened_bundles.append((bundle, hashlib.sha256(sealed).hexdigest(), len(sealed)))
    opened_bundles.sort(key=lambda b: (b[0].manifest["volunteer"]["id"], b[0].session))
    files, places = one_part(opened_bundles)
    steps = rows(files["steps"][0])
    docs = [p.sample.doc for bundle, _, _ in opened_bundles for p in places[bundle.session]]
    assert len(steps) == len(docs) == sum(s.steps for s in made)
    for row, doc in zip(steps, docs, strict=True):
        assert (row["key"], row["action"], row["window"], row["text"]) == (
            doc["key"],
            doc["action"],
            doc["window"],
            doc["raw"]["text"],
        )
        element = doc["element"]
        assert row["element"] == (None if element is None else canonical(element).decode())
        assert row["element_role"] == (None if element is None else element["role"])
        assert row["task_id"] == (None if doc["task"] is None else doc["task"]["id"])
    assert any(row["element"] is not None for row in steps) and any(row["window"] for row in steps)
    sessions = rows(files["sessions"][0])
    for session, (bundle, sha, _) in zip(sessions, opened_bundles, strict=True):
        manifest = bundle.manifest
        assert session["bundle_sha256"] == sha and session["manifest"].encode() == bundle.manifest_bytes
        assert session["elements_api"] == manifest["elements"]["api"]
        assert session["loss_elements"] == manifest["loss"]["elements"]
        assert session["consent_text_sha256"] == manifest["consent"]["text_sha256"]
        assert session["tasks"] == len(manifest["tasks"]) == files["tasks"][1] // len(sessions)
    assert files["events"][1] == sum(
        len(b.members["events.jsonl"].splitlines()) for b, _, _ in opened_bundles
    )
