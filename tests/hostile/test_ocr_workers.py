"""Hostile traffic on the OCR workers' pipes (P6: nothing leaves without mandatory redaction, which
fails closed).

The workers (:mod:`agent.redact.ocr_pool`) read crops from a pipe and answer with tesseract's
text.  Each case sends one side what it should never get — a malformed or oversized request,
a request cut short, random bytes; an answer with a bad status, a huge length, a worker that
dies mid-answer or never answers — and checks that the worker stops or refuses, and that the
export side turns it into a failed read (the frame is left out) in bounded time, never a hang
or a read taken as empty.  ``OPTIN_FUZZ_ROUNDS`` runs the random-bytes case longer.
"""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import time

import pytest
from PIL import Image

from agent.redact import ocr_pool
from agent.redact.ocr_pool import ANSWER, HEAD, Worker, WorkerFailed
from tests.hostile.conftest import Tally, fuzz_rounds
from tests.tools import require_tool, unavailable

P6 = "P6 OCR worker pipes"


def _lib() -> str:
    require_tool("tesseract", hint="apt-get install tesseract-ocr tesseract-ocr-eng")
    lib = ocr_pool.library()
    if lib is None:
        unavailable("libtesseract was not found by ctypes (apt-get install tesseract-ocr)")
    return lib


def _start(lib: str) -> subprocess.Popen[bytes]:
    """A real worker, its hello read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.redact.ocr_pool", lib],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    assert proc.stdout is not None
    status, n = ANSWER.unpack(proc.stdout.read(ANSWER.size))
    assert status == 0 and proc.stdout.read(n)
    return proc


def _talk(proc: subprocess.Popen[bytes], request: bytes) -> tuple[bytes, int]:
    """Send ``request``, close the pipe; what the worker answered and its exit status (10 s at most)."""
    out, _ = proc.communicate(request, timeout=10)
    return out, proc.returncode


@pytest.mark.parametrize(
    "head",
    [
        HEAD.pack(b"CMYK", 10, 10, 2, 110),  # a mode it does not take
        HEAD.pack(b"RGB\0", 0, 10, 2, 110),  # no width
        HEAD.pack(b"RGB\0", 10, 10, 0, 110),  # no upscale
        HEAD.pack(b"RGB\0", 70000, 70000, 2, 110),  # 4.9 G pixels: never allocated
    ],
    ids=["mode", "zero-width", "zero-scale", "oversized"],
)
def test_p6_a_malformed_request_is_refused_and_the_worker_stops(hostile: Tally, head: bytes) -> None:
    proc = _start(_lib())
    hostile.tried(P6)
    out, code = _talk(proc, head)
    status, n = ANSWER.unpack(out[: ANSWER.size])
    assert status == 1 and out[ANSWER.size :] == b"a malformed request" and len(out) == ANSWER.size + n
    assert code == 1
    hostile.held(P6)


def test_p6_a_request_cut_short_ends_the_worker_without_an_answer(hostile: Tally) -> None:
    proc = _start(_lib())
    hostile.tried(P6)
    out, code = _talk(proc, HEAD.pack(b"RGB\0", 100, 100, 2, 110) + b"\0" * 500)
    assert out == b"" and code == 0
    hostile.held(P6)


def test_p6_random_bytes_never_hang_a_worker(hostile: Tally) -> None:
    lib = _lib()
    rng = random.Random(18)  # noqa: S311 - reproducible hostile input
    for _ in range(fuzz_rounds(3)):
        proc = _start(lib)
        hostile.tried(P6)
        junk = rng.randbytes(rng.randrange(1, 4096))
        t0 = time.monotonic()
        out, code = _talk(proc, junk)  # raises on a hang (10 s)
        assert time.monotonic() - t0 < 10
        while out:  # whatever it answered is well formed: a status and exactly its payload
            status, n = ANSWER.unpack(out[: ANSWER.size])
            assert status in (0, 1) and len(out) >= ANSWER.size + n
            out = out[ANSWER.size + n :]
        assert code in (0, 1)
        hostile.held(P6)


def _crafted(script: str) -> Worker:
    """A :class:`Worker` whose process is ``script`` (Python) instead of a real worker."""
    worker = Worker.__new__(Worker)
    worker.proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
    )
    return worker


@pytest.mark.parametrize(
    "answer",
    [
        struct.pack("=BI", 7, 0),  # a status that does not exist
        struct.pack("=BI", 0, ocr_pool.MAX_ANSWER + 1),  # a huge length: never read
        struct.pack("=BI", 0, 100) + b"cut",  # dies mid-answer
        b"",  # never answers (stays up)
    ],
    ids=["status", "huge-length", "cut", "silent"],
)
def test_p6_a_bad_answer_fails_the_read_and_kills_the_worker(hostile: Tally, answer: bytes) -> None:
    stay = "import time; time.sleep(30)" if not answer else "pass"
    send = f"sys.stdout.buffer.write({answer!r}); sys.stdout.flush()"
    script = f"import sys; sys.stdin.buffer.read(1); {send}; {stay}"
    worker = _crafted(script)
    hostile.tried(P6)
    t0 = time.monotonic()
    with pytest.raises(WorkerFailed, match="stopped"):
        worker.read(Image.new("RGB", (8, 8), "white"), 2, 110, timeout_s=1.0)
    assert time.monotonic() - t0 < 5
    assert worker.proc.poll() is not None  # killed (or gone): never used again
    hostile.held(P6)
