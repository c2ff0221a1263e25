"""``optin dataset withdraw``: a volunteer leaves every version, every object and every object version.

Real bundles (tests/study/synth.py), a real build into a local folder and into SeaweedFS (a versioned
bucket), then a withdrawal: nothing of the pseudonym is left in the new version (samples, the five
tables, the ledger, the quarantine), every other volunteer's rows and sample bytes are unchanged, the
replaced objects and the older manifests that list them are gone from the store (on the versioned
bucket, every object version), the register records it, and a rebuild refuses the volunteer's bundles.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.dataset import layout, versions
from agent.dataset.build import BuildOptions, build
from agent.dataset.manifest import Version
from agent.dataset.stores import open_dest
from agent.dataset.version_files import ledger_rows, read_listed, register_lines, withdrawn_keys
from agent.dataset.versions import read_current
from agent.dataset.withdraw import ShardMismatch, WithdrawReport, check_volunteer, run_withdraw
from agent.errors import UsageError
from tests.servers import S3Server
from tests.study.synth import SynthBundle, make_bundles, make_study_identity

PART_TABLES = ("sessions", "steps", "events", "frames", "tasks")
#: Columns a withdrawal changes for the rows it keeps: the part id and where the sample is in the shard.
MOVED = {"part", "shard", "shard_offset", "shard_end", "json_offset", "image_offset"}
#: About two bundles of 4 steps per part (one bundle takes 11-12 KB of shard), so that one part holds
#: two volunteers and another only the withdrawn one.
SHARD_SIZE = 25_000
SEED = 17
#: SRC of the nine bundles, the bundles, and a folder of the two duplicates.
Nine = tuple[Path, list[SynthBundle], Path]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_study_identity(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def nine(tmp_path_factory: pytest.TempPathFactory, study: tuple[Path, str]) -> Nine:
    """3 volunteers x 3 sessions of 4 steps, and a re-encrypted copy of one session each of volunteers 0
    and 1 (same session id, another SHA-256: quarantined ``duplicate_session`` by the second build)."""
    src = tmp_path_factory.mktemp("src")
    bundles = make_bundles(src, study[1], volunteers=3, sessions=3, seed=SEED, steps=4)
    again = tmp_path_factory.mktemp("again")
    copies = make_bundles(again, study[1], volunteers=3, sessions=3, seed=SEED, steps=4)
    dups = tmp_path_factory.mktemp("dups")
    for copy in (copies[0], copies[3]):
        shutil.copy(copy.path, dups / f"dup-{copy.path.name}")
    return src, bundles, dups


def _options(src: str, dest: str, identity: Path) -> BuildOptions:
    return BuildOptions(src=src, dest=dest, identity_file=identity, workers=2, shard_size=SHARD_SIZE)


def make_dataset(tmp: Path, where: str, study: tuple[Path, str], nine: Nine) -> Path:
    """Two builds into ``where``: the nine bundles, then two duplicates (quarantined). Their SRC."""
    src, _, dups = nine
    mine = tmp / "src"
    mine.mkdir()
    for f in src.iterdir():
        os.link(f, mine / f.name)
    first = build(_options(str(mine), where, study[0]))
    assert (first.ingested, first.version) == (9, 1)
    for f in dups.iterdir():
        shutil.copy(f, mine / f.name)
    second = build(_options(str(mine), where, study[0]))
    assert (second.ingested, len(second.quarantined), second.version) == (0, 2, 2)
    assert {q.reason for q in second.quarantined} == {"duplicate_session"}
    return mine


# --- reading a version ------------------------------------------------------------------------------


def current(where: str) -> Version:
    with open_dest(where) as dest:
        version = read_current(dest)
    assert version is not None
    return version


def rows(where: str, version: Version, table: str) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    out: list[dict[str, Any]] = []
    with open_dest(where) as dest:
        for part in version.parts:
            data = read_listed(dest, part.tables[table])
            out += pq.read_table(io.BytesIO(data)).to_pylist()
    return out


def stable(table_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the columns a withdrawal moves, sorted."""
    return sorted(({k: v for k, v in r.items() if k not in MOVED} for r in table_rows), key=repr)


def samples(where: str, version: Version) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Per sample key: its tar fragment, its JSON and its image, found through the steps table's ranges."""
    out: dict[str, tuple[bytes, bytes, bytes]] = {}
    with open_dest(where) as dest:
        shards = {p.shard.path: read_listed(dest, p.shard) for p in version.parts}
    for r in rows(where, version, "steps"):
        shard = shards[r["shard"]]
        out[r["key"]] = (
            shard[r["shard_offset"] : r["shard_end"]],
            shard[r["json_offset"] : r["json_offset"] + r["json_size"]],
            shard[r["image_offset"] : r["image_offset"] + r["image_size"]],
        )
    return out


