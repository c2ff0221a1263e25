"""Helpers shared by the store's recovery, verify, crash and property tests.

Keys come straight from :func:`agent.store.format.generate_keypair`: recovery needs
only the recipient and verify takes the identity as an argument, so these tests do
not depend on how ``agent.store.keys`` keeps the identity.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

from agent.events import Event, Frame, PointerMove
from agent.paths import Dirs
from agent.store.format import HEADER_SIZE
from agent.store.writer import SessionWriter

_HEAD = struct.Struct(">IB")

#: The documents whose known-answer vectors the tests check.
DOCS = Path(__file__).resolve().parents[2] / "docs"


def doc_block(doc: str, marker: str) -> str:
    """The fenced block after ``<!-- marker ... -->`` in ``docs/<doc>``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    match = re.search(rf"<!-- {re.escape(marker)}.*?-->\s*```\n(.*?)```", text, re.S)
    assert match, f"docs/{doc} lost its {marker} block"
    return match.group(1)


def doc_vector(doc: str, marker: str) -> dict[str, str]:
    """A ``name hex`` vector block as a dict (indented lines continue the previous value)."""
    values: dict[str, str] = {}
    last = ""
    for line in doc_block(doc, marker).splitlines():
        if line.startswith(" "):
            values[last] += line.strip()
        elif line.strip():
            last, value = line.split(None, 1)
            values[last] = value.strip()
    return values


def store_dirs(root: Path) -> Dirs:
    """Dirs under ``root`` (nothing created)."""
    return Dirs(config=root / "config", data=root / "data", runtime=root / "run")


def numbered(start: int, count: int, *, frame_every: int = 0, frame_bytes: int = 200) -> list[Event]:
    """Events whose ``t_ns`` are ``start, start + 1, ...``: a prefix check needs only the numbers."""
    out: list[Event] = []
    for t in range(start, start + count):
        if frame_every and t % frame_every == frame_every - 1:
            out.append(
                Frame(
                    t_ns=t,
                    left=0,
                    top=0,
                    width=1,
                    height=1,
                    format="webp",
                    reason="click",
                    data=bytes([t % 251]) * frame_bytes,
                )
            )
        else:
            out.append(PointerMove(t_ns=t, x=t % 1000, y=-t))
    return out


def write_one_per_record(writer: SessionWriter, events: list[Event]) -> None:
    """One ``write_events`` call per event: each event is one record."""
    for event in events:
        writer.write_events([event])
        writer.flush()


def segment_files(session: Path) -> list[Path]:
    return sorted(session.glob("*.seg"))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative name -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def record_offsets(data: bytes) -> list[int]:
    """Offsets of the complete records of a segment, parsed independently of agent.store.format."""
    offsets = []
    offset = HEADER_SIZE
    while offset + _HEAD.size <= len(data):
        length, _ = _HEAD.unpack_from(data, offset)
        end = offset + _HEAD.size + length
        if end > len(data):
            break
        offsets.append(offset)
        offset = end
    return offsets


def record_ends(data: bytes) -> list[int]:
    """Offsets just after each complete record."""
    ends = []
    for offset in record_offsets(data):
        length, _ = _HEAD.unpack_from(data, offset)
        ends.append(offset + _HEAD.size + length)
    return ends


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def spec_commit(segment: bytes) -> bytes:
    """docs/format.md's commit, written from the spec alone (not agent.store.format.segment_commit).

    SHA-256 over the 140-byte header, then each complete record's 5-byte head and
    16-byte tag, then the bytes after the last complete record.
    """
    digest = hashlib.sha256(segment[:140])
    offset = 140
    while offset + 5 <= len(segment):
        length, rtype = int.from_bytes(segment[offset : offset + 4], "big"), segment[offset + 4]
        end = offset + 5 + length
        if rtype not in (1, 2, 3, 4, 0x7F) or not 16 <= length <= (1 << 28) + 16 or end > len(segment):
            break
        digest.update(segment[offset : offset + 5] + segment[end - 16 : end])
        offset = end
        if rtype == 0x7F:
            break
    digest.update(segment[offset:])
    return digest.digest()
