"""glibc gives freed frame buffers back to the OS once agent/backends/allocator.py has set its mmap
threshold (a fresh interpreter for each case: the setting is process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.backends import allocator

REPO = Path(__file__).resolve().parents[2]

#: After the first frame is freed (which raises glibc's dynamic threshold to its size), is a 2 MB
#: buffer served by its own mapping (given back to the OS when freed: printed as the bytes glibc
#: holds in mappings growing by its size) or from an arena (0)?  mallinfo2 is glibc >= 2.33.
PROBE = """
import ctypes, sys
from agent.backends import allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
        "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "set":
    assert allocator.return_large_blocks()
first = bytearray(8_294_400)  # a 1920x1080 BGRA frame
del first
before = libc.mallinfo2().hblkhd
buffer = bytearray(2_000_000)
print(libc.mallinfo2().hblkhd - before)
"""


def _glibc_with_mallinfo2() -> bool:
    if sys.platform != "linux":
        return False
    version = os.confstr("CS_GNU_LIBC_VERSION")
    if not version:
        return False
    major, minor = (int(x) for x in version.split()[-1].split(".")[:2])
    return (major, minor) >= (2, 33)


glibc = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc's allocator (2.33 or later) only")


def _mapped(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != allocator.GLIBC_ENV}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout)


@glibc
def test_freed_frames_are_kept_without_it_and_given_back_with_it() -> None:
    assert _mapped("none") == 0  # glibc's own rule: from the arena, kept there when freed
    assert _mapped("set") >= 2_000_000  # its own mapping: unmapped when freed


def test_the_volunteers_own_glibc_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(allocator.GLIBC_ENV, "65536")
    assert allocator.return_large_blocks() is False


def test_nothing_to_do_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.return_large_blocks() is False
