"""agent/dataset/source.py, SRC, against the real stores: a local folder and SeaweedFS over S3
(docs/dataset.md: Finding bundles, Limits and hostile input). SRC is input from outside: links, FIFOs,
files changing under the build, and S3 keys that look like paths are all here."""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.dataset.source import (
    MAX_DEPTH,
    Candidate,
    S3Source,
    Source,
    SourceChanged,
    SourceError,
    SourceUnusable,
    open_source,
)
from tests.servers import S3Server

BUNDLE = b"age-encryption.org/v1\n" + bytes(range(256)) * 40  # the source reads bytes, never checks them


def _env(s3: S3Server, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> None:
    s3.use(monkeypatch, **kwargs)


def _read(source: Source, name: str, *, expected: str | None = None) -> bytes:
    f, size = source.open(name, expected=expected)
    with f:
        data = f.read()
    assert len(data) == size
    return data


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below ``root`` (links not followed): mode, size, mtime_ns."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# --- a local SRC ---------------------------------------------------------------------------------------


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """A SRC folder with bundles, other files, a link and a FIFO, and a bundle outside it."""
    root = tmp_path / "src"
    (root / "2026-12" / "deep").mkdir(parents=True)
    (root / "a.optin.tar.age").write_bytes(BUNDLE)
    (root / "a-b.optin.tar.age").write_bytes(BUNDLE[:100])
    (root / "2026-12" / "c.optin.tar.age").write_bytes(BUNDLE[:7])
    (root / "2026-12" / "deep" / "d.optin.tar.age").write_bytes(b"")
    (root / "notes.txt").write_bytes(b"not a bundle")
    (root / "e.optin.tar.age.part").write_bytes(b"a copy under way")
    (root / ".optin.tar.age").write_bytes(b"no name before the suffix")
    (root / "folder.optin.tar.age").mkdir()  # a folder is walked, never a candidate
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.optin.tar.age").write_bytes(BUNDLE)
    (root / "link.optin.tar.age").symlink_to(outside / "x.optin.tar.age")
    (root / "linked-folder").symlink_to(outside)
    os.mkfifo(root / "fifo.optin.tar.age")
    return root


def test_list_gives_bundles_and_ignored_entries_sorted_by_name(src: Path) -> None:
    with open_source(str(src)) as source:
        found = list(source.list())
    assert [c.name for c in found] == [
        ".optin.tar.age",
        "2026-12/c.optin.tar.age",
        "2026-12/deep/d.optin.tar.age",
        "a-b.optin.tar.age",  # "-" sorts before "." and "/": by name, not by walk
        "a.optin.tar.age",
        "e.optin.tar.age.part",
        "fifo.optin.tar.age",
        "link.optin.tar.age",
        "linked-folder",
        "notes.txt",
    ]
    kinds = {c.name: c.kind for c in found}
    assert [n for n, k in kinds.items() if k == "bundle"] == [
        "2026-12/c.optin.tar.age",
        "2026-12/deep/d.optin.tar.age",
        "a-b.optin.tar.age",
        "a.optin.tar.age",
    ]
    by_name = {c.name: c for c in found}
    st = (src / "a.optin.tar.age").stat()
    assert by_name["a.optin.tar.age"] == Candidate(
        "a.optin.tar.age", len(BUNDLE), f"{len(BUNDLE)}:{st.st_mtime_ns}", "bundle"
    )
    assert _read(source_of(src), "2026-12/c.optin.tar.age") == BUNDLE[:7]
    assert _read(source_of(src), "2026-12/deep/d.optin.tar.age") == b""


def source_of(path: Path) -> Source:
    return open_source(str(path))


def test_a_symlink_to_a_bundle_outside_src_is_ignored_and_never_opened(src: Path, tmp_path: Path) -> None:
    target = tmp_path / "outside" / "x.optin.tar.age"
    control = tmp_path / "outside" / "control"
    control.write_bytes(b"read me")
    for path in (target, control):  # an access time before the modification time: a read updates it
        os.utime(path, ns=(10**9, path.stat().st_mtime_ns))
    control.read_bytes()
    if control.stat().st_atime_ns == 10**9:
        pytest.fail("this file system does not record reads (noatime): the test cannot see an open")
    source = source_of(src)
    found = {c.name: c for c in source.list()}
    assert found["link.optin.tar.age"].kind == "ignored"
    assert found["linked-folder"].kind == "ignored"
    assert not any(name.startswith("linked-folder/") for name in found)  # a linked folder is not walked
    for name in ("link.optin.tar.age", "linked-folder/x.optin.tar.age"):
        with pytest.raises(SourceError, match=r"symbolic link.*never follows links in SRC.*Fix:"):
            source.open(name)
    assert target.stat().st_atime_ns == 10**9  # never read through the link


def test_a_fifo_named_like_a_bundle_is_ignored_and_never_blocks(src: Path) -> None:
    source = source_of(src)
    results: list[object] = []

    def work() -> None:
        try:
            results.append([c.kind for c in source.list() if c.name == "fifo.optin.tar.age"])
            source.open("fifo.optin.tar.age")
        except SourceError as exc:
            results.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(20)  # generous: both take milliseconds; a blocking open would never return
    assert not thread.is_alive(), "listing or opening a FIFO blocked"
    assert results[0] == ["ignored"]
    assert isinstance(results[1], SourceError)
    assert "special file (FIFO, socket or device), not a bundle file" in str(results[1])


def test_a_bundle_replaced_or_grown_after_listing_is_refused(src: Path, tmp_path: Path) -> None:
    source = source_of(src)
    listed = {c.name: c for c in source.list()}
    a, ab = listed["a.optin.tar.age"], listed["a-b.optin.tar.age"]
    assert _read(source, a.name, expected=a.etag) == BUNDLE
    with (src / a.name).open("ab") as f:  # grown
        f.write(b"more")
    with pytest.raises(SourceChanged, match=r"a\.optin\.tar\.age changed since SRC was listed.*Fix:"):
        source.open(a.name, expected=a.etag)
    # replaced by another file of the same size (rename over it, as a copy tool does)
    new = tmp_path / "new"
    new.write_bytes(b"x" * ab.size)
    os.utime(new, ns=(0, int(ab.etag.split(":")[1]) + 1))
    new.rename(src / ab.name)
    with pytest.raises(SourceChanged, match="changed since SRC was listed"):
        source.open(ab.name, expected=ab.etag)
    (src / ab.name).unlink()
    with pytest.raises(SourceChanged, match="it is gone"):
        source.open(ab.name, expected=ab.etag)


def test_a_bundle_written_to_while_it_is_read_is_refused_at_its_end(src: Path) -> None:
    source = source_of(src)
    name = "big.optin.tar.age"
    (src / name).write_bytes(BUNDLE * 400)  # 4 MB: more than the stream's buffer reads ahead
    f, size = source.open(name)
    with f:
        f.read(100)
        with (src / name).open("ab") as w:
            w.write(b"appended")
        with pytest.raises(SourceChanged, match="written to while it was read"):
            f.read()
    f, size = source.open(name)
    with f:
        f.read(100)
        os.truncate(src / name, 1000)
        with pytest.raises(SourceChanged, match=rf"it ended after [0-9,]+ of {size:,} bytes"):
            f.read()


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../outside/x.optin.tar.age",
        "/etc/passwd",
        "2026-12//c.optin.tar.age",
        "2026-12/../a.optin.tar.age",
        ".",
    ],
)
def test_open_refuses_a_name_that_is_not_below_src(src: Path, name: str) -> None:
    with pytest.raises(SourceError, match="is not a name below SRC"):
        source_of(src).open(name)


