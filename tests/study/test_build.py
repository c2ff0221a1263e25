"""``optin dataset build``: real bundles from the project's writer into a local folder and SeaweedFS.

Both engines (a local process pool and a local Ray) build the same SRC to the same parts, byte for
byte; a second build ingests nothing twice; a build killed midway and run again gives the same
dataset; readers never see half a build.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from agent.dataset.build import BuildOptions, build
from agent.dataset.manifest import Version
from agent.dataset.plan import Accepted
from agent.dataset.stores import open_dest
from agent.dataset.versions import read_current
from tests.servers import S3Server
from tests.study.synth import SynthBundle, make_bundles, make_study_identity

ROOT = Path(__file__).resolve().parents[2]
#: Provenance columns a re-run may change (docs/dataset.md, "A command killed midway").
PROVENANCE = {"build_version", "first_seen", "part"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_study_identity(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="module")
def twelve(
    tmp_path_factory: pytest.TempPathFactory, study: tuple[Path, str]
) -> tuple[Path, list[SynthBundle]]:
    src = tmp_path_factory.mktemp("src")
    return src, make_bundles(src, study[1], volunteers=3, sessions=4, seed=7)


def options(src: str, dest: str, identity: Path, **more: Any) -> BuildOptions:
    return BuildOptions(src=src, dest=dest, identity_file=identity, workers=2, **more)


def current(where: str) -> Version:
    with open_dest(where) as dest:
        version = read_current(dest)
    assert version is not None
    return version


def shard_digests(version: Version) -> dict[str, str]:
    return {p.id: p.shard.sha256 for p in version.parts}


def table_rows(where: str, version: Version, table: str) -> list[dict[str, Any]]:
    """Every row of ``table`` in the version, without provenance, sorted."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    with open_dest(where) as dest:
        for part in version.parts:
            listed = part.tables[table]
            data = dest.get(listed.path, max_size=listed.size).data
            rows += pq.read_table(io.BytesIO(data)).to_pylist()
    clean = [{k: v for k, v in r.items() if k not in PROVENANCE} for r in rows]
    return sorted(clean, key=repr)


def test_a_local_build_ingests_every_bundle_once(
    tmp_path: Path, study: tuple[Path, str], twelve: Any
) -> None:
    src, bundles = twelve
    dest = str(tmp_path / "dest")
    report = build(options(str(src), dest, study[0]))
    assert (report.found, report.ingested, len(report.quarantined), report.deferred) == (12, 12, 0, [])
    assert report.version == 1
    version = current(dest)
    assert version.totals.sessions == 12 and version.totals.volunteers == 3
    assert version.totals.steps == sum(b.steps for b in bundles)
    sessions = {r["session"] for r in table_rows(dest, version, "sessions")}
    assert sessions == {b.session for b in bundles}

    again = build(options(str(src), dest, study[0]))
    assert (again.skipped, again.ingested, again.version) == (12, 0, None)
    assert current(dest).version == 1


def test_a_new_bundle_adds_a_part_and_keeps_the_old_ones(
    tmp_path: Path, study: tuple[Path, str], twelve: Any
) -> None:
    src, _ = twelve
    mine = tmp_path / "src"
    mine.mkdir()
    for f in src.iterdir():
        os.link(f, mine / f.name)
    dest = str(tmp_path / "dest")
    build(options(str(mine), dest, study[0]))
    first = current(dest)
    make_bundles(mine, study[1], volunteers=1, sessions=1, seed=99)
    report = build(options(str(mine), dest, study[0]))
    assert (report.ingested, report.skipped, report.version) == (1, 12, 2)
    second = current(dest)
    assert {p.id for p in first.parts} < {p.id for p in second.parts}
    assert second.totals.sessions == 13


def upload(s3: S3Server, bundles: Iterable[Path]) -> str:
    """The bundle files as objects under a fresh SRC prefix."""
    url = s3.url()
    bucket, prefix = url[len("s3://") :].split("/", 1)
    client = s3.client()
    for path in bundles:
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return url


@pytest.mark.usefixtures("ray_local")
def test_both_engines_build_the_same_dataset_on_s3(
    tmp_path: Path, study: tuple[Path, str], s3_env: S3Server
) -> None:
    bundles = make_bundles(tmp_path / "src", study[1], volunteers=8, sessions=3, seed=3)
    src = upload(s3_env, (b.path for b in bundles))
    dest_local, dest_ray = s3_env.url(), s3_env.url()
    shard = 100_000  # several parts
    local = build(options(src, dest_local, study[0], shard_size=shard))
    ray = build(options(src, dest_ray, study[0], shard_size=shard, engine="ray"))
    assert local.ingested == ray.ingested == 24  # tests/display/test_demo.py builds 201, one of them real
    a, b = current(dest_local), current(dest_ray)
    assert len(a.parts) > 2
    assert shard_digests(a) == shard_digests(b)
    for table in ("sessions", "steps", "events", "frames", "tasks"):
        assert table_rows(dest_local, a, table) == table_rows(dest_ray, b, table), table


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "dataset", "build", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its worker processes are killed with it
    )


def _stored(dest: Path) -> set[str]:
    return {str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()}


