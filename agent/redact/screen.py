"""Screen redaction at export: read the text on changed parts of a frame, mask what is sensitive.

Deny-listed windows are already masked when a frame is captured (agent/capture/deny.py);
this module handles the rest of the screen.  For each exported frame:

1. :func:`changed_regions` finds the parts that differ from the previous frame of the same
   geometry: the changed horizontal bands (:func:`changed_bands`), and within each band the
   changed columns, widened left and right over every column that is not a uniform colour
   until a quiet gap wider than 4 times the band's height (+ a few pixels) or the frame's edge,
   so every visual line a change touches is read whole (the proof is in
   :func:`changed_regions`); the first frame and any frame after a geometry change is read
   whole.  A keystroke in a terminal is not a reason to read the editor beside it.
2. An OCR engine (:class:`TesseractOcr`) reads the words in those regions; :func:`read_frames`
   reads several frames at a time, one per core, with the results of reading them in turn
   (tesseract kept loaded in worker processes: :mod:`agent.redact.ocr_pool`).
3. :func:`lines` groups the words into visual lines; the text detectors run on each line,
   and the text the volunteer typed that was redacted (``secrets``) is looked for too.
4. Boxes of matched words are masked (flat grey, like deny-listed windows; padded); masks of the
   previous frame whose pixels did not change are kept (outside the regions read, and inside
   them too: a read of a crop can miss what the frame before's read found); a region holding a
   changed pixel of one grows until it holds it whole (and is widened to whole lines again), so
   it is decided again from a read of all of it.

:func:`mask_plan` is pure given its OCR function, so it is tested without tesseract.
Nothing here writes a file: images go to tesseract through a pipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from agent.redact import ocr_pool
from agent.redact.ocr_pool import OcrPool, prepare
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
    #: The regions that were read (empty: nothing changed since the previous frame).
    regions: tuple[Box, ...]
    #: Entity counts of the text matches masked in the regions read (``TYPED`` for typed secrets).
    counts: dict[str, int]


# --- where to read ----------------------------------------------------------------------------------

#: A region grows sideways until a run of quiet columns longer than this many times its height...
QUIET_HEIGHTS = 4
#: ...plus this many pixels (OCR's word boxes can be a pixel or two wider than their ink).
QUIET_SLACK = 8
#: Quiet columns kept on each side of a region's ink (tesseract reads text better with a border).
QUIET_BORDER = MARGIN


def changed_bands(previous: Any | None, current: Any) -> list[tuple[int, int]]:
    """Row ranges ``(top, bottom)`` of ``current`` (a Pillow image) that differ from ``previous``.

    All of ``current`` when there is no previous image or its size differs.  Bands are
    widened by :data:`MARGIN`, and bands closer than :data:`JOIN_GAP` are joined.
    """
    height = current.size[1]
    if previous is None or previous.size != current.size:
        return [(0, height)] if height else []
    from PIL import ImageChops

    return _bands(ImageChops.difference(previous.convert("RGB"), current.convert("RGB")))


def _bands(diff: Any) -> list[tuple[int, int]]:
    """:func:`changed_bands` of a difference image."""
    width, height = diff.size
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


def changed_regions(previous: Any | None, current: Any) -> list[Box]:
    """Boxes of ``current`` (a Pillow image) to read: the parts of :func:`changed_bands` that changed,
    each widened to whole visual lines.

    Within each changed band, the changed columns are grown left and right until a run of
    *quiet* columns longer than :func:`quiet_gap` of the band's height (``4 × height +``
    :data:`QUIET_SLACK`), or the frame's edge; a quiet column is one whose pixels within the
    band's rows are all one colour in ``current``.  Changed columns closer than that become
    one region; :data:`QUIET_BORDER` quiet columns are kept on each side.

    Why a region never cuts a visual line: :func:`lines` joins a word to a line only across a
    gap of at most 4 times the height of the line's tallest word or of the word itself, and no
    word read in a band is taller than the band (a crop's words lie in the crop).  A word has
    ink, so its columns are not quiet; so two words with a longer quiet run between them are
    never neighbours on one line, whether the whole band is read or a part of it.  Since
    :func:`lines` decides from neighbours only, every line a change touches is read whole and
    gets the same text as on a full-width read: the detectors and the typed-secret search see
    the same words on it.  (Found while testing this: :func:`lines` took the gap limit from the
    tallest word anywhere on the row, so a tall word in another window joined two words of
    this one on a full-width read; it now looks at neighbours only.)  Anything not uniform
    (anti-aliasing, faint text, a gradient, a window edge across the rows) is not quiet, so
    the region grows: in doubt it reads wider, up to the full width.  Outside every region the
    pixels did not change; masks there are kept (:func:`mask_plan`).

    All of ``current`` when there is no previous image or its size differs.
    """
    width, height = current.size
    if previous is None or previous.size != current.size:
        return [(0, 0, width, height)] if width and height else []
    from PIL import ImageChops

    pixels = current if current.mode == "RGB" else current.convert("RGB")
    diff = ImageChops.difference(previous.convert("RGB"), pixels)
    out: list[Box] = []
    for top, bottom in _bands(diff):
        changed = diff.crop((0, top, width, bottom)).getprojection()[0]
        for left, right in _runs(_busy(pixels, top, bottom), changed, quiet_gap(bottom - top)):
            out.append((max(0, left - QUIET_BORDER), top, min(width, right + QUIET_BORDER), bottom))
    return out


def quiet_gap(height: int) -> int:
    """The run of quiet columns, in a region ``height`` rows tall, longer than which a region stops."""
    return QUIET_HEIGHTS * height + QUIET_SLACK


def _busy(pixels: Any, top: int, bottom: int) -> list[int]:
    """For each column of ``pixels`` (RGB): 1 if its pixels in rows ``top..bottom`` differ, else 0."""
    from PIL import Image, ImageChops

    width = pixels.size[0]
    strip = pixels.crop((0, top, width, bottom))
    first = strip.crop((0, 0, width, 1)).resize((width, bottom - top), Image.Resampling.NEAREST)
    return list(ImageChops.difference(strip, first).getprojection()[0])


def _runs(busy: Sequence[int], seeds: Sequence[int], gap: int) -> list[tuple[int, int]]:
    """Column ranges holding the columns ``seeds`` marks, widened to whole lines: columns that are
    ``busy`` (not quiet) or seeds, with quiet runs of at most ``gap`` between them, form one run;
    the runs holding a seed."""
    runs: list[list[int]] = []  # [left, right, holds a seed]
    for x in range(len(busy)):
        seed = seeds[x]
        if not (seed or busy[x]):
            continue
        if runs and x - runs[-1][1] <= gap:
            runs[-1][1] = x + 1
            runs[-1][2] |= seed
        else:
            runs.append([x, x + 1, seed])
    return [(a, b) for a, b, s in runs if s]


def _meets(a: Box, b: Box) -> bool:
    """Whether two boxes share a pixel."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _within(inner: Box, outer: Box) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def _settle(regions: Sequence[Box], pixels: Any) -> list[Box]:
    """``regions`` widened to whole lines again (:func:`changed_regions`' rule, over each one's rows)
    and those that then meet joined, until nothing changes; sorted."""
    width = pixels.size[0]
    boxes = sorted(set(regions))
    while True:
        grown: list[Box] = []
        for left, top, right, bottom in boxes:
            if left == 0 and right == width:
                grown.append((left, top, right, bottom))
                continue
            busy = _busy(pixels, top, bottom)
            seeds = [0] * left + busy[left:right] + [0] * (width - right)  # the ink it holds
            runs = _runs(busy, seeds, quiet_gap(bottom - top))
            a = min([left] + [max(0, x - QUIET_BORDER) for x, _ in runs])  # a border where it grew
            b = max([right] + [min(width, x + QUIET_BORDER) for _, x in runs])
            grown.append((a, top, b, bottom))
        joined = _join(grown)
        if joined == boxes:
            return boxes
        boxes = joined


def _join(boxes: Sequence[Box]) -> list[Box]:
    """``boxes`` with those that meet (or lie less than :data:`JOIN_GAP` apart in the same
    columns, as bands were joined) replaced by the box around both; sorted."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                near = (a[0], a[1] - JOIN_GAP, a[2], a[3] + JOIN_GAP)
                if _meets(near, b):
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(set(out))


def _cover_boxes(regions: list[Box], boxes: Sequence[Box], pixels: Callable[[], Any]) -> list[Box]:
    """Grow regions until every previous mask they touch lies wholly inside one (so it is re-read),
    each widened to whole lines again over its new rows (``pixels``: the frame, RGB, loaded when
    a region grows)."""
    if not any(_meets(b, r) and not _within(b, r) for b in boxes for r in regions):
        return regions
    image = pixels()
    width, height = image.size
    while True:
        grown = list(regions)
        for box in boxes:
            for i, r in enumerate(grown):
                if _meets(box, r) and not _within(box, r):
                    grown[i] = (
                        max(0, min(r[0], box[0] - MARGIN)),
                        max(0, min(r[1], box[1] - MARGIN)),
                        min(width, max(r[2], box[2] + MARGIN)),
                        min(height, max(r[3], box[3] + MARGIN)),
                    )
        grown = _settle(grown, image)
        if grown == regions:
            return regions
        regions = grown


# --- what the words say -----------------------------------------------------------------------------


def lines(words: Iterable[Word]) -> list[Line]:
    """Group words into visual lines, each left to right; lines in reading order (top to bottom,
    then left to right).

    Words are taken left to right; a word joins the line whose last word it follows: their
    vertical centres within half that word's height (4 px at least), and the gap between them
    at most four times the height of the line's tallest word (or of the word itself, if taller).
    Of several such lines, the one whose last word's centre is nearest.  A wider gap starts a new
    line, so two columns of a layout are not read as one sentence.

    Only neighbours decide (a tall heading elsewhere on the row does not bridge a gap between two
    columns), so a part of a frame holding some lines whole gives those lines the same text as
    a read of all of it: :func:`changed_regions` relies on this.
    """
    ordered = sorted(words, key=lambda w: (w.box[0], w.box[1] + w.box[3], w.box[2]))
    tallest_word = max((w.box[3] - w.box[1] for w in ordered), default=0)
    active: list[tuple[list[Word], int]] = []  # a line's words and its tallest word's height
    done: list[list[Word]] = []
    for word in ordered:
        left, top, _, bottom = word.box
        height = bottom - top
        centre = (top + bottom) / 2
        reach = 4 * max(height, tallest_word)  # no later word joins a line ending further left
        done += [ws for ws, _ in active if left - ws[-1].box[2] > reach]
        active = [(ws, tall) for ws, tall in active if left - ws[-1].box[2] <= reach]
        best: int | None = None
        nearest = 0.0
        for i, (ws, tall) in enumerate(active):
            ref = ws[-1].box
            off = abs((ref[1] + ref[3]) / 2 - centre)
            if not _beside(ref, word.box) or left - ref[2] > 4 * max(tall, height):
                continue
            if best is None or off < nearest:
                best, nearest = i, off
        if best is None:
            active.append(([word], height))
        else:
            ws, tall = active[best]
            ws.append(word)
            active[best] = (ws, max(tall, height))
    done += [ws for ws, _ in active]
    done.sort(key=lambda ws: (ws[0].box[1] + ws[0].box[3], ws[0].box[0]))
    rows: list[list[list[Word]]] = []  # lines whose first words' centres are near, as one row
    for ws in done:
        if rows and _beside(rows[-1][0][0].box, ws[0].box):
            rows[-1].append(ws)
        else:
            rows.append([ws])
    return [_line(ws) for row in rows for ws in sorted(row, key=lambda ws: ws[0].box[0])]


def _beside(ref: Box, box: Box) -> bool:
    """Whether ``box``'s vertical centre is within half ``ref``'s height (4 px at least) of ``ref``'s."""
    return abs((ref[1] + ref[3]) - (box[1] + box[3])) / 2 <= max(4.0, (ref[3] - ref[1]) / 2)


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

#: Reads the words in the given boxes of an image (in image coordinates).
OcrFn = Callable[[Any, Sequence[Box]], list[Word]]
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
    :param ocr: reads the words in the given boxes of an image.
    :param secrets: :func:`normalise_secrets` output: typed text that was redacted.
    """
    same = previous is not None and previous.size == current.size
    regions = changed_regions(previous if same else None, current)
    return _plan(
        current.size,
        regions,
        previous_boxes if same else None,
        read=lambda r: ocr(current, r),
        pixels=lambda: current if current.mode == "RGB" else current.convert("RGB"),
        unchanged=lambda box: previous is not None and _same_pixels(previous, current, box),
        detect=detect,
        secrets=secrets,
    )


def _same_pixels(a: Any, b: Any, box: Box) -> bool:
    from PIL import ImageChops

    return ImageChops.difference(a.crop(box).convert("RGB"), b.crop(box).convert("RGB")).getbbox() is None


def _plan(
    size: tuple[int, int],
    regions: list[Box],
    previous_boxes: Sequence[Box] | None,
    *,
    read: Callable[[list[Box]], list[Word]],
    pixels: Callable[[], Any],
    unchanged: Callable[[Box], bool],
    detect: DetectFn,
    secrets: Sequence[str],
) -> FrameMasks:
    """:func:`mask_plan` once the changed ``regions`` are known (``previous_boxes`` None: a new
    geometry; ``pixels``: the frame as RGB, asked for only when a region grows over an earlier mask;
    ``unchanged``: whether the pixels under an earlier mask are those it was decided on).

    An earlier mask stays while its pixels are unchanged, even where a region meets it: what it
    hides is still there, and a read of a crop around it can miss what a read of the frame
    before found (tesseract's segmentation shifts with the crop; found by the e2e test).  An
    earlier mask whose pixels changed lies in a region (every changed pixel does); that region
    grows to hold it whole, and it is decided again from the read.
    """
    width, height = size
    stale: list[Box] = []
    if previous_boxes is not None:
        stale = [b for b in previous_boxes if any(_meets(b, r) for r in regions) and not unchanged(b)]
        regions = _cover_boxes(regions, stale, pixels)
    kept = [b for b in (previous_boxes or ()) if b not in stale]
    counts: dict[str, int] = {}
    found: list[Box] = []
    words = read(regions) if regions else []
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
    return FrameMasks(boxes, tuple(regions), counts)


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
    """Tesseract, fed pixels through pipes (no files), one thread each (``OMP_THREAD_LIMIT=1``).

    Measured on this kind of machine (../shared/research/redaction-lab.md): light-on-dark
    text needs inverting and small text a 2x upscale; ``OMP_THREAD_LIMIT=1`` is 4x faster
    than tesseract's default threading on two cores.

    Crops are read by up to ``workers`` (default: one per core) worker processes that keep
    the library and its model loaded (:mod:`agent.redact.ocr_pool`); where they cannot run
    (no libtesseract of the command's version, not POSIX) by the ``tesseract`` command, one
    process a crop: the words are the same either way.  A crop whose pixels were read before
    (a dialog shown again, a screen switched back to) is not read again: its words are kept,
    keyed by a hash of the crop's pixels, for the engine's life.  :meth:`close` stops the
    workers (they also stop when the engine is collected, or the process exits).
    """

    name = "tesseract"
    #: Upscale factor before reading.
    SCALE = 2
    #: Luminance below which a region counts as a dark background (then inverted).
    DARK = 110
    #: Seconds one region may take.
    TIMEOUT_S = 60.0
    #: Words kept from crops read before, by default (about 100 bytes each: a few MB; ``cache=0``: none).
    CACHE = 50_000

    def __init__(
        self, binary: str, *, workers: int | None = None, pool: bool = True, cache: int | None = None
    ) -> None:
        self.binary = binary
        self.version = _tesseract_version(binary)
        self.workers = workers if workers is not None else os.cpu_count() or 1
        if self.workers < 1:
            msg = f"OCR needs at least one worker, not {self.workers}"
            raise ValueError(msg)
        self._env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        self._pool: OcrPool | None = None
        lib = ocr_pool.library() if pool else None
        if lib is not None:
            self._pool = OcrPool(lib, self.workers, self.version)
            weakref.finalize(self, self._pool.close)
        self._cache: OrderedDict[bytes, tuple[Word, ...]] = OrderedDict()
        self._keep = self.CACHE if cache is None else cache
        self._kept = 0  # words in the cache
        self._lock = threading.Lock()
        #: Crops whose words came from the cache (for tests and benchmarks: a count).
        self.reused = 0

    @classmethod
    def find(cls, *, workers: int | None = None, cache: int | None = None) -> TesseractOcr | None:
        """The installed tesseract with English data, or None (``workers``, ``cache``: as for the class)."""
        binary = shutil.which("tesseract")
        if binary is None:
            return None
        try:
            engine = cls(binary, workers=workers, cache=cache)
            langs = subprocess.run(
                [binary, "--list-langs"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.split()
        except (OSError, subprocess.SubprocessError, OcrFailed):
            return None
        if "eng" not in langs:
            engine.close()
            return None
        return engine

    @property
    def pooled(self) -> bool:
        """Whether crops go to worker processes (False: the command, one process a crop)."""
        return self._pool is not None

    def close(self) -> None:
        """Stop the worker processes (a later read starts none: it uses the command)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def forget(self) -> None:
        """Drop the words kept from crops read before (the next read of each reads it again)."""
        with self._lock:
            self._cache.clear()
            self._kept = 0

    def __enter__(self) -> TesseractOcr:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __call__(self, image: Any, boxes: Sequence[Box]) -> list[Word]:
        """Words in ``boxes`` of ``image`` (each read on its own), in image coordinates.

        :raises OcrFailed: tesseract failed or timed out on a box.
        """
        crops = [(box[0], box[1], image.crop(box)) for box in boxes if box[2] > box[0] and box[3] > box[1]]
        if len(crops) <= 1 or self.workers == 1:
            results = [self._read(*c) for c in crops]
        else:
            with ThreadPoolExecutor(
                max_workers=min(len(crops), self.workers), thread_name_prefix="optin-ocr"
            ) as ex:
                results = list(ex.map(lambda c: self._read(*c), crops))
        return [w for words in results for w in words]

    def _read(self, left: int, top: int, crop: Any) -> list[Word]:
        key = hashlib.blake2b(
            f"{crop.mode} {crop.size[0]} {crop.size[1]}".encode() + b"\0" + crop.tobytes(), digest_size=32
        ).digest()
        with self._lock:
            known = self._cache.get(key)
            if known is not None:
                self._cache.move_to_end(key)
                self.reused += 1
        if known is None:
            known = tuple(parse_tsv(self._tsv(crop), scale=self.SCALE))
            with self._lock:
                if key not in self._cache and len(known) < self._keep:
                    self._cache[key] = known
                    self._kept += len(known) + 1  # an entry counts as a word more (its key)
                while self._kept > self._keep:
                    self._kept -= len(self._cache.popitem(last=False)[1]) + 1
        return [
            Word((w.box[0] + left, w.box[1] + top, w.box[2] + left, w.box[3] + top), w.text) for w in known
        ]

    def _tsv(self, crop: Any) -> str:
        """Tesseract's TSV for a crop: from a worker, or from the command when there are none."""
        pool = self._pool
        if pool is not None:
            try:
                return pool.read(crop, self.SCALE, self.DARK, self.TIMEOUT_S)
            except ocr_pool.WorkerFailed as exc:
                raise OcrFailed(str(exc)) from None
            except ocr_pool.PoolUnavailable:
                if self._pool is pool and not pool.reads:  # never worked here: the command from now on
                    self._pool = None
                    pool.close()
                elif self._pool is not None:
                    msg = "the OCR workers stopped"
                    raise OcrFailed(msg) from None
        return self._command(crop)

    def _command(self, crop: Any) -> str:
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
        return done.stdout.decode("utf-8", "replace")


def _moved(box: Box, left: int, top: int) -> Box:
    return (box[0] + left, box[1] + top, box[2] + left, box[3] + top)


def _tesseract_version(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        msg = f"tesseract --version failed: {type(exc).__name__}"
        raise OcrFailed(msg) from None
    first = (out.stdout or out.stderr).split("\n", 1)[0].split()
    return first[1] if len(first) > 1 else "unknown"


def parse_tsv(tsv: str, *, scale: int = 1, top: int = 0, left: int = 0) -> list[Word]:
    """Words of tesseract's TSV output, boxes divided by ``scale`` and moved by ``left`` and ``top``."""
    words: list[Word] = []
    for row in tsv.splitlines()[1:]:
        cols = row.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = cols[11].strip()
        if not text:
            continue
        try:
            x, y, w, h = (int(c) for c in cols[6:10])
        except ValueError:
            continue
        box = (left + x // scale, top + y // scale, left + -(-(x + w) // scale), top + -(-(y + h) // scale))
        words.append(Word(box, text))
    return words


# --- a session's frames -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameRead:
    """What OCR read on one frame: the words in the regions that changed since the previous frame.

    :ivar t_ns: the frame's time; ``left``, ``top``, ``width``, ``height``: where it lies
        on the virtual screen (word boxes are in frame coordinates).
    :ivar regions: the boxes read (:func:`changed_regions`; the whole frame after a new
        geometry or a frame OCR failed on).
    :ivar words: the words read in ``regions``; None: the OCR engine failed on this frame (it
        is left out of the export, and the next frame is read whole).
    """

    t_ns: int
    left: int
    top: int
    width: int
    height: int
    regions: tuple[Box, ...]
    words: tuple[Word, ...] | None = field(repr=False)

    @property
    def whole(self) -> bool:
        """Whether the whole frame was read (its words replace everything read before)."""
        return self.regions == ((0, 0, self.width, self.height),)


def frame_image(data: bytes) -> Any:
    """A stored frame's bytes as a loaded Pillow image."""
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def read_frames(
    events: Sequence[Any],
    ocr: OcrFn,
    *,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> list[FrameRead]:
    """OCR the changed regions of every frame in ``events`` (in order), once for the whole export.

    A frame that does not decode, or that the engine fails on, gets ``words`` None (it is left
    out of the export: fail closed) and the next one is read whole.

    The reads serve both :mod:`agent.redact.terminal` (what the screen showed when) and
    :func:`mask_frames` (which masks each frame), so no frame is read twice.

    :param workers: frames read at the same time (default: one per core; ``ocr`` must then
        be safe to call from several threads, as :class:`TesseractOcr` is).  The result is
        the same for any number: frames are decoded and compared in order, and a frame read
        while the one before it failed is read again whole, as one worker would have read it.
        Up to :data:`IN_FLIGHT` decoded frames per worker are held, :data:`IN_FLIGHT_BYTES`
        of them in all (two at least per worker; two with one worker).
    :param progress: called with (frames done, frames in all) as frames are done, in order, on
        the calling thread.
    """
    n = workers if workers is not None else os.cpu_count() or 1
    if n < 1:
        msg = f"frames are read by at least one worker, not {n}"
        raise ValueError(msg)
    if n == 1:
        return _read_in_turn(events, ocr, progress)
    return _read_pooled(events, ocr, progress, n)


def _decode(event: Any) -> Any | None:
    """The frame's image, or None when it does not decode (it is then left out).  A frame rebuilt
    from patches gives its pixels as rebuilt (agent/export/frame_data.py, ``frame_pixels``)."""
    from PIL import Image

    from agent.export.frame_data import frame_pixels

    try:
        return frame_pixels(event)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _read_in_turn(
    events: Sequence[Any], ocr: OcrFn, progress: Callable[[int, int], None] | None
) -> list[FrameRead]:
    """:func:`read_frames` on one thread, one frame after the other."""
    from agent.events import Frame

    total = sum(1 for e in events if isinstance(e, Frame))
    out: list[FrameRead] = []
    previous: Any = None
    for event in events:
        if not isinstance(event, Frame):
            continue
        image = _decode(event)
        if image is None:  # not an image: left out
            out.append(FrameRead(event.t_ns, event.left, event.top, event.width, event.height, (), None))
            previous = None
            if progress is not None:
                progress(len(out), total)
            continue
        same = previous is not None and previous.size == image.size
        regions = tuple(changed_regions(previous if same else None, image))
        words: tuple[Word, ...] | None
        try:
            words = tuple(ocr(image, regions)) if regions else ()
        except OcrFailed:
            words, previous = None, None  # fail closed: left out, and the next frame is read whole
        else:
            previous = image
        width, height = image.size
        out.append(FrameRead(event.t_ns, event.left, event.top, width, height, regions, words))
        if progress is not None:
            progress(len(out), total)
    return out


#: Frames in flight per worker at most (a large read — a whole frame, a dialog — does not
#: stall the other workers while later frames wait behind it)...
IN_FLIGHT = 8
#: ...and their decoded pixels at most this many bytes (at least two frames per worker).
IN_FLIGHT_BYTES = 64 * 1024 * 1024


def _pixels(image: Any | None) -> int:
    """Bytes of a decoded image's pixels (0 for None)."""
    if image is None:
        return 0
    return int(image.size[0] * image.size[1] * len(image.getbands()))


@dataclass
class _InFlight:
    """A frame decoded and compared, its regions being read."""

    event: Any
    image: Any | None  # None: it did not decode
    regions: tuple[Box, ...]
    words: Future[list[Word]] | None  # None: nothing to read


class _InOrder:
    """The reads of a pooled run, taken in frame order (see :func:`_read_pooled`)."""

    def __init__(self, ocr: OcrFn, total: int, progress: Callable[[int, int], None] | None) -> None:
        self.ocr, self.total, self.progress = ocr, total, progress
        self.out: list[FrameRead] = []
        self.failed = False  # the frame before the one being taken was left out

    def take(self, job: _InFlight) -> None:
        event, image = job.event, job.image
        if image is None:
            self.out.append(FrameRead(event.t_ns, event.left, event.top, event.width, event.height, (), None))
            self.failed = True
        else:
            regions = job.regions
            words: tuple[Word, ...] | None
            try:
                if self.failed and regions != (whole := tuple(changed_regions(None, image))):
                    regions = whole  # read against a frame that was then left out: read whole
                    words = tuple(self.ocr(image, regions)) if regions else ()
                else:
                    words = tuple(job.words.result()) if job.words is not None else ()
            except OcrFailed:
                words = None
            self.failed = words is None
            width, height = image.size
            self.out.append(FrameRead(event.t_ns, event.left, event.top, width, height, regions, words))
        if self.progress is not None:
            self.progress(len(self.out), self.total)


def _read_pooled(
    events: Sequence[Any], ocr: OcrFn, progress: Callable[[int, int], None] | None, workers: int
) -> list[FrameRead]:
    """:func:`read_frames` with ``workers`` frames read at a time, the results as :func:`_read_in_turn`'s.

    The regions of each frame are found in order against the previous decoded frame, as if
    every read succeeds.  Results are taken in order; when a frame's read failed, the next
    frame's regions are replaced by the whole frame and it is read again (the rare path), as
    the one-worker run reads it.
    """
    from agent.events import Frame

    frames = [e for e in events if isinstance(e, Frame)]
    results = _InOrder(ocr, len(frames), progress)
    in_flight: deque[_InFlight] = deque()
    held = 0  # bytes of decoded pixels in flight
    previous: Any = None
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="optin-ocr-frame") as pool:
        try:
            for event in frames:
                image = _decode(event)
                regions: tuple[Box, ...] = ()
                job: Future[list[Word]] | None = None
                if image is not None:
                    same = previous is not None and previous.size == image.size
                    regions = tuple(changed_regions(previous if same else None, image))
                    if regions:
                        job = pool.submit(ocr, image, regions)
                previous = image
                in_flight.append(_InFlight(event, image, regions, job))
                held += _pixels(image)
                while len(in_flight) > 2 * workers and (
                    len(in_flight) > IN_FLIGHT * workers or held > IN_FLIGHT_BYTES
                ):
                    done = in_flight.popleft()
                    held -= _pixels(done.image)
                    results.take(done)
            while in_flight:
                results.take(in_flight.popleft())
        finally:
            for left in in_flight:  # an error on the way out: do not wait for reads nobody takes
                if left.words is not None:
                    left.words.cancel()
    return results.out


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
        are used instead of reading again (a region grown to take in an earlier mask whole is
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
    """The masks of a session's frames, one after the other (the previous frame's masks carry over).

    A frame whose bytes are in memory comes out with its masked bytes; one left in the store (a
    session read with ``lazy_frames``) comes out with its masked bytes set aside in the export's
    spool (:meth:`agent.store.reader.StoredFrame.set_aside`: encrypted on disk, with their hash),
    so no masked frame is held and each is encoded once: one decoded frame at a time.
    """

    def __init__(self, ocr: OcrFn, detect: DetectFn, secrets: Sequence[str]) -> None:
        self.ocr, self.detect, self.secrets = ocr, detect, secrets
        self.boxes: tuple[Box, ...] | None = None  # the previous frame's masks; None: no previous frame
        self.under: dict[Box, bytes] = {}  # a digest of the pixels under each of them
        self.size: tuple[int, int] | None = None
        self.left_out = 0
        self.counts: dict[str, int] = {}

    def frame(self, event: Any, read: FrameRead) -> Any | None:
        """The frame masked, or None when it is left out (OCR failed on it: fail closed)."""
        from agent.export.frame_data import frame_pixels
        from agent.frame_codec import encode_image

        if read.words is None:
            self._fail()
            return None
        loaded: list[Any] = []

        def image() -> Any:
            if not loaded:  # a frame left in the store: loaded (or rebuilt) now
                loaded.append(frame_pixels(event))
            return loaded[0]

        def words(regions: list[Box]) -> list[Word]:
            if tuple(regions) == read.regions:
                return list(read.words or ())
            return self.ocr(image(), regions)  # grown over an earlier mask: read what it covers

        here = (read.width, read.height)
        previous_boxes = self.boxes if self.size == here else None
        regions = list(read.regions)
        if previous_boxes is None and not read.whole:  # the previous frame failed late: read all
            regions = [(0, 0, read.width, read.height)] if read.width and read.height else []
        try:
            plan = _plan(
                here,
                regions,
                previous_boxes,
                read=words,
                pixels=lambda: image().convert("RGB"),
                unchanged=lambda box: self.under.get(box) == _digest(image(), box),
                detect=self.detect,
                secrets=self.secrets,
            )
        except OcrFailed:
            self._fail()
            return None
        self.boxes, self.size = plan.boxes, here
        self.under = {box: _digest(image(), box) for box in plan.boxes}
        for entity, n in plan.counts.items():
            self.counts[entity] = self.counts.get(entity, 0) + n
        if not plan.boxes:
            return event
        masked = apply_boxes(image(), plan.boxes)  # a copy: nothing changes it after this
        set_aside = getattr(event.data, "set_aside", None)
        if set_aside is not None:  # read lazily (a streaming export): encoded beside the next frame's
            # OCR and kept in the export's spool (agent/store/reader.py, SpooledBytes)
            data = set_aside(lambda: encode_image(masked))
            return dataclasses.replace(event, data=cast(bytes, data), format="webp")
        return dataclasses.replace(event, data=encode_image(masked), format="webp")

    def _fail(self) -> None:
        self.left_out += 1
        self.boxes = self.size = None
        self.under = {}


def _digest(image: Any, box: Box) -> bytes:
    """A hash of ``image``'s pixels in ``box`` (as RGB)."""
    return hashlib.blake2b(image.crop(box).convert("RGB").tobytes(), digest_size=16).digest()
