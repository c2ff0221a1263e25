"""The C allocator's settings for a long-running recorder, with a branch per OS (glibc on Linux only).

glibc serves a block above its *mmap threshold* with its own mapping and unmaps it when freed, but
the threshold is dynamic: the first such block freed raises it to that block's size (up to 32 MiB
on 64-bit), so from then on the recorder's 8 MB frame buffers (a 1920x1080 grab, a masked copy,
Pillow's image for the encoder) come out of the threads' arenas, and a small block allocated after
one pins the arena's top: freed frames stay resident.  A fixed threshold of 1 MiB gives every such
buffer back when it is freed.  Measured on the demo's scripted minute at 1920x1080 (issue 18;
noisy, other work on the machine): agent RSS 155 -> 116 MB polling and 201 -> 132 MB with X11
DAMAGE, for 3-5 more points of one core during the work (each new buffer is page-faulted in).

macOS and Windows allocators return large blocks by themselves: nothing to do there.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

logger = logging.getLogger(__name__)

#: glibc's ``M_MMAP_THRESHOLD`` parameter of ``mallopt``.
M_MMAP_THRESHOLD = -3
#: Blocks this large or larger get their own mapping, given back to the OS when freed.
MMAP_THRESHOLD = 1 << 20
#: Set by the volunteer, glibc's own variable wins (read by glibc at start).
GLIBC_ENV = "MALLOC_MMAP_THRESHOLD_"


def return_large_blocks() -> bool:
    """Have glibc give blocks of :data:`MMAP_THRESHOLD` and more back to the OS as soon as they
    are freed.  Linux with glibc only; elsewhere, or when :data:`GLIBC_ENV` is set, nothing.
    Never raises; True when the setting was made."""
    if sys.platform != "linux" or os.environ.get(GLIBC_ENV):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    logger.debug("glibc mmap threshold %s", "set to 1 MiB" if done else "not changed")
    return done


__all__ = ["GLIBC_ENV", "MMAP_THRESHOLD", "M_MMAP_THRESHOLD", "return_large_blocks"]