def test_a_folder_deeper_than_the_walk_goes_is_one_ignored_candidate(tmp_path: Path) -> None:
    root = tmp_path / "src"
    deep = root.joinpath(*["d"] * (MAX_DEPTH + 1))
    deep.mkdir(parents=True)
    (deep / "x.optin.tar.age").write_bytes(BUNDLE)
    (deep.parent / "y.optin.tar.age").write_bytes(BUNDLE)
    found = list(source_of(root).list())
    assert [(c.name, c.kind) for c in found] == [
        ("/".join(["d"] * (MAX_DEPTH + 1)) + "/", "ignored"),
        ("/".join(["d"] * MAX_DEPTH) + "/y.optin.tar.age", "bundle"),
    ]


def test_a_local_src_is_read_only_and_must_be_a_real_folder(src: Path, tmp_path: Path) -> None:
    before = _tree(src)
    with open_source(str(src)) as source:
        for c in source.list():
            if c.kind == "bundle":
                _read(source, c.name, expected=c.etag)
    assert _tree(src) == before  # nothing created (no guard, no temporary file), nothing changed
    with pytest.raises(SourceUnusable, match=r"missing does not exist\. Fix:") as err:
        open_source(str(tmp_path / "missing"))
    assert err.value.exit_code == 2
    assert not (tmp_path / "missing").exists()
    (tmp_path / "src-link").symlink_to(src)
    with pytest.raises(SourceUnusable, match="src-link is a symbolic link, not a folder"):
        open_source(str(tmp_path / "src-link"))
    with pytest.raises(SourceUnusable, match="is a regular file, not a folder"):
        open_source(str(src / "notes.txt"))
    for where in ["", " ", "http://host/x"]:
        with pytest.raises(SourceUnusable, match="Fix:"):
            open_source(where)


