"""Typed, versioned event records.

Every record carries ``t_ns``: nanoseconds on one monotonic clock
(:func:`now_ns`, i.e. ``time.monotonic_ns``), taken as close to the OS event as
the hook allows.  A session has exactly one wall-clock anchor
(:class:`ClockAnchor`, stored in the ``session_start`` marker) that maps the
monotonic clock to UTC, so wall times never jump inside a session.

Serialized form (what the store encrypts)::

    u32 big-endian length of the JSON header | JSON header | payload bytes

The JSON header is ``{"v": SCHEMA_VERSION, "k": KIND, ...fields}``; only
:class:`Frame` and :class:`FramePatch` have a payload (their encoded images).
Unknown kinds or versions are rejected, never guessed.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from agent.elements import AT, FOUND, RESULTS, record_problem
from agent.errors import StoreFormatError
from agent.untrusted_text import hidden_characters

#: Version of the event schema; bump on any incompatible change.
SCHEMA_VERSION = 1

#: The one clock: monotonic nanoseconds.
now_ns = time.monotonic_ns

_LEN = struct.Struct(">I")
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ClockAnchor:
    """One simultaneous reading of the monotonic and the wall clock."""

    mono_ns: int
    wall_ns: int

    @classmethod
    def now(cls) -> ClockAnchor:
        a = now_ns()
        w = time.time_ns()
        b = now_ns()
        return cls(mono_ns=(a + b) // 2, wall_ns=w)

    def to_wall_ns(self, t_ns: int) -> int:
        """Convert a monotonic timestamp of this session to UTC nanoseconds."""
        return self.wall_ns + (t_ns - self.mono_ns)


@dataclass(frozen=True, slots=True)
class PointerMove:
    KIND: ClassVar[str] = "pointer_move"
    t_ns: int
    x: int
    y: int


@dataclass(frozen=True, slots=True)
class ButtonPress:
    KIND: ClassVar[str] = "button_press"
    t_ns: int
    x: int
    y: int
    button: str


@dataclass(frozen=True, slots=True)
class ButtonRelease:
    KIND: ClassVar[str] = "button_release"
    t_ns: int
    x: int
    y: int
    button: str


@dataclass(frozen=True, slots=True)
class Scroll:
    KIND: ClassVar[str] = "scroll"
    t_ns: int
    x: int
    y: int
    dx: int
    dy: int


@dataclass(frozen=True, slots=True)
class KeyPress:
    """A key went down.

    :ivar char: the character the OS produced, or None for non-character keys.
    :ivar name: the key's name for special keys (``enter``, ``shift``), else None.
    :ivar vk: the OS key code (X keysym on X11), when known.
    :ivar modifiers: modifiers held when the key went down, sorted.
    """

    KIND: ClassVar[str] = "key_press"
    t_ns: int
    char: str | None
    name: str | None
    vk: int | None
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyRelease:
    KIND: ClassVar[str] = "key_release"
    t_ns: int
    char: str | None
    name: str | None
    vk: int | None
    modifiers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Paste:
    """Text the volunteer pasted, read from the clipboard when the paste key went down.

    :ivar text: the pasted text; None when it could not be read or may not be
        kept (not text, too long, or the focused window is unknown).
    :ivar source: ``clipboard`` (ctrl+V, shift+Insert, cmd+V) or ``primary``
        (X11 middle-click selection).
    """

    KIND: ClassVar[str] = "paste"
    t_ns: int
    text: str | None
    source: str = "clipboard"


@dataclass(frozen=True, slots=True)
class Frame:
    """An encoded screenshot of the region ``left, top, width, height``.

    :ivar reason: why it was taken (``click``, ``focus``, ``start``...).
    :ivar format: image format of ``data`` (``webp``, ``png``).
    """

    KIND: ClassVar[str] = "frame"
    t_ns: int
    left: int
    top: int
    width: int
    height: int
    format: str
    reason: str
    data: bytes = field(repr=False)


#: Bounds of a frame patch (docs/format.md, Frame patches): rectangles per patch, the side of one
#: rectangle (WebP's own limit), the side and the area of the frame it patches.
MAX_PATCH_RECTS = 256
MAX_RECT_SIDE = 16383
MAX_FRAME_SIDE = 65535
MAX_FRAME_PIXELS = 1 << 26
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class FramePatch:
    """The screen as the rectangles that changed since the frame before it in store order.

    ``rects`` are ``(x, y, w, h, n)``: a rectangle of the frame ``left, top, width, height`` (in
    frame pixels) whose image is the next ``n`` bytes of ``data`` (WebP lossless, exactly ``w`` x
    ``h``).  ``base`` is the digest (:func:`agent.frame_regions.pixel_digest`) of the full frame
    the rectangles are pasted on, or None for a patch that tiles the whole frame (a keyframe in
    strips).  Checked on construction, so a decoded record that breaks a rule of docs/format.md
    is refused before anything reads its pixels.
    """

    KIND: ClassVar[str] = "frame_patch"
    t_ns: int
    left: int
    top: int
    width: int
    height: int
    format: str
    reason: str
    base: str | None
    rects: tuple[tuple[int, int, int, int, int], ...]
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        problem = _patch_problem(self)
        if problem is not None:
            raise ValueError(problem)  # decoding turns a ValueError into a malformed record


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _patch_problem(p: FramePatch) -> str | None:
    """Why ``p`` breaks the rules of a frame patch, or None.  Sizes only, never pixels."""
    problems = (
        (
            not all(_is_int(v) for v in (p.t_ns, p.left, p.top, p.width, p.height)),
            "a frame patch's time and geometry are integers",
        ),
        (
            not (0 < p.width <= MAX_FRAME_SIDE and 0 < p.height <= MAX_FRAME_SIDE)
            or p.width * p.height > MAX_FRAME_PIXELS,
            f"a frame patch is 1..{MAX_FRAME_SIDE} pixels a side and at most {MAX_FRAME_PIXELS} pixels",
        ),
        (
            p.format != "webp" or not isinstance(p.reason, str),
            "a frame patch's format is webp, its reason a string",
        ),
        (
            p.base is not None
            and (not isinstance(p.base, str) or len(p.base) != 32 or not _HEX.issuperset(p.base)),
            "a frame patch's base is 32 lowercase hex digits or null",
        ),
        (
            not isinstance(p.rects, tuple) or len(p.rects) > MAX_PATCH_RECTS or not isinstance(p.data, bytes),
            f"a frame patch holds at most {MAX_PATCH_RECTS} rectangles and a payload of bytes",
        ),
    )
    for broken, problem in problems:
        if broken:
            return problem
    return _rects_problem(p)


def _rects_problem(p: FramePatch) -> str | None:
    """Why the rectangles of ``p`` (whose geometry is valid) break the rules, or None."""
    total = area = 0
    for i, rect in enumerate(p.rects):
        if not isinstance(rect, tuple) or len(rect) != 5 or not all(_is_int(v) for v in rect):
            return f"rectangle {i} of a frame patch is not five integers"
        x, y, w, h, n = rect
        if not (0 < w <= MAX_RECT_SIDE and 0 < h <= MAX_RECT_SIDE and n > 0):
            return f"rectangle {i} of a frame patch is {w}x{h} pixels in {n} bytes"
        if x < 0 or y < 0 or x + w > p.width or y + h > p.height:
            return f"rectangle {i} of a frame patch lies outside its {p.width}x{p.height} frame"
        total += n
        area += w * h
    if total != len(p.data):
        return f"a frame patch's rectangles hold {total} bytes, its payload {len(p.data)}"
    if _overlap(p.rects):
        return "rectangles of a frame patch overlap"
    whole = p.base is not None or area == p.width * p.height
    return None if whole else "a frame patch without a base covers its whole frame"


def _overlap(rects: tuple[tuple[int, int, int, int, int], ...]) -> bool:
    """Whether any two rectangles share a pixel (sorted by left edge: stops at the first gap)."""
    order = sorted(rects)
    for i, (x, y, w, h, _) in enumerate(order):
        for x2, y2, _w2, h2, _ in order[i + 1 :]:
            if x2 >= x + w:
                break
            if y2 < y + h and y < y2 + h2:
                return True
    return False


@dataclass(frozen=True, slots=True)
class WindowFocus:
    """The focused window changed.  Any field the OS does not tell is None."""

    KIND: ClassVar[str] = "window_focus"
    t_ns: int
    title: str | None
    app_class: str | None
    pid: int | None
    x: int | None = None
    y: int | None = None
    width: int | None = None
    height: int | None = None


#: Marker names.
MARKERS = frozenset(
    {
        "session_start",
        "session_stop",
        "pause",
        "resume",
        "consent",
        "screen_layout",
        "secure_input",
        "deny",
        "cut",
    }
)


@dataclass(frozen=True, slots=True)
class Marker:
    """A control event: session start/stop, pause/resume, consent.

    ``detail`` holds JSON values only (never captured content).
    """

    KIND: ClassVar[str] = "marker"
    t_ns: int
    marker: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.marker not in MARKERS:
            msg = f"unknown marker {self.marker!r}; expected one of {sorted(MARKERS)}"
            raise ValueError(msg)


#: Where a task's instruction comes from: a ``[[task]]`` of the study file, or the volunteer.
TASK_SOURCES = ("study", "volunteer")
#: How a task ends (docs/format.md, Tasks).
TASK_OUTCOMES = ("done", "failed", "abandoned", "interrupted", "timed out")
#: Longest instruction a volunteer may write (characters).
MAX_INSTRUCTION = 1000
#: Longest task id (characters): a study's ``[[task]]`` id, or ``free-`` and 8 hex digits.
MAX_TASK_ID = 64


@dataclass(frozen=True, slots=True)
class TaskStart:
    """The volunteer started a task (docs/format.md, Tasks).

    :ivar instruction: what the volunteer set out to do.  With ``source`` ``volunteer`` it is
        captured text (they wrote it): redacted at export like typed text, never logged, never
        in ``status.json``.
    :ivar source: ``study`` (a ``[[task]]`` of the study file) or ``volunteer``.
    :ivar time_limit_s: the task ends ``timed out`` after this many seconds; None: no limit.
    """

    KIND: ClassVar[str] = "task_start"
    t_ns: int
    task_id: str
    instruction: str
    source: str
    time_limit_s: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task_id, str) or not isinstance(self.instruction, str):
            msg = "a task's id and instruction are strings"
            raise ValueError(msg)  # decoding turns a ValueError into a malformed record
        if self.source not in TASK_SOURCES:
            msg = f"unknown task source; expected one of {list(TASK_SOURCES)}"
            raise ValueError(msg)
        limit = self.time_limit_s
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0):
            msg = "a task's time limit is a positive number of seconds"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """The task ``task_id`` ended with ``outcome`` (one of :data:`TASK_OUTCOMES`)."""

    KIND: ClassVar[str] = "task_end"
    t_ns: int
    task_id: str
    outcome: str

    def __post_init__(self) -> None:
        if not isinstance(self.task_id, str):
            msg = "a task's id is a string"
            raise ValueError(msg)
        if self.outcome not in TASK_OUTCOMES:
            msg = f"unknown task outcome; expected one of {list(TASK_OUTCOMES)}"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class ElementSeen:
    """One element lookup: the UI element at an action's point or with the keyboard focus at a key.

    ``t_ns`` is the action's own (the ``button_press``, ``scroll`` or ``key_press`` it was looked
    up for), so the record follows that action in the stream, out of time order.

    :ivar at: ``point`` or ``focus``.
    :ivar result: one of :data:`agent.elements.RESULTS`.
    :ivar element: the element (:func:`agent.elements.record_of`) when ``result`` is ``found``,
        else None.  Its names are captured text, redacted at export like window titles.
    """

    KIND: ClassVar[str] = "element"
    t_ns: int
    at: str
    result: str
    element: Mapping[str, Any] | None = field(default=None, repr=False)  # captured names

    def __post_init__(self) -> None:
        if self.at not in AT or self.result not in RESULTS:
            msg = "an element record's at or result is not one of the known values"
            raise ValueError(msg)
        if (self.result == FOUND) != (self.element is not None):
            msg = "an element record has an element exactly when its result is found"
            raise ValueError(msg)
        problem = None if self.element is None else record_problem(self.element)
        if problem is not None:
            raise ValueError(problem)


def instruction_problem(text: str) -> str | None:
    """Why ``text`` cannot be a task instruction the volunteer wrote, or None when it can.

    The answer names lengths and code points, never the text (it is captured text).
    """
    if not text.strip():
        return "the instruction is empty; write what you are about to do"
    if len(text) > MAX_INSTRUCTION:
        return f"the instruction has {len(text)} characters; at most {MAX_INSTRUCTION} are kept"
    hidden = hidden_characters(text)
    if hidden:
        return (
            f"the instruction holds control, bidi or zero-width characters ({', '.join(hidden[:5])}); "
            "write it on one line without them"
        )
    return None


Event = (
    PointerMove
    | ButtonPress
    | ButtonRelease
    | Scroll
    | KeyPress
    | KeyRelease
    | Paste
    | Frame
    | FramePatch
    | WindowFocus
    | Marker
    | TaskStart
    | TaskEnd
    | ElementSeen
)


@dataclass(frozen=True, slots=True)
class Redacted:
    """Export-only record that stands where redacted key and paste events were.

    Redaction (:mod:`agent.redact.policy`) puts it into the exported stream; a session
    never stores it, so it is no :data:`Event` and :func:`decode` refuses its kind.
    """

    KIND: ClassVar[str] = "redacted"
    t_ns: int
    entity: str

    def to_dict(self) -> dict[str, Any]:
        return {"v": SCHEMA_VERSION, "k": self.KIND, "t_ns": self.t_ns, "entity": self.entity}


#: What an exported (redacted) stream holds: the recorded events and :class:`Redacted` records.
ExportEvent = Event | Redacted

#: Every event class by its KIND.
EVENT_TYPES: dict[str, type[Any]] = {
    cls.KIND: cls
    for cls in (
        PointerMove,
        ButtonPress,
        ButtonRelease,
        Scroll,
        KeyPress,
        KeyRelease,
        Paste,
        Frame,
        FramePatch,
        WindowFocus,
        Marker,
        TaskStart,
        TaskEnd,
        ElementSeen,
    )
}


#: Serialized field names of each event class, in order (a frame's or patch's ``data`` is the payload).
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name != "data") for cls in EVENT_TYPES.values()
}


def to_dict(event: Event) -> dict[str, Any]:
    """A JSON-ready dict of ``event`` (a frame's image bytes are left out)."""
    out: dict[str, Any] = {"v": SCHEMA_VERSION, "k": event.KIND}
    for name in _FIELDS[type(event)]:
        out[name] = getattr(event, name)
    # the two container fields, converted to plain JSON types (checked by name: ABC checks are slow)
    if "modifiers" in out:
        out["modifiers"] = list(out["modifiers"])
    elif "detail" in out:
        out["detail"] = dict(out["detail"])
    elif "rects" in out:
        out["rects"] = [list(r) for r in out["rects"]]
    return out


def from_dict(obj: Mapping[str, Any], payload: bytes = b"") -> Event:
    """Rebuild an event from :func:`to_dict` output (and a frame's payload)."""
    if obj.get("v") != SCHEMA_VERSION:
        version = _shape(obj.get("v"))
        msg = f"an event of schema version {version} is not supported (this agent reads {SCHEMA_VERSION})"
        raise StoreFormatError(msg)
    cls = EVENT_TYPES.get(str(obj.get("k")))
    if cls is None:
        msg = f"unknown event kind ({_shape(obj.get('k'))})"
        raise StoreFormatError(msg)
    kwargs = {name: obj.get(name) for name in _FIELDS[cls]}
    if "modifiers" in kwargs:
        kwargs["modifiers"] = tuple(kwargs["modifiers"] or ())
    if cls is Frame or cls is FramePatch:
        kwargs["data"] = payload
    if cls is FramePatch:
        rects = kwargs["rects"]
        if not isinstance(rects, list) or len(rects) > MAX_PATCH_RECTS:
            msg = f"malformed {cls.KIND} record: its rects are not a list of at most {MAX_PATCH_RECTS}"
            raise StoreFormatError(msg)
        kwargs["rects"] = tuple(tuple(r) if isinstance(r, list) else r for r in rects)
    try:
        event: Event = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        msg = f"malformed {cls.KIND} record"
        raise StoreFormatError(msg) from exc
    return event


def _shape(value: Any) -> str:
    """Describe a decoded value by type and size, never by content (it came from a record)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if abs(value) < 10**6 else "a large number"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return type(value).__name__


def encode(event: Event) -> bytes:
    """Serialize one event (see the module docstring for the layout)."""
    header = _JSON.encode(to_dict(event)).encode()
    payload = event.data if isinstance(event, (Frame, FramePatch)) else b""
    return _LEN.pack(len(header)) + header + payload


def decode(blob: bytes) -> Event:
    """Inverse of :func:`encode`."""
    if len(blob) < _LEN.size:
        msg = "event record shorter than its length field"
        raise StoreFormatError(msg)
    (n,) = _LEN.unpack_from(blob)
    if _LEN.size + n > len(blob):
        msg = "event header length runs past the record"
        raise StoreFormatError(msg)
    try:
        obj = json.loads(blob[_LEN.size : _LEN.size + n])
    except ValueError as exc:
        msg = "event header is not valid JSON"
        raise StoreFormatError(msg) from exc
    payload = bytes(blob[_LEN.size + n :])
    if payload and obj.get("k") not in (Frame.KIND, FramePatch.KIND):
        kind = obj.get("k") if obj.get("k") in EVENT_TYPES else _shape(obj.get("k"))
        size = len(payload)
        msg = f"a {kind} event carries {size} payload bytes; only frames have a payload (frame, frame_patch)"
        raise StoreFormatError(msg)
    return from_dict(obj, payload)


def kind_counts(events: Any) -> dict[str, int]:
    """Count events by KIND (for summaries)."""
    counts: dict[str, int] = {}
    for ev in events:
        counts[ev.KIND] = counts.get(ev.KIND, 0) + 1
    return dict(sorted(counts.items()))


__all__ = [
    "EVENT_TYPES",
    "MARKERS",
    "MAX_FRAME_PIXELS",
    "MAX_FRAME_SIDE",
    "MAX_INSTRUCTION",
    "MAX_PATCH_RECTS",
    "MAX_RECT_SIDE",
    "MAX_TASK_ID",
    "SCHEMA_VERSION",
    "TASK_OUTCOMES",
    "TASK_SOURCES",
    "ButtonPress",
    "ButtonRelease",
    "ClockAnchor",
    "ElementSeen",
    "Event",
    "ExportEvent",
    "Frame",
    "FramePatch",
    "KeyPress",
    "KeyRelease",
    "Marker",
    "Paste",
    "PointerMove",
    "Redacted",
    "Scroll",
    "TaskEnd",
    "TaskStart",
    "WindowFocus",
    "decode",
    "encode",
    "from_dict",
    "instruction_problem",
    "kind_counts",
    "now_ns",
    "to_dict",
]