def tar_keys(where: str, version: Version) -> list[str]:
    """Every member of every shard, read as a tar (the shards must be valid archives)."""
    names: list[str] = []
    with open_dest(where) as dest:
        for part in version.parts:
            with tarfile.open(fileobj=io.BytesIO(read_listed(dest, part.shard))) as tar:
                names += tar.getnames()
    return names


def listing(where: str) -> set[str]:
    with open_dest(where) as dest:
        return {i.key for prefix in layout.GC_PREFIXES for i in dest.list(prefix)}


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file below a local DEST: its mode and SHA-256."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leaves(who: str, version: Version, where: str) -> list[str]:
    """Where ``who`` still appears in ``version`` (empty when nowhere)."""
    found: list[str] = []
    for table in PART_TABLES:
        found += [f"{table} row" for r in rows(where, version, table) if r["volunteer"] == who]
    with open_dest(where) as dest:
        found += [f"ledger row {r.outcome}" for r in ledger_rows(dest, version) if r.volunteer == who]
    found += [f"part {p.id}" for p in version.parts if who in p.volunteers]
    return found


# --- the tests --------------------------------------------------------------------------------------


def _by_volunteer(bundles: list[SynthBundle]) -> dict[int, list[SynthBundle]]:
    out: dict[int, list[SynthBundle]] = {}
    for b in bundles:
        out.setdefault(b.volunteer_index, []).append(b)
    return out


@dataclass
class Before:
    """A version's rows and samples, read before a withdrawal deletes its objects."""

    version: Version
    rows: dict[str, list[dict[str, Any]]]
    samples: dict[str, tuple[bytes, bytes, bytes]]

    @classmethod
    def read(cls, where: str) -> Before:
        version = current(where)
        return cls(version, {t: rows(where, version, t) for t in PART_TABLES}, samples(where, version))


def check_withdrawal(
    where: str, was: Before, report: WithdrawReport, gone: list[SynthBundle], others: list[SynthBundle]
) -> Version:
    """Everything the spec promises after withdrawing ``gone``'s volunteer; the new version."""
    who = gone[0].volunteer
    before = was.version
    after = current(where)
    assert after.version == before.version + 1 == report.version
    assert after.change.kind == "withdraw" and after.change.volunteer == who
    # nothing of the volunteer is left: no sample, no row, no ledger row, no quarantine entry
    assert leaves(who, after, where) == []
    gone_sessions = {b.session for b in gone}
    keys = tar_keys(where, after)
    assert not [k for k in keys if k.rsplit("_", 1)[0] in gone_sessions]
    with open_dest(where) as dest:
        assert not [r for r in ledger_rows(dest, after) if r.session in gone_sessions]
    # every other volunteer's rows and sample bytes are unchanged
    for table in PART_TABLES:
        kept = [r for r in was.rows[table] if r["session"] not in gone_sessions]
        assert stable(rows(where, after, table)) == stable(kept), table
    old, new = was.samples, samples(where, after)
    assert set(new) == {k for k in old if k.rsplit("_", 1)[0] not in gone_sessions}
    assert all(new[k] == old[k] for k in new)
    assert len(keys) == 2 * len(new)
    assert {b.session for b in others} == {r["session"] for r in rows(where, after, "sessions")}
    # the manifest's totals and part entries agree with the tables
    assert after.totals.sessions == len(others)
    assert after.totals.steps == sum(b.steps for b in others) == len(new)
    # old objects and the older manifests listing them are gone from the store
    stored = listing(where)
    replaced = {f.path for p in before.parts if p.id in report.parts_rewritten for f in p.files()}
    assert replaced and not replaced & stored
    assert layout.version_path(before.version) not in stored
    assert after.paths() <= stored
    assert replaced <= set(after.pending_purge) and not set(after.pending_purge) & stored  # done at once
    # the register
    with open_dest(where) as dest:
        lines = register_lines(dest, after)
        assert who in withdrawn_keys(dest, after) and gone[0].signing_key in withdrawn_keys(dest, after)
    assert lines[-1]["volunteer"] == who and lines[-1]["version"] == after.version
    assert lines[-1]["signing_keys"] == [gone[0].signing_key]
    assert lines[-1]["removed"] == {
        "bundles": 3,
        "events": report.removed.events,
        "quarantine": 1,
        "samples": sum(b.steps for b in gone),
        "sessions": 3,
        "tasks": report.removed.tasks,
    }
    return after


