"""The shard writer and its index: the spec's offsets, and loaders that read the shard as written."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from agent.dataset.samples import PLACEHOLDER, Sample
from agent.dataset.shard import (
    INDEX_FORMAT,
    IndexInvalid,
    Placed,
    ShardWriter,
    index_bytes,
    read_index,
    sample_room,
)
from agent.errors import ExportError
from tests.unit.test_dataset_samples import build


def shard_of(samples: list[Sample]) -> tuple[bytes, ShardWriter]:
    sink = io.BytesIO()
    writer = ShardWriter(sink)
    for sample in samples:
        writer.add(sample)
    writer.close()
    return sink.getvalue(), writer


def test_known_answer_offsets_of_the_first_sample() -> None:
    samples = build()
    blob, writer = shard_of(samples)
    first = writer.placed[0]
    assert (first.offset, first.json_offset, first.json_size) == (0, 512, 1068)
    assert first.image_offset == 2560  # its .webp header at 2,048
    assert blob[2048 : 2048 + 100].rstrip(b"\0") == f"{first.key}.webp".encode()
    assert first.end == 2560 + -(-first.image_size // 512) * 512
    assert writer.size == len(blob) == sum(sample_room(s) for s in samples) + 1024


def test_byte_ranges_are_the_members_and_a_valid_tar_fragment() -> None:
    samples = build()
    blob, writer = shard_of(samples)
    for sample, placed in zip(samples, writer.placed, strict=True):
        assert blob[placed.json_offset : placed.json_offset + placed.json_size] == sample.json
        assert blob[placed.image_offset : placed.image_offset + placed.image_size] == bytes(sample.image)
        with tarfile.open(fileobj=io.BytesIO(blob[placed.offset : placed.end] + bytes(1024))) as tar:
            assert tar.getnames() == [f"{sample.key}.json", f"{sample.key}.webp"]


def test_members_are_plain_ustar_regular_files() -> None:
    blob, _ = shard_of(build())
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for info in tar.getmembers():
            assert info.isreg() and info.mode == 0o644 and info.mtime == 0
            assert (info.uid, info.gid, info.uname, info.gname) == (0, 0, "", "")
            assert not info.pax_headers
    assert blob.endswith(bytes(1024))
    assert b"ustar\x0000" in blob[:512]


# webdataset 1.0 leaves its shard file to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_webdataset_reads_every_sample_with_the_same_fields(tmp_path: Path) -> None:
    import webdataset as wds

    samples = build()
    blob, _ = shard_of(samples)
    path = tmp_path / "part.tar"
    path.write_bytes(blob)
    read = list(wds.WebDataset(str(path), shardshuffle=False))
    assert [r["__key__"] for r in read] == [s.key for s in samples]
    assert all({k for k in r if not k.startswith("__")} == {"json", "webp"} for r in read)
    assert read[1]["webp"] == bytes(samples[1].image)
    assert json.loads(read[0]["json"]) == samples[0].doc


def test_index_header_and_lines() -> None:
    samples = build()
    blob, writer = shard_of(samples)
    sha = hashlib.sha256(blob).hexdigest()
    lines = index_bytes("shards/ingest_date=2026-12-06/x.tar", len(blob), sha, writer.placed).splitlines()
    head = json.loads(lines[0])
    assert head == {
        "format": INDEX_FORMAT,
        "samples": len(samples),
        "shard": "shards/ingest_date=2026-12-06/x.tar",
        "shard_sha256": sha,
        "shard_size": len(blob),
    }
    first = json.loads(lines[1])
    assert first["json"] == [512, 1068] and first["offset"] == 0 and first["key"] == samples[0].key
    assert len(lines) == 1 + len(samples)


def test_a_repeated_or_foreign_key_is_refused_not_written() -> None:
    sample = build()[0]
    sink = io.BytesIO()
    writer = ShardWriter(sink)
    writer.add(sample)
    written = sink.tell()
    with pytest.raises(ExportError, match="not a unique dataset key"):
        writer.add(sample)
    bad = Sample("a.b_000000", 0, {}, b"{}", PLACEHOLDER, False)
    with pytest.raises(ExportError):
        writer.add(bad)
    assert sink.tell() == written


def test_the_index_reads_back_as_written_and_a_changed_line_is_refused() -> None:
    samples = build()
    blob, writer = shard_of(samples)
    sha = hashlib.sha256(blob).hexdigest()
    path = "shards/ingest_date=2026-12-06/x.tar"
    data = index_bytes(path, len(blob), sha, writer.placed)

    def read(index: bytes) -> list[Placed]:
        return read_index(index, shard=path, shard_size=len(blob), shard_sha256=sha, samples=len(samples))

    assert read(data) == writer.placed
    lines = data.splitlines()
    moved = lines[2].replace(b'"offset":', b'"offset":1', 1)
    for bad, why in (
        (b"\n".join([lines[0], lines[1], moved, *lines[3:]]), "line 3"),
        (b"\n".join(lines[:-1]), "header"),
        (b"not json", "JSON"),
    ):
        with pytest.raises(IndexInvalid, match=why):
            read(bad)
    short = index_bytes(path, len(blob), sha, writer.placed[:-1])  # a sample left out of the index
    with pytest.raises(IndexInvalid, match="end blocks"):
        read_index(short, shard=path, shard_size=len(blob), shard_sha256=sha, samples=len(samples) - 1)