def test_hidden_characters_in_local_names_are_escaped_in_messages(tmp_path: Path) -> None:
    root = tmp_path / "src"
    root.mkdir()
    name = "evil\n\x1b[2K\u202e.optin.tar.age"
    (root / name).write_bytes(BUNDLE)
    source = source_of(root)
    (found,) = source.list()
    assert (found.name, found.kind) == (name, "bundle")
    assert _read(source, name) == BUNDLE
    shown = source.where(name)
    assert "\n" not in shown and "\x1b" not in shown and "\u202e" not in shown
    assert "\\u000a" in shown and "\\u202e" in shown


def test_local_src_and_dest_overlap_both_ways(tmp_path: Path) -> None:
    (tmp_path / "src" / "in").mkdir(parents=True)
    (tmp_path / "srcx").mkdir()
    (tmp_path / "src" / "alias").symlink_to(tmp_path / "srcx")
    source = source_of(tmp_path / "src")
    assert source.overlaps(str(tmp_path / "src"))
    assert source.overlaps(str(tmp_path / "src" / "in" / "dest"))  # DEST inside SRC
    assert source.overlaps(str(tmp_path))  # SRC inside DEST
    assert source.overlaps(str(tmp_path / "src" / "in" / ".." / "x"))
    assert not source.overlaps(str(tmp_path / "srcx"))  # a name that merely starts the same
    assert not source.overlaps(str(tmp_path / "dest"))
    assert not source.overlaps("s3://bucket/src")
    # a link is resolved for the check: DEST given through a link into SRC is inside it
    (tmp_path / "to-src").symlink_to(tmp_path / "src" / "in")
    assert source.overlaps(str(tmp_path / "to-src" / "dest"))
    assert source_of(tmp_path / "srcx").overlaps(str(tmp_path / "src" / "alias"))


def test_a_source_is_reopened_from_its_spec_and_by_pickle(src: Path) -> None:
    source = source_of(src)
    again = pickle.loads(pickle.dumps(source))  # noqa: S301 - our own; what a process pool or Ray does
    assert again.spec == source.spec == str(src)
    assert list(again.list()) == list(source.list()) == list(open_source(source.spec).list())


# --- an S3 SRC ---------------------------------------------------------------------------------------


