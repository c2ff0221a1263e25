"""agent/dataset/layout.py, manifest.py, lock.py and versions.py: names, the version manifest, CURRENT,
the lock, publishing and garbage collection (docs/dataset.md: Object names, Versions and publishing),
against a local folder and SeaweedFS over S3 with the same test bodies. The clock is injected, so lock
expiry and retention are tested without sleeping."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from agent.canonical_json import canonical
from agent.dataset.dest import Blob, Dest, ObjectInfo, ObjectWriter
from agent.dataset.layout import (
    PART_TABLES,
    LayoutError,
    card_dir,
    date_dir,
    index_path,
    ledger_id,
    parse_utc,
    part_id,
    register_id,
    shard_path,
    table_path,
    utc,
    version_path,
    wids_path,
)
from agent.dataset.lock import Lock, LockHeld, LockLost, read_lock
from agent.dataset.manifest import Card, Change, Current, FileObject, PartObject, Study, Totals, Version
from agent.dataset.stores import open_dest
from agent.dataset.versions import PublishConflict, gc, publish, read_current, read_pointer, read_version
from tests.servers import S3Server

UTC = datetime.timezone.utc
A = hashlib.sha256(b"bundle a").hexdigest()
B = hashlib.sha256(b"bundle b").hexdigest()
VOLUNTEER = "4e043fa221a4110a7fe2f061c1f25333"
SIGNING_KEY = "YYABxko+OONnWUIDogRkeOG+fxxNzmc5+iKsUGFC3Ro="
DAY = "2026-12-06"


class Clock:
    """An injected clock: moves only when the test says so."""

    def __init__(self) -> None:
        self.t = datetime.datetime(2026, 12, 6, 10, 0, 0, 123456, tzinfo=UTC)
        self._mutex = threading.Lock()

    def __call__(self) -> datetime.datetime:
        with self._mutex:
            return self.t

    def advance(self, **delta: float) -> None:
        with self._mutex:
            self.t += datetime.timedelta(**delta)


@pytest.fixture(params=["local", "s3"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    """The same tests on a local folder and on an S3 prefix (boto3's standard configuration)."""
    if request.param == "local":
        with open_dest(str(tmp_path / "dest")) as d:
            yield d
        return
    server: S3Server = request.getfixturevalue("s3")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    server.use(monkeypatch)
    with open_dest(server.url()) as d:
        yield d


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def write_part(dest: Dest, bundles: list[str], date: str = DAY, build_version: int = 1) -> PartObject:
    """A part's seven objects in DEST (small stand-in bytes: layout does not read them)."""
    pid = part_id(bundles)

    def put(key: str, data: bytes, rows: int | None = None) -> FileObject:
        dest.put_new(key, data)
        return FileObject.of(key, data, rows=rows)

    return PartObject(
        id=pid,
        ingest_date=date,
        build_version=build_version,
        bundles=len(bundles),
        sessions=len(bundles),
        steps=3 * len(bundles),
        shard=put(shard_path(date, pid), b"tar " + pid.encode()),
        index=put(index_path(date, pid), b"index " + pid.encode()),
        tables={
            t: put(table_path(t, date, pid), f"{t} {pid}".encode(), rows=len(bundles)) for t in PART_TABLES
        },
        volunteers=(VOLUNTEER,),
        signing_keys=(SIGNING_KEY,),
    )


def next_version(dest: Dest, parent: Version | None, parts: list[PartObject], **extra: Any) -> Version:
    """The version after ``parent`` holding ``parts``, its ledger file written."""
    n = 1 if parent is None else parent.version + 1
    bundles = [digest(f"ledger {n} {p.id}") for p in parts] or [digest(f"ledger {n}")]
    key = table_path("ledger", DAY, ledger_id(n, bundles))
    dest.put_new(key, b"ledger " + key.encode())
    before = {p.id for p in parent.parts} if parent else set()
    now = {p.id for p in parts}
    return Version.successor(
        parent,
        change=Change(
            "build",
            added_parts=tuple(sorted(now - before)),
            removed_parts=tuple(sorted(before - now)),
            ingested=len(parts),
            quarantined=0,
            deferred=0,
        ),
        tool="0.3.0",
        parts=parts,
        ledger=[*(parent.ledger if parent else ()), FileObject.of(key, b"ledger " + key.encode(), rows=1)],
        register=None,
        totals=Totals(volunteers=1, sessions=len(parts), steps=3 * len(parts)),
        study=Study("web-tasks-2026", "Web tasks") if parent is None else None,
        **extra,
    )


def card(n: int, plot: str = "steps_by_action") -> dict[str, bytes]:
    return {
        "README.md": f"# version {n}\n".encode(),
        "features.json": b"{}",
        f"plots/{plot}.png": b"png %d" % n,
    }


def wids(n: int) -> bytes:
    return canonical(
        {"__kind__": "wids-shard-index-v1", "name": f"optin-web-tasks-2026-v{n}", "shardlist": []}
    )


def do_publish(dest: Dest, lock: Lock, version: Version, **kw: Any) -> Version:
    return publish(
        dest, lock, version, card_files=card(version.version), wids=wids(version.version), **kw
    ).version


def keys(dest: Dest) -> set[str]:
    return {i.key for i in dest.list()}


# --- names ---------------------------------------------------------------------------------------------


def test_part_and_ledger_ids_known_answers() -> None:
    # part: hex(SHA-256("optin dataset part v1" 0x00 A "\n" B "\n")[:16]); checked with sha256sum(1) too
    assert part_id([A, B]) == "1c5022995641665f5e28e0fa34fe12b9"
    assert part_id([B, A]) == part_id([A, B])  # only which bundles, not their order
    spelled = b"optin dataset part v1\x00" + f"{A}\n{B}\n".encode()
    assert part_id([A, B]) == hashlib.sha256(spelled).hexdigest()[:32]
    assert ledger_id(1, [A, B]) == "efeb50c9fa7892904833a3d64cd4f311"
    assert ledger_id(2, [A, B]) != ledger_id(1, [A, B])  # a rewritten ledger is a new object
    assert register_id(b"x\n") == hashlib.sha256(b"x\n").hexdigest()[:32]


@pytest.mark.parametrize("bad", [[], [A, A], [A.upper()], [A[:-1]], ["../" + A[3:]], [1]])
def test_part_id_refuses_what_is_not_a_set_of_digests(bad: list[Any]) -> None:
    with pytest.raises(LayoutError, match="cannot name the part"):
        part_id(bad)


def test_dates_and_timestamps_are_utc() -> None:
    ns = 1_795_845_600_000_000_000  # 2026-11-28T06:00:00Z
    assert date_dir(ns) == "ingest_date=2026-11-28"
    assert date_dir(ns - 6 * 3600 * 10**9 - 1) == "ingest_date=2026-11-27"  # the last ns of the day before
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    assert date_dir(datetime.datetime(2026, 12, 7, 0, 30, tzinfo=berlin)) == "ingest_date=2026-12-06"
    assert utc(1_795_845_600_123_456_789) == "2026-11-28T06:00:00.123456Z"  # microseconds, truncated
    assert parse_utc("2026-11-28T06:00:00.123456Z") == datetime.datetime(
        2026, 11, 28, 6, 0, 0, 123456, tzinfo=UTC
    )
    with pytest.raises(LayoutError, match="naive"):
        date_dir(datetime.datetime(2026, 12, 6))  # naive: the point
    for text in ("2026-11-28T06:00:00Z", "2026-11-28 06:00:00.000000Z", "2026-13-28T06:00:00.000000Z"):
        with pytest.raises(LayoutError, match="not a UTC timestamp"):
            parse_utc(text)


def test_paths_follow_the_object_names_table() -> None:
    pid = part_id([A, B])
    assert shard_path("ingest_date=2026-12-06", pid) == f"shards/ingest_date=2026-12-06/{pid}.tar"
    assert shard_path("2026-12-06", pid) == f"shards/ingest_date=2026-12-06/{pid}.tar"
    assert index_path(DAY, pid) == f"shards/ingest_date=2026-12-06/{pid}.index.jsonl"
    assert table_path("steps", DAY, pid) == f"tables/steps/ingest_date=2026-12-06/{pid}.parquet"
    assert table_path("ledger", DAY, pid) == f"tables/ledger/ingest_date=2026-12-06/{pid}.parquet"
    assert version_path(42) == "versions/v000042.json"
    assert version_path(1234567) == "versions/v1234567.json"
    assert wids_path(42) == "versions/v000042.wids.json"
    assert card_dir(42) == "cards/v000042"
    refused: list[Callable[[], str]] = [
        lambda: shard_path("2026-02-30", pid),
        lambda: shard_path("2026-12-06/..", pid),
        lambda: shard_path(DAY, "../" + pid[3:]),
        lambda: shard_path(DAY, pid.upper()),
        lambda: table_path("secrets", DAY, pid),
        lambda: version_path(0),
        lambda: version_path(True),
        lambda: card_dir(-1),
    ]
    for call in refused:
        with pytest.raises(LayoutError):
            call()


# --- the manifest ------------------------------------------------------------------------------------


def sample_version(n: int = 2) -> Version:
    """A complete version without DEST (the objects it lists need not exist to be read or written)."""
    pid = part_id([A, B])
    tables = {t: FileObject(table_path(t, DAY, pid), 10, digest(t), rows=4) for t in PART_TABLES}
    part = PartObject(
        pid,
        DAY,
        1,
        2,
        2,
        6,
        FileObject(shard_path(DAY, pid), 4096, digest("shard")),
        FileObject(index_path(DAY, pid), 300, digest("index")),
        tables,
        (VOLUNTEER,),
        (SIGNING_KEY,),
        samples_without_image=1,
    )
    base = card_dir(n)
    return Version(
        version=n,
        parent=n - 1 if n > 1 else None,
        change=Change("withdraw", added_parts=(pid,), removed_parts=(), volunteer=VOLUNTEER),
        study=Study("web-tasks-2026", "Web tasks — staff portal"),
        tool="0.3.0",
        parts=(part,),
        ledger=(FileObject(table_path("ledger", DAY, ledger_id(n, [A, B])), 99, digest("l"), rows=2),),
        register=FileObject(f"register/{register_id(b'r')}.jsonl", 1, digest("r")),
        pending_purge=(shard_path(DAY, part_id([A])),),
        totals=Totals(1, 2, 6, 0, 2, 51, 4096),
        published_at="2026-12-06T10:42:52.123456Z",
        card=Card(
            FileObject(f"{base}/README.md", 5, digest("readme")),
            None,
            (
                FileObject(f"{base}/plots/a.png", 3, digest("a")),
                FileObject(f"{base}/plots/b.png", 3, digest("b")),
            ),
        ),
        wids=FileObject(wids_path(n), 40, digest("wids")),
    )


def test_version_round_trips_as_canonical_json() -> None:
    version = sample_version()
    data = version.to_bytes()
    assert data == canonical(json.loads(data))  # sorted keys, no spaces, UTF-8 (the title's dash)
    assert "—".encode() in data
    assert Version.parse(data) == version
    doc = json.loads(data)
    assert doc["format"] == "optin-dataset/1"
    assert doc["parts"][0]["tables"]["steps"]["rows"] == 4
    assert "rows" not in doc["parts"][0]["shard"]
    assert version.paths() >= {version_path(2), wids_path(2), f"{card_dir(2)}/README.md"}


def forged(mutate: Callable[[dict[str, Any]], None]) -> bytes:
    doc = json.loads(sample_version().to_bytes())
    mutate(doc)
    return canonical(doc)


def _set_shard(path: str) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["parts"][0]["shard"].__setitem__("path", path)


@pytest.mark.parametrize(
    "path",
    [
        "../x",
        "/abs",
        "a//b",
        "shards/" + "x" * 200,
        "shards/ingest_date=2026-12-06/../../../etc/passwd",
        "shards/ingest_date=2026-12-06/" + part_id([A]) + ".tar",  # a valid path, but another part's
        "shards/ingest_date=2026-12-07/" + part_id([A, B]) + ".tar",  # the part's id, another day
    ],
)
def test_a_forged_path_in_a_manifest_is_refused_naming_its_key(path: str) -> None:
    with pytest.raises(LayoutError, match=r"parts\[0\]\.shard\.path"):
        Version.parse(forged(_set_shard(path)), "versions/v000002.json")


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda d: d["pending_purge"].__setitem__(0, "../x"), r"pending_purge\[0\]"),
        (
            lambda d: d["pending_purge"].__setitem__(0, "CURRENT"),
            r"pending_purge\[0\] is CURRENT, not a data",
        ),
        (lambda d: d["pending_purge"].__setitem__(0, d["parts"][0]["shard"]["path"]), "names an object this"),
        (
            lambda d: d["ledger"][0].__setitem__(
                "path", "tables/steps/ingest_date=2026-12-06/" + "a" * 32 + ".parquet"
            ),
            r"ledger\[0\]\.path",
        ),
        (lambda d: d["card"]["readme"].__setitem__("path", "cards/v000001/README.md"), r"card\.readme\.path"),
        (lambda d: d["wids"].__setitem__("path", "wids.json"), r"wids\.path"),
        (lambda d: d["register"].__setitem__("path", "register/x.jsonl"), r"register\.path"),
        (lambda d: d.__setitem__("format", "optin-dataset/2"), "format"),
        (lambda d: d.__setitem__("version", True), "version"),
        (lambda d: d.__setitem__("parent", 2), "parent"),
        (lambda d: d.__setitem__("extra", 1), "unknown 'extra'"),
        (lambda d: d.pop("totals"), "missing 'totals'"),
        (lambda d: d["totals"].__setitem__("steps", -1), r"totals\.steps"),
        (
            lambda d: d["parts"][0].__setitem__("samples_without_image", 7),
            r"parts\[0\]\.samples_without_image",
        ),
        (lambda d: d["parts"][0].__setitem__("volunteers", ["b", "a"]), r"parts\[0\]\.volunteers"),
        (lambda d: d["parts"].append(d["parts"][0]), "parts"),
        (lambda d: d["change"].__setitem__("kind", "delete"), r"change\.kind"),
        (lambda d: d.__setitem__("published_at", "yesterday"), "published_at"),
    ],
)
def test_a_wrong_manifest_is_refused_naming_the_key(
    mutate: Callable[[dict[str, Any]], None], where: str
) -> None:
    with pytest.raises(LayoutError, match=where):
        Version.parse(forged(mutate), "versions/v000002.json")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"[]",
        b'{"format": "optin-dataset/1"}',  # not canonical (a space)
        b'{"a":1,"a":2}',
        b'{"a":NaN}',
        b"[" * 100_000,
    ],
)
def test_malformed_manifest_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(LayoutError, match="refused"):
        Version.parse(data)