def test_a_withdrawal_removes_one_volunteer_from_a_local_dest_and_a_rebuild_refuses_them(
    tmp_path: Path, study: tuple[Path, str], nine: Nine
) -> None:
    where = str(tmp_path / "dest")
    src = make_dataset(tmp_path, where, study, nine)
    by = _by_volunteer(nine[1])
    gone, others = by[1], by[0] + by[2]
    who = gone[0].volunteer
    was = Before.read(where)
    before = was.version
    holding = [p for p in before.parts if who in p.volunteers]
    assert any(len(p.volunteers) > 1 for p in holding), "a part must hold two volunteers"
    assert any(p.volunteers == (who,) for p in holding), "a part must hold only the withdrawn one"
    events_before = sum(1 for r in was.rows["events"] if r["volunteer"] == who)

    # a dry run reports the same and writes nothing
    folder = tmp_path / "dest"
    files = snapshot(folder)
    dry = run_withdraw(where, who, dry_run=True)
    assert snapshot(folder) == files and not (folder / "LOCK").exists()
    assert dry.version is None and dry.removed.sessions == 3 and dry.removed.quarantine == 1

    seen: list[tuple[str, int, int]] = []
    report = run_withdraw(where, who, progress=lambda *a: seen.append(a))
    assert report.ok and report.removed.events == events_before
    assert seen[-1] == ("rewrite", len(holding), len(holding))
    assert (report.removed, sorted(report.parts_rewritten), sorted(report.parts_removed)) == (
        dry.removed,
        sorted(dry.parts_rewritten),
        sorted(dry.parts_removed),
    )
    assert report.parts_removed and len(report.parts_added) == len(holding) - len(report.parts_removed)
    assert report.versions_deleted == [1, 2]
    assert {visible_name for visible_name in report.sources} >= {b.path.name for b in gone}
    text = report.render()
    assert (
        f"volunteer:   {who}" in text and "removed:     3 sessions" in text and "1 quarantine entry" in text
    )
    assert f"published:   version {report.version}" in text
    after = check_withdrawal(where, was, report, gone, others)
    assert not (folder / "LOCK").exists()

    # a second withdrawal removes nothing and says when the first was
    second = run_withdraw(where, who)
    assert second.version is None and not second.found and second.first_withdrawn_at
    assert f"withdrawn at {second.first_withdrawn_at}" in second.render()
    assert current(where).version == after.version

    # a rebuild of the same SRC refuses the volunteer's bundles and ingests nothing twice
    again = build(_options(str(src), where, study[0]))
    assert again.ingested == 0
    assert Counter(q.reason for q in again.quarantined) == {"volunteer_withdrawn": 4}  # 3 + the duplicate
    rebuilt = current(where)
    assert leaves(who, rebuilt, where) == []
    assert {p.id for p in rebuilt.parts} == {p.id for p in after.parts}


def test_a_bad_volunteer_id_is_bad_usage(tmp_path: Path) -> None:
    for bad in ("", "4E043FA221A4110A7FE2F061C1F25333", "4e043fa221a4110a7fe2f061c1f2533", "../x", "g" * 32):
        with pytest.raises(UsageError) as caught:
            run_withdraw(str(tmp_path / "dest"), bad)
        assert caught.value.exit_code == 2
    assert not (tmp_path / "dest").exists()  # refused before DEST is opened
    assert check_volunteer("4e043fa221a4110a7fe2f061c1f25333") == "4e043fa221a4110a7fe2f061c1f25333"


def test_a_volunteer_never_seen_is_recorded_so_that_later_builds_refuse_them(
    tmp_path: Path, study: tuple[Path, str], nine: Nine
) -> None:
    where = str(tmp_path / "dest")
    src, _, _ = nine
    build(_options(str(src), where, study[0]))
    before = current(where)
    stranger = "0" * 32
    report = run_withdraw(where, stranger)
    assert report.version == before.version + 1 and not report.found and not report.parts_rewritten
    after = current(where)
    assert {p.id for p in after.parts} == {p.id for p in before.parts}
    assert layout.version_path(before.version) in listing(where)  # nothing withdrawn: retention as usual
    with open_dest(where) as dest:
        assert stranger in withdrawn_keys(dest, after)
        assert register_lines(dest, after)[-1]["removed"]["sessions"] == 0


