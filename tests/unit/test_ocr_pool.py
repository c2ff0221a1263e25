"""OCR on every core: the pooled reads are the one-worker reads, word for word and mask for mask.

Real tesseract throughout (Debian's package: the library and the command); with CI=true a
missing tesseract fails these tests.  Frames are small (720x230) to keep the run short.
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from PIL import Image, ImageDraw, ImageFont

from agent.events import Frame
from agent.redact import ocr_pool
from agent.redact.screen import (
    Box,
    FrameRead,
    OcrFailed,
    TesseractOcr,
    Word,
    mask_frames,
    read_frames,
)
from agent.redact.spans import Span
from tests.tools import require_tool, unavailable

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
W, H = 720, 230


def email_detector(text: str) -> list[Span]:
    import re

    return [Span(m.start(), m.end(), "EMAIL") for m in re.finditer(r"[\w.]+@\w+\.\w+", text)]


@pytest.fixture(scope="module")
def binary() -> str:
    """The tesseract command, its library loadable by the workers."""
    require_tool("tesseract", hint="apt-get install tesseract-ocr tesseract-ocr-eng")
    found = TesseractOcr.find(workers=1)
    assert found is not None, "tesseract is installed but has no English data (tesseract-ocr-eng)"
    found.close()
    if ocr_pool.library() is None:
        unavailable("libtesseract (the tesseract command's library) was not found by ctypes")
    return found.binary


@pytest.fixture
def fresh(binary: str) -> Iterator[Callable[..., TesseractOcr]]:
    """New engines (nothing read yet: no words kept from an earlier run), closed after the test."""
    made: list[TesseractOcr] = []

    def make(workers: int = 2, **kw: Any) -> TesseractOcr:
        made.append(TesseractOcr(binary, workers=workers, **kw))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def engine(fresh: Callable[..., TesseractOcr]) -> TesseractOcr:
    return fresh()


def _frame(t: int, img: Image.Image) -> Frame:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return Frame(t, 0, 0, img.size[0], img.size[1], "png", "settled", buf.getvalue())


def _screen(typed: str, *, dialog: bool = False, mark: bool = False) -> Image.Image:
    """A small light editor beside a dark terminal, a line being typed, perhaps a dialog."""
    img = Image.new("RGB", (W, H), (245, 245, 245))
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 14)
    draw.rectangle((440, 0, W - 1, H - 1), fill=(30, 30, 30))
    for i, line in enumerate(["import config", "return value", "contact bob@example.org"]):
        draw.text((10, 10 + 22 * i), line, fill=(20, 20, 20), font=font)
    draw.text((450, 10), "$ git status", fill=(220, 220, 220), font=font)
    draw.text((10, 200), typed, fill=(20, 20, 20), font=font)
    if dialog:
        draw.rectangle((60, 90, 560, 170), fill=(250, 250, 250), outline=(90, 90, 90))
        draw.text((80, 110), "Save changes to alice@example.com?", fill=(20, 20, 20), font=font)
    if mark:
        draw.point((W - 1, H - 1), fill=(255, 0, 0))  # the failing stand-in's cue
    return img


def _session() -> list[Any]:
    """Typing, a dialog opening and closing (shown twice), a frame that does not decode, a new size."""
    typed = "write to alice.smith@example.com"
    imgs = [_screen(typed[:n]) for n in (5, 20)]
    imgs += [_screen(typed[:20], dialog=True), _screen(typed[:20]), _screen(typed[:20], dialog=True)]
    imgs += [_screen(typed[:26]), _screen(typed, mark=True), _screen(typed + " ok")]
    frames: list[Any] = [_frame(i + 1, img) for i, img in enumerate(imgs)]
    frames.insert(3, Frame(35, 0, 0, W, H, "webp", "settled", b"not an image"))
    frames.append(_frame(99, _screen(typed).resize((W, H + 40))))
    return frames


class FailsOnMark:
    """The real engine, except that it fails on an image with a red bottom-right pixel."""

    def __init__(self, engine: TesseractOcr) -> None:
        self.engine = engine

    def __call__(self, image: Any, boxes: Sequence[Box]) -> list[Word]:
        if image.getpixel((W - 1, H - 1))[:3] == (255, 0, 0):
            raise OcrFailed("stand-in failure")
        return self.engine(image, boxes)


def _masked(
    frames: Sequence[Any], ocr: Any, reads: list[FrameRead]
) -> tuple[list[bytes], int, dict[str, int]]:
    out, left_out, counts = mask_frames(frames, ocr, ("smith@exam",), detect=email_detector, reads=reads)
    return [e.data for e in out], left_out, counts


def test_pooled_reads_and_masks_are_the_one_worker_ones(fresh: Callable[..., TesseractOcr]) -> None:
    frames = _session()
    one = read_frames(frames, fresh(1), workers=1)
    assert sum(r.words is None for r in one) == 1 and any(len(r.words or ()) > 3 for r in one)
    assert one[-1].whole  # the new size is read whole
    pooled = fresh(3)
    reads = read_frames(frames, pooled, workers=3)
    assert reads == one
    assert pooled._pool is not None and pooled._pool.reads > 0  # read by the workers, not kept words
    masks_one = _masked(frames, fresh(1), one)
    assert _masked(frames, fresh(2), reads) == masks_one
    assert masks_one[2].get("EMAIL", 0) > 0 and masks_one[2].get("TYPED", 0) > 0  # the masks are real


def test_an_ocr_failure_mid_run_gives_the_one_worker_result(fresh: Callable[..., TesseractOcr]) -> None:
    frames = _session()
    one = read_frames(frames, FailsOnMark(fresh(1)), workers=1)
    k = next(i for i, f in enumerate(frames) if f.t_ns == 7)  # the marked frame
    assert one[k].words is None and one[k + 1].whole and one[k + 1].words  # read whole after it
    pooled = read_frames(frames, FailsOnMark(fresh(3)), workers=3)
    assert pooled == one
    masks_one = _masked(frames, FailsOnMark(fresh(1)), one)
    assert _masked(frames, FailsOnMark(fresh(2)), pooled) == masks_one
    assert masks_one[1] == 2  # the failed frame and the undecodable one are left out


def test_one_worker_process_and_the_command_read_the_same_words(fresh: Callable[..., TesseractOcr]) -> None:
    frames = _session()
    command, single = fresh(1, pool=False), fresh(1)
    assert not command.pooled and single.pooled
    reads = read_frames(frames, single, workers=1)
    assert read_frames(frames, command, workers=1) == reads


def test_progress_counts_frames_done_in_order(engine: TesseractOcr) -> None:
    frames = _session()
    seen: list[tuple[int, int]] = []
    read_frames(frames, engine, workers=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i + 1, len(frames)) for i in range(len(frames))]


def test_a_crop_seen_before_is_not_read_again_and_its_words_move_with_it(
    fresh: Callable[..., TesseractOcr],
) -> None:
    engine = fresh(1)
    img = _screen("a dialog line alice@example.com")
    lower = Image.new("RGB", (W + 50, H + 100), "white")
    lower.paste(img, (50, 100))
    first = engine(img, [(0, 190, W, 230)])
    assert engine.reused == 0 and first
    again = engine(lower, [(50, 290, W + 50, 330)])  # the same pixels, 50 columns right, 100 rows lower
    assert engine.reused == 1
    assert again == [
        Word((b[0] + 50, b[1] + 100, b[2] + 50, b[3] + 100), w.text) for w in first for b in [w.box]
    ]
    assert again == fresh(1, cache=0)(lower, [(50, 290, W + 50, 330)])  # what reading them would have given
    uncached = fresh(1, cache=0)
    uncached(img, [(0, 190, W, 230)])
    uncached(img, [(0, 190, W, 230)])
    assert uncached.reused == 0


def test_a_worker_that_times_out_fails_the_read_and_the_next_read_works(
    fresh: Callable[..., TesseractOcr],
) -> None:
    engine = fresh(1)
    img = _screen("some text to read here")
    engine.TIMEOUT_S = 0.001
    with pytest.raises(OcrFailed, match="stopped"):
        engine(img, [(0, 0, W, H)])
    engine.TIMEOUT_S = TesseractOcr.TIMEOUT_S
    assert engine(img, [(0, 0, W, H)])  # a new worker was started


def test_a_worker_that_died_while_idle_is_replaced(engine: TesseractOcr) -> None:
    img = _screen("a line for a dead worker")
    engine(img, [(0, 190, W, 230)])
    pool = engine._pool
    assert pool is not None and pool._idle
    for worker in list(pool._idle):
        worker.proc.kill()
        worker.proc.wait()
    assert engine(img, [(0, 0, W, 60)])  # not lost: a new worker reads it


def test_closing_stops_the_workers_and_later_reads_use_the_command(engine: TesseractOcr) -> None:
    assert engine.pooled
    img = _screen("text")
    engine(img, [(0, 0, W, 60), (0, 190, W, 230)])
    pool = engine._pool
    assert pool is not None
    procs = [w.proc for w in pool._idle]
    assert procs
    engine.close()
    assert all(p.poll() is not None for p in procs)
    assert not engine.pooled and engine(img, [(0, 190, W, 230)])


def test_workers_take_no_file_and_keep_omp_to_one_thread(engine: TesseractOcr) -> None:
    engine(_screen("x"), [(0, 190, W, 230)])
    pool = engine._pool
    assert pool is not None
    for worker in pool._idle:
        pid = worker.proc.pid
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"OMP_THREAD_LIMIT=1" in env
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        opened = [f for f in fds if f.startswith("/") and not f.startswith("/dev/")]
        assert opened == [], opened  # pipes and /dev/null only: no file written or read


def test_worker_counts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        read_frames([], lambda image, boxes: [], workers=0)
    with pytest.raises(ValueError, match="at least one worker"):
        ocr_pool.OcrPool("libtesseract.so.5", 0, "5")


def test_words_are_the_tesseract_commands_in_frame_coordinates(
    binary: str, fresh: Callable[..., TesseractOcr]
) -> None:
    """Known answer: the command run by hand on the prepared crop, its boxes halved and moved."""
    import subprocess

    from agent.redact.ocr_pool import prepare
    from agent.redact.screen import parse_tsv

    img = _screen("write to alice.smith@example.com", dialog=True)
    left, top, bottom = 40, 90, 230
    buf = io.BytesIO()
    prepare(img.crop((left, top, W, bottom)), 2, 110).save(buf, format="PNG")
    done = subprocess.run(
        [binary, "stdin", "stdout", "--oem", "1", "--psm", "3", "-l", "eng", "tsv"],
        input=buf.getvalue(),
        capture_output=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        check=True,
    )
    expected = parse_tsv(done.stdout.decode(), scale=2, top=top, left=left)
    assert any("alice" in w.text for w in expected)
    assert fresh(2)(img, [(left, top, W, bottom)]) == expected
    assert fresh(1, pool=False)(img, [(left, top, W, bottom)]) == expected


def test_the_words_kept_are_bounded(fresh: Callable[..., TesseractOcr]) -> None:
    engine = fresh(1, cache=6)
    many = _screen("one two three four five six seven eight nine")
    assert len(engine(many, [(0, 190, W, 230)])) > 6
    engine(many, [(0, 190, W, 230)])
    assert engine.reused == 0 and engine._kept == 0  # too many words to keep: read again
    few = _screen("hi there")
    first = engine(few, [(0, 190, W, 230)])
    assert engine(few, [(0, 190, W, 230)]) == first and engine.reused == 1
    engine.forget()
    engine(few, [(0, 190, W, 230)])
    assert engine.reused == 1  # forgotten: read again


class _Counted(Frame):
    """A frame that counts how often its bytes are read (each read is a decode in read_frames)."""

    reads: ClassVar[list[int]] = []
    _bytes: bytes

    @property
    def data(self) -> bytes:
        _Counted.reads.append(self.t_ns)
        return self._bytes

    def __init__(self, frame: Frame) -> None:
        for name in ("t_ns", "left", "top", "width", "height", "format", "reason"):
            object.__setattr__(self, name, getattr(frame, name))
        object.__setattr__(self, "_bytes", frame.data)


def test_frames_in_flight_are_bounded_while_a_read_is_slow() -> None:
    """The first read blocks: no more than IN_FLIGHT frames per worker are decoded meanwhile."""
    from agent.redact.screen import IN_FLIGHT

    release = threading.Event()

    def slow_first(image: Any, boxes: Sequence[Box]) -> list[Word]:
        if image.getpixel((0, 0)) == (0, 0, 0):
            assert release.wait(10)
        return []

    imgs = [Image.new("RGB", (40, 40), (0, 0, 0))] + [
        Image.new("RGB", (40, 40), (i, i, i)) for i in range(1, 60)
    ]
    frames = [_Counted(_frame(i + 1, img)) for i, img in enumerate(imgs)]
    _Counted.reads.clear()
    done: list[list[FrameRead]] = []
    runner = threading.Thread(target=lambda: done.append(read_frames(frames, slow_first, workers=2)))
    runner.start()
    deadline = time.monotonic() + 5
    while len(_Counted.reads) < IN_FLIGHT * 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # had it no bound, it would go on decoding now
    decoded = len(_Counted.reads)
    release.set()
    runner.join(10)
    assert decoded == IN_FLIGHT * 2 + 1  # the window, and the one that found it full
    assert [r.t_ns for r in done[0]] == list(range(1, 61)) and all(r.words == () for r in done[0])
