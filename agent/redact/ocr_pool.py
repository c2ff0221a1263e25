"""Tesseract kept loaded in worker processes: OCR of image crops on every core, through pipes.

Reading one crop with the ``tesseract`` command costs about 0.17 s on a 1080p screen, of
which 0.11 s is starting the process and loading the English model (measured 2026-12-06,
docs/performance.md).  A worker here is ``python -m agent.redact.ocr_pool LIBRARY``, started
with ``OMP_THREAD_LIMIT=1``: it loads libtesseract through its C API once and then reads
crops from its stdin and answers with tesseract's TSV on its stdout, for as long as the
export runs.  The words are the command's (same library, same settings: ``--oem 1 --psm 3
-l eng``; tested word for word against the command).

Nothing is written to a file: pixels go down a pipe, text comes back up one; the worker's
stderr (tesseract's diagnostics) is discarded and nothing is logged.  A worker that does not
answer within the timeout is killed (the read fails: :class:`agent.redact.screen.OcrFailed`)
and a new one started for the next read.  Workers exit when the pipe to them closes, so an
export that dies leaves none behind.

The protocol (native byte order, one request at a time):

* the worker's first message: status 0 and the library's version, or status 1 and why it
  could not load (no content);
* a request: :data:`HEAD` (mode, width, height, upscale factor, dark threshold) then the
  crop's raw pixels (``Image.tobytes()``);
* an answer: :data:`ANSWER` (status, length) then that many bytes: the TSV (status 0) or
  why the read failed (status 1).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import struct
import subprocess
import sys
import threading
import time
from typing import IO, Any

#: A request's header: mode (4 bytes, NUL padded), width, height, upscale factor, dark threshold.
HEAD = struct.Struct("=4sIIHH")
#: An answer's header: status (0 ok, 1 failed), payload length.
ANSWER = struct.Struct("=BI")
#: Modes sent as they are; any other is converted to RGB first.
MODES = {"L": 1, "RGB": 3, "RGBA": 4}
#: Largest crop accepted (pixels): a 16K-wide screen's full height.
MAX_PIXELS = 16384 * 16384
#: Largest answer accepted (bytes of TSV).
MAX_ANSWER = 64 * 1024 * 1024
#: Seconds a worker may take to start and load the model.
START_S = 30.0


class PoolUnavailable(Exception):
    """No worker could be started (no libtesseract, another version, not POSIX): use the command."""


class WorkerFailed(Exception):
    """A worker failed on one read, or stopped answering (it is killed; the read is lost)."""


def library() -> str | None:
    """The name of the tesseract library to load, or None where workers are not used."""
    if os.name != "posix":
        return None  # select() on pipes is POSIX only; the command is used elsewhere
    return ctypes.util.find_library("tesseract")


# --- the client side -------------------------------------------------------------------------------


class Worker:
    """One worker process, one read at a time (the pool hands it to one thread at a time)."""

    def __init__(self, lib: str) -> None:
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agent.redact.ocr_pool", lib],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=env,
                bufsize=0,
                close_fds=True,
            )
        except OSError as exc:
            msg = f"the OCR worker did not start: {type(exc).__name__}"
            raise PoolUnavailable(msg) from None
        try:
            status, payload = self._answer(START_S)
        except WorkerFailed:
            self.kill()
            msg = "the OCR worker did not load tesseract"
            raise PoolUnavailable(msg) from None
        if status != 0:
            self.kill()
            msg = "the OCR worker could not load tesseract"
            raise PoolUnavailable(msg)
        self.version = payload.decode("ascii", "replace")

    def read(self, image: Any, scale: int, dark: int, timeout_s: float) -> str:
        """Tesseract's TSV for ``image`` (a Pillow image), prepared in the worker.

        :raises WorkerFailed: the worker failed, died or timed out (then it is killed).
        """
        if image.mode not in MODES:
            image = image.convert("RGB")
        width, height = image.size
        if width * height > MAX_PIXELS:
            msg = f"a crop of {width}x{height} pixels is larger than the OCR worker takes"
            raise WorkerFailed(msg)
        head = HEAD.pack(image.mode.encode("ascii").ljust(4, b"\0"), width, height, scale, dark)
        try:
            _write_all(self._stdin, head)
            _write_all(self._stdin, image.tobytes())
            status, payload = self._answer(timeout_s)
        except (OSError, WorkerFailed) as exc:
            self.kill()
            msg = f"the OCR worker stopped: {type(exc).__name__}"
            raise WorkerFailed(msg) from None
        if status != 0:
            msg = "tesseract failed on a crop"
            raise WorkerFailed(msg)
        return payload.decode("utf-8", "replace")

    @property
    def _stdin(self) -> IO[bytes]:
        stdin = self.proc.stdin
        if stdin is None:  # never: started with a pipe
            msg = "no pipe"
            raise WorkerFailed(msg)
        return stdin

    def _answer(self, timeout_s: float) -> tuple[int, bytes]:
        stdout = self.proc.stdout
        if stdout is None:  # never: started with a pipe
            msg = "no pipe"
            raise WorkerFailed(msg)
        deadline = time.monotonic() + timeout_s
        status, length = ANSWER.unpack(_read_until(stdout.fileno(), ANSWER.size, deadline))
        if status not in (0, 1) or length > MAX_ANSWER:
            msg = "a malformed answer"
            raise WorkerFailed(msg)
        return status, _read_until(stdout.fileno(), length, deadline)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Close the pipe (the worker exits) and reap it; kill it if it lingers."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def _write_all(pipe: IO[bytes], data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = pipe.write(view)
        if not n:
            msg = "the pipe took nothing"
            raise OSError(msg)
        view = view[n:]


def _read_until(fd: int, n: int, deadline: float) -> bytes:
    """Exactly ``n`` bytes from ``fd`` before ``deadline`` (monotonic seconds)."""
    parts: list[bytes] = []
    left = n
    while left:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            msg = "timed out"
            raise WorkerFailed(msg)
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            msg = "the worker exited"
            raise WorkerFailed(msg)
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class OcrPool:
    """Up to ``size`` workers, started when first needed; each read takes an idle one (or waits)."""

    def __init__(self, lib: str, size: int, version: str) -> None:
        if size < 1:
            msg = f"an OCR pool needs at least one worker, not {size}"
            raise ValueError(msg)
        self.lib, self.size, self.version = lib, size, version
        self._idle: list[Worker] = []
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()
        #: Reads answered by a worker (for tests and benchmarks: a count).
        self.reads = 0

    def read(self, image: Any, scale: int, dark: int, timeout_s: float) -> str:
        """TSV of ``image`` from an idle worker.

        :raises PoolUnavailable: the first worker could not start (use the command instead).
        :raises WorkerFailed: the read failed (the worker is replaced for the next read).
        """
        worker = self._take()
        try:
            tsv = worker.read(image, scale, dark, timeout_s)
        except BaseException:
            self._give(worker)
            raise
        self._give(worker)
        with self._cond:
            self.reads += 1
        return tsv

    def _take(self) -> Worker:
        with self._cond:
            while True:
                if self._closed:
                    msg = "the OCR pool is closed"
                    raise PoolUnavailable(msg)
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive:
                        return worker
                    worker.kill()  # died while idle: reap it, start another
                    self._started -= 1
                if self._started < self.size:
                    self._started += 1
                    break
                self._cond.wait()
        try:
            worker = Worker(self.lib)
        except PoolUnavailable:
            self._lost()
            raise
        if worker.version != self.version:
            worker.close()
            self._lost()
            msg = "the tesseract library is not the version of the tesseract command"
            raise PoolUnavailable(msg)
        return worker

    def _give(self, worker: Worker) -> None:
        if not worker.alive:
            self._lost()
            return
        with self._cond:
            if not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
        worker.close()
        self._lost()

    def _lost(self) -> None:
        with self._cond:
            self._started -= 1
            self._cond.notify()

    def close(self) -> None:
        """Stop the idle workers; busy ones stop when they are given back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._started -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.close()


