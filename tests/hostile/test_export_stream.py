"""P5/P6, volunteer side: a streaming export whose store changes under it, whose output folder
holds a trap, or whose disk fills, fails closed and leaves nothing behind.

The export reads a session twice (its events and the hash of every frame first, each frame's
bytes again when its member is written: agent/export/bundle.py), so a segment rewritten in
between — damaged, or swapped for another authentic segment — must make the export fail with
the store's own error, never write a bundle whose manifest lies, and leave no file (nor a
temporary one) in the output folder.  A link where the bundle goes is replaced, never written
through.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from agent.errors import StoreCorrupt
from agent.export import bundle
from tests.hostile.conftest import Tally
from tests.study import synth
from tests.tools import Consented
from tests.unit.test_export_stream import (
    NO_NAMES,
    patched_session,
    receipt_of,
    store,
    study_file,
    synth_session,
)

__all__ = ["study_file"]  # the OCR-off synthetic study, as in the unit tests


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "swap", "remove"])
def test_p6_a_segment_changed_during_export_fails_closed_and_leaves_nothing(
    consented: Consented, tmp_path: Path, hostile: Tally, how: str
) -> None:
    d, study = consented
    session = synth_session(d, 5)
    segment = d.sessions / session / "000002.seg"
    # another authentic session from the same events: its segment 2 decrypts with the same key
    _, events = synth.session_events(6, random.Random(6), receipt_of(d), synth.variant(6), 9)  # noqa: S311
    other = d.sessions / store(d, events, segment_bytes=1_500) / "000002.seg"
    out = tmp_path / "out"

    def tamper(_summary: object) -> None:  # after the session was read, before its frames are written
        if how == "flip":
            _flip(segment, segment.stat().st_size // 2)
        elif how == "swap":
            segment.write_bytes(other.read_bytes())
        else:
            segment.unlink()

    hostile.tried("P6 export stream")
    with pytest.raises(StoreCorrupt, match="changed while the session was being read"):
        bundle.export_session(d, session, out, study, approve=True, on_approve=tamper, local=NO_NAMES)
    assert list(out.iterdir()) == []  # no bundle, no temporary file
    hostile.held("P6 export stream")


@pytest.mark.parametrize("how", ["flip", "swap", "remove"])
def test_p6_a_segment_changed_before_a_patch_is_rebuilt_again_fails_closed(
    consented: Consented, hostile: Tally, how: str
) -> None:
    """A frame stored as a patch is rebuilt again from the store when OCR or the masks ask for its
    pixels: a segment changed since the read (damaged, swapped for another authentic one of the
    same volunteer, removed) raises the store's error, never gives other pixels."""
    from agent.events import Frame
    from agent.export.frame_data import frame_pixels
    from agent.store import keys
    from agent.store.reader import RebuiltFrame, read_session

    d, _ = consented
    session = patched_session(d, strips=True)
    other = d.sessions / patched_session(d, strips=False)
    frames = [
        e
        for e in read_session(d, session, keys.load_identity(d), lazy_frames=True).events
        if isinstance(e, Frame)
    ]
    late = [f for f in frames if isinstance(f.data, RebuiltFrame)][-1]
    folder = d.sessions / session
    for segment in sorted(folder.glob("*.seg")):
        if how == "flip":
            _flip(segment, segment.stat().st_size // 2)
        elif how == "swap" and (other / segment.name).exists():
            segment.write_bytes((other / segment.name).read_bytes())
        elif how == "remove":
            segment.unlink()
    hostile.tried("P6 export stream")
    with pytest.raises(StoreCorrupt, match="changed while the session was being read"):
        frame_pixels(late)
    hostile.held("P6 export stream")


def test_p5_a_link_where_the_bundle_goes_is_replaced_never_written_through(
    consented: Consented, tmp_path: Path, hostile: Tally
) -> None:
    d, study = consented
    session = synth_session(d, 0)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    (out / f"{session}.optin.tar.age").symlink_to(victim)
    hostile.tried("P5 export stream")
    res = bundle.export_session(d, session, out, study, approve=True, local=NO_NAMES)
    assert victim.read_bytes() == b"keep me"
    assert not res.path.is_symlink() and res.path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert res.path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in out.iterdir()) == [res.path.name]
    hostile.held("P5 export stream")


def _spool_fds(data: Path) -> list[int]:
    """This process's open files that are an export spool: unnamed files of the data folder."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(data)) and target.endswith("(deleted)"):
                found.append(int(fd))
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to find the spool's file")
def test_p6_a_spool_changed_during_export_fails_closed_and_leaves_nothing(
    consented: Consented, tmp_path: Path, hostile: Tally
) -> None:
    """The frames rebuilt from patches wait in the export's spool (encrypted, unnamed): a byte
    changed there before they are written fails the export, and nothing is left."""
    d, study = consented
    session = patched_session(d, strips=True)
    out = tmp_path / "out"
    flipped: list[int] = []

    def tamper(_summary: object) -> None:
        for fd in _spool_fds(d.data):
            size = os.fstat(fd).st_size
            if size:
                byte = os.pread(fd, 1, size // 2)
                os.pwrite(fd, bytes([byte[0] ^ 0x20]), size // 2)
                flipped.append(fd)

    hostile.tried("P6 export stream")
    with pytest.raises(StoreCorrupt, match="spool file"):
        bundle.export_session(d, session, out, study, approve=True, on_approve=tamper, local=NO_NAMES)
    assert flipped, "the export made no spool to tamper with"
    assert list(out.iterdir()) == []
    hostile.held("P6 export stream")


_FULL_DISK = """
import os, resource, signal, sys
from pathlib import Path
from pyrage import encrypt_io, x25519
from agent.errors import ExportError
from agent.export.sealed_file import seal_to_file

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
recipient = x25519.Identity.generate().to_public()
chunks = (os.urandom(65_536) for _ in range(16))
try:
    seal_to_file(Path(sys.argv[1]), "s.optin.tar.age", chunks, lambda r, w: encrypt_io(r, w, [recipient]))
except ExportError as exc:
    print("refused:", exc)
"""


def test_p6_a_disk_that_fills_during_export_leaves_nothing(tmp_path: Path, hostile: Tally) -> None:
    """The bundle is written as it is encrypted: a write that fails half-way (here the file-size
    limit, as a full disk) is an error that names the folder, and no partial file is left."""
    out = tmp_path / "out"
    hostile.tried("P6 export stream")
    done = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(out)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"refused: cannot write the bundle into {out}: File too large. Fix:")
    assert list(out.iterdir()) == []
    hostile.held("P6 export stream")
