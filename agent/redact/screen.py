"""Screen redaction at export: read the text on changed parts of a frame, mask what is sensitive.

Deny-listed windows are already masked when a frame is captured (agent/capture/deny.py);
this module handles the rest of the screen.  For each exported frame:

1. :func:`changed_bands` finds the horizontal bands (full frame width, so a text line is
   read whole) that differ from the previous frame of the same geometry; the first frame
   and any frame after a geometry change is read whole.
2. An OCR engine (:class:`TesseractOcr`) reads the words in those bands.
3. :func:`lines` groups the words into visual lines; the text detectors run on each line,
   and the text the volunteer typed that was redacted (``secrets``) is looked for too.
4. Boxes of matched words are masked (flat grey, like deny-listed windows; padded); masks of the
   previous frame outside the changed bands are kept, since those pixels did not change.

:func:`mask_plan` is pure given its OCR function, so it is tested without tesseract.
Nothing here writes a file: images go to tesseract through a pipe.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.redact.spans import Span

#: (left, top, right, bottom), right and bottom exclusive.
Box = tuple[int, int, int, int]

#: Rows are compared in bands this tall.
BAND = 16
#: Changed bands grow by this much on each side (anti-aliasing, descenders, a line above).
MARGIN = 12
#: Bands closer than this are read as one.
JOIN_GAP = 48
#: Masks grow by this much on each side.
PAD = 3
#: Typed secrets shorter than this are not looked for on screen (too many chance matches).
MIN_SECRET_CHARS = 4
#: Mask colour (RGB).
MASK_RGB = (128, 128, 128)  # the deny masks' grey: not taken for a dark background by OCR


@dataclass(frozen=True, slots=True)
class Word:
    """A word the OCR engine read, in frame coordinates."""

    box: Box
    text: str


@dataclass(frozen=True, slots=True)
class Line:
    """Words on one visual line, and their text joined by single spaces."""

    words: tuple[Word, ...]
    text: str
    #: ``starts[i]`` is where ``words[i]`` begins in :attr:`text`.
    starts: tuple[int, ...]


@dataclass(frozen=True)
class FrameMasks:
    """What :func:`mask_plan` decided for one frame."""

    boxes: tuple[Box, ...]
    #: The bands that were read (empty: nothing changed since the previous frame).
    bands: tuple[tuple[int, int], ...]
    #: Entity counts of the text matches masked in the bands read (``TYPED`` for typed secrets).
    counts: dict[str, int]


# --- where to read ----------------------------------------------------------------------------------


def changed_bands(previous: Any | None, current: Any) -> list[tuple[int, int]]:
    """Row ranges ``(top, bottom)`` of ``current`` (a Pillow image) that differ from ``previous``.

    All of ``current`` when there is no previous image or its size differs.  Bands are
    widened by :data:`MARGIN`, and bands closer than :data:`JOIN_GAP` are joined.
    """
    width, height = current.size
    if previous is None or previous.size != current.size:
        return [(0, height)] if height else []
    from PIL import ImageChops

    diff = ImageChops.difference(previous.convert("RGB"), current.convert("RGB"))
    rows: list[tuple[int, int]] = []
    for top in range(0, height, BAND):
        bottom = min(height, top + BAND)
        if diff.crop((0, top, width, bottom)).getbbox() is not None:
            rows.append((max(0, top - MARGIN), min(height, bottom + MARGIN)))
    return join_bands(rows, JOIN_GAP)


def join_bands(bands: Iterable[tuple[int, int]], gap: int) -> list[tuple[int, int]]:
    """Sorted, merged row ranges; ranges less than ``gap`` apart become one."""
    out: list[tuple[int, int]] = []
    for top, bottom in sorted(bands):
        if out and top - out[-1][1] < gap:
            out[-1] = (out[-1][0], max(out[-1][1], bottom))
        else:
            out.append((top, bottom))
    return out


def _cover_boxes(bands: list[tuple[int, int]], boxes: Sequence[Box], height: int) -> list[tuple[int, int]]:
    """Grow bands until every previous mask they touch lies wholly inside one (so it is re-read)."""
    while True:
        grown = list(bands)
        for box in boxes:
            for i, (top, bottom) in enumerate(grown):
                if box[1] < bottom and box[3] > top and not (top <= box[1] and box[3] <= bottom):
                    grown[i] = (max(0, min(top, box[1] - MARGIN)), min(height, max(bottom, box[3] + MARGIN)))
        grown = join_bands(grown, JOIN_GAP)
        if grown == bands:
            return bands
        bands = grown


# --- what the words say -----------------------------------------------------------------------------


def lines(words: Iterable[Word]) -> list[Line]:
    """Group words into visual lines (vertical centres within half a word height), left to right.

    A horizontal gap of more than four line heights starts a new line, so two columns of a
    layout are not read as one sentence.
    """
    rows: list[list[Word]] = []
    for word in sorted(words, key=lambda w: (w.box[1] + w.box[3], w.box[0])):
        centre = (word.box[1] + word.box[3]) / 2
        for row in rows:
            ref = row[-1].box
            if abs((ref[1] + ref[3]) / 2 - centre) <= max(4.0, (ref[3] - ref[1]) / 2):
                row.append(word)
                break
        else:
            rows.append([word])
    out: list[Line] = []
    for row in rows:
        row.sort(key=lambda w: w.box[0])
        height = max(w.box[3] - w.box[1] for w in row)
        group: list[Word] = []
        for word in row:
            if group and word.box[0] - group[-1].box[2] > 4 * height:
                out.append(_line(group))
                group = []
            group.append(word)
        out.append(_line(group))
    return out


def _line(words: list[Word]) -> Line:
    starts: list[int] = []
    pos = 0
    for word in words:
        starts.append(pos)
        pos += len(word.text) + 1
    return Line(tuple(words), " ".join(w.text for w in words), tuple(starts))


def _words_in(line: Line, start: int, end: int) -> list[Word]:
    return [w for w, s in zip(line.words, line.starts, strict=True) if s < end and s + len(w.text) > start]


#: OCR confusions folded together before typed text is looked for (O/0, I/l/1, S/5, B/8, Z/2).
_CANON = str.maketrans("oilsbz|", "0115821")
#: Typed secrets longer than this are looked for in overlapping pieces of this length, so a
#: misread character or a line wrap hides only the pieces it falls in.
CHUNK = 8
#: Entities also looked for with OCR's spaces at punctuation removed ("ghp_ R8x...",
#: "li.wei@outlook. com"); digits-only entities are left out (they would join unrelated numbers).
JOINED_ENTITIES = frozenset(
    {"EMAIL", "URL_CREDENTIALS", "JWT", "PRIVATE_KEY"}
    | {"AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GOOGLE_API_KEY", "GITHUB_TOKEN", "GITLAB_TOKEN"}
    | {"SLACK_TOKEN", "STRIPE_KEY", "OPENAI_KEY"}
)


def canonical(text: str) -> str:
    """Letters and digits only, case and OCR confusions folded (how typed text is matched on screen)."""
    return "".join(c for c in text.casefold() if c.isalnum()).translate(_CANON)


def _owners(line: Line, keep: Callable[[str], bool]) -> tuple[str, list[int]]:
    """The line's characters that ``keep`` accepts, joined, with the index of each one's word."""
    chars: list[str] = []
    owner: list[int] = []
    for i, word in enumerate(line.words):
        for ch in word.text:
            if keep(ch):
                chars.append(ch)
                owner.append(i)
    return "".join(chars), owner


def _find_typed(frame_lines: Sequence[Line], secrets: Sequence[str]) -> list[tuple[int, Word]]:
    """The words (with their line's index) that show one of ``secrets`` (:func:`normalise_secrets`
    output), looked for over the frame's lines joined in reading order: a secret a terminal
    wrapped, or one typed half-way across a wrap, is found as if on one line.

    A secret longer than :data:`CHUNK` is found piece by piece: every word holding one of its
    :data:`CHUNK`-character pieces, at every offset, is masked.
    """
    if not secrets:
        return []
    chars: list[str] = []
    owner: list[tuple[int, int]] = []
    for n, line in enumerate(frame_lines):
        raw, words = _owners(line, str.isalnum)
        chars.append(raw)
        owner += [(n, i) for i in words]
    haystack = "".join(chars).casefold().translate(_CANON)
    found: set[tuple[int, int]] = set()
    for secret in secrets:
        pieces = [secret] if len(secret) <= CHUNK else _pieces(secret)
        for piece in pieces:
            at = haystack.find(piece)
            while at >= 0:
                found.update(owner[at : at + len(piece)])
                at = haystack.find(piece, at + 1)
    return [(n, frame_lines[n].words[i]) for n, i in sorted(found)]


def _pieces(secret: str) -> list[str]:
    """Every :data:`CHUNK`-character window of ``secret``: a partly typed or partly shown secret
    shows at least one of them whatever its first visible character is."""
    return [secret[i : i + CHUNK] for i in range(len(secret) - CHUNK + 1)]


def _detect_joined(line: Line, detect: DetectFn) -> list[tuple[str, list[Word]]]:
    """Spans of :data:`JOINED_ENTITIES` found where OCR split a word at punctuation.

    The line is read again with every space next to ``_ - . / : @ = +`` removed
    (``ghp_ R8x...`` becomes ``ghp_R8x...``); other spaces stay, so separate words are
    not run together.
    """
    chars: list[str] = []
    owner: list[int] = []
    for i, word in enumerate(line.words):
        if chars and not (chars[-1] in _GLUE or word.text[:1] in _GLUE):
            chars.append(" ")
            owner.append(i)
        chars.extend(word.text)
        owner.extend([i] * len(word.text))
    joined = "".join(chars)
    if joined == line.text:
        return []
    out: list[tuple[str, list[Word]]] = []
    for span in detect(joined):
        if span.entity in JOINED_ENTITIES:
            out.append((span.entity, [line.words[i] for i in sorted(set(owner[span.start : span.end]))]))
    return out


#: Characters next to which OCR's spaces are dropped by :func:`_detect_joined`.
_GLUE = frozenset("_-./:@=+")


def normalise_secrets(secrets: Iterable[str]) -> tuple[str, ...]:
    """Typed secrets as :func:`mask_plan` looks for them (:func:`canonical`, long enough)."""
    out = {canonical(s) for s in secrets}
    return tuple(sorted(s for s in out if len(s) >= MIN_SECRET_CHARS))


def _pad(box: Box, width: int, height: int) -> Box:
    """``box`` grown by :data:`PAD` vertically and half its height sideways (a glyph OCR left out)."""
    side = max(PAD, (box[3] - box[1]) // 2)
    return (max(0, box[0] - side), max(0, box[1] - PAD), min(width, box[2] + side), min(height, box[3] + PAD))


# --- the plan ---------------------------------------------------------------------------------------

OcrFn = Callable[[Any, Sequence[tuple[int, int]]], list[Word]]
DetectFn = Callable[[str], list[Span]]


def mask_plan(
    previous: Any | None,
    previous_boxes: Sequence[Box],
    current: Any,
    *,
    ocr: OcrFn,
    detect: DetectFn,
    secrets: Sequence[str] = (),
) -> FrameMasks:
    """Decide the masks of ``current`` (a Pillow image; pure given ``ocr`` and ``detect``).

    :param previous: the previous exported frame of this session, unmasked, or None.
    :param previous_boxes: the masks decided for ``previous``.
    :param ocr: reads the words in the given row bands of an image.
    :param secrets: :func:`normalise_secrets` output: typed text that was redacted.
    """
    same = previous is not None and previous.size == current.size
    bands = changed_bands(previous if same else None, current)
    return _plan(
        current.size,
        bands,
        previous_boxes if same else None,
        read=lambda b: ocr(current, b),
        detect=detect,
        secrets=secrets,
    )


def _plan(
    size: tuple[int, int],
    bands: list[tuple[int, int]],
    previous_boxes: Sequence[Box] | None,
    *,
    read: Callable[[list[tuple[int, int]]], list[Word]],
    detect: DetectFn,
    secrets: Sequence[str],
) -> FrameMasks:
    """:func:`mask_plan` once the changed ``bands`` are known (``previous_boxes`` None: a new geometry)."""
    width, height = size
    if previous_boxes is not None:
        bands = _cover_boxes(bands, previous_boxes, height)
    kept = [b for b in (previous_boxes or ()) if not any(b[1] < bot and b[3] > top for top, bot in bands)]
    counts: dict[str, int] = {}
    found: list[Box] = []
    words = read(bands) if bands else []
    frame_lines = lines(words)
    for line in frame_lines:
        hits = [(span.entity, _words_in(line, span.start, span.end)) for span in detect(line.text)]
        seen = {id(w) for _, ws in hits for w in ws}  # joined-line finds count only where they add words
        hits += [(e, ws) for e, ws in _detect_joined(line, detect) if not seen.issuperset(map(id, ws))]
        for entity, hit in hits:
            found += [_pad(w.box, width, height) for w in hit]
            counts[entity] = counts.get(entity, 0) + bool(hit)
    typed = _find_typed(frame_lines, secrets)
    if typed:
        found += [_pad(w.box, width, height) for _, w in typed]
        counts["TYPED"] = counts.get("TYPED", 0) + len({n for n, _ in typed})  # lines, as before
    boxes = tuple(sorted(set(kept) | set(found)))
    return FrameMasks(boxes, tuple(bands), counts)


def apply_boxes(image: Any, boxes: Iterable[Box]) -> Any:
    """A copy of ``image`` with ``boxes`` filled with :data:`MASK_RGB`."""
    from PIL import ImageDraw

    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    for left, top, right, bottom in boxes:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=MASK_RGB)
    return out


# --- tesseract --------------------------------------------------------------------------------------


class OcrFailed(Exception):
    """The OCR engine could not read a frame (the frame is then left out of the export)."""


class TesseractOcr:
    """The tesseract command, one thread each, fed PNG bytes through a pipe (no files).

    Measured on this kind of machine (../shared/research/redaction-lab.md): light-on-dark
    text needs inverting and small text a 2x upscale; ``OMP_THREAD_LIMIT=1`` is 4x faster
    than tesseract's default threading on two cores.  Bands are read two at a time.
    """

    name = "tesseract"
    #: Upscale factor before reading.
    SCALE = 2
    #: Luminance below which a region counts as a dark background (then inverted).
    DARK = 110
    #: Seconds one band may take.
    TIMEOUT_S = 60.0

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.version = _tesseract_version(binary)
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    @classmethod
    def find(cls) -> TesseractOcr | None:
        """The installed tesseract with English data, or None."""
        binary = shutil.which("tesseract")
        if binary is None:
            return None
        try:
            engine = cls(binary)
            langs = subprocess.run(
                [binary, "--list-langs"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.split()
        except (OSError, subprocess.SubprocessError, OcrFailed):
            return None
        return engine if "eng" in langs else None

    def __call__(self, image: Any, bands: Sequence[tuple[int, int]]) -> list[Word]:
        """Words in ``bands`` of ``image``, in image coordinates.

        :raises OcrFailed: tesseract failed or timed out on a band.
        """
        width = image.size[0]
        crops = [(top, image.crop((0, top, width, bottom))) for top, bottom in bands if bottom > top]
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="optin-ocr") as pool:
            results = list(pool.map(lambda c: self._read(*c), crops))
        return [w for words in results for w in words]

    def _read(self, top: int, crop: Any) -> list[Word]:
        prepared = prepare(crop, self.SCALE, self.DARK)
        buf = io.BytesIO()
        prepared.save(buf, format="PNG", compress_level=1)
        try:
            done = subprocess.run(
                [self.binary, "stdin", "stdout", "--oem", "1", "--psm", "3", "-l", "eng", "tsv"],
                input=buf.getvalue(),
                capture_output=True,
                timeout=self.TIMEOUT_S,
                env=self._env,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            msg = f"tesseract did not finish: {type(exc).__name__}"
            raise OcrFailed(msg) from None
        if done.returncode != 0:
            msg = f"tesseract exited with status {done.returncode}"
            raise OcrFailed(msg)
        return parse_tsv(done.stdout.decode("utf-8", "replace"), scale=self.SCALE, top=top)


def _tesseract_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        msg = f"tesseract --version failed: {type(exc).__name__}"
        raise OcrFailed(msg) from None
    first = (out.stdout or out.stderr).split("\n", 1)[0].split()
    return first[1] if len(first) > 1 else "unknown"


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


def parse_tsv(tsv: str, *, scale: int = 1, top: int = 0) -> list[Word]:
    """Words of tesseract's TSV output, boxes divided by ``scale`` and moved down by ``top``."""
    words: list[Word] = []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = cols[11].strip()
        if not text:
            continue
        try:
            left, y, w, h = (int(c) for c in cols[6:10])
        except ValueError:
            continue
        box = (left // scale, top + y // scale, -(-(left + w) // scale), top + -(-(y + h) // scale))
        words.append(Word(box, text))
    return words


# --- a session's frames -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameRead:
    """What OCR read on one frame: the words in the rows that changed since the previous frame.

    :ivar t_ns: the frame's time; ``left``, ``top``, ``width``, ``height``: where it lies
        on the virtual screen (word boxes are in frame coordinates).
    :ivar bands: the row ranges read (:func:`changed_bands`; the whole frame after a new
        geometry or a frame OCR failed on).
    :ivar words: the words read in ``bands``; None: the OCR engine failed on this frame (it
        is left out of the export, and the next frame is read whole).
    """

    t_ns: int
    left: int
    top: int
    width: int
    height: int
    bands: tuple[tuple[int, int], ...]
    words: tuple[Word, ...] | None = field(repr=False)

    @property
    def whole(self) -> bool:
        """Whether the whole frame was read (its words replace everything read before)."""
        return self.bands == ((0, self.height),)


def frame_image(data: bytes) -> Any:
    """A stored frame's bytes as a loaded Pillow image."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def read_frames(
    events: Sequence[Any], ocr: OcrFn, *, progress: Callable[[int, int], None] | None = None
) -> list[FrameRead]:
    """OCR the changed rows of every frame in ``events`` (in order), once for the whole export.

    A frame that does not decode, or that the engine fails on, gets ``words`` None (it is left
    out of the export: fail closed) and the next one is read whole.

    The reads serve both :mod:`agent.redact.terminal` (what the screen showed when) and
    :func:`mask_frames` (which masks each frame), so no frame is read twice.  Only two
    decoded frames are held at a time.
    """
    from PIL import Image

    from agent.events import Frame

    total = sum(1 for e in events if isinstance(e, Frame))
    out: list[FrameRead] = []
    previous: Any = None
    for event in events:
        if not isinstance(event, Frame):
            continue
        try:
            image = frame_image(event.data)
        except (OSError, ValueError, Image.DecompressionBombError):  # not an image: left out
            out.append(FrameRead(event.t_ns, event.left, event.top, event.width, event.height, (), None))
            previous = None
            continue
        same = previous is not None and previous.size == image.size
        bands = tuple(changed_bands(previous if same else None, image))
        words: tuple[Word, ...] | None
        try:
            words = tuple(ocr(image, bands)) if bands else ()
        except OcrFailed:
            words, previous = None, None  # fail closed: left out, and the next frame is read whole
        else:
            previous = image
        width, height = image.size
        out.append(FrameRead(event.t_ns, event.left, event.top, width, height, bands, words))
        if progress is not None:
            progress(len(out), total)
    return out


def mask_frames(
    events: Sequence[Any],
    ocr: OcrFn,
    secrets: Sequence[str],
    *,
    detect: DetectFn | None = None,
    progress: Callable[[int, int], None] | None = None,
    reads: Sequence[FrameRead] | None = None,
) -> tuple[list[Any], int, dict[str, int]]:
    """``events`` with every frame OCR-masked; frames the engine fails on are left out.

    :param reads: :func:`read_frames` of the same frames (in the same order): their words
        are used instead of reading again (a band grown to take in an earlier mask whole is
        still read again); None reads here.
    :returns: the events, how many frames were left out, and the masked-text counts.
    """
    from agent.events import Frame

    if detect is None:
        from agent.redact.detectors import detect as detect_text

        detect = detect_text
    if reads is None:
        reads = read_frames(events, ocr, progress=progress)
    frames = [e for e in events if isinstance(e, Frame)]
    if len(reads) != len(frames) or any(r.t_ns != f.t_ns for r, f in zip(reads, frames, strict=True)):
        msg = "the frame reads do not belong to these frames"
        raise ValueError(msg)
    masker = _Masker(ocr, detect, normalise_secrets(secrets))
    out: list[Any] = []
    k = 0
    for event in events:
        if isinstance(event, Frame):
            event = masker.frame(event, reads[k])  # noqa: PLW2901 - the frame as it leaves
            k += 1
        if event is not None:
            out.append(event)
    return out, masker.left_out, masker.counts


class _Masker:
    """The masks of a session's frames, one after the other (the previous frame's masks carry over)."""

    def __init__(self, ocr: OcrFn, detect: DetectFn, secrets: Sequence[str]) -> None:
        self.ocr, self.detect, self.secrets = ocr, detect, secrets
        self.boxes: tuple[Box, ...] | None = None  # the previous frame's masks; None: no previous frame
        self.size: tuple[int, int] | None = None
        self.left_out = 0
        self.counts: dict[str, int] = {}

    def frame(self, event: Any, read: FrameRead) -> Any | None:
        """The frame masked, or None when it is left out (OCR failed on it: fail closed)."""
        from agent.frame_codec import encode_image

        if read.words is None:
            self._fail()
            return None
        loaded: list[Any] = []

        def image() -> Any:
            if not loaded:
                loaded.append(frame_image(event.data))
            return loaded[0]

        def words(bands: list[tuple[int, int]]) -> list[Word]:
            if tuple(bands) == read.bands:
                return list(read.words or ())
            return self.ocr(image(), bands)  # grown over an earlier mask: read what it covers

        here = (read.width, read.height)
        previous_boxes = self.boxes if self.size == here else None
        bands = list(read.bands)
        if previous_boxes is None and not read.whole:  # the previous frame failed late: read all
            bands = [(0, read.height)] if read.height else []
        try:
            plan = _plan(here, bands, previous_boxes, read=words, detect=self.detect, secrets=self.secrets)
        except OcrFailed:
            self._fail()
            return None
        self.boxes, self.size = plan.boxes, here
        for entity, n in plan.counts.items():
            self.counts[entity] = self.counts.get(entity, 0) + n
        if not plan.boxes:
            return event
        masked = apply_boxes(image(), plan.boxes)
        return dataclasses.replace(event, data=encode_image(masked), format="webp")

    def _fail(self) -> None:
        self.left_out += 1
        self.boxes = self.size = None