# --- the worker side -------------------------------------------------------------------------------


class _Tesseract:
    """libtesseract's C API, set up as ``tesseract stdin stdout --oem 1 --psm 3 -l eng tsv`` is."""

    def __init__(self, lib: str) -> None:
        c = ctypes.CDLL(lib)
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        c.TessVersion.restype = s
        c.TessBaseAPICreate.restype = p
        c.TessBaseAPIInit2.argtypes = [p, s, s, i]
        c.TessBaseAPISetPageSegMode.argtypes = [p, i]
        c.TessBaseAPISetImage.argtypes = [p, s, i, i, i, i]
        c.TessBaseAPIRecognize.argtypes = [p, p]
        c.TessBaseAPIGetTsvText.argtypes = [p, i]
        c.TessBaseAPIGetTsvText.restype = p
        c.TessDeleteText.argtypes = [p]
        c.TessBaseAPIClear.argtypes = [p]
        self.c = c
        self.version = (c.TessVersion() or b"unknown").decode("ascii", "replace")
        self.handle = c.TessBaseAPICreate()
        if not self.handle or c.TessBaseAPIInit2(self.handle, None, b"eng", 1) != 0:  # 1: LSTM only
            msg = "tesseract did not load its English model"
            raise OSError(msg)
        c.TessBaseAPISetPageSegMode(self.handle, 3)  # 3: automatic page segmentation

    def tsv(self, grey: Any) -> str:
        """TSV of an 8-bit greyscale Pillow image."""
        width, height = grey.size
        c = self.c
        c.TessBaseAPISetImage(self.handle, grey.tobytes(), width, height, 1, width)
        try:
            if c.TessBaseAPIRecognize(self.handle, None) != 0:
                msg = "tesseract could not recognise the image"
                raise OSError(msg)
            text = c.TessBaseAPIGetTsvText(self.handle, 0)
            if not text:
                msg = "tesseract gave no TSV"
                raise OSError(msg)
            try:
                return ctypes.string_at(text).decode("utf-8", "replace")
            finally:
                c.TessDeleteText(text)
        finally:
            c.TessBaseAPIClear(self.handle)