def test_a_version_that_would_not_read_back_is_not_written() -> None:
    bad = dataclasses.replace(sample_version(), pending_purge=("../x",))
    with pytest.raises(LayoutError, match="pending_purge"):
        bad.to_bytes()
    with pytest.raises(LayoutError, match="publish"):
        dataclasses.replace(sample_version(), card=None).to_bytes()


def test_current_is_read_strictly() -> None:
    current = Current(42, digest("m"), "2026-12-06T10:42:52.123456Z")
    data = current.to_bytes()
    assert json.loads(data)["manifest"] == "versions/v000042.json"
    assert Current.parse(data) == current
    doc = json.loads(data)
    doc["manifest"] = "versions/v000041.json"
    with pytest.raises(LayoutError, match="manifest"):
        Current.parse(canonical(doc))


def test_successor_numbers_and_sorts() -> None:
    first = sample_version(1)
    pids = [part_id([digest(str(i))]) for i in range(3)]
    parts = [dataclasses.replace(first.parts[0], id=p) for p in reversed(pids)]
    nxt = Version.successor(
        first, change=first.change, tool="0.4.0", parts=parts, ledger=[], register=None, totals=Totals()
    )
    assert (nxt.version, nxt.parent, nxt.study) == (2, 1, first.study)
    assert [p.id for p in nxt.parts] == sorted(pids)
    assert (nxt.card, nxt.wids, nxt.published_at) == (None, None, "")
    with pytest.raises(LayoutError, match="study"):
        Version.successor(
            None, change=first.change, tool="0.4.0", parts=[], ledger=[], register=None, totals=Totals()
        )


