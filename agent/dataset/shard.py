"""A WebDataset shard and its index, written as a stream (docs/dataset.md, "WebDataset shards").

A shard is a plain POSIX ustar archive: for every sample exactly two regular members,
``<key>.json`` and ``<key>.webp``, mode 0644, uid/gid 0, no owner names, mtime 0, no pax or GNU
headers, ended by two zero blocks. :class:`ShardWriter` writes it to any sink with ``write``
(a DEST object writer) and records, per sample, the byte ranges the index and the ``steps``
table carry, so a reader can fetch one sample or one image with a ranged read.

Pure apart from the sink: no file names, no clocks. Sample keys come from
:func:`agent.dataset.samples.sample_key` (``[A-Za-z0-9_-]``, at most 87 characters), so a
member name always fits a ustar header; anything else is refused, never written.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.canonical_json import canonical
from agent.dataset.samples import SAMPLE_KEY, Sample
from agent.errors import ExportError

BLOCK = 512
#: The ``format`` of an index's header line.
INDEX_FORMAT = "optin-shard-index/1"
_END = bytes(2 * BLOCK)


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> Any: ...


def padded(size: int) -> int:
    """``size`` rounded up to whole 512-byte blocks (the room a member's data takes)."""
    return -(-size // BLOCK) * BLOCK


def member_room(sizes: Iterable[int]) -> int:
    """Bytes that members of these data sizes take in a shard, headers included."""
    return sum(BLOCK + padded(size) for size in sizes)


def sample_room(sample: Sample) -> int:
    """Bytes one sample takes in a shard: two headers and both members padded."""
    return member_room((len(sample.json), len(sample.image)))


def _header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.USTAR_FORMAT, encoding="ascii", errors="strict")


@dataclass(frozen=True)
class Placed:
    """Where one sample landed: ``[offset, end)`` is a valid tar fragment of the sample."""

    key: str
    offset: int
    end: int
    json_offset: int
    json_size: int
    image_offset: int
    image_size: int

    def index_line(self) -> bytes:
        return canonical(
            {
                "end": self.end,
                "json": [self.json_offset, self.json_size],
                "key": self.key,
                "offset": self.offset,
                "webp": [self.image_offset, self.image_size],
            }
        )


class ShardWriter:
    """Append samples to a shard written to ``sink``; :meth:`close` writes the end blocks."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._offset = 0
        self._keys: set[str] = set()
        self.placed: list[Placed] = []
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes written so far (after :meth:`close`: the shard's size)."""
        return self._offset

    def _put(self, data: bytes | memoryview) -> None:
        self._sink.write(data)
        self._offset += len(data)

    def _member(self, name: str, data: bytes | memoryview) -> int:
        self._put(_header(name, len(data)))
        start = self._offset
        self._put(data)
        tail = padded(len(data)) - len(data)
        if tail:
            self._put(bytes(tail))
        return start

    def add(self, sample: Sample) -> Placed:
        """Write ``sample``'s two members.

        :raises ExportError: a key outside the dataset's grammar, or one written before (a bug in
            the caller, refused rather than written: a repeated key would hide a sample).
        """
        if self._closed:
            msg = "the shard is closed: no sample can be added"
            raise ExportError(msg, reason="internal_error", stage="dataset")
        key = sample.key
        if not SAMPLE_KEY.fullmatch(key) or key in self._keys:
            msg = f"sample key {key!r} is not a unique dataset key"
            raise ExportError(msg, reason="internal_error", stage="dataset")
        self._keys.add(key)
        offset = self._offset
        json_offset = self._member(f"{key}.json", sample.json)
        image_offset = self._member(f"{key}.webp", sample.image)
        placed = Placed(
            key=key,
            offset=offset,
            end=self._offset,
            json_offset=json_offset,
            json_size=len(sample.json),
            image_offset=image_offset,
            image_size=len(sample.image),
        )
        self.placed.append(placed)
        return placed

    def close(self) -> None:
        """End the archive with two zero blocks (once)."""
        if not self._closed:
            self._put(_END)
            self._closed = True


def index_bytes(shard: str, shard_size: int, shard_sha256: str, placed: Iterable[Placed]) -> bytes:
    """``<part>.index.jsonl``: the header line, then one line per sample in shard order."""
    rows = list(placed)
    head = canonical(
        {
            "format": INDEX_FORMAT,
            "samples": len(rows),
            "shard": shard,
            "shard_sha256": shard_sha256,
            "shard_size": shard_size,
        }
    )
    return b"".join([head, b"\n", *(row.index_line() + b"\n" for row in rows)])


class IndexInvalid(ValueError):
    """An index that is not the one its shard was written with (the message says which line)."""


def read_index(data: bytes, *, shard: str, shard_size: int, shard_sha256: str, samples: int) -> list[Placed]:
    """The samples of an index :func:`index_bytes` wrote for this shard, each checked to follow the
    one before it, the last ending where the shard's end blocks start.

    :raises IndexInvalid: anything else.
    """
    lines = data.splitlines()
    try:
        head = json.loads(lines[0]) if lines else None
        docs = [json.loads(line) for line in lines[1:]]
    except (ValueError, UnicodeDecodeError):
        msg = "it is not JSON lines"
        raise IndexInvalid(msg) from None
    wanted = {
        "format": INDEX_FORMAT,
        "samples": samples,
        "shard": shard,
        "shard_sha256": shard_sha256,
        "shard_size": shard_size,
    }
    if head != wanted or len(docs) != samples:
        msg = "its header is not the listed shard's"
        raise IndexInvalid(msg)
    placed: list[Placed] = []
    at = 0
    for n, d in enumerate(docs, start=2):
        try:
            p = Placed(
                d["key"], d["offset"], d["end"], d["json"][0], d["json"][1], d["webp"][0], d["webp"][1]
            )
        except (KeyError, IndexError, TypeError):
            msg = f"line {n} is not an index line"
            raise IndexInvalid(msg) from None
        numbers = (p.offset, p.end, p.json_offset, p.json_size, p.image_offset, p.image_size)
        if not (
            isinstance(p.key, str)
            and SAMPLE_KEY.fullmatch(p.key)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in numbers)
            and p.offset == at
            and p.offset < p.json_offset
            and p.json_offset + p.json_size < p.image_offset
            and p.image_offset + p.image_size <= p.end
        ):
            msg = f"line {n} does not follow the sample before it"
            raise IndexInvalid(msg)
        at = p.end
        placed.append(p)
    if at + len(_END) != shard_size:
        msg = "its samples do not end where the shard's end blocks start"
        raise IndexInvalid(msg)
    return placed


__all__ = [
    "BLOCK",
    "INDEX_FORMAT",
    "IndexInvalid",
    "Placed",
    "ShardWriter",
    "Sink",
    "index_bytes",
    "member_room",
    "padded",
    "read_index",
    "sample_room",
]