def _trimmer() -> Any:
    """glibc's ``malloc_trim(0)`` (freed heap back to the system), or a no-op elsewhere."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


def _read_exact(pipe: IO[bytes], n: int) -> bytes | None:
    parts: list[bytes] = []
    left = n
    while left:
        chunk = pipe.read(left)
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def prepare(image: Any, scale: int, dark: int) -> Any:
    """Greyscale, light-on-dark regions inverted, upscaled ``scale`` times (for tesseract)."""
    from PIL import Image, ImageChops

    grey = image.convert("L")
    w, h = grey.size
    small = grey.resize((max(1, w // 16), max(1, h // 16)), Image.Resampling.BOX)
    dark_map = small.point(lambda v: 255 if v < dark else 0).resize((w, h), Image.Resampling.NEAREST)
    if dark_map.getbbox() is not None:
        grey = Image.composite(ImageChops.invert(grey), grey, dark_map)
    if scale != 1:
        grey = grey.resize((w * scale, h * scale), Image.Resampling.LANCZOS)
    return grey


def _send(out: IO[bytes], status: int, payload: bytes) -> None:
    out.write(ANSWER.pack(status, len(payload)) + payload)
    out.flush()


def serve(lib: str, inp: IO[bytes], out: IO[bytes]) -> int:
    """The worker's loop: load the library, then answer requests until ``inp`` closes."""
    from PIL import Image

    try:
        engine = _Tesseract(lib)
    except (OSError, AttributeError):
        _send(out, 1, b"no tesseract library")
        return 1
    _send(out, 0, engine.version.encode("ascii", "replace"))
    trim = _trimmer()
    while True:
        head = _read_exact(inp, HEAD.size)
        if head is None:
            return 0
        raw_mode, width, height, scale, dark = HEAD.unpack(head)
        mode = raw_mode.rstrip(b"\0").decode("ascii", "replace")
        if mode not in MODES or width * height > MAX_PIXELS or not width or not height or not scale:
            _send(out, 1, b"a malformed request")
            return 1  # the client's stream is out of step: stop (it starts another worker)
        data = _read_exact(inp, width * height * MODES[mode])
        if data is None:
            return 0
        grey = prepare(Image.frombytes(mode, (width, height), data), scale, dark)
        try:
            tsv = engine.tsv(grey)
        except OSError:
            _send(out, 1, b"recognition failed")
            continue
        _send(out, 0, tsv.encode("utf-8"))
        del data, grey
        trim()  # a whole frame's buffers (tens of MB) go back to the system between reads


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m agent.redact.ocr_pool LIBRARY (started by optin's export)\n")
        return 2
    # The protocol owns the real stdout; anything the library prints goes nowhere.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return serve(argv[0], sys.stdin.buffer, out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
