"""The export's spool (agent/store/format.py, Spool): what an export makes once and needs again
(rebuilt patches, masked frames) is kept on disk encrypted, in a file with no name, and every
piece must open as it was put or not at all."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from agent.errors import StoreCorrupt
from agent.store.format import Spool

assert sys.platform != "win32", "POSIX only (/proc, os.pread, resource)"  # mypy: not checked as win32

SECRET = b"typed-password-hunter2 " * 200


def _raw(spool: Spool) -> bytes:
    fd = spool._file.fileno()
    spool._file.flush()
    return os.pread(fd, spool.size, 0)


def test_pieces_come_back_as_put_in_any_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    pieces = [os.urandom(n) for n in (0, 1, 1000, 70_000)] + [SECRET]
    where = [spool.put(p) for p in pieces]
    for k in (4, 0, 2, 3, 1, 2):
        assert spool.get(where[k]) == pieces[k]
    spool.close()


def test_nothing_readable_reaches_the_disk_and_the_file_has_no_name(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    spool = Spool(folder)
    spool.put(SECRET)
    raw = _raw(spool)
    assert len(raw) == len(SECRET) + 16
    assert b"hunter2" not in raw and SECRET[:32] not in raw
    assert list(folder.iterdir()) == []  # nothing in the folder: the file has no name
    spool.close()


@pytest.mark.parametrize("offset", [0, 100, len(SECRET) + 15])
def test_a_changed_byte_fails_to_open_opaquely(tmp_path: Path, offset: int) -> None:
    spool = Spool(tmp_path)
    where = spool.put(SECRET)
    fd = spool._file.fileno()
    spool._file.flush()
    byte = os.pread(fd, 1, offset)
    os.pwrite(fd, bytes([byte[0] ^ 1]), offset)
    with pytest.raises(StoreCorrupt, match=r"^the export's spool file failed authentication$"):
        spool.get(where)
    spool.close()


def test_pieces_cannot_be_swapped_or_moved(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a, b = spool.put(b"A" * 50), spool.put(b"B" * 50)
    with pytest.raises(StoreCorrupt):
        spool.get((b[0], a[1], a[2]))  # a's bytes presented as piece b
    with pytest.raises(StoreCorrupt):
        spool.get((a[0], a[1], a[2] - 1))  # cut short
    spool.close()


def test_two_spools_do_not_share_a_key(tmp_path: Path) -> None:
    one, two = Spool(tmp_path), Spool(tmp_path)
    where = one.put(SECRET)
    two.put(b"x" * len(SECRET))
    os.pwrite(two._file.fileno(), _raw(one), 0)
    with pytest.raises(StoreCorrupt):
        two.get(where)
    one.close()
    two.close()


@pytest.mark.skipif(sys.platform == "win32", reason="file descriptors of /proc")
def test_a_dropped_spool_closes_its_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    fd = spool._file.fileno()
    del spool
    with pytest.raises(OSError):
        os.fstat(fd)