# --- reading CURRENT ---------------------------------------------------------------------------------


def test_read_current_before_the_first_version_is_none(dest: Dest) -> None:
    assert read_current(dest) is None


def test_current_over_4_kib_is_refused(dest: Dest) -> None:
    dest.put_new("CURRENT", b"{" + b" " * 5000 + b"}")
    with pytest.raises(LayoutError, match="over 4096 bytes"):
        read_current(dest)


def test_a_manifest_that_is_not_the_one_current_names_is_refused(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
    pointer = read_pointer(dest)
    assert pointer is not None
    current, etag = pointer
    forged_pointer = dataclasses.replace(current, manifest_sha256="0" * 64).to_bytes()
    dest.replace("CURRENT", forged_pointer, expected=etag)
    with pytest.raises(LayoutError, match="SHA-256 is not the one"):
        read_current(dest)
    assert read_version(dest, 1) == v1  # --version 1 reads the manifest directly
    with pytest.raises(LayoutError, match="version 7 is not in DEST"):
        read_version(dest, 7)


# --- publishing --------------------------------------------------------------------------------------


class Watching(Dest):
    """A real DEST that runs ``after`` after each write or deletion (a reader between the steps)."""

    def __init__(self, inner: Dest, after: Callable[[str, str], None]) -> None:
        self.inner, self.after, self.url = inner, after, inner.url

    def put_new(self, key: str, data: bytes) -> str:
        etag = self.inner.put_new(key, data)
        self.after("put_new", key)
        return etag

    def replace(self, key: str, data: bytes, *, expected: str | None) -> str:
        etag = self.inner.replace(key, data, expected=expected)
        self.after("replace", key)
        return etag

    def writer(self, key: str) -> ObjectWriter:
        return self.inner.writer(key)

    def get(self, key: str, *, max_size: int) -> Blob:
        return self.inner.get(key, max_size=max_size)

    def reader(self, key: str) -> tuple[BinaryIO, ObjectInfo]:
        return self.inner.reader(key)

    def abort_uploads(self, before: datetime.datetime) -> int:
        return self.inner.abort_uploads(before)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def delete(self, key: str) -> bool:
        existed = self.inner.delete(key)
        self.after("delete", key)
        return existed


def test_readers_see_the_old_version_or_the_new_one_never_a_half(dest: Dest) -> None:
    clock = Clock()
    seen: list[int] = []

    def reader(_op: str, _key: str) -> None:
        current = read_current(dest)  # reads every object it lists: all there, whole
        if current is not None:
            for path in current.paths():
                assert dest.head(path) is not None, path
            seen.append(current.version)

    watched = Watching(dest, reader)
    with Lock.acquire(watched, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(watched, lock, next_version(watched, None, [write_part(watched, [A])]))
        assert read_current(dest) == v1
        seen.clear()
        clock.advance(days=1)
        v2 = next_version(watched, v1, [write_part(watched, [B])])
        v2 = do_publish(watched, lock, v2)
    assert read_current(dest) == v2
    assert set(seen) == {1, 2}
    assert seen == sorted(seen)  # once a reader sees version 2 it never sees 1 again
    assert dest.get("README.md", max_size=100).data == card(2)["README.md"]
    assert dest.get("wids.json", max_size=1000).data == wids(2)


def test_top_copies_follow_the_current_card(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
        v2 = next_version(dest, v1, [write_part(dest, [B])])
        publish(dest, lock, v2, card_files={"README.md": b"# two", "plots/other.png": b"p"}, wids=b"{}")
    top = {k for k in keys(dest) if "/" not in k or k.startswith("plots/")}
    assert top == {"CURRENT", "README.md", "wids.json", "plots/other.png"}  # no stale plot, no features.json


def test_a_leftover_manifest_of_a_killed_publish_is_removed_first(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
    # a killed withdraw: its manifest, card and descriptor written, CURRENT not, its lease left behind
    killed = Lock.acquire(dest, "withdraw", now=clock, renew_every=None)
    dest.put_new(version_path(2), b"half a manifest")
    dest.put_new(f"{card_dir(2)}/README.md", b"old card")
    dest.put_new(wids_path(2), b"old wids")
    assert read_current(dest) == v1
    clock.advance(seconds=121)
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        assert lock.owner != killed.owner
        published = publish(
            dest, lock, next_version(dest, v1, [write_part(dest, [B])]), card_files=card(2), wids=wids(2)
        )
    current = read_current(dest)
    assert current == published.version
    assert dest.get(f"{card_dir(2)}/README.md", max_size=100).data == card(2)["README.md"]
    assert (
        hashlib.sha256(dest.get(version_path(2), max_size=10**6).data).hexdigest()
        == published.manifest_sha256
    )


def test_publish_refuses_when_current_no_longer_names_the_parent(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
        stale = next_version(dest, v1, [write_part(dest, [B])])
        v2 = do_publish(dest, lock, next_version(dest, v1, [write_part(dest, [A, B])]))
        before = dest.get("CURRENT", max_size=4096).data
        with pytest.raises(PublishConflict, match="names version 2, not version 2's parent 1") as err:
            do_publish(dest, lock, stale)
    assert err.value.exit_code == 1
    assert dest.get("CURRENT", max_size=4096).data == before
    assert read_current(dest) == v2


def test_publish_refuses_when_another_writer_publishes_meanwhile(dest: Dest) -> None:
    """Step 3: a writer with a broken lock changes CURRENT after this one wrote its manifest."""
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
    pointer = read_pointer(dest)
    assert pointer is not None
    intruder = dataclasses.replace(pointer[0], published_at="2026-12-06T11:00:00.000000Z").to_bytes()

    def interfere(op: str, key: str) -> None:
        if (op, key) == ("put_new", version_path(2)):
            current = read_pointer(dest)
            assert current is not None
            dest.replace("CURRENT", intruder, expected=current[1])

    watched = Watching(dest, interfere)
    with Lock.acquire(watched, "build", now=clock, renew_every=None) as lock:
        v2 = next_version(watched, v1, [write_part(watched, [B])])
        with pytest.raises(PublishConflict, match="it changed while this command published"):
            do_publish(watched, lock, v2)
    assert dest.get("CURRENT", max_size=4096).data == intruder


# --- the lock ----------------------------------------------------------------------------------------


def test_a_live_lock_of_another_command_is_refused_with_exit_2(dest: Dest) -> None:
    clock = Clock()
    held = Lock.acquire(dest, "withdraw", now=clock, renew_every=None)
    clock.advance(seconds=119)
    with pytest.raises(LockHeld, match=r"held by a withdraw started at 2026-12-06T10:00:00\.123456Z") as err:
        Lock.acquire(dest, "build", now=clock, renew_every=None)
    assert err.value.exit_code == 2
    assert "--break-lock" in str(err.value)
    record = read_lock(dest)
    assert record is not None and record.owner == held.owner
    assert held.release()
    assert read_lock(dest) is None


def test_an_expired_lock_is_taken_over_and_the_old_holder_loses_it(dest: Dest) -> None:
    clock = Clock()
    old = Lock.acquire(dest, "build", now=clock, renew_every=None)
    clock.advance(seconds=120)
    new = Lock.acquire(dest, "build", now=clock, renew_every=None)
    record = read_lock(dest)
    assert record is not None and record.owner == new.owner
    with pytest.raises(LockLost):
        old.renew()
    assert old.lost
    with pytest.raises(LockLost):
        do_publish(dest, old, next_version(dest, None, [write_part(dest, [A])]))
    assert not old.release()  # not its lock any more: left alone
    assert read_lock(dest) is not None
    assert new.release()


def test_break_lock_takes_a_live_lock_at_once(dest: Dest) -> None:
    clock = Clock()
    live = Lock.acquire(dest, "withdraw", now=clock, renew_every=None)
    taken = Lock.acquire(dest, "build", now=clock, renew_every=None, break_lock=True)
    record = read_lock(dest)
    assert record is not None and (record.owner, record.command) == (taken.owner, "build")
    assert live.owner != taken.owner
    taken.release()


def test_a_lock_optin_did_not_write_needs_break_lock(dest: Dest) -> None:
    dest.put_new("LOCK", b'{"owner": "someone"}')
    with pytest.raises(LockHeld, match="not a lock optin wrote"):
        Lock.acquire(dest, "build", renew_every=None)
    with Lock.acquire(dest, "build", renew_every=None, break_lock=True) as lock:
        assert read_lock(dest) == lock.record
    assert read_lock(dest) is None  # released at the end of the with block


def test_release_on_failure_deletes_the_lock(dest: Dest) -> None:
    with pytest.raises(RuntimeError), Lock.acquire(dest, "build", renew_every=None):
        raise RuntimeError("the command failed")
    assert dest.head("LOCK") is None


def test_renewal_moves_expires_at(dest: Dest) -> None:
    clock = Clock()
    lock = Lock.acquire(dest, "build", now=clock, renew_every=None, lease_s=120)
    first = read_lock(dest)
    assert first is not None and first.expires_at == "2026-12-06T10:02:00.123456Z"
    clock.advance(seconds=30)
    lock.renew()
    second = read_lock(dest)
    assert second is not None and second.expires_at == "2026-12-06T10:02:30.123456Z"
    assert second.started_at == first.started_at
    clock.advance(seconds=100)  # 130 s after the start, 100 s after the renewal: still held
    with pytest.raises(LockHeld):
        Lock.acquire(dest, "build", now=clock, renew_every=None)
    lock.release()


def test_the_renewal_thread_keeps_the_lease_moving(dest: Dest) -> None:
    clock = Clock()
    lock = Lock.acquire(dest, "build", now=clock, renew_every=0.05)
    try:
        start = read_lock(dest)
        assert start is not None
        clock.advance(seconds=60)
        deadline = time.monotonic() + 20  # "does not hang", not a timing test
        while (record := read_lock(dest)) is not None and record.expires_at == start.expires_at:
            assert time.monotonic() < deadline, "the lease was never renewed"
            time.sleep(0.02)
        assert record is not None and parse_utc(record.expires_at) == clock() + datetime.timedelta(
            seconds=120
        )
        assert not lock.lost
    finally:
        assert lock.release()
    assert read_lock(dest) is None


def test_only_one_of_racing_commands_takes_the_lock(dest: Dest) -> None:
    results: dict[int, Lock | Exception] = {}
    barrier = threading.Barrier(4)

    def take(i: int) -> None:
        barrier.wait()
        try:
            results[i] = Lock.acquire(dest, "build", renew_every=None)
        except Exception as exc:  # collected and checked below
            results[i] = exc

    threads = [threading.Thread(target=take, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in results.values() if isinstance(r, Lock)]
    assert len(winners) == 1, results
    assert all(isinstance(r, LockHeld) for r in results.values() if not isinstance(r, Lock))
    winners[0].release()


# --- garbage collection ------------------------------------------------------------------------------


def test_gc_deletes_unlisted_old_objects_and_keeps_listed_and_newer_ones(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        part_a, part_b = write_part(dest, [A]), write_part(dest, [B])
        v1 = do_publish(dest, lock, next_version(dest, None, [part_a, part_b]))
    # a killed build's leftovers: a finished part and a manifest nobody lists
    orphan = write_part(dest, [digest("orphan")])
    dest.put_new(version_path(9), b"leftover")
    clock.advance(days=8)
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        # written after this command took the lock, listed nowhere (yet): must survive
        newer = write_part(dest, [digest("newer")])
        v2 = do_publish(dest, lock, next_version(dest, v1, [part_a]))  # B removed, but v1 is kept
        assert {f.path for f in part_b.files()} <= keys(dest)
        clock.advance(days=8)
        published = publish(
            dest,
            lock,
            next_version(dest, v2, [part_a, write_part(dest, [digest("c")])]),
            card_files=card(3),
            wids=wids(3),
        )
    left = keys(dest)
    assert {f.path for f in orphan.files()}.isdisjoint(left)
    assert version_path(9) not in left
    assert {f.path for f in part_b.files()}.isdisjoint(left)  # only v1 listed it, and v1 is gone
    assert {version_path(1), wids_path(1), f"{card_dir(1)}/README.md"}.isdisjoint(left)
    assert {f.path for f in newer.files()} <= left
    assert v2.paths() | published.version.paths() <= left  # the newest 2, though v2 is 8 days old
    assert set(published.deleted) >= {f.path for f in part_b.files()} | {version_path(1)}
    assert published.warnings == []


def test_gc_keeps_every_version_within_keep_days(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v = None
        versions = []
        for i in range(4):
            v = do_publish(
                dest, lock, next_version(dest, v, [write_part(dest, [digest(f"p{i}")])]), keep_days=7
            )
            versions.append(v)
            clock.advance(days=1)
        assert gc(dest, lock, keep_days=7) == []
        assert [read_version(dest, n) for n in (1, 2, 3, 4)] == versions
    clock.advance(days=30)
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        deleted = gc(dest, lock, keep_days=7)
    left = keys(dest)
    newest = versions[2].paths() | versions[3].paths()
    assert newest <= left  # the newest 2, however old
    for old in versions[:2]:
        gone = old.paths() - newest  # the ledger files carried forward stay
        assert version_path(old.version) in gone
        assert gone.isdisjoint(left)
        assert gone <= set(deleted)


def test_gc_deletes_pending_purge(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
        withdrawn = write_part(dest, [B])  # could not be deleted by a withdrawal: pending
        v2 = next_version(dest, v1, list(v1.parts), pending_purge=[withdrawn.shard.path])
        published = publish(dest, lock, v2, card_files=card(2), wids=wids(2))
    assert withdrawn.shard.path in published.deleted
    assert dest.head(withdrawn.shard.path) is None


def test_gc_without_current_deletes_nothing(dest: Dest) -> None:
    part = write_part(dest, [A])
    with Lock.acquire(dest, "build", renew_every=None) as lock:
        assert gc(dest, lock) == []
    assert {f.path for f in part.files()} <= keys(dest)


def test_check_renews_a_lapsed_lease_nobody_took(dest: Dest) -> None:
    clock = Clock()
    lock = Lock.acquire(dest, "build", now=clock, renew_every=None)
    clock.advance(seconds=300)  # the renewal thread could not run (a suspended process)
    lock.check()
    record = read_lock(dest)
    assert record is not None and parse_utc(record.expires_at) == clock() + datetime.timedelta(seconds=120)
    assert lock.release()


def test_a_deleted_lock_is_lost(dest: Dest) -> None:
    lock = Lock.acquire(dest, "build", renew_every=None)
    dest.delete("LOCK")  # an operator removed it by hand
    with pytest.raises(LockLost, match="renewing it failed"):
        lock.renew()
    assert lock.lost
    with pytest.raises(LockLost, match="was lost"):
        lock.check()


def test_a_withdrawal_purges_an_old_manifest_despite_retention(dest: Dest) -> None:
    clock = Clock()
    with Lock.acquire(dest, "build", now=clock, renew_every=None) as lock:
        v1 = do_publish(dest, lock, next_version(dest, None, [write_part(dest, [A])]))
        v2 = next_version(dest, v1, [write_part(dest, [B])], pending_purge=[version_path(1)])
        published = publish(dest, lock, v2, card_files=card(2), wids=wids(2), keep_days=7)
    assert version_path(1) in published.deleted
    assert dest.head(version_path(1)) is None
    assert read_current(dest) == published.version
