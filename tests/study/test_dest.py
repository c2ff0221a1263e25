"""agent/dataset/dest.py (dest_local.py, dest_s3.py) against the real stores: a local folder and SeaweedFS
over S3, the same test bodies for both (docs/dataset.md: DEST layout, Object names, Local DEST, S3 DEST,
The lock)."""

from __future__ import annotations

import datetime
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.dataset.dest import (
    Dest,
    DestError,
    DestUnusable,
    ObjectChanged,
    ObjectExists,
    ObjectKeyRefused,
    ObjectMissing,
    ObjectTooLarge,
    check_key,
)
from agent.dataset.dest_local import LocalDest
from agent.dataset.dest_s3 import S3Dest
from agent.dataset.stores import open_dest
from tests.servers import S3Server

#: Bytes no message may ever show (objects hold decrypted data).
CANARY = b"CANARY-CONTENT-7741 volunteer typed this"


@pytest.fixture(params=["local", "s3"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    """The same DEST operations on a local folder and on an S3 bucket (boto3's standard configuration)."""
    if request.param == "local":
        with LocalDest.open(tmp_path / "dest") as d:
            yield d
        return
    server: S3Server = request.getfixturevalue("s3")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    server.use(monkeypatch)
    yield open_dest(server.url())


def stored_keys(d: Dest) -> list[str]:
    """Every object under DEST, seen by the store itself (not through Dest.list)."""
    if isinstance(d, LocalDest):
        return sorted(str(p.relative_to(d.path)) for p in d.path.rglob("*") if not p.is_dir())
    assert isinstance(d, S3Dest)
    answer = d._client.list_objects_v2(Bucket=d.bucket, Prefix=d.prefix + "/")
    return sorted(item["Key"] for item in answer.get("Contents", []))


# --- new immutable objects --------------------------------------------------------------------------


def test_put_new_writes_once_and_refuses_an_existing_key(dest: Dest) -> None:
    etag = dest.put_new("versions/v000001.json", b"first")
    blob = dest.get("versions/v000001.json", max_size=100)
    assert (blob.data, blob.etag) == (b"first", etag)
    with pytest.raises(ObjectExists, match=r"versions/v000001\.json: an object is already there") as err:
        dest.put_new("versions/v000001.json", CANARY)
    assert CANARY.decode() not in str(err.value)
    assert dest.get("versions/v000001.json", max_size=100).data == b"first"


def test_only_one_of_racing_writers_creates_a_new_object(dest: Dest) -> None:
    results = _race(8, lambda i: dest.put_new("LOCK", f"owner {i}".encode()))
    winners = [i for i, r in results.items() if isinstance(r, str)]
    assert len(winners) == 1, results
    assert all(isinstance(r, ObjectExists) for i, r in results.items() if i not in winners)
    assert dest.get("LOCK", max_size=100).data == f"owner {winners[0]}".encode()


# --- conditional replacement (CURRENT, LOCK) --------------------------------------------------------


def test_replace_only_when_the_object_is_what_was_read(dest: Dest) -> None:
    first = dest.replace("CURRENT", b"v1", expected=None)
    with pytest.raises(ObjectChanged, match="it exists now"):
        dest.replace("CURRENT", b"v1 again", expected=None)
    with pytest.raises(ObjectChanged, match="CURRENT"):
        dest.replace("CURRENT", CANARY, expected=_not(first))
    second = dest.replace("CURRENT", b"v2", expected=first)
    assert second != first
    assert dest.get("CURRENT", max_size=10).data == b"v2"
    with pytest.raises(ObjectChanged):
        dest.replace("CURRENT", b"v3", expected=first)  # stale: v2 replaced it
    assert dest.get("CURRENT", max_size=10).data == b"v2"
    assert dest.delete("CURRENT")
    with pytest.raises(ObjectChanged):
        dest.replace("CURRENT", b"v4", expected=second)  # deleted since it was read


def test_racing_replacements_of_current_have_exactly_one_winner(dest: Dest) -> None:
    etag = dest.replace("CURRENT", b"version 0", expected=None)
    # SeaweedFS makes a losing conditional write wait (up to 2 s measured): fewer rounds there
    rounds = 5 if isinstance(dest, LocalDest) else 2
    for round_ in range(1, rounds + 1):

        def replace(i: int, etag: str = etag, r: int = round_) -> str:
            return dest.replace("CURRENT", f"v{r} by {i}".encode(), expected=etag)

        results = _race(6, replace)
        winners = {i: r for i, r in results.items() if isinstance(r, str)}
        assert len(winners) == 1, results
        assert all(isinstance(r, ObjectChanged) for i, r in results.items() if i not in winners)
        ((winner, etag),) = winners.items()
        blob = dest.get("CURRENT", max_size=100)
        assert (blob.data, blob.etag) == (f"v{round_} by {winner}".encode(), etag)


def test_probe_says_the_store_honours_conditional_writes_and_leaves_nothing(dest: Dest) -> None:
    assert dest.probe_conditional_writes() is True
    assert list(dest.list()) == []
    assert [k for k in stored_keys(dest) if not k.startswith(".")] == []


# --- reading, listing, deleting ---------------------------------------------------------------------


def test_get_is_bounded_by_the_size_the_caller_allows(dest: Dest) -> None:
    dest.put_new("cards/v000001/README.md", CANARY * 10)
    size = len(CANARY) * 10
    assert dest.get("cards/v000001/README.md", max_size=size).data == CANARY * 10
    with pytest.raises(ObjectTooLarge, match=rf"README\.md is {size} bytes, more than the {size - 1}") as err:
        dest.get("cards/v000001/README.md", max_size=size - 1)
    assert CANARY.decode() not in str(err.value)
    with pytest.raises(ObjectMissing, match=r"no object .*versions/v000009\.json"):
        dest.get("versions/v000009.json", max_size=10)


def test_list_gives_the_objects_under_a_prefix_sorted(dest: Dest) -> None:
    part = "0123456789abcdef0123456789abcdef"
    keys = [
        f"shards/ingest_date=2026-12-06/{part}.tar",
        f"shards/ingest_date=2026-12-06/{part}.index.jsonl",
        f"tables/steps/ingest_date=2026-12-06/{part}.parquet",
        "versions/v000001.json",
        "versions/v000002.json",
        "versions/v000010.wids.json",
    ]
    for i, key in enumerate(keys):
        dest.put_new(key, b"x" * i)
    # what other writers leave: a pyarrow "dir/" marker on S3, a temporary file locally
    if isinstance(dest, S3Dest):
        dest._client.put_object(Bucket=dest.bucket, Key=f"{dest.prefix}/tables/steps/", Body=b"")
    else:
        assert isinstance(dest, LocalDest)
        (dest.path / "versions" / ".v000003.json.tmp-0011223344556677").write_bytes(b"half")
    assert [o.key for o in dest.list()] == sorted(keys)
    assert [(o.key, o.size) for o in dest.list("shards/")] == [(keys[1], 1), (keys[0], 0)]
    assert [o.key for o in dest.list("versions/v00000")] == keys[3:5]
    assert [o.key for o in dest.list("tables/")] == [keys[2]]
    assert list(dest.list("register/")) == []
    info = dest.head("versions/v000002.json")
    assert info is not None
    assert (info.key, info.size) == ("versions/v000002.json", 4)
    assert dest.head("versions/v000003.json") is None


def test_delete_removes_the_object_and_says_whether_there_was_one(dest: Dest) -> None:
    dest.put_new("register/00112233445566778899aabbccddeeff.jsonl", b"withdrawn")
    assert dest.delete("register/00112233445566778899aabbccddeeff.jsonl") is True
    assert dest.head("register/00112233445566778899aabbccddeeff.jsonl") is None
    with pytest.raises(ObjectMissing):
        dest.get("register/00112233445566778899aabbccddeeff.jsonl", max_size=100)
    assert dest.delete("register/00112233445566778899aabbccddeeff.jsonl") is False
    dest.put_new("register/00112233445566778899aabbccddeeff.jsonl", b"new")  # the key is free again


# --- keys: no input chooses a path ------------------------------------------------------------------

HOSTILE_KEYS = [
    "",
    "../outside",
    "shards/../../outside",
    "..",
    ".",
    "/etc/passwd",
    "shards//x.tar",
    "shards/",
    "shards/.hidden",
    ".optin-dest.guard",
    "versions/.v000001.json.tmp-0011223344556677",
    "-rf",
    "shards/x\x00.tar",
    "shards/x\n.tar",
    "shards\\x.tar",
    "C:/x",
    "versions/v000001.json ",
    "ｖersions/v000001.json",  # fullwidth v
    "versions/v000001\u2024json",  # one dot leader, looks like "."
    "versions/v000001.jsоn",  # Cyrillic o
    "shards/\u202ex.tar",  # right-to-left override
    "%2e%2e/outside",
    "a" * 201,
    "/".join(["d"] * 8),
    "shards/ingest_date=2026-13-01/x.tar",
    "shards/date=2026-12-06/x.tar",
    "shards/x=y.tar",
]
GOOD_KEYS = [
    "CURRENT",
    "LOCK",
    "versions/v000042.json",
    "versions/v1000000.wids.json",
    "shards/ingest_date=2026-12-06/0123456789abcdef0123456789abcdef.index.jsonl",
    "tables/ledger/ingest_date=2024-02-29/0123456789abcdef0123456789abcdef.parquet",
    "cards/v000042/plots/session_lengths.png",
    "a" * 200,
]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_layout_keys_are_accepted(key: str) -> None:
    assert check_key(key) == key


@pytest.fixture(scope="module", params=["local", "s3"])
def one_dest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dest]:
    """One DEST of each kind for the whole module: the hostile keys write nothing, so they can share it
    (an S3 client per test costs 0.3 s: boto3 loads its service model for each new session)."""
    if request.param == "local":
        with LocalDest.open(tmp_path_factory.mktemp("hostile") / "dest") as d:
            yield d
        return
    server: S3Server = request.getfixturevalue("s3")
    with pytest.MonkeyPatch.context() as monkeypatch:
        server.use(monkeypatch)
        yield open_dest(server.url())


@pytest.mark.parametrize("key", HOSTILE_KEYS, ids=[ascii(k)[:40] for k in HOSTILE_KEYS])
def test_hostile_keys_are_refused_by_every_operation_and_nothing_is_written(key: str, one_dest: Dest) -> None:
    dest = one_dest
    operations: list[Callable[[], Any]] = [
        lambda: dest.put_new(key, CANARY),
        lambda: dest.replace(key, CANARY, expected=None),
        lambda: dest.get(key, max_size=100),
        lambda: dest.head(key),
        lambda: dest.delete(key),
        lambda: dest.writer(key),
        lambda: dest.reader(key),
    ]
    if key and not key.endswith("/"):
        operations.append(lambda: list(dest.list(key)))
    for operation in operations:
        with pytest.raises(ObjectKeyRefused, match="refused the object key") as err:
            operation()
        message = str(err.value)
        assert "Fix:" in message
        assert CANARY.decode() not in message
        assert "\x00" not in message and "\n" not in message and "\u202e" not in message
    assert stored_keys(dest) == []


# --- a local DEST: links, owners, modes -------------------------------------------------------------


def test_local_dest_is_private_and_never_leaves_a_partial_file(tmp_path: Path) -> None:
    with LocalDest.open(tmp_path / "new" / "dest") as d:
        d.put_new("shards/ingest_date=2026-12-06/0123456789abcdef0123456789abcdef.tar", b"shard")
        d.replace("CURRENT", b"v1", expected=None)
    root = tmp_path / "new" / "dest"
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.name == ".optin-dest.guard":
            assert mode == 0o600
        elif path.is_dir():
            assert mode == 0o700, path
        else:
            assert mode == 0o600, path
            assert ".tmp-" not in path.name
    assert sorted(p.name for p in root.iterdir()) == [".optin-dest.guard", "CURRENT", "shards"]


def test_a_symlinked_local_dest_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(DestUnusable, match=r"link is a symbolic link, not a folder.*Fix:"):
        LocalDest.open(tmp_path / "link")
    assert list(real.iterdir()) == []


def test_a_symlinked_folder_or_file_below_dest_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v000001.json").write_bytes(b"outside's own")
    with LocalDest.open(tmp_path / "dest") as d:
        (d.path / "versions").symlink_to(outside)
        (d.path / "CURRENT").symlink_to(outside / "v000001.json")
        with pytest.raises(
            DestUnusable, match=r"versions is a symbolic link where the dataset keeps a folder"
        ):
            d.put_new("versions/v000002.json", CANARY)
        with pytest.raises(DestUnusable, match="symbolic link"):
            d.get("versions/v000001.json", max_size=100)
        with pytest.raises(
            DestUnusable, match=r"CURRENT is a symbolic link where the dataset keeps a regular"
        ):
            d.get("CURRENT", max_size=100)
        with pytest.raises(DestUnusable, match="symbolic link"):
            d.replace("CURRENT", CANARY, expected=None)
        with pytest.raises(DestUnusable, match="symbolic link"):
            d.delete("CURRENT")
        with pytest.raises(DestUnusable, match="symbolic link"):
            d.reader("CURRENT")
        with (
            pytest.raises(DestUnusable, match=r"versions is a symbolic link"),
            d.writer("versions/v000002.json") as w,
        ):
            w.write(CANARY)
        with pytest.raises(DestUnusable, match="symbolic link"):
            list(d.list())
    assert sorted(p.name for p in outside.iterdir()) == ["v000001.json"]
    assert (outside / "v000001.json").read_bytes() == b"outside's own"
    assert (tmp_path / "dest" / "CURRENT").is_symlink()


def test_a_dest_or_a_folder_below_it_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user here")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    with pytest.raises(DestUnusable, match=r"theirs belongs to another user \(uid 65534\).*Fix:"):
        LocalDest.open(theirs)
    with LocalDest.open(tmp_path / "dest") as d:
        (d.path / "tables").mkdir()
        os.chown(d.path / "tables", 65534, 65534)
        with pytest.raises(DestUnusable, match=r"dest/tables belongs to another user"):
            d.put_new("tables/steps/x.parquet", CANARY)
        with pytest.raises(DestUnusable, match=r"dest/tables belongs to another user"):
            list(d.list())
    assert list((tmp_path / "dest" / "tables").iterdir()) == []


def test_a_fifo_in_dest_is_refused_without_blocking(tmp_path: Path) -> None:
    with LocalDest.open(tmp_path / "dest") as d:
        os.mkfifo(d.path / "CURRENT")
        with pytest.raises(DestUnusable, match="special file"):
            d.get("CURRENT", max_size=100)
        with pytest.raises(DestUnusable, match="special file"):
            d.reader("CURRENT")


# --- S3: credentials, bucket ------------------------------------------------------------------------


def test_wrong_credentials_give_a_clear_error(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url = s3.url()
    wrong = "wrong-secret-0000"
    s3.use(monkeypatch, secret_key=wrong)
    with pytest.raises(DestUnusable, match=r"refused the credentials \(SignatureDoesNotMatch\)") as err:
        open_dest(url)
    message = str(err.value)
    assert f"cannot open DEST {url}:" in message and "AWS_SECRET_ACCESS_KEY" in message
    assert wrong not in message and s3.secret_key not in message
    assert err.value.exit_code == 2
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(DestUnusable, match=r"refused the credentials \(InvalidAccessKeyId\)"):
        open_dest(url)
    # credentials that stop working after the DEST was opened: the operation names its key
    s3.use(monkeypatch)
    d = open_dest(url)
    assert isinstance(d, S3Dest)
    d._client = s3.client(secret_key=wrong)
    with pytest.raises(
        DestUnusable, match=rf"cannot write {url}/CURRENT: the store refused the credentials"
    ) as err:
        d.put_new("CURRENT", CANARY)
    assert CANARY.decode() not in str(err.value)


def test_a_missing_bucket_and_bad_urls_are_named(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.use(monkeypatch)
    with pytest.raises(DestUnusable, match=r"there is no bucket no-such-bucket\. Fix: create it"):
        open_dest("s3://no-such-bucket/ds")
    for url in [
        "s3://",
        "s3://Upper/ds",
        "s3://ab",
        "s3://b..x/ds",
        "s3://bucket/../x",
        "http://h/x",
        "",
        " ",
    ]:
        with pytest.raises(DestUnusable, match="Fix:"):
            open_dest(url)


def test_deleting_on_a_versioned_bucket_removes_every_version(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    s3.client().put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.use(monkeypatch)
    d = open_dest(f"s3://{bucket}/ds")
    etag = d.replace("LOCK", b"one", expected=None)
    d.replace("LOCK", b"two", expected=etag)
    versions = s3.client().list_object_versions(Bucket=bucket, Prefix="ds/LOCK").get("Versions", [])
    assert len(versions) == 2
    assert d.delete("LOCK") is True
    left = s3.client().list_object_versions(Bucket=bucket, Prefix="ds/LOCK")
    assert left.get("Versions", []) == [] and left.get("DeleteMarkers", []) == []


# --- streamed whole objects (shards): writer, reader, abort_uploads ---------------------------------

SHARD = "shards/ingest_date=2026-12-06/0123456789abcdef0123456789abcdef.tar"
MiB = 2**20


def pending_uploads(d: Dest) -> list[str]:
    """What a killed or failed writer could leave, seen by the store itself: ``.tmp-`` files locally,
    incomplete multipart uploads on S3."""
    if isinstance(d, LocalDest):
        return sorted(str(p.relative_to(d.path)) for p in d.path.rglob("*") if ".tmp-" in p.name)
    assert isinstance(d, S3Dest)
    answer = d._client.list_multipart_uploads(Bucket=d.bucket, Prefix=d.prefix + "/")
    return sorted(u["Key"] for u in answer.get("Uploads", []))


@pytest.fixture(params=["local", "s3"])
def small_parts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    """A DEST whose S3 writer uploads 5 MiB parts (S3's and SeaweedFS's smallest), so a few MiB take
    the multipart path that 64 MiB parts would take for a real shard."""
    if request.param == "local":
        with LocalDest.open(tmp_path / "dest") as d:
            yield d
        return
    server: S3Server = request.getfixturevalue("s3")
    monkeypatch: pytest.MonkeyPatch = request.getfixturevalue("monkeypatch")
    server.use(monkeypatch)
    yield S3Dest.open(server.url(), part_size=5 * MiB)


def _chunks(total: int, seed: int) -> Iterator[bytes]:
    """``total`` deterministic bytes in uneven pieces (1 B to 3 MiB), so parts never align with writes."""
    sizes = [1, 3 * MiB, 700, MiB + 13, 2 * MiB - 1]
    block = hashlib.sha256(str(seed).encode()).digest() * (3 * MiB // 32 + 1)
    sent, i = 0, 0
    while sent < total:
        n = min(sizes[i % len(sizes)], total - sent)
        yield block[sent % 32 : sent % 32 + n]
        sent, i = sent + n, i + 1


def test_writer_streams_a_whole_object_and_a_rerun_replaces_it(small_parts: Dest) -> None:
    dest = small_parts
    total = 12 * MiB + 5  # three parts of 5 MiB on S3
    expected = b"".join(_chunks(total, 1))
    info = None
    for run in range(2):  # a rerun writes the same bytes under the same (content-derived) name
        with dest.writer(SHARD) as w:
            for i, chunk in enumerate(_chunks(total, 1)):
                w.write(memoryview(chunk) if i % 2 else chunk)
            assert w.size == total
            assert w.sha256 == hashlib.sha256(expected).hexdigest()
            assert dest.head(SHARD) is None or run == 1  # nothing under the name before the end
        info = w.info
        assert info is not None
        assert (info.key, info.size) == (SHARD, total)
        assert dest.get(SHARD, max_size=total).data == expected
        assert pending_uploads(dest) == []
        assert [o.key for o in dest.list()] == [SHARD]
    head = dest.head(SHARD)
    assert head is not None and head.size == total
    assert info is not None
    if isinstance(dest, S3Dest):
        assert info.etag == head.etag
        assert info.etag is not None and info.etag.strip('"').endswith("-3")  # the multipart path
    else:
        assert info.etag == hashlib.sha256(expected).hexdigest()  # a local ETag is the SHA-256


def test_writer_replaces_an_object_of_other_bytes_and_writes_empty_objects(dest: Dest) -> None:
    dest.put_new(SHARD, b"old contents")
    with dest.writer(SHARD) as w:
        w.write(bytearray(b"new "))
        w.write(memoryview(b"contents!!")[:8])
    assert dest.get(SHARD, max_size=100).data == b"new contents"
    assert (w.size, w.sha256) == (12, hashlib.sha256(b"new contents").hexdigest())
    with dest.writer("versions/v000001.json") as w:
        pass
    assert dest.get("versions/v000001.json", max_size=10).data == b""
    assert w.sha256 == hashlib.sha256(b"").hexdigest()
    assert pending_uploads(dest) == []


def test_an_exception_mid_write_leaves_no_object_no_temporary_file_and_no_upload(small_parts: Dest) -> None:
    dest = small_parts
    seen: list[str] = []
    with pytest.raises(RuntimeError, match="a worker failed"), dest.writer(SHARD) as w:
        for chunk in _chunks(11 * MiB, 2):
            w.write(chunk)
        seen = pending_uploads(dest)  # under way: a temporary file, or a multipart upload with 2 parts
        raise RuntimeError("a worker failed")
    assert len(seen) == 1
    assert dest.head(SHARD) is None
    assert pending_uploads(dest) == []
    assert [k for k in stored_keys(dest) if not k.endswith(".optin-dest.guard")] == []
    with pytest.raises(DestError, match="its writer is aborted, not open"):
        w.write(b"more")
    # an old object under the name stays as it was when a rewrite fails
    dest.put_new(SHARD, b"the old shard")
    with pytest.raises(KeyboardInterrupt), dest.writer(SHARD) as w:
        w.write(CANARY)
        raise KeyboardInterrupt
    assert dest.get(SHARD, max_size=100).data == b"the old shard"
    assert pending_uploads(dest) == []


def test_the_s3_writer_switches_to_multipart_only_above_the_part_size(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.use(monkeypatch)
    d = S3Dest.open(s3.url(), part_size=5 * MiB)
    for total, parts in [(5 * MiB, 0), (5 * MiB + 1, 2), (10 * MiB, 2), (10 * MiB + 1, 3)]:
        data = b"".join(_chunks(total, total))
        with d.writer(SHARD) as w:
            w.write(data)  # one large write is cut into parts, never held twice
            uploads = d._client.list_multipart_uploads(Bucket=d.bucket, Prefix=d.prefix + "/")
            listed = uploads.get("Uploads", [])
            if parts:
                (upload,) = listed
                sent = d._client.list_parts(Bucket=d.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                assert len(sent.get("Parts", [])) == parts - 1  # the last part goes at the end
                assert all(p["Size"] == 5 * MiB for p in sent["Parts"])
            else:
                assert listed == []
        assert w.info is not None
        etag = w.info.etag or ""
        assert etag.strip('"').endswith(f"-{parts}") if parts else "-" not in etag, (total, etag)
        blob = d.get(SHARD, max_size=total)
        assert hashlib.sha256(blob.data).hexdigest() == w.sha256 == hashlib.sha256(data).hexdigest()
        assert pending_uploads(d) == []
    with pytest.raises(ValueError, match="at least 5242880 bytes"):
        S3Dest.open(s3.url(), part_size=MiB)


def test_reader_streams_an_object_of_its_stated_size(dest: Dest) -> None:
    data = b"".join(_chunks(3 * MiB + 7, 3))
    with dest.writer(SHARD) as w:
        w.write(data)
    f, info = dest.reader(SHARD)
    with f:
        got = b"".join(iter(lambda: f.read(65536), b""))
    assert got == data
    assert (info.key, info.size) == (SHARD, len(data))
    assert info.etag == (w.info.etag if isinstance(dest, S3Dest) else None)  # type: ignore[union-attr]
    with pytest.raises(ObjectMissing, match=r"no object .*versions/v000009\.json"):
        dest.reader("versions/v000009.json")


def test_abort_uploads_removes_what_killed_writers_left_before_the_lock(small_parts: Dest) -> None:
    dest = small_parts
    killed = dest.writer(SHARD)
    killed.__enter__()  # a writer whose process was killed: never exits
    for chunk in _chunks(6 * MiB, 4):
        killed.write(chunk)
    assert len(pending_uploads(dest)) == 1
    lock_started = datetime.datetime.now(datetime.timezone.utc)
    assert dest.abort_uploads(lock_started - datetime.timedelta(hours=1)) == 0  # newer than "before"
    assert len(pending_uploads(dest)) == 1
    assert dest.abort_uploads(lock_started + datetime.timedelta(seconds=2)) == 1
    assert pending_uploads(dest) == []
    assert dest.head(SHARD) is None
    assert dest.abort_uploads(lock_started + datetime.timedelta(seconds=2)) == 0


def test_abort_uploads_never_follows_a_link_in_a_local_dest(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    theirs = outside / ".x.tar.tmp-0123456789abcdef"
    theirs.write_bytes(b"not ours")
    os.utime(theirs, (0, 0))
    with LocalDest.open(tmp_path / "dest") as d:
        (d.path / "shards").symlink_to(outside)
        old = d.path / ".CURRENT.tmp-fedcba9876543210"
        old.write_bytes(b"left by a killed command")
        os.utime(old, (0, 0))
        assert d.abort_uploads(datetime.datetime.now(datetime.timezone.utc)) == 1
        assert not old.exists()
    assert theirs.read_bytes() == b"not ours"


# --- Ray ---------------------------------------------------------------------------------------------


def test_the_local_ray_runs_tasks(ray_local: None) -> None:
    import ray

    @ray.remote
    def square(x: int) -> int:
        return x * x

    assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    assert ray.cluster_resources()["CPU"] == 2  # type: ignore[no-untyped-call]  # ray's API has no hints here


# --- helpers -----------------------------------------------------------------------------------------


def _race(n: int, work: Callable[[int], Any]) -> dict[int, Any]:
    """Run ``work(i)`` on ``n`` threads released at once; each one's result or exception."""
    barrier = threading.Barrier(n)
    results: dict[int, Any] = {}

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the test looks at which ones failed, and how
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == n
    return results


def _not(etag: str) -> str:
    body = etag.strip('"')
    other = ("f" if body[:1] != "f" else "e") + body[1:]
    return f'"{other}"' if etag.startswith('"') else other