@pytest.fixture
def s3_src(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """An empty ``s3://`` SRC of its own (a fresh prefix) and a raw boto3 client for the test's setup."""
    _env(s3, monkeypatch)
    yield s3.url(), s3.client()


def _split(url: str) -> tuple[str, str]:
    bucket, _, prefix = url[len("s3://") :].partition("/")
    return bucket, prefix


def _snapshot(client: Any, bucket: str) -> list[tuple[str, str]]:
    listed = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return sorted((o["Key"], o["ETag"]) for o in listed) + [("upload", u["Key"]) for u in uploads]


def test_s3_list_and_open_read_only(s3_src: tuple[str, Any]) -> None:
    url, client = s3_src
    bucket, prefix = _split(url)
    for key, body in [
        (f"{prefix}/b.optin.tar.age", BUNDLE),
        (f"{prefix}/2026-12/a.optin.tar.age", BUNDLE[:10]),
        (f"{prefix}/notes.txt", b"notes"),
        (f"{prefix}/2026-12/", b""),  # a folder marker
        (f"{prefix}x/outside.optin.tar.age", b"a neighbour prefix"),
        (f"{prefix}-other/outside.optin.tar.age", b"another one"),
    ]:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    before = _snapshot(client, bucket)
    source = open_source(url)
    found = list(source.list())
    etag = client.head_object(Bucket=bucket, Key=f"{prefix}/b.optin.tar.age")["ETag"]
    assert found == [  # the folder marker is no candidate (as a local folder is none)
        Candidate("2026-12/a.optin.tar.age", 10, found[0].etag, "bundle"),
        Candidate("b.optin.tar.age", len(BUNDLE), etag, "bundle"),
        Candidate("notes.txt", 5, found[2].etag, "ignored"),
    ]
    assert _read(source, "b.optin.tar.age", expected=etag) == BUNDLE
    assert _read(source, "2026-12/a.optin.tar.age") == BUNDLE[:10]
    assert _snapshot(client, bucket) == before  # read only
    # replaced after the listing: the store itself refuses it (If-Match on the ETag listed)
    client.put_object(Bucket=bucket, Key=f"{prefix}/b.optin.tar.age", Body=b"another bundle")
    with pytest.raises(
        SourceChanged, match=r"b\.optin\.tar\.age changed since SRC was listed \(its ETag differs\)"
    ):
        source.open("b.optin.tar.age", expected=etag)
    client.delete_object(Bucket=bucket, Key=f"{prefix}/b.optin.tar.age")
    with pytest.raises(SourceChanged, match="it is gone"):
        source.open("b.optin.tar.age")
    again = pickle.loads(pickle.dumps(source))  # noqa: S301 - our own object
    assert isinstance(again, S3Source) and again.spec == url


def test_s3_keys_that_look_like_paths_are_only_names(
    s3_src: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, client = s3_src
    bucket, prefix = _split(url)
    names = [
        "/leading-slash.optin.tar.age",
        "a//b.optin.tar.age",
        "ctrl\x01\x1b[2K.optin.tar.age",
        "new\nline.optin.tar.age",
        "\u202eega.rat.nitpo",
        "\u202eevil.optin.tar.age",
        "back\\slash.optin.tar.age",
        "..dots..optin.tar.age",
        "/".join(["L" * 200] * 4) + ".optin.tar.age",  # 800 characters
        "%2e%2e/%2fetc.optin.tar.age",
    ]
    written = {}
    for i, name in enumerate(names):
        body = hashlib.sha256(str(i).encode()).digest() * (i + 1)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
        written[body] = name
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = _tree(tmp_path)
    source = open_source(url)
    found = list(source.list())
    # SeaweedFS stores some keys normalised ("//" and "\\" become "/"); whatever the store lists is
    # read back by that name from the store
    assert len(found) == len(names)
    read = {}
    for c in found:
        shown = source.where(c.name)
        assert not any(ch in shown for ch in "\x01\x1b\n\u202e"), shown
        if c.kind == "bundle":
            read[_read(source, c.name, expected=c.etag)] = c.name
    assert set(read) == {b for b, n in written.items() if n.endswith(".optin.tar.age")}
    assert _tree(tmp_path) == before  # no name became a local file or folder
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["../escape.optin.tar.age", "a/../../escape.optin.tar.age", "./x.optin.tar.age", "", "dir/"]
)
def test_s3_names_with_dot_components_are_never_read(s3_src: tuple[str, Any], name: str) -> None:
    """A store that resolves ``..`` would read an object outside SRC: such names are refused before any
    call (SeaweedFS itself refuses to store them, so they cannot be listed here)."""
    url, client = s3_src
    bucket, prefix = _split(url)
    parent = prefix.rpartition("/")[0]
    client.put_object(
        Bucket=bucket, Key=f"{parent}/escape.optin.tar.age" if parent else "escape.optin.tar.age", Body=b"x"
    )
    with pytest.raises(
        SourceError, match=r"is not read: it (has a '\.' or '\.\.' component|is a folder marker)"
    ):
        open_source(url).open(name)


def test_s3_src_errors_are_clear(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(s3, monkeypatch, secret_key="wrong-secret-0000")  # noqa: S106 - a wrong one on purpose
    url = s3.url()
    with pytest.raises(
        SourceUnusable, match=r"refused the credentials \(SignatureDoesNotMatch\).*may read bucket"
    ):
        open_source(url)
    _env(s3, monkeypatch)
    with pytest.raises(SourceUnusable, match=r"there is no bucket no-such-bucket\. Fix:") as err:
        open_source("s3://no-such-bucket/in")
    assert err.value.exit_code == 2
    for bad in ["s3://", "s3://Upper/in", "s3://ab", "s3://bucket/a/../b", "s3://bucket/in\x1b[2K"]:
        with pytest.raises(SourceUnusable, match="Fix:") as err:
            open_source(bad)
        assert "\x1b" not in str(err.value)


def test_s3_src_and_dest_overlap_both_ways(s3_src: tuple[str, Any]) -> None:
    url, _client = s3_src
    bucket, prefix = _split(url)
    source = open_source(url)
    assert source.overlaps(url)
    assert source.overlaps(url + "/")
    assert source.overlaps(f"{url}/dataset")  # DEST inside SRC
    assert source.overlaps(f"s3://{bucket}")  # SRC inside DEST (the whole bucket)
    assert not source.overlaps(f"{url}x")  # a prefix that merely starts the same
    assert not source.overlaps(f"s3://{bucket}/other")
    assert not source.overlaps(f"s3://another-bucket/{prefix}")
    assert not source.overlaps(f"/tmp/{prefix}")
    whole = open_source(f"s3://{bucket}")
    assert whole.overlaps(f"s3://{bucket}/anything/below")