def test_a_shard_changed_in_dest_is_refused_and_nothing_is_published(
    tmp_path: Path, study: tuple[Path, str], nine: Nine
) -> None:
    where = str(tmp_path / "dest")
    src, bundles, _ = nine
    build(_options(str(src), where, study[0]))
    before = current(where)
    who = _by_volunteer(bundles)[1][0].volunteer
    part = next(p for p in before.parts if who in p.volunteers and len(p.volunteers) > 1)
    shard = tmp_path / "dest" / part.shard.path
    data = bytearray(shard.read_bytes())
    data[600] ^= 1  # inside the first sample's JSON: same size, another SHA-256
    shard.write_bytes(bytes(data))
    stored = listing(where)
    with pytest.raises(ShardMismatch) as caught:
        run_withdraw(where, who)
    assert caught.value.exit_code == 1 and part.shard.path in str(caught.value)
    assert current(where) == before
    assert not [p for p in listing(where) - stored if p.endswith(".tar")]  # the new shard was discarded
    assert not (tmp_path / "dest" / "LOCK").exists()


def test_a_missing_local_dest_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        run_withdraw(str(tmp_path / "nowhere"), "0" * 32)
    assert not (tmp_path / "nowhere").exists()


class Killed(BaseException):
    """Stands for SIGKILL right after ``CURRENT`` was written."""


def test_a_withdrawal_killed_after_publishing_is_completed_by_the_next_command(
    tmp_path: Path,
    study: tuple[Path, str],
    nine: Nine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    where = str(tmp_path / "dest")
    src, bundles, _ = nine
    build(_options(str(src), where, study[0]))
    before = current(where)
    who = _by_volunteer(bundles)[2][0].volunteer

    def killed(*_: Any, **__: Any) -> list[str]:
        raise Killed

    monkeypatch.setattr(versions, "gc", killed)  # publish's garbage collection runs after CURRENT
    with pytest.raises(Killed):
        run_withdraw(where, who)
    monkeypatch.undo()
    left = current(where)
    assert left.version == before.version + 1 and left.pending_purge
    stored = listing(where)
    assert set(left.pending_purge) <= stored  # the withdrawn objects are still there ...
    assert layout.version_path(before.version) in left.pending_purge
    assert leaves(who, left, where) == []  # ... but no longer in the published version

    done = run_withdraw(where, who, break_lock=True)  # the next command completes the purge first
    assert sorted(done.purged_first) == sorted(left.pending_purge)
    assert not set(left.pending_purge) & listing(where)
    final = current(where)
    assert final.version == left.version + 1 and not final.pending_purge
    assert done.first_withdrawn_at is not None and not done.found


# --- S3, a versioned bucket -------------------------------------------------------------------------


def test_on_a_versioned_bucket_no_object_version_of_the_volunteer_remains(
    tmp_path: Path, study: tuple[Path, str], nine: Nine, s3_env: S3Server
) -> None:
    client = s3_env.client()
    bucket = s3_env.bucket()
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    where = f"s3://{bucket}/dataset"
    make_dataset(tmp_path, where, study, nine)
    by = _by_volunteer(nine[1])
    gone, others = by[1], by[0] + by[2]
    was = Before.read(where)
    before = was.version
    replaced_before = {f.path for p in before.parts if gone[0].volunteer in p.volunteers for f in p.files()}
    report = run_withdraw(where, gone[0].volunteer)
    assert report.ok, report.failures
    after = check_withdrawal(where, was, report, gone, others)

    def versions_of(keys: set[str]) -> list[str]:
        found: list[str] = []
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="dataset/")
        for page in pages:
            found += [v["Key"] for v in page.get("Versions", []) if v["Key"].removeprefix("dataset/") in keys]
        return found

    old_ledger = {f.path for f in before.ledger} - {f.path for f in after.ledger}
    doomed = replaced_before | old_ledger | {layout.version_path(1), layout.version_path(2)}
    assert len(old_ledger) == 2 and versions_of(doomed) == []
    # Delete markers hold no data; the only ones are on the keys deleted (dest_s3 deletes a key whose
    # versions are gone once more, which leaves a marker: reported to the coordinator).
    markers = {
        m["Key"].removeprefix("dataset/")
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix="dataset/")
        for m in page.get("DeleteMarkers", [])
    }
    assert markers <= (before.paths() | {layout.version_path(1)}) - after.paths()