def test_a_build_killed_while_writing_parts_and_run_again_gives_the_same_dataset(
    tmp_path: Path, study: tuple[Path, str]
) -> None:
    src = tmp_path / "src"
    make_bundles(src, study[1], volunteers=12, sessions=3, seed=11, steps=40)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    build(options(str(src), str(clean), study[0], shard_size=200_000))
    args = [str(src), str(killed), "--identity", str(study[0]), "--workers", "1", "--shard-size", "200000"]
    proc = _cli(*args)
    deadline = time.monotonic() + 120
    while not any((killed / "shards").rglob("*.tar")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it wrote a part: give it more to do"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_dest(str(killed)) as dest:
        assert read_current(dest) is None  # a reader sees no version: nothing was published
    assert "LOCK" in _stored(killed) and not (killed / "CURRENT").exists()

    held = _cli(*args)
    _, err = held.communicate(timeout=120)
    assert held.returncode == 2 and "--break-lock" in err  # the dead build's lease has not run out
    again = _cli(*args, "--break-lock", "--json")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    a, b = current(str(clean)), current(str(killed))
    assert shard_digests(a) == shard_digests(b) and len(a.parts) > 3
    assert [p.index.sha256 for p in a.parts] == [p.index.sha256 for p in b.parts]
    for table in ("sessions", "steps", "events", "frames", "tasks"):
        assert table_rows(str(clean), a, table) == table_rows(str(killed), b, table), table
    listed = b.paths() | {"CURRENT", "README.md", "wids.json", ".optin-dest.guard"}
    leftovers = {k for k in _stored(killed) - listed if not k.startswith(("cards/", "plots/", "features"))}
    assert not leftovers, leftovers  # the killed build's parts and temporary files are gone


def test_readers_see_the_old_version_or_the_new_one_never_half(
    tmp_path: Path, study: tuple[Path, str], twelve: Any
) -> None:
    src, _ = twelve
    dest = tmp_path / "dest"
    build(options(str(src), str(dest), study[0]))
    first = current(str(dest))
    more = tmp_path / "more"
    more.mkdir()
    for f in src.iterdir():
        os.link(f, more / f.name)
    make_bundles(more, study[1], volunteers=2, sessions=2, seed=21, steps=30)
    proc = _cli(str(more), str(dest), "--identity", str(study[0]), "--workers", "1")
    seen: set[int] = set()
    while proc.poll() is None:
        version = current(str(dest))  # CURRENT, its manifest (SHA-256 checked), every object it lists
        with open_dest(str(dest)) as d:
            for listed in (f for p in version.parts for f in p.files()):
                assert d.head(listed.path) is not None
        seen.add(version.version)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen <= {first.version, first.version + 1}
    assert current(str(dest)).version == first.version + 1


def test_a_bundle_that_fails_while_its_part_is_written_is_left_out_and_deferred(
    tmp_path: Path, study: tuple[Path, str], twelve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pass 2 in process: an unexpected error in one bundle rewrites the part without it (no half part)."""
    from agent.dataset import passes, tables
    from agent.dataset.build import load_identity

    src, _ = twelve
    identity = load_identity(study[0])
    settings = passes.Settings(str(src), str(tmp_path / "dest"), identity, frozenset(), frozenset(), 1 << 30)
    checked = [passes.check(settings, c) for c in passes._source(str(src)).list()]
    records = tuple(r for r in checked if isinstance(r, Accepted))[:3]
    assert len(records) == 3
    victim = records[1].session
    real = tables.PartTables.add_bundle

    def add_bundle(self: tables.PartTables, bundle: Any, **kw: Any) -> None:
        if bundle.session == victim:
            raise KeyError("planted")
        real(self, bundle, **kw)

    monkeypatch.setattr(tables.PartTables, "add_bundle", add_bundle)
    result = passes.write_part(settings, passes.PartJob(records, "2026-12-06", 1, 0))
    assert [d.name for d in result.deferred] == [records[1].name]
    assert "unexpected KeyError" in result.deferred[0].message and "planted" not in result.deferred[0].message
    assert result.part is not None and result.part.bundles == 2
    assert {b.session for b in result.bundles} == {records[0].session, records[2].session}
    written = {str(p.relative_to(tmp_path / "dest")) for p in (tmp_path / "dest" / "shards").rglob("*.tar")}
    assert written == {result.part.shard.path}  # the attempt with the victim left no shard


def test_retry_quarantined_checks_those_bundles_again_and_keeps_one_ledger_row_each(
    tmp_path: Path, study: tuple[Path, str]
) -> None:
    """A bundle for a key the operator had not given is `not_a_recipient`; skipped by later builds until
    `--retry-quarantined not_a_recipient` with the right identity ingests it."""
    from agent.dataset.stores import open_dest as dest_of
    from agent.dataset.version_files import ledger_rows

    (tmp_path / "other").mkdir()
    other_identity, other_recipient = make_study_identity(tmp_path / "other")
    src = tmp_path / "src"
    make_bundles(src, study[1], volunteers=1, sessions=2, seed=31)
    [stray] = make_bundles(src, other_recipient, volunteers=1, sessions=1, seed=32)
    dest = str(tmp_path / "dest")
    first = build(options(str(src), dest, study[0]))
    assert first.ingested == 2 and [q.reason for q in first.quarantined] == ["not_a_recipient"]
    assert build(options(str(src), dest, study[0])).skipped == 3  # not read again
    both = tmp_path / "both-identities.txt"
    both.write_bytes(study[0].read_bytes() + other_identity.read_bytes())
    both.chmod(0o600)
    again = build(options(str(src), dest, both, retry_quarantined=frozenset({"not_a_recipient"})))
    assert (again.ingested, again.skipped, again.quarantined) == (1, 2, [])
    with dest_of(dest) as d:
        rows = ledger_rows(d, read_current(d))
    assert sorted(r.outcome for r in rows) == ["ingested"] * 3
    assert [r.sha256 for r in rows].count(stray.sha256) == 1
